"""3D Slicer module: one click from an abdominal CT to 'Liver' and 'Liver tumor' segments.

The work is done by the ``liverseg`` engine (next to this file) in a background process; this file holds the
Slicer classes only. Helpers live in ``LiverSegmentationLib/`` (parameters, process, scene, terminology, install).
"""

import logging
from typing import Optional

import vtk

import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.util import VTKObservationMixin

from LiverSegmentationLib.parameters import DEVICE_ITEMS, SegmentationParameters
from LiverSegmentationLib.process import JobState, SegmentationProcess


class LiverSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Liver Segmentation"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["LiverSegmentation developers"]
        self.parent.helpText = (
            "Segments the liver and liver tumors in abdominal CT with a 2.5D U-Net/ResUNet. Select the CT, click "
            "Apply, then refine the result in Segment Editor. Research use only, not a medical device. "
            '<a href="https://github.com/liverseg/LiverSegmentation">Documentation</a>.')
        self.parent.acknowledgementText = (
            "Default models were trained on CHAOS (CC BY-SA 4.0) and AMOS (CC BY 4.0) CT data with synthetic tumors "
            "after Hu et al., CVPR 2023. See the model card for details.")


@parameterNodeWrapper
class LiverSegmentationParameterNode:
    inputVolume: slicer.vtkMRMLScalarVolumeNode
    outputSegmentation: slicer.vtkMRMLSegmentationNode
    tumor: bool = True
    postprocessing: bool = True
    fast: bool = True


class LiverSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    LOAD_FILE_ITEM = "Load model file..."

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[LiverSegmentationLogic] = None
        self._parameterNode = None
        self._job: Optional[SegmentationProcess] = None
        self._timer = None

    def setup(self) -> None:
        import qt

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LiverSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LiverSegmentationLogic()
        self._populateModels()
        self._populateDevices()
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.editInSegmentEditorButton.connect("clicked(bool)", self.onEditInSegmentEditor)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.connect("timeout()", self._onPoll)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    # ---- parameter node ----------------------------------------------------------------------------------------
    def cleanup(self) -> None:
        self._cancelJob()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelJob()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, node) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = node
        if node:
            self._parameterNodeGuiTag = node.connectGui(self.ui)

    # ---- model and device choices ------------------------------------------------------------------------------
    def _populateModels(self) -> None:
        from liverseg.registry import DEFAULT_MODEL, available_models

        self.ui.modelComboBox.clear()
        for model in available_models():
            label = f"{model.name} (default)" if model.name == DEFAULT_MODEL else model.name
            self.ui.modelComboBox.addItem(label, model.name)
        self.ui.modelComboBox.addItem(self.LOAD_FILE_ITEM, "")
        self.onModelChanged(0)

    def _populateDevices(self) -> None:
        self.ui.deviceComboBox.clear()
        detected = self.logic.detectedDevices()
        for item in DEVICE_ITEMS:
            self.ui.deviceComboBox.addItem(item if item != "cuda" else "GPU (cuda)", item)
        self.ui.deviceComboBox.toolTip = "Detected: " + detected

    def onModelChanged(self, index: int) -> None:
        import qt

        if self.ui.modelComboBox.currentText == self.LOAD_FILE_ITEM:
            path = qt.QFileDialog.getOpenFileName(None, "Load liverseg model file", "", "Model files (*.safetensors)")
            if not path:
                self.ui.modelComboBox.setCurrentIndex(0)
                return
            self.ui.modelComboBox.insertItem(0, path, path)
            self.ui.modelComboBox.setCurrentIndex(0)
            return
        self.ui.modelInfoLabel.text = self.logic.modelSummary(self.ui.modelComboBox.currentData or "default")

    def currentParameters(self) -> SegmentationParameters:
        p = self._parameterNode
        return SegmentationParameters(model=self.ui.modelComboBox.currentData or "default",
                                      device=self.ui.deviceComboBox.currentData or "auto",
                                      tumor=p.tumor, postprocessing=p.postprocessing, fast=p.fast)

    # ---- run / cancel --------------------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        if self._job is not None:
            self._cancelJob()
            self._setStatus("Cancelled.")
            return
        from LiverSegmentationLib.install import SlicerInstaller, ensure_dependencies

        try:
            if not ensure_dependencies(SlicerInstaller()):
                self._setStatus("Dependencies were not installed; nothing was done.")
                return
            volume = self._parameterNode.inputVolume
            self.logic.validateInput(volume)
            self._job = self.logic.startProcess(volume, self.currentParameters())
        except Exception as exc:
            self._setStatus(f"Error: {exc}")
            slicer.util.errorDisplay(str(exc), windowTitle="Liver Segmentation")
            return
        self.ui.applyButton.text = "Cancel"
        self.ui.progressBar.visible = True
        self.ui.progressBar.value = 0
        self._timer.start()

    def _onPoll(self) -> None:
        job = self._job
        state = job.poll()
        self.ui.progressBar.value = int(100 * job.progress)
        self._setStatus(job.message)
        if state is JobState.RUNNING:
            return
        self._timer.stop()
        self._job = None
        self.ui.applyButton.text = "Apply"
        self.ui.progressBar.visible = False
        try:
            segmentation = self.logic.finishProcess(job, self._parameterNode.inputVolume,
                                                    self._parameterNode.outputSegmentation, self.currentParameters())
        except Exception as exc:
            self._setStatus(f"Error: {exc}")
            slicer.util.errorDisplay(str(exc), windowTitle="Liver Segmentation")
            return
        self._parameterNode.outputSegmentation = segmentation
        self._showStatistics(self.logic.lastStatistics)
        self.ui.editInSegmentEditorButton.enabled = True
        self._setStatus(f"Done in {job_seconds(self.logic.lastSummary):.1f} s on {self.logic.lastSummary.get('device')}.")

    def _cancelJob(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self._job = None
        if self._timer is not None:
            self._timer.stop()
        if hasattr(self, "ui"):
            self.ui.applyButton.text = "Apply"
            self.ui.progressBar.visible = False

    def _setStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text

    def _showStatistics(self, stats: dict) -> None:
        import qt
        from LiverSegmentationLib.scene import STATISTICS_COLUMNS

        table = self.ui.statisticsTableWidget
        table.setRowCount(len(STATISTICS_COLUMNS))
        table.setColumnCount(2)
        table.setHorizontalHeaderLabels(["Measure", "Value"])
        for row, (key, title) in enumerate(STATISTICS_COLUMNS):
            table.setItem(row, 0, qt.QTableWidgetItem(title))
            value = stats[key]
            table.setItem(row, 1, qt.QTableWidgetItem(f"{value:.1f}" if isinstance(value, float) else str(value)))

    def onEditInSegmentEditor(self) -> None:
        self.logic.openInSegmentEditor(self._parameterNode.outputSegmentation, self._parameterNode.inputVolume)


def job_seconds(summary: dict) -> float:
    return float(summary.get("timings", {}).get("total", 0.0))


class LiverSegmentationLogic(ScriptedLoadableModuleLogic):
    """Works without any GUI: ``process(volume, segmentation_or_None, SegmentationParameters())``."""

    def __init__(self, python_executable: Optional[str] = None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.pythonExecutable = python_executable
        self.lastStatistics: dict = {}
        self.lastSummary: dict = {}
        self.statisticsTableNode = None

    def getParameterNode(self):
        return LiverSegmentationParameterNode(super().getParameterNode())

    @staticmethod
    def detectedDevices() -> str:
        try:
            from liverseg.devices import describe_devices

            return "; ".join(describe_devices())
        except ImportError:
            return "unknown until PyTorch is installed"

    @staticmethod
    def modelSummary(model: str) -> str:
        from liverseg.modelfile import read_card
        from liverseg.registry import resolve_model_path

        try:
            card = read_card(resolve_model_path(model))
        except Exception as exc:
            return f"Model unavailable: {exc}"
        summary = card.get("metrics", {}).get("summary", {})
        figures = ", ".join(f"{k}: {v}" for k, v in summary.items())
        return f"{card['name']} v{card.get('version', '?')} ({card['architecture']}). {figures}"

    @staticmethod
    def validateInput(volumeNode) -> None:
        """Raise ValueError with a message for the panel when the node is not a 3D scalar CT."""
        from liverseg.checks import InputError, check_volume

        if volumeNode is None:
            raise ValueError("Select an input CT volume.")
        if volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
            raise ValueError(f"'{volumeNode.GetName()}' is a labelmap; select the CT image instead.")
        if not volumeNode.IsA("vtkMRMLScalarVolumeNode") or volumeNode.IsA("vtkMRMLVectorVolumeNode"):
            raise ValueError(f"'{volumeNode.GetName()}' is not a scalar volume (RGB/vector data cannot be segmented).")
        image = volumeNode.GetImageData()
        if image is None:
            raise ValueError(f"'{volumeNode.GetName()}' has no image data.")
        if image.GetNumberOfScalarComponents() != 1:
            raise ValueError(f"'{volumeNode.GetName()}' has {image.GetNumberOfScalarComponents()} components per voxel; "
                             "a scalar CT is needed.")
        try:
            check_volume(slicer.util.arrayFromVolume(volumeNode))
        except InputError as exc:
            raise ValueError(f"'{volumeNode.GetName()}': {exc}") from exc

    def startProcess(self, inputVolumeNode, parameters: SegmentationParameters) -> SegmentationProcess:
        import numpy as np

        array = slicer.util.arrayFromVolume(inputVolumeNode)
        matrix = vtk.vtkMatrix4x4()
        inputVolumeNode.GetIJKToRASMatrix(matrix)
        ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        if inputVolumeNode.GetParentTransformNode() is not None:
            logging.warning("The input volume is under a transform; the segmentation is made on its untransformed grid "
                            "and placed under the same transform.")
        job = SegmentationProcess(array, parameters.to_job(ijk_to_ras), self.pythonExecutable)
        job.start()
        return job

    def finishProcess(self, job: SegmentationProcess, inputVolumeNode, outputSegmentationNode, parameters):
        """Turn a finished job into segments; nothing is added to the scene unless the job succeeded."""
        from LiverSegmentationLib import scene

        if job.state is not JobState.SUCCEEDED:
            job.cleanup()
            raise RuntimeError(job.error or f"Segmentation {job.state.value}.")
        result = job.result()
        created = outputSegmentationNode is None
        if created:
            outputSegmentationNode = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", slicer.mrmlScene.GenerateUniqueName(f"{inputVolumeNode.GetName()} liver segmentation"))
            outputSegmentationNode.CreateDefaultDisplayNodes()
        try:
            scene.fill_segmentation(outputSegmentationNode, inputVolumeNode, result.labelmap, include_tumor=parameters.tumor)
            if inputVolumeNode.GetParentTransformNode() is not None:
                outputSegmentationNode.SetAndObserveTransformNodeID(inputVolumeNode.GetParentTransformNode().GetID())
            display = outputSegmentationNode.GetDisplayNode()
            if display is not None:
                display.SetPreferredDisplayRepresentationName3D("Closed surface")
                display.SetVisibility3D(True)
            scene.place_in_hierarchy(outputSegmentationNode, inputVolumeNode)
            self.lastStatistics = scene.statistics(result.labelmap, inputVolumeNode)
            self.lastSummary = result.summary
            if self.statisticsTableNode is None or self.statisticsTableNode.GetScene() is None:
                self.statisticsTableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "Liver statistics")
            scene.fill_statistics_table(self.statisticsTableNode, self.lastStatistics)
        except Exception:
            if created:
                slicer.mrmlScene.RemoveNode(outputSegmentationNode)
            raise
        return outputSegmentationNode

    def process(self, inputVolumeNode, outputSegmentationNode=None, parameters: Optional[SegmentationParameters] = None,
                waitForCompletion: bool = True, timeout_s: Optional[float] = None):
        """Segment ``inputVolumeNode``; returns the segmentation node, or the running job when not waiting."""
        parameters = parameters or SegmentationParameters()
        self.validateInput(inputVolumeNode)
        job = self.startProcess(inputVolumeNode, parameters)
        if not waitForCompletion:
            return job
        job.wait(timeout_s)
        return self.finishProcess(job, inputVolumeNode, outputSegmentationNode, parameters)

    @staticmethod
    def openInSegmentEditor(segmentationNode, volumeNode) -> None:
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentationNode)
        if hasattr(editor, "setSourceVolumeNode"):
            editor.setSourceVolumeNode(volumeNode)
        else:  # Slicer < 5.4
            editor.setMasterVolumeNode(volumeNode)


class LiverSegmentationTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: segments Slicer's CTLiver sample data end to end."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentSampleData()

    def test_SegmentSampleData(self):
        import numpy as np
        import SampleData

        self.delayDisplay("Loading CTLiver sample data")
        volume = SampleData.downloadSample("CTLiver")
        logic = LiverSegmentationLogic()
        segmentation = logic.process(volume, None, SegmentationParameters(device="cpu"))
        seg = segmentation.GetSegmentation()
        self.assertTrue(seg.GetSegmentIdBySegmentName("Liver"))
        self.assertTrue(seg.GetSegmentIdBySegmentName("Liver tumor"))
        liver = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, seg.GetSegmentIdBySegmentName("Liver"), volume)
        liver_ml = np.count_nonzero(liver) * np.prod(volume.GetSpacing()) / 1000
        self.assertGreater(liver_ml, 500)  # an adult liver is about 1.2-1.8 L
        self.assertLess(liver_ml, 4000)
        self.assertAlmostEqual(logic.lastStatistics["liver_volume_ml"], liver_ml, delta=1.0)
        self.delayDisplay("Test passed")
