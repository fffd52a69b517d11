"""The module's Logic on real MRML nodes (slicer-core), headless. See harness.py for what is a stand-in."""
import re
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import slicer
import vtk

from harness import add_volume
from helpers import MODULE_DIR


def _labelmap_from_segments(seg_node, volume):
    ids = vtk.vtkStringArray()
    for name in ("Liver", "Liver tumor"):
        sid = seg_node.GetSegmentation().GetSegmentIdBySegmentName(name)
        if sid:
            ids.InsertNextValue(sid)
    lab = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(seg_node, ids, lab, volume)
    out = slicer.util.arrayFromVolume(lab).copy()
    slicer.mrmlScene.RemoveNode(lab)
    return out


def _variants(array, m):
    """The same CT stored four ways: as given (LPS-ordered), RAS-ordered, axes permuted, oblique."""
    ras = array[:, ::-1, ::-1].copy()
    m_ras = m.copy()
    m_ras[:3, 0] *= -1
    m_ras[:3, 1] *= -1
    m_ras[:3, 3] = m[:3, :3] @ np.array([array.shape[2] - 1, array.shape[1] - 1, 0]) + m[:3, 3]
    perm = np.ascontiguousarray(np.transpose(array, (2, 0, 1)))  # numpy [i, k, j]: voxel axes (j, k, i)
    m_perm = np.eye(4)
    m_perm[:3, 0], m_perm[:3, 1], m_perm[:3, 2], m_perm[:3, 3] = m[:3, 1], m[:3, 2], m[:3, 0], m[:3, 3]
    c, s = np.cos(np.deg2rad(12)), np.sin(np.deg2rad(12))
    m_obl = m.copy()
    m_obl[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ m[:3, :3]
    return {"lps": (array, m), "ras": (ras, m_ras), "permuted": (perm, m_perm), "oblique": (array, m_obl)}


@pytest.fixture(scope="module")
def sample_arrays(public_sample):
    from liverseg.io import read_image

    img = read_image(public_sample["image"])
    return img.array, img.ijk_to_ras


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["lps", "ras", "permuted", "oblique"])
def test_process_matches_engine_voxel_for_voxel(scene, headless, sample_arrays, variant):
    from liverseg import Segmenter
    from liverseg.labels import LABELS
    from LiverSegmentationLib.parameters import SegmentationParameters
    from liverseg.labels import terminology_entry

    array, m = _variants(*sample_arrays)[variant]
    volume = add_volume(scene, array, m, name=f"LiTS117 {variant}")
    logic = headless.LiverSegmentationLogic()
    seg_node = logic.process(volume, None, SegmentationParameters(device="cpu"))
    segmentation = seg_node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    for spec in LABELS.values():
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(spec.name))
        assert segment is not None, spec.name
        assert segment.GetColor() == pytest.approx(spec.color_float, abs=1e-6)
        tag = vtk.reference("")
        assert segment.GetTag(segment.GetTerminologyEntryTagName(), tag)
        assert tag.get() == terminology_entry(spec)
    engine = Segmenter(None, "cpu").segment(array, m).labelmap
    exported = _labelmap_from_segments(seg_node, volume)
    assert exported.shape == array.shape
    np.testing.assert_array_equal(exported, engine)
    assert (engine == 1).sum() > 1000 and seg_node.GetClosedSurfaceInternalRepresentation(
        segmentation.GetSegmentIdBySegmentName("Liver")).GetNumberOfPoints() > 0


def test_terminology_strings_match_slicers_own_serializer():
    from liverseg.labels import LABELS
    from liverseg.labels import CATEGORY_CONTEXT, REGION_CONTEXT, terminology_entry

    t = slicer.vtkSlicerTerminologiesModuleLogic
    liver, tumor = LABELS[1], LABELS[2]
    expected = t.SerializeTerminologyEntry(CATEGORY_CONTEXT, "123037004", "SCT", "Anatomical Structure", "10200004", "SCT",
                                           "Liver", "", "", "", REGION_CONTEXT, "", "", "", "", "", "")
    assert terminology_entry(liver) == expected
    expected = t.SerializeTerminologyEntry(CATEGORY_CONTEXT, "49755003", "SCT", "Morphologically Altered Structure",
                                           "108369006", "SCT", "Neoplasm", "", "", "", REGION_CONTEXT, "10200004", "SCT",
                                           "Liver", "", "", "")
    assert terminology_entry(tumor) == expected
    assert liver.color_rgb == (221, 130, 101)


def _phantom_segmentation(scene, phantom):
    """Fill a segmentation from a known labelmap (no network involved)."""
    from LiverSegmentationLib import scene as scene_helpers

    vol, lab, m = phantom
    volume = add_volume(scene, vol, m)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    seg.CreateDefaultDisplayNodes()
    scene_helpers.fill_segmentation(seg, volume, lab)
    return volume, seg, lab


def test_seg_nrrd_round_trip_keeps_names_colours_tags_and_voxels(scene, headless, phantom, tmp_path):
    volume, seg, lab = _phantom_segmentation(scene, phantom)
    np.testing.assert_array_equal(_labelmap_from_segments(seg, volume), lab)
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    seg.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(tmp_path / "liver.seg.nrrd"))
    assert storage.WriteData(seg)
    loaded = slicer.modules.segmentations.logic().LoadSegmentationFromFile(str(tmp_path / "liver.seg.nrrd"), True, "reloaded")
    for name in ("Liver", "Liver tumor"):
        a = seg.GetSegmentation().GetSegment(seg.GetSegmentation().GetSegmentIdBySegmentName(name))
        b = loaded.GetSegmentation().GetSegment(loaded.GetSegmentation().GetSegmentIdBySegmentName(name))
        assert b is not None and b.GetColor() == pytest.approx(a.GetColor(), abs=1e-5)  # file stores 6 digits
        ta, tb = vtk.reference(""), vtk.reference("")
        a.GetTag(a.GetTerminologyEntryTagName(), ta)
        b.GetTag(b.GetTerminologyEntryTagName(), tb)
        assert ta.get() == tb.get() != ""
    np.testing.assert_array_equal(_labelmap_from_segments(loaded, volume), lab)


def test_statistics_table_matches_numpy(scene, headless, phantom):
    from LiverSegmentationLib import scene as scene_helpers

    volume, seg, lab = _phantom_segmentation(scene, phantom)
    stats = scene_helpers.statistics(lab, volume)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode")
    scene_helpers.fill_statistics_table(table, stats)
    voxel_ml = np.prod(volume.GetSpacing()) / 1000
    liver_ml = np.count_nonzero(lab >= 1) * voxel_ml
    tumor_ml = np.count_nonzero(lab == 2) * voxel_ml
    from scipy import ndimage

    count = ndimage.label(lab == 2, np.ones((3, 3, 3)))[1]
    row = [float(table.GetTable().GetValue(0, c).ToDouble()) for c in range(4)]
    assert row == pytest.approx([liver_ml, count, tumor_ml, 100 * tumor_ml / liver_ml], rel=1e-4)
    assert [table.GetColumnName(c) for c in range(4)][0] == "Liver volume (mL)"


def test_subject_hierarchy_places_segmentation_under_the_volumes_study(scene, headless, phantom):
    from LiverSegmentationLib import scene as scene_helpers

    volume, seg, _ = _phantom_segmentation(scene, phantom)
    sh = scene.GetSubjectHierarchyNode()
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient")
    study = sh.CreateStudyItem(patient, "Study")
    vol_item = sh.GetItemByDataNode(volume) or sh.CreateItem(sh.GetSceneItemID(), volume)
    sh.SetItemParent(vol_item, study)
    scene_helpers.place_in_hierarchy(seg, volume)
    assert sh.GetItemParent(sh.GetItemByDataNode(seg)) == study


def _segmentation_nodes(scene):
    return [scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode") for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]


def _job_dirs():
    return set(Path(tempfile.gettempdir()).glob("LiverSegmentation-*"))


def test_cancel_leaves_no_nodes_and_no_temporary_files(scene, headless, phantom, tiny_model_path):
    from LiverSegmentationLib.parameters import SegmentationParameters
    from LiverSegmentationLib.process import JobState

    before = _job_dirs()
    vol, _, m = phantom
    volume = add_volume(scene, vol, m)
    job = headless.LiverSegmentationLogic().process(volume, None, SegmentationParameters(model=str(tiny_model_path)),
                                                    waitForCompletion=False)
    job.process.cancel()
    assert job.process.state is JobState.CANCELLED
    assert _segmentation_nodes(scene) == [] and _job_dirs() == before


def test_worker_error_is_reported_and_leaves_no_nodes(scene, headless, phantom, tiny_model_path):
    from LiverSegmentationLib.parameters import SegmentationParameters

    before = _job_dirs()
    vol, _, m = phantom
    volume = add_volume(scene, vol, m)
    with pytest.raises(RuntimeError, match="outside"):  # refused by the worker: a geometry check of the engine
        volume.SetSpacing(0.001, 0.001, 0.001)
        headless.LiverSegmentationLogic().process(volume, None, SegmentationParameters(model=str(tiny_model_path)))
    assert _segmentation_nodes(scene) == [] and _job_dirs() == before


def test_missing_model_and_unavailable_device_are_reported_before_the_worker_starts(scene, headless, phantom, tmp_path,
                                                                                     monkeypatch):
    from liverseg.modelfile import ModelFileError
    from LiverSegmentationLib import process
    from LiverSegmentationLib.parameters import SegmentationParameters

    monkeypatch.setattr(process.SegmentationProcess, "start", lambda self: pytest.fail("the worker was started"))
    volume = add_volume(scene, phantom[0], phantom[2])
    logic = headless.LiverSegmentationLogic()
    with pytest.raises(ModelFileError, match="neither a bundled model"):
        logic.process(volume, None, SegmentationParameters(model=str(tmp_path / "nope.safetensors")))
    with pytest.raises(ValueError, match="not available"):
        logic.process(volume, None, SegmentationParameters(device="cuda"))  # CI and this machine have no GPU


def test_allow_non_hu_reaches_the_input_check(scene, headless, phantom):
    logic = headless.LiverSegmentationLogic()
    mr_like = add_volume(scene, (phantom[0].astype(np.float32) + 1024) / 16, phantom[2], "MR-like")
    with pytest.raises(ValueError, match="Hounsfield"):
        logic.validateInput(mr_like)
    logic.validateInput(mr_like, allow_non_hu=True)


def test_wrong_input_gives_a_clear_message(scene, headless, phantom):
    vol, lab, m = phantom
    logic = headless.LiverSegmentationLogic()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    labelmap.SetAndObserveImageData(add_volume(scene, lab, m).GetImageData())
    with pytest.raises(ValueError, match="labelmap"):
        logic.validateInput(labelmap)
    with pytest.raises(ValueError, match="Hounsfield"):
        logic.validateInput(add_volume(scene, (vol.astype(np.float32) + 1024) / 16, m, "MR-like"))
    with pytest.raises(ValueError, match="not a CT volume"):
        logic.validateInput(add_volume(scene, vol[:1, :1], m, "line"))
    with pytest.raises(ValueError, match="at least 3 slices"):  # the engine's rule: the module agrees with it
        logic.validateInput(add_volume(scene, vol[:1], m, "single slice"))
    with pytest.raises(ValueError, match="Select"):
        logic.validateInput(None)
    rgb = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    with pytest.raises(ValueError, match="scalar"):
        logic.validateInput(rgb)


def test_parameter_node_is_typed_and_persistent(scene, headless, phantom):
    logic = headless.LiverSegmentationLogic()
    p = logic.getParameterNode()
    assert p.tumor is True and p.roi is True
    p.tumor = False
    assert headless.LiverSegmentationLogic().getParameterNode().tumor is False
    volume = add_volume(scene, phantom[0], phantom[2])
    p.inputVolume = volume
    assert logic.getParameterNode().inputVolume.GetID() == volume.GetID()


def test_ui_file_has_every_widget_and_parameter_the_code_uses(headless):
    ui_path = MODULE_DIR / "Resources" / "UI" / "LiverSegmentation.ui"
    tree = ET.parse(ui_path)
    names = {w.get("name") for w in tree.iter("widget")}
    bound = {}
    for w in tree.iter("widget"):
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[w.get("name")] = prop.find("string").text
    source = (MODULE_DIR / "LiverSegmentation.py").read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used and used <= names, used - names
    declared = set(re.search(r"class LiverSegmentationParameterNode:\n((?:    .*\n)+)", source).group(1).split())
    for widget, parameter in bound.items():
        assert f"{parameter}:" in declared, (widget, parameter)
    assert set(bound.values()) == {"inputVolume", "outputSegmentation", "tumor", "postprocessing", "roi"}


def test_dependency_check_asks_before_installing():
    from LiverSegmentationLib.install import ensure_dependencies, missing_packages

    class FakeInstaller:
        def __init__(self, answer):
            self.answer, self.asked, self.installed = answer, [], []

        def confirm(self, message):
            self.asked.append(message)
            return self.answer

        def install_torch(self):
            self.installed.append("torch")
            return True

        def pip_install(self, requirement):
            self.installed.append(requirement)

    present = {"scipy", "SimpleITK"}
    find = lambda name: object() if name in present else None
    no = FakeInstaller(False)
    assert ensure_dependencies(no, find) is False and no.installed == [] and "torch" in no.asked[0]

    def find_after(name):
        return object() if name in present or name in yes.installed or name == "skimage" and "scikit-image" in yes.installed or name == "safetensors" and any(r.startswith("safetensors") for r in yes.installed) else None
    yes = FakeInstaller(True)
    assert ensure_dependencies(yes, find_after) is True
    assert yes.installed[0] == "torch" and "scikit-image" in yes.installed
    assert missing_packages(lambda n: object()) == []


def _transform(scene, rotation_deg=0.0, translation=(0.0, 0.0, 0.0)):
    c, s = np.cos(np.deg2rad(rotation_deg)), np.sin(np.deg2rad(rotation_deg))
    t = np.eye(4)
    t[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    t[:3, 3] = translation
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", f"T {rotation_deg} {translation}")
    node.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(t))
    return node, t


@pytest.mark.slow
@pytest.mark.parametrize("rotation, translation", [(0.0, (30.0, -20.0, 15.0)), (25.0, (10.0, 5.0, -40.0))])
def test_segmentation_of_a_ct_under_a_transform_overlays_it_in_world_coordinates(scene, headless, sample_arrays,
                                                                                rotation, translation):
    """A registered CT (live parent transform): the result must sit on the liver as displayed, i.e. the same
    voxels as the engine's labelmap both in the CT's own frame and on a hardened copy of the CT's grid."""
    from liverseg import Segmenter
    from LiverSegmentationLib.parameters import SegmentationParameters

    array, m = sample_arrays
    volume = add_volume(scene, array, m, "registered CT")
    transform, t = _transform(scene, rotation, translation)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    logic = headless.LiverSegmentationLogic()
    seg_node = logic.process(volume, None, SegmentationParameters(device="cpu"))
    assert seg_node.GetParentTransformNode() is transform
    result = Segmenter(None, "cpu").segment(array, m)
    engine = result.labelmap
    np.testing.assert_array_equal(_labelmap_from_segments(seg_node, volume), engine)
    hardened = add_volume(scene, array, t @ m, "hardened grid")  # the CT's voxels where they are displayed
    np.testing.assert_array_equal(_labelmap_from_segments(seg_node, hardened), engine)
    # The regions the density rules took from the network's tumor are points where they are displayed, too.
    regions = result.reclassified
    assert regions, "LiTS 117: the default model's 27 mL parenchyma look-alike and four margins are expected here"
    points = logic.reviewPointsNode
    assert points.GetParentTransformNode() is transform and points.GetNumberOfControlPoints() == len(regions)
    world = [0.0, 0.0, 0.0]
    points.GetNthControlPointPositionWorld(0, world)
    assert world == pytest.approx(list((t @ [*regions[0]["centre_ras"], 1.0])[:3]), abs=1e-3)
    assert points.GetNthControlPointLabel(0) == f"{regions[0]['volume_ml']:.1f} mL"
    from liverseg.density_rules import RECLASSIFICATIONS

    assert [points.GetNthControlPointDescription(i).split(": ", 1)[1] for i in range(len(regions))] == \
        [RECLASSIFICATIONS[r["rule"]] for r in regions]
    assert {r["rule"] for r in regions} == {"parenchyma", "margin"} and points.GetNthControlPointLocked(0)


@pytest.mark.slow
def test_a_job_finishes_on_what_it_was_started_with(scene, headless, sample_arrays, phantom):
    """Changing the panel during a run (other volume, tumor option) must not move or change the result."""
    from LiverSegmentationLib.parameters import SegmentationParameters

    array, m = sample_arrays
    a = add_volume(scene, array, m, "A")
    b = add_volume(scene, phantom[0], phantom[2], "B")
    logic = headless.LiverSegmentationLogic()
    params = SegmentationParameters(device="cpu", tumor=True)
    job = logic.start(a, None, params)
    p = logic.getParameterNode()
    p.inputVolume, p.tumor = b, False  # what the user does in the panel meanwhile
    params.tumor = False
    job.process.wait(120)
    seg_node = logic.finish(job)
    assert seg_node.GetName().startswith("A ")
    assert seg_node.GetNodeReference(seg_node.GetReferenceImageGeometryReferenceRole()).GetID() == a.GetID()
    assert _labelmap_from_segments(seg_node, a).shape == array.shape
    assert job.wall_seconds > 0


@pytest.mark.slow
def test_edited_segments_are_replaced_only_when_confirmed(scene, headless, sample_arrays):
    from LiverSegmentation import EditedSegmentsError
    from LiverSegmentationLib.parameters import SegmentationParameters

    array, m = sample_arrays
    volume = add_volume(scene, array, m, "CT")
    logic = headless.LiverSegmentationLogic()
    params = SegmentationParameters(device="cpu")
    seg_node = logic.process(volume, None, params)
    assert logic.process(volume, seg_node, params) is seg_node  # unedited: replaced without asking
    liver_id = seg_node.GetSegmentation().GetSegmentIdBySegmentName("Liver")
    edited = slicer.util.arrayFromSegmentBinaryLabelmap(seg_node, liver_id, volume)
    edited[:, :10, :10] = 1  # a Segment Editor stroke
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited, seg_node, liver_id, volume)
    with pytest.raises(EditedSegmentsError, match="'Liver'"):
        logic.process(volume, seg_node, params)
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(seg_node, liver_id, volume), edited)
    logic.process(volume, seg_node, params, replaceEdited=True)
    liver_id = seg_node.GetSegmentation().GetSegmentIdBySegmentName("Liver")
    assert not slicer.util.arrayFromSegmentBinaryLabelmap(seg_node, liver_id, volume)[:, :10, :10].all()


def test_model_line_is_plain_and_the_card_is_one_hover_away(headless):
    logic = headless.LiverSegmentationLogic()
    line = logic.modelSummary("default")
    assert line.startswith("liver-unet") and "never saw" in line and "Trained on 4 CT scans" in line, line
    assert "LOCO" not in line and "_" not in line.split(":", 1)[1] and len(line) < 220, line
    assert '"architecture"' in logic.modelCard("default")
    assert logic.modelSummary("no-such-model").startswith("Model unavailable")


def test_segment_terminology_is_found_by_lookup_in_a_loaded_context(headless):
    """Segment Editor looks a segment's entry up in the context the tag names: that context must be loaded and
    hold each label's category and type (the logic loads the module's own context; Slicer's general anatomy list
    has no Neoplasm)."""
    import json

    from liverseg.labels import LABELS
    from LiverSegmentationLib.terminology import (CATEGORY_CONTEXT, CONTEXT_FILE, SEGMENTS, terminology_context)

    assert json.loads(CONTEXT_FILE.read_text()) == terminology_context()  # the shipped file is the label table
    headless.LiverSegmentationLogic()
    logic = slicer.modules.terminologies.logic()
    found = {}
    for c in range(logic.GetNumberOfCategoriesInTerminology(CATEGORY_CONTEXT)):
        category = slicer.vtkSlicerTerminologyCategory()
        assert logic.GetNthCategoryInTerminology(CATEGORY_CONTEXT, c, category)
        for t in range(logic.GetNumberOfTypesInTerminologyCategory(CATEGORY_CONTEXT, category)):
            type_ = slicer.vtkSlicerTerminologyType()
            assert logic.GetNthTypeInTerminologyCategory(CATEGORY_CONTEXT, category, t, type_)
            found[(category.GetCodeValue(), type_.GetCodeValue())] = type_.GetRecommendedDisplayRGBValue()
    for spec, entry in SEGMENTS:
        assert CATEGORY_CONTEXT in entry
        assert (spec.category.code, spec.type.code) in found, spec.name
        assert tuple(found[(spec.category.code, spec.type.code)]) == spec.color_rgb
    assert ("49755003", "108369006") in found and len(found) == len(LABELS)


@pytest.mark.slow
def test_widget_apply_progress_finish_edit_and_cancel(scene, headless, sample_arrays, monkeypatch):
    """The Widget's signal/slot wiring and names, executed: Apply -> locked inputs and progress -> finish ->
    statistics -> Edit in Segment Editor; then Apply and Cancel. Qt is replaced by qt_standins.py."""
    import sys
    import time
    import types

    import qt_standins

    monkeypatch.setitem(sys.modules, "qt", qt_standins.fake_qt_module())
    monkeypatch.setattr(slicer.util, "loadUI", qt_standins.load_ui)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", qt_standins.child_widget_variables)
    errors, selected = [], []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda message, **kw: errors.append(message))
    monkeypatch.setattr(slicer.util, "selectModule", lambda name: selected.append(name))
    editor = types.SimpleNamespace()
    editor.setSegmentationNode = lambda node: setattr(editor, "segmentation", node)
    editor.setSourceVolumeNode = lambda node: setattr(editor, "source", node)
    representation = types.SimpleNamespace(self=lambda: types.SimpleNamespace(editor=editor))
    monkeypatch.setattr(slicer.modules, "segmenteditor", types.SimpleNamespace(widgetRepresentation=lambda: representation),
                        raising=False)

    array, m = sample_arrays
    volume = add_volume(scene, array, m, "CT")
    widget = headless.LiverSegmentationWidget()
    widget.setup()
    ui = widget.ui
    assert ui.modelComboBox.currentData == "liver-unet" and "never saw" in ui.modelInfoLabel.text
    assert '"architecture"' in ui.modelInfoLabel.toolTip
    assert widget._parameterNode.inputVolume.GetID() == volume.GetID()

    ui.applyButton.emit("clicked(bool)", False)
    assert ui.applyButton.text == "Cancel" and ui.progressBar.visible
    assert not ui.inputVolumeSelector.enabled and not ui.modelComboBox.enabled and not ui.roiCheckBox.enabled
    statuses = []
    deadline = time.monotonic() + 120
    while widget._job is not None and time.monotonic() < deadline:
        time.sleep(0.05)
        widget._timer.fire()
        statuses.append(ui.statusLabel.text)
    assert errors == [], errors
    assert ui.applyButton.text == "Apply" and ui.inputVolumeSelector.enabled and not ui.progressBar.visible
    assert ui.statusLabel.text.startswith("Done in") and "warning(s): see Log" in ui.statusLabel.text
    # LiTS 117: the density rules' override is in the Log, with the point list that marks it
    assert any("density rules" in line for line in ui.logTextEdit.lines)
    assert any("regions to review" in line and "Markups module" in line for line in ui.logTextEdit.lines)
    assert not ui.logCollapsibleButton.collapsed
    shown = [t for t in statuses if t]
    assert shown and "" not in statuses[statuses.index(shown[0]):]  # once a message is shown, it is never blanked
    assert ui.statisticsTableWidget.cells[(0, 0)] == "Liver volume (mL)"
    assert float(ui.statisticsTableWidget.cells[(0, 1)]) > 100
    assert widget._parameterNode.outputSegmentation is None  # the next Apply makes a new segmentation
    result = widget._lastSegmentation
    assert result is not None and result.GetSegmentation().GetSegmentIdBySegmentName("Liver")

    ui.editInSegmentEditorButton.emit("clicked(bool)", False)
    assert selected == ["SegmentEditor"] and editor.segmentation is result and editor.source.GetID() == volume.GetID()

    assert ui.saveStatisticsButton.enabled and not ui.exportDicomSegButton.enabled  # this CT is not from DICOM
    monkeypatch.setattr(slicer.util, "mainWindow", lambda: None, raising=False)
    qt_standins.FakeFileDialog.answer = str(Path(tempfile.mkdtemp()) / "stats.csv")
    ui.saveStatisticsButton.emit("clicked(bool)", False)
    assert errors == [] and "Statistics saved" in ui.statusLabel.text
    assert Path(qt_standins.FakeFileDialog.answer).read_text().startswith('"Liver volume (mL)"')

    # My training cases: the folder is remembered; an unedited result is saved only after a yes
    asked = []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **kw: asked.append(text) or len(asked) > 1,
                        raising=False)
    cases = Path(tempfile.mkdtemp())
    ui.casesFolderPathLineEdit.currentPath = str(cases)
    ui.casesFolderPathLineEdit.emit("currentPathChanged(QString)", str(cases))
    assert qt_standins.FakeSettings().value("LiverSegmentation/CasesFolder") == str(cases)
    assert ui.addCaseButton.enabled
    ui.addCaseButton.emit("clicked(bool)", False)  # "not edited: add anyway?" -> Cancel
    assert len(asked) == 1 and "not edited" in asked[0] and not list(cases.iterdir())
    ui.addCaseButton.emit("clicked(bool)", False)  # -> OK
    assert errors == [] and len(list(cases.glob("*_image.nii.gz"))) == 1 and "1 case(s)" in ui.casesStatusLabel.text

    before = _segmentation_nodes(scene)
    ui.applyButton.emit("clicked(bool)", False)
    ui.applyButton.emit("clicked(bool)", False)  # the same button is Cancel now
    assert ui.statusLabel.text == "Cancelled." and ui.applyButton.text == "Apply" and widget._job is None
    assert _segmentation_nodes(scene) == before and not widget._timer.active


def test_seg_nrrd_from_the_engine_opens_in_slicer_with_names_colours_terminology_and_voxels(headless, phantom, tmp_path):
    """`liverseg segment -o x.seg.nrrd` writes Slicer's segmentation format: slicer-core's reader finds the two
    segments with the label table's names, colours and terminology, Liver including the tumors."""
    from liverseg.io import ImageData, write_labelmap
    from liverseg.labels import LABELS, terminology_entry

    vol, lab, m = phantom
    path = write_labelmap(tmp_path / "result.seg.nrrd", lab, ImageData.from_array(vol, m))
    seg_node = slicer.modules.segmentations.logic().LoadSegmentationFromFile(str(path), False, "loaded")
    segmentation = seg_node.GetSegmentation()
    reference = add_volume(slicer.mrmlScene, vol, m, "reference")
    assert segmentation.GetNumberOfSegments() == len(LABELS)
    for spec in LABELS.values():
        segment_id = segmentation.GetSegmentIdBySegmentName(spec.name)
        segment = segmentation.GetSegment(segment_id)
        assert segment is not None, spec.name
        assert segment.GetColor() == pytest.approx(spec.color_float, abs=1e-5)
        tag = vtk.reference("")
        assert segment.GetTag(segment.GetTerminologyEntryTagName(), tag) and tag.get() == terminology_entry(spec)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg_node, segment_id, reference) > 0  # in the CT's grid
        np.testing.assert_array_equal(mask, lab >= 1 if spec.value == 1 else lab == 2)


def test_statistics_are_saved_as_csv_through_slicers_table_storage(scene, headless, phantom, tmp_path):
    import csv

    from LiverSegmentationLib import scene as scene_helpers

    logic = headless.LiverSegmentationLogic()
    with pytest.raises(RuntimeError, match="no statistics"):
        logic.saveStatistics(str(tmp_path / "s.csv"))
    volume, seg, lab = _phantom_segmentation(scene, phantom)
    stats = scene_helpers.statistics(lab, volume)
    logic.statisticsTableNode = scene.AddNewNodeByClass("vtkMRMLTableNode")
    scene_helpers.fill_statistics_table(logic.statisticsTableNode, stats)
    logic.saveStatistics(str(tmp_path / "s.csv"))
    rows = list(csv.reader((tmp_path / "s.csv").open()))
    assert rows[0] == [title for _, title in scene_helpers.STATISTICS_COLUMNS]
    assert [float(v) for v in rows[1]] == pytest.approx([float(stats[k]) for k, _ in scene_helpers.STATISTICS_COLUMNS], rel=1e-5)
    with pytest.raises(ValueError, match=".csv"):
        logic.saveStatistics(str(tmp_path / "s.txt"))


class _RecordingSegExporter:
    """Stand-in for Slicer's DICOMSegmentationPlugin (QuantitativeReporting; not in slicer-core): the same
    ``examineForExport(item) -> exportables`` / ``export(exportables) -> error text`` interface, writing a file."""

    def __init__(self, error="", write=True):
        self.error, self.write, self.items, self.exportables = error, write, [], []

    def examineForExport(self, item):
        import types

        self.items.append(item)
        tags = {}
        exportable = types.SimpleNamespace(directory="", tags=tags, setTag=lambda k, v: tags.__setitem__(k, v))
        self.exportables.append(exportable)
        return [exportable]

    def export(self, exportables):
        if self.write:
            for e in exportables:
                (Path(e.directory) / "subject_hierarchy_export.SEG.dcm").write_bytes(b"DICM")
        return self.error


def test_dicom_seg_export_goes_through_slicers_exporter_for_dicom_cts_only(scene, headless, phantom, tmp_path):
    logic = headless.LiverSegmentationLogic()
    volume, seg, _ = _phantom_segmentation(scene, phantom)
    exporter = _RecordingSegExporter()
    with pytest.raises(ValueError, match="not loaded from the DICOM database"):
        logic.exportDicomSeg(seg, volume, str(tmp_path), plugin=exporter)
    assert not exporter.items
    volume.SetAttribute("DICOM.instanceUIDs", "1.2.3.1 1.2.3.2")
    sh = scene.GetSubjectHierarchyNode()
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient"), "Study")
    sh.SetItemParent(sh.GetItemByDataNode(volume) or sh.CreateItem(sh.GetSceneItemID(), volume), study)
    files = logic.exportDicomSeg(seg, volume, str(tmp_path / "out"), plugin=exporter)
    item = sh.GetItemByDataNode(seg)
    assert exporter.items == [item] and sh.GetItemParent(item) == study  # a SEG belongs to the CT's study
    assert sh.GetItemAttribute(item, "DICOM.ReferencedInstanceUIDs") == "1.2.3.1 1.2.3.2"
    assert exporter.exportables[0].directory == str(tmp_path / "out") and files == [str(tmp_path / "out" / "subject_hierarchy_export.SEG.dcm")]
    with pytest.raises(RuntimeError, match="export failed: no frames"):
        logic.exportDicomSeg(seg, volume, str(tmp_path / "o2"), plugin=_RecordingSegExporter(error="no frames"))
    with pytest.raises(RuntimeError, match="wrote no file"):
        logic.exportDicomSeg(seg, volume, str(tmp_path / "o3"), plugin=_RecordingSegExporter(write=False))


def test_add_training_case_saves_the_corrected_segments_with_provenance(scene, headless, phantom, tmp_path):
    import json

    from liverseg.cases import list_cases
    from liverseg.io import read_image

    from LiverSegmentation import MODEL_ATTRIBUTE

    volume, seg, lab = _phantom_segmentation(scene, phantom)
    seg.SetAttribute(MODEL_ATTRIBUTE, "liver-unet")
    logic = headless.LiverSegmentationLogic()
    # the user removes the tumor from the liver segment's top slice, as an edit in Segment Editor would
    liver_id = seg.GetSegmentation().GetSegmentIdBySegmentName("Liver")
    edited = (lab >= 1).astype(np.uint8)
    top = np.nonzero(edited.any(axis=(1, 2)))[0].max()
    edited[top] = 0
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited, seg, liver_id, volume)
    path = Path(logic.addTrainingCase(volume, seg, str(tmp_path), note="removed the top slice"))
    assert list_cases(tmp_path) == [path.name[: -len("_image.nii.gz")]]
    expected = np.where(lab == 2, 2, edited).astype(np.uint8)
    np.testing.assert_array_equal(read_image(str(path).replace("_image", "_label")).array, expected)
    np.testing.assert_array_equal(read_image(path).array, slicer.util.arrayFromVolume(volume))
    meta = json.loads(Path(str(path).replace("_image.nii.gz", "_meta.json")).read_text())
    assert meta["model"] == "liver-unet" and meta["edited_segments"] == ["Liver"] and meta["note"] == "removed the top slice"
    logic.addTrainingCase(volume, seg, str(tmp_path))
    assert len(list_cases(tmp_path)) == 2  # a second save is a new case, never an overwrite


@pytest.mark.slow
def test_finetune_runs_in_the_background_and_its_model_loads_with_the_comparison(scene, headless, phantom,
                                                                                   tiny_model_path, tmp_path):
    from liverseg.benchmark import phantom_ijk_to_ras, synthetic_case
    from liverseg.cases import add_case
    from liverseg.io import ImageData
    from LiverSegmentationLib.process import JobState

    logic = headless.LiverSegmentationLogic()
    with pytest.raises(ValueError, match="no training cases"):
        logic.startFinetune(str(tmp_path), str(tiny_model_path), str(tmp_path / "m.safetensors"))
    for seed in (1, 2):
        vol, lab = synthetic_case((24, 96, 96), (5.0, 3.0, 3.0), seed=seed, tumors=1)
        add_case(ImageData.from_array(vol, phantom_ijk_to_ras((5.0, 3.0, 3.0))), lab.astype(np.uint8), tmp_path,
                 f"case{seed}", {})
    process = logic.startFinetune(str(tmp_path), str(tiny_model_path), str(tmp_path / "m.safetensors"), epochs=1,
                                  samples=8)
    assert process.wait(300) is JobState.SUCCEEDED, process.error
    assert process.progress == 1.0 and process.message.startswith("Done")
    report = logic.finishFinetune(process)
    assert report["comparison"]["method"] == "leave-one-case-out" and len(report["comparison"]["cases"]) == 2
    summary = logic.modelSummary(str(tmp_path / "m.safetensors"))
    assert "Fine-tuned from tiny-test" in summary and report["comparison"]["verdict"] in summary
    # the new model runs in the module like any model file (a 2-case, 1-epoch model may find nothing: then it says so)
    from LiverSegmentationLib.parameters import SegmentationParameters

    vol, _, m = phantom
    try:
        node = logic.process(add_volume(scene, vol, m), None,
                             SegmentationParameters(model=str(tmp_path / "m.safetensors"), postprocessing=False))
        assert node.GetSegmentation().GetSegmentIdBySegmentName("Liver")
    except RuntimeError as exc:
        assert "No liver was found" in str(exc)
    # cancel stops the whole process tree and writes no model
    process = logic.startFinetune(str(tmp_path), str(tiny_model_path), str(tmp_path / "c.safetensors"), epochs=50)
    time.sleep(3)
    process.cancel()
    assert process.state is JobState.CANCELLED and not (tmp_path / "c.safetensors").exists()
    with pytest.raises(RuntimeError, match="cancelled"):
        logic.finishFinetune(process)
