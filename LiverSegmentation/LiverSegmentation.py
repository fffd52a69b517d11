"""3D Slicer module: one click from an abdominal CT to 'Liver' and 'Liver tumor' segments.

The work is done by the ``liverseg`` engine (next to this file) in a background process; this file holds the
Slicer classes only. Helpers live in ``LiverSegmentationLib/`` (parameters, process, scene, terminology, install).
"""

import os
import re
from typing import Optional

import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.util import VTKObservationMixin

try:  # Slicer >= 5.6: user-visible strings are translatable
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # older Slicer, and the headless test harness (slicer-core has no i18n module)
    def _(text: str) -> str:
        return text

    def translate(context: str, text: str) -> str:
        return text

from LiverSegmentationLib.parameters import DEVICE_ITEMS, SegmentationParameters
from LiverSegmentationLib.process import JobState, SegmentationProcess, StartedJob


CASES_FOLDER_SETTING = "LiverSegmentation/CasesFolder"  # Application settings key: the user's training cases folder
MODEL_ATTRIBUTE = "LiverSegmentation.Model"  # on a result's segmentation node: the model that made it (provenance)


class EditedSegmentsError(ValueError):
    """The chosen output holds segments the user edited; replacing them needs an explicit yes."""


class LiverSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Liver Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["LiverSegmentation developers"]
        self.parent.helpText = _(
            "Segments the liver and liver tumors in abdominal CT with a 2.5D U-Net/ResUNet. Select the CT, click "
            "Apply, then refine the result in Segment Editor. Research use only, not a medical device. "
            '<a href="https://github.com/liverseg/LiverSegmentation">Documentation</a>.')
        self.parent.acknowledgementText = _(
            "Default models were trained on CHAOS (CC BY-SA 4.0) and AMOS (CC BY 4.0) CT data with synthetic tumors "
            "after Hu et al., CVPR 2023. See the model card for details.")


@parameterNodeWrapper
class LiverSegmentationParameterNode:
    inputVolume: slicer.vtkMRMLScalarVolumeNode
    outputSegmentation: slicer.vtkMRMLSegmentationNode
    tumor: bool = True
    postprocessing: bool = True
    roi: bool = True  # liver ROI (one name in GUI, API, CLI and docs)


class LiverSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    LOAD_FILE_ITEM = _("Load model file...")

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[LiverSegmentationLogic] = None
        self._parameterNode = None
        self._job: Optional[StartedJob] = None
        self._logged = 0  # worker log lines already shown
        self._lastSegmentation = None  # the latest result, for "Edit in Segment Editor"
        self._timer = None
        self._finetune = None  # the running FinetuneProcess, if any

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
        self.ui.saveStatisticsButton.connect("clicked(bool)", self.onSaveStatistics)
        self.ui.exportDicomSegButton.connect("clicked(bool)", self.onExportDicomSeg)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.addCaseButton.connect("clicked(bool)", self.onAddCase)
        self.ui.finetuneButton.connect("clicked(bool)", self.onFinetune)
        self.ui.casesFolderPathLineEdit.currentPath = qt.QSettings().value(CASES_FOLDER_SETTING) or ""
        self.ui.casesFolderPathLineEdit.connect("currentPathChanged(QString)", self.onCasesFolderChanged)
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
        self.ui.deviceComboBox.toolTip = _("Detected: {devices}").format(devices=detected)

    def onModelChanged(self, index: int) -> None:
        import qt

        if self.ui.modelComboBox.currentText == self.LOAD_FILE_ITEM:
            path = qt.QFileDialog.getOpenFileName(None, _("Load liverseg model file"), "", _("Model files (*.safetensors)"))
            if not path:
                self.ui.modelComboBox.setCurrentIndex(0)
                return
            self.ui.modelComboBox.insertItem(0, path, path)
            self.ui.modelComboBox.setCurrentIndex(0)
            return
        model = self.ui.modelComboBox.currentData or "default"
        self.ui.modelInfoLabel.text = self.logic.modelSummary(model)
        self.ui.modelInfoLabel.toolTip = self.logic.modelCard(model)

    def currentParameters(self) -> SegmentationParameters:
        p = self._parameterNode
        return SegmentationParameters(model=self.ui.modelComboBox.currentData or "default",
                                      device=self.ui.deviceComboBox.currentData or "auto",
                                      tumor=p.tumor, postprocessing=p.postprocessing, roi=p.roi)

    # ---- run / cancel --------------------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        if self._job is not None:
            self._cancelJob()
            self._setStatus(_("Cancelled."))
            return
        from LiverSegmentationLib.install import SlicerInstaller, ensure_dependencies

        p = self._parameterNode
        try:
            if not ensure_dependencies(SlicerInstaller()):
                self._setStatus(_("Dependencies were not installed; nothing was done."))
                return
            try:
                self._job = self.logic.start(p.inputVolume, p.outputSegmentation, self.currentParameters())
            except EditedSegmentsError as exc:
                if not slicer.util.confirmOkCancelDisplay(_("{reason}\n\nReplace them anyway?").format(reason=exc),
                                                          windowTitle=_("Liver Segmentation")):
                    self._setStatus(_("Nothing was done: the edited segments were kept."))
                    return
                self._job = self.logic.start(p.inputVolume, p.outputSegmentation, self.currentParameters(), replaceEdited=True)
        except Exception as exc:
            self._showError(exc)
            return
        self.ui.logTextEdit.clear()
        self._logged = 0
        self._setRunning(True)

    def _appendLog(self, lines) -> None:
        for line in lines:
            self.ui.logTextEdit.appendPlainText(line)

    def _setRunning(self, running: bool) -> None:
        """While a job runs, Apply is Cancel and the choices it was started with cannot be changed."""
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0
        for widget in (self.ui.inputVolumeSelector, self.ui.outputSegmentationSelector, self.ui.modelComboBox,
                       self.ui.deviceComboBox, self.ui.tumorCheckBox, self.ui.postprocessingCheckBox, self.ui.roiCheckBox):
            widget.enabled = not running
        if running:
            self._timer.start()
        else:
            self._timer.stop()

    def _onPoll(self) -> None:
        if self._finetune is not None:
            self._pollFinetune()
            return
        job = self._job
        if self._follow(job.process) is JobState.RUNNING:
            return
        self._job = None
        self._setRunning(False)
        try:
            segmentation = self.logic.finish(job)
        except Exception as exc:
            self._showError(exc)
            return
        # The output selector keeps the user's choice ("Create new segmentation" by default), so the next Apply
        # never replaces this result, or the user's edits of it, unless the user selects it.
        self._lastSegmentation = segmentation
        self._showStatistics(self.logic.lastStatistics)
        self.ui.editInSegmentEditorButton.enabled = True
        self.ui.saveStatisticsButton.enabled = True
        self.ui.addCaseButton.enabled = True
        self.ui.exportDicomSegButton.enabled = self.logic.isFromDicomDatabase(slicer.mrmlScene.GetNodeByID(job.input_volume_id))
        warnings = self.logic.lastSummary.get("warnings", [])
        self._appendLog(_("Warning: {message}").format(message=w) for w in warnings)
        if self.logic.reviewPointsNode is not None:
            self._appendLog([_("The regions to review are points in '{name}' (Markups module: click one to jump to "
                               "it).").format(name=self.logic.reviewPointsNode.GetName())])
        note = " " + _("{count} warning(s): see Log.").format(count=len(warnings)) if warnings else ""
        if warnings:
            self.ui.logCollapsibleButton.collapsed = False
        self._setStatus(_("Done in {seconds:.1f} s on {device}.").format(
            seconds=job.wall_seconds, device=self.logic.lastSummary.get("device")) + note)

    def _follow(self, process) -> "JobState":
        """Show a background process's new output (warnings, errors), progress and message; return its state."""
        state = process.poll()
        self._appendLog(process.log[self._logged:])
        self._logged = len(process.log)
        self.ui.progressBar.value = int(100 * process.progress)
        if process.message:
            self._setStatus(process.message)
        return state

    def _showError(self, exc: Exception) -> None:
        self._setStatus(_("Error: {reason}").format(reason=exc))
        slicer.util.errorDisplay(str(exc), windowTitle=_("Liver Segmentation"))

    def _cancelJob(self) -> None:
        if self._job is not None:
            self._job.process.cancel()
            self._job = None
        if hasattr(self, "ui") and self._timer is not None:
            self._setRunning(False)

    def _setStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text

    def _showStatistics(self, stats: dict) -> None:
        import qt
        from LiverSegmentationLib.scene import STATISTICS_COLUMNS

        table = self.ui.statisticsTableWidget
        table.setRowCount(len(STATISTICS_COLUMNS))
        table.setColumnCount(2)
        table.setHorizontalHeaderLabels([_("Measure"), _("Value")])
        for row, (key, title) in enumerate(STATISTICS_COLUMNS):
            table.setItem(row, 0, qt.QTableWidgetItem(title))
            value = stats[key]
            table.setItem(row, 1, qt.QTableWidgetItem(f"{value:.1f}" if isinstance(value, float) else str(value)))

    def _latestResult(self):
        """(segmentation, its CT) of the latest result, or (None, None) once it left the scene."""
        segmentation = self._lastSegmentation
        if segmentation is None or segmentation.GetScene() is None:
            return None, None
        reference = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
        return segmentation, reference or self._parameterNode.inputVolume

    def onEditInSegmentEditor(self) -> None:
        segmentation, volume = self._latestResult()
        if segmentation is not None:
            self.logic.openInSegmentEditor(segmentation, volume)

    def onSaveStatistics(self) -> None:
        import qt

        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Save statistics"), "liver_statistics.csv",
                                              _("CSV files (*.csv)"))
        if not path:
            return
        try:
            self.logic.saveStatistics(path)
        except Exception as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=_("Liver Segmentation"))
            return
        self._setStatus(_("Statistics saved to {path}.").format(path=path))

    def onExportDicomSeg(self) -> None:
        import qt

        segmentation, volume = self._latestResult()
        if segmentation is None:
            return
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Export DICOM SEG into folder"))
        if not folder:
            return
        try:
            files = self.logic.exportDicomSeg(segmentation, volume, folder)
        except Exception as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=_("Liver Segmentation"))
            return
        self._setStatus(_("DICOM SEG written: {files}").format(files=", ".join(files)))

    # ---- my training cases -----------------------------------------------------------------------------------
    def onCasesFolderChanged(self, path: str) -> None:
        import qt

        qt.QSettings().setValue(CASES_FOLDER_SETTING, path)
        self._showCaseCount()

    def _casesFolder(self) -> str:
        folder = self.ui.casesFolderPathLineEdit.currentPath
        if not folder:
            slicer.util.errorDisplay(_("Choose a cases folder first (My training cases > Cases folder)."),
                                     windowTitle=_("Liver Segmentation"))
        return folder

    def _showCaseCount(self) -> None:
        from liverseg.cases import list_cases

        folder = self.ui.casesFolderPathLineEdit.currentPath
        count = len(list_cases(folder)) if folder else 0
        self.ui.casesStatusLabel.text = _("{count} case(s) in the folder.").format(count=count) if folder else ""

    def onAddCase(self) -> None:
        segmentation, volume = self._latestResult()
        folder = self._casesFolder()
        if segmentation is None or not folder:
            return
        from LiverSegmentationLib.scene import edited_segments

        if not edited_segments(segmentation) and not slicer.util.confirmOkCancelDisplay(
                _("The segments were not edited since the module made them. A training case teaches most when it is "
                  "corrected first (Edit in Segment Editor). Add it anyway?"), windowTitle=_("Liver Segmentation")):
            return
        try:
            path = self.logic.addTrainingCase(volume, segmentation, folder, note=self.ui.caseNoteLineEdit.text)
        except Exception as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=_("Liver Segmentation"))
            return
        self._setStatus(_("Training case saved: {path}").format(path=path))
        self._showCaseCount()

    def onFinetune(self) -> None:
        import qt

        if self._finetune is not None:
            self._finetune.cancel()
            self._finetune = None
            self._setFinetuning(False)
            self._setStatus(_("Fine-tuning cancelled."))
            return
        folder = self._casesFolder()
        if not folder:
            return
        output = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Save the fine-tuned model as"),
                                                os.path.join(folder, "my-liver-model.safetensors"),
                                                _("Model files (*.safetensors)"))
        if not output:
            return
        try:
            self._finetune = self.logic.startFinetune(folder, self.ui.modelComboBox.currentData or "default", output)
        except Exception as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=_("Liver Segmentation"))
            return
        self.ui.logTextEdit.clear()
        self._logged = 0
        self._setFinetuning(True)

    def _setFinetuning(self, running: bool) -> None:
        """While fine-tuning runs, its button is Cancel and segmentation waits (both would share the CPU/GPU)."""
        self.ui.finetuneButton.text = _("Cancel fine-tuning") if running else _("Fine-tune on my cases")
        self.ui.applyButton.enabled = not running
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0
        if running:
            self.ui.logCollapsibleButton.collapsed = False
            self._timer.start()
        else:
            self._timer.stop()

    def _pollFinetune(self) -> None:
        process = self._finetune
        if self._follow(process) is JobState.RUNNING:
            return
        self._finetune = None
        self._setFinetuning(False)
        try:
            report = self.logic.finishFinetune(process)
        except Exception as exc:
            self._showError(exc)
            return
        from liverseg.cases import describe_finetune

        self.ui.modelComboBox.insertItem(0, process.output, process.output)  # available now, not made the default
        summary = describe_finetune(report)
        self._appendLog(summary.splitlines())
        self._setStatus(_("Fine-tuned model added to the model list: {path}").format(path=process.output))
        slicer.util.infoDisplay(summary, windowTitle=_("Fine-tuning finished"))


class LiverSegmentationLogic(ScriptedLoadableModuleLogic):
    """Works without any GUI: ``process(volume, segmentation_or_None, SegmentationParameters())``."""

    def __init__(self, python_executable: Optional[str] = None) -> None:
        from LiverSegmentationLib.terminology import load_context

        ScriptedLoadableModuleLogic.__init__(self)
        if hasattr(slicer.modules, "terminologies"):  # so Segment Editor finds the segments' terminology entries
            load_context(slicer.modules.terminologies.logic())
        self.pythonExecutable = python_executable
        self.lastStatistics: dict = {}
        self.lastSummary: dict = {}
        self.statisticsTableNode = None
        self.reviewPointsNode = None  # the latest result's "regions to review" point list, if any

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
        """One plain line under the model selector: what it segments, the accuracy to expect on CT it never saw,
        its training data and licence (the full card is the tooltip, ``modelCard``)."""
        from liverseg.modelfile import read_card
        from liverseg.registry import resolve_model_path

        try:
            card = read_card(resolve_model_path(model))
        except Exception as exc:
            return f"Model unavailable: {exc}"
        what = "liver and liver tumors" if "tumor" in card.get("outputs", []) else "the liver"
        parts = [f"{card['name']} {card.get('version', '')}: segments {what}."]
        held_out = [v["liver_dice"] for v in card.get("metrics", {}).get("leave_one_case_out", {}).values()]
        if held_out:
            parts.append(f"Liver Dice on {len(held_out)} CT scans it never saw: {min(held_out):.2f}-{max(held_out):.2f}."
                         if len(held_out) > 1 else f"Liver Dice on a CT scan it never saw: {held_out[0]:.2f}.")
        training = card.get("training", {})
        if training.get("cases"):
            found = re.findall(r"CC BY(?:-[A-Z]{2})* \d\.\d|Apache-2\.0|MIT", " ".join(training.get("licences", [])))
            licences = ", ".join(dict.fromkeys(found)) or "licences: see the card"
            parts.append(f"Trained on {len(training['cases'])} CT scans ({licences}).")
        finetune = card.get("finetune")
        if finetune:
            comparison = finetune["comparison"]
            if comparison["verdict"] == "not compared":
                parts.append(f"Fine-tuned from {finetune['base_model']} on {len(finetune['cases'])} case(s); not compared.")
            else:
                parts.append(f"Fine-tuned from {finetune['base_model']}: liver Dice on your held-out cases "
                             f"{comparison['base_mean_liver_dice']:.3f} -> {comparison['finetuned_mean_liver_dice']:.3f} "
                             f"({comparison['verdict']}).")
        return " ".join(parts)

    @staticmethod
    def modelCard(model: str) -> str:
        """The whole model card as indented JSON, for the tooltip."""
        import json

        from liverseg.modelfile import read_card
        from liverseg.registry import resolve_model_path

        try:
            return json.dumps(read_card(resolve_model_path(model)), indent=1)
        except Exception as exc:
            return str(exc)

    @staticmethod
    def validateModelAndDevice(parameters: SegmentationParameters) -> None:
        """Check the model file (its card, without torch) and the device here, at once, instead of after the
        worker's start-up."""
        from liverseg.devices import resolve_device
        from liverseg.modelfile import read_card
        from liverseg.registry import model_members, resolve_model_path

        for member in model_members(parameters.model):
            read_card(resolve_model_path(member))
        resolve_device(parameters.device)

    @staticmethod
    def validateInput(volumeNode, allow_non_hu: bool = False) -> None:
        """Raise ValueError with a message for the panel when the node is not a 3D scalar CT."""
        from liverseg.checks import InputError, check_volume

        if volumeNode is None:
            raise ValueError(_("Select an input CT volume."))
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
            check_volume(slicer.util.arrayFromVolume(volumeNode), allow_non_hu=allow_non_hu)
        except InputError as exc:
            raise ValueError(f"'{volumeNode.GetName()}': {exc}") from exc

    def start(self, inputVolumeNode, outputSegmentationNode, parameters: SegmentationParameters,
              replaceEdited: bool = False) -> StartedJob:
        """Validate and start a run; the returned job remembers the nodes and options it was started with.

        An existing output whose Liver/Liver tumor segments were edited since this module wrote them is replaced
        only with ``replaceEdited=True`` (the panel asks first)."""
        from LiverSegmentationLib import scene

        self.validateInput(inputVolumeNode, allow_non_hu=parameters.allow_non_hu)
        self.validateModelAndDevice(parameters)
        if outputSegmentationNode is not None and not replaceEdited:
            edited = scene.edited_segments(outputSegmentationNode)
            if edited:
                raise EditedSegmentsError(
                    f"{', '.join(repr(n) for n in edited)} in '{outputSegmentationNode.GetName()}' "
                    "changed since Liver Segmentation created it; replacing would discard those edits.")
        self._checkTransform(inputVolumeNode, outputSegmentationNode)
        array = slicer.util.arrayFromVolume(inputVolumeNode)
        process = SegmentationProcess(array, parameters.to_job(scene.ijk_to_ras(inputVolumeNode)), self.pythonExecutable)
        process.start()
        return StartedJob(process, inputVolumeNode.GetID(),
                          outputSegmentationNode.GetID() if outputSegmentationNode is not None else None, parameters)

    @staticmethod
    def _checkTransform(inputVolumeNode, outputSegmentationNode) -> None:
        """A new segmentation goes under the volume's own parent transform (any kind), so it overlays the CT as
        the CT is shown. An existing one under another transform gets the labelmap resampled into its frame,
        which needs linear transforms."""
        if outputSegmentationNode is None:
            return
        source, target = inputVolumeNode.GetParentTransformNode(), outputSegmentationNode.GetParentTransformNode()
        if source is target:
            return
        for node in (source, target):
            if node is not None and not node.IsTransformToWorldLinear():
                raise ValueError(f"'{node.GetName()}' is a non-linear transform and the output segmentation is not "
                                 "under the same transform as the CT. Choose 'Create new segmentation' (it is placed "
                                 "under the CT's transform), or harden the transform first.")

    def finish(self, job: StartedJob):
        """Turn a finished job into segments on the nodes it was started with; nothing is added to the scene
        unless the job succeeded."""
        from LiverSegmentationLib import scene

        process = job.process
        if process.state is not JobState.SUCCEEDED:
            process.cleanup()
            raise RuntimeError(process.error or f"Segmentation {process.state.value}.")
        inputVolumeNode = slicer.mrmlScene.GetNodeByID(job.input_volume_id)
        if inputVolumeNode is None:
            process.cleanup()
            raise RuntimeError(_("The input volume was removed from the scene during the run; nothing was added."))
        outputSegmentationNode = slicer.mrmlScene.GetNodeByID(job.output_segmentation_id) if job.output_segmentation_id else None
        result = process.result()
        created = outputSegmentationNode is None
        if created:
            outputSegmentationNode = scene.add_result_segmentation(slicer.mrmlScene, inputVolumeNode, result.labelmap,
                                                                   include_tumor=job.parameters.tumor)
        try:
            if not created:
                scene.fill_segmentation(outputSegmentationNode, inputVolumeNode, result.labelmap, include_tumor=job.parameters.tumor)
                scene.show_surfaces(outputSegmentationNode)
            scene.place_in_hierarchy(outputSegmentationNode, inputVolumeNode)
            outputSegmentationNode.SetAttribute(MODEL_ATTRIBUTE, str(result.summary.get("model", "")))
            self.lastStatistics = scene.statistics(result.labelmap, inputVolumeNode)
            self.lastSummary = result.summary
            if self.statisticsTableNode is None or self.statisticsTableNode.GetScene() is None:
                self.statisticsTableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "Liver statistics")
            scene.fill_statistics_table(self.statisticsTableNode, self.lastStatistics)
            self.reviewPointsNode = scene.add_review_points(slicer.mrmlScene, inputVolumeNode,
                                                            result.summary.get("reclassified", []))
        except Exception:
            if created:
                slicer.mrmlScene.RemoveNode(outputSegmentationNode)
            raise
        return outputSegmentationNode

    def process(self, inputVolumeNode, outputSegmentationNode=None, parameters: Optional[SegmentationParameters] = None,
                waitForCompletion: bool = True, timeout_s: Optional[float] = None, replaceEdited: bool = False):
        """Segment ``inputVolumeNode``; returns the segmentation node, or the running job when not waiting."""
        job = self.start(inputVolumeNode, outputSegmentationNode, parameters or SegmentationParameters(), replaceEdited)
        if not waitForCompletion:
            return job
        job.process.wait(timeout_s)
        return self.finish(job)

    def saveStatistics(self, path: str) -> None:
        """The latest result's statistics table as CSV, through Slicer's own table storage."""
        from LiverSegmentationLib import scene

        table = self.statisticsTableNode
        if table is None or table.GetScene() is None:
            raise RuntimeError(_("There are no statistics yet: segment a CT first."))
        if not str(path).lower().endswith(".csv"):
            raise ValueError(_("Choose a file name ending in .csv."))
        try:
            scene.write_table_csv(table, path)
        except RuntimeError as exc:
            raise RuntimeError(_("Could not write {path}; choose another folder.").format(path=path)) from exc

    @staticmethod
    def isFromDicomDatabase(volumeNode) -> bool:
        """Whether the CT was loaded from Slicer's DICOM database (its instance UIDs are known)."""
        return bool(volumeNode is not None and (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").strip())

    def exportDicomSeg(self, segmentationNode, volumeNode, folder: str, plugin=None) -> list:
        """Export a segmentation as DICOM SEG with Slicer's own DICOM segmentation exporter (the
        DICOMSegmentationPlugin); ``plugin``: an object with its ``examineForExport``/``export`` interface (tests).
        Returns the new .dcm files in ``folder``."""
        import os

        from LiverSegmentationLib import scene

        if not self.isFromDicomDatabase(volumeNode):
            raise ValueError(_("The CT was not loaded from the DICOM database, so a DICOM SEG has no DICOM series to "
                               "reference. Load the CT through the DICOM module, or save the segmentation as "
                               ".seg.nrrd instead."))
        if plugin is None:
            try:
                import DICOMSegmentationPlugin
            except ImportError as exc:
                raise RuntimeError(_("Slicer's DICOM segmentation exporter is not available; install the "
                                     "QuantitativeReporting extension.")) from exc
            plugin = DICOMSegmentationPlugin.DICOMSegmentationPluginClass()
        scene.place_in_hierarchy(segmentationNode, volumeNode)  # a SEG belongs to the CT's study
        sh = slicer.mrmlScene.GetSubjectHierarchyNode()
        item = sh.GetItemByDataNode(segmentationNode)
        if not sh.GetItemAttribute(item, "DICOM.ReferencedInstanceUIDs"):
            sh.SetItemAttribute(item, "DICOM.ReferencedInstanceUIDs", volumeNode.GetAttribute("DICOM.instanceUIDs"))
        exportables = plugin.examineForExport(item)
        if not exportables:
            raise RuntimeError(_("Slicer's DICOM exporter cannot export this segmentation: are the CT's files still "
                                 "in the DICOM database?"))
        os.makedirs(folder, exist_ok=True)
        before = set(os.listdir(folder))
        for exportable in exportables:
            exportable.directory = str(folder)
            exportable.setTag("SeriesDescription", segmentationNode.GetName()[:64])
        error = plugin.export(exportables)
        if error:
            raise RuntimeError(_("DICOM SEG export failed: {reason}").format(reason=error))
        files = sorted(os.path.join(folder, f) for f in set(os.listdir(folder)) - before if f.lower().endswith(".dcm"))
        if not files:
            raise RuntimeError(_("The DICOM exporter reported success but wrote no file into {folder}.").format(folder=folder))
        return files

    @staticmethod
    def addTrainingCase(volumeNode, segmentationNode, folder: str, note: str = "") -> str:
        """Save the CT and its "Liver"/"Liver tumor" segments as a training case (``liverseg.cases``: the layout
        ``liverseg-train finetune`` reads; nothing is overwritten) with where it came from."""
        import datetime

        from liverseg.cases import add_case
        from liverseg.io import ImageData
        from LiverSegmentationLib import scene

        labelmap = scene.labelmap_from_segmentation(segmentationNode, volumeNode)
        provenance = {"source": volumeNode.GetName(), "segmentation": segmentationNode.GetName(),
                      "model": segmentationNode.GetAttribute(MODEL_ATTRIBUTE) or "",
                      "edited_segments": scene.edited_segments(segmentationNode), "note": note,
                      "saved_by": "LiverSegmentation module", "date": datetime.date.today().isoformat()}
        image = ImageData.from_array(slicer.util.arrayFromVolume(volumeNode).copy(), scene.ijk_to_ras(volumeNode))
        return str(add_case(image, labelmap, folder, volumeNode.GetName(), provenance))

    def startFinetune(self, folder: str, base: str, output: str, replay: Optional[str] = None,
                      epochs: Optional[int] = None, samples: Optional[int] = None):
        """Start ``liverseg-train finetune`` in the background (the module never imports training code);
        ``epochs``/``samples`` per epoch override its default budget."""
        from liverseg.cases import list_cases
        from liverseg.registry import resolve_model_path
        from LiverSegmentationLib.process import FinetuneProcess

        if not list_cases(folder):
            raise ValueError(_("{folder} has no training cases yet: segment a CT, correct it in Segment Editor, then "
                               "click 'Add to my training cases'.").format(folder=folder))
        if os.path.exists(output):
            raise ValueError(_("{path} exists; choose a new file name for the fine-tuned model.").format(path=output))
        base_path = str(resolve_model_path(None if base == "default" else base))
        process = FinetuneProcess(base_path, folder, output, replay, self.pythonExecutable, epochs, samples)
        process.start()
        return process

    @staticmethod
    def finishFinetune(process) -> dict:
        """The fine-tuned model's comparison with its base, or the process's error."""
        if process.state is not JobState.SUCCEEDED:
            raise RuntimeError(process.error or f"Fine-tuning {process.state.value}.")
        return process.report()

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
        import importlib.util

        import numpy as np
        import SampleData

        missing = [m for m in ("torch", "safetensors", "skimage", "SimpleITK") if importlib.util.find_spec(m) is None]
        if missing:  # e.g. the extension build servers: the module loads, inference needs its dependencies
            self.delayDisplay(f"Skipped the segmentation test: {', '.join(missing)} not installed in this Slicer "
                              "(the module installs them on first Apply).")
            return
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
