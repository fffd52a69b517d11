"""Turning the engine's labelmap into Slicer nodes: segments with terminology, geometry, 3D surface, hierarchy,
and the statistics table. Everything here is plain MRML, testable with slicer-core."""
from __future__ import annotations

import numpy as np

from liverseg.labels import segment_mask
from liverseg.metrics import labelmap_statistics

from .terminology import SEGMENTS

FINGERPRINT_TAG = "LiverSegmentation.Fingerprint"  # what the module wrote into a segment, to notice later edits
STATISTICS_COLUMNS = [("liver_volume_ml", "Liver volume (mL)"), ("tumor_count", "Tumor count"),
                      ("tumor_volume_ml", "Tumor volume (mL)"), ("tumor_burden_percent", "Tumor burden (%)")]


def ijk_to_ras(volume_node) -> np.ndarray:
    """The volume's own 4x4 IJK-to-RAS matrix (without parent transforms) as numpy."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def voxel_volume_mm3(volume_node) -> float:
    return float(np.prod(volume_node.GetSpacing()))


def fill_segmentation(segmentation_node, volume_node, labelmap: np.ndarray, include_tumor: bool = True) -> dict[str, str]:
    """Put 'Liver' and 'Liver tumor' segments from a [k, j, i] labelmap on the volume's grid into the node.

    Existing segments with these names are replaced (other segments are kept). Returns name -> segment id.
    """
    import slicer

    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    segmentation = segmentation_node.GetSegmentation()
    ids = {}
    for spec, entry in SEGMENTS:
        old = segmentation.GetSegmentIdBySegmentName(spec.name)
        if old:
            segmentation.RemoveSegment(old)
        if spec.value != 1 and not include_tumor:
            continue
        mask = segment_mask(labelmap, spec)
        segment_id = segmentation.AddEmptySegment(spec.name.replace(" ", "_"), spec.name, spec.color_float)
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), segmentation_node, segment_id, volume_node)
        segment = segmentation.GetSegment(segment_id)
        segment.SetTag(segment.GetTerminologyEntryTagName(), entry)
        segment.SetTag(FINGERPRINT_TAG, segment_fingerprint(segmentation_node, segment_id))
        ids[spec.name] = segment_id
    segmentation_node.CreateClosedSurfaceRepresentation()
    return ids


def add_result_segmentation(scene, volume_node, labelmap: np.ndarray, include_tumor: bool = True):
    """A new segmentation node named after the CT, holding the result and shown in 3D. It is put under the CT's
    own parent transform BEFORE it is filled: the labelmap is then copied voxel for voxel in the CT's frame (filling
    first and moving it afterwards would apply the transform twice). Nothing stays in the scene on failure."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                   scene.GenerateUniqueName(f"{volume_node.GetName()} liver segmentation"))
    node.CreateDefaultDisplayNodes()
    transform = volume_node.GetParentTransformNode()
    node.SetAndObserveTransformNodeID(transform.GetID() if transform is not None else None)
    try:
        fill_segmentation(node, volume_node, labelmap, include_tumor=include_tumor)
        show_surfaces(node)
    except Exception:
        scene.RemoveNode(node)
        raise
    return node


def add_review_points(scene, volume_node, regions: list[dict]):
    """A locked point list "<CT> regions to review" with one point per region the network called tumor and a
    density rule reported otherwise (``result.reclassified``: centre in the CT's own RAS frame), so the reader can
    jump to each one from the Markups module; under the CT's parent transform like the segmentation. None when
    there is nothing to review."""
    from liverseg.density_rules import RECLASSIFICATIONS

    if not regions:
        return None
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode",
                                   scene.GenerateUniqueName(f"{volume_node.GetName()} regions to review"))
    node.CreateDefaultDisplayNodes()
    transform = volume_node.GetParentTransformNode()
    node.SetAndObserveTransformNodeID(transform.GetID() if transform is not None else None)
    for region in regions:
        i = node.AddControlPoint(*[float(v) for v in region["centre_ras"]], f"{region['volume_ml']:.1f} mL")
        node.SetNthControlPointDescription(i, f"mean {region['mean_hu']:.0f} HU: {RECLASSIFICATIONS[region['rule']]}")
        node.SetNthControlPointLocked(i, True)
    return node


def show_surfaces(segmentation_node) -> None:
    """Show the segments as closed surfaces in the 3D view (as Segment Editor's "Show 3D" does)."""
    display = segmentation_node.GetDisplayNode()
    if display is not None:
        display.SetPreferredDisplayRepresentationName3D("Closed surface")
        display.SetVisibility3D(True)


def segment_fingerprint(segmentation_node, segment_id: str) -> str:
    """A hash of a segment's voxels (its own label in the internal labelmap): changes with any edit."""
    import hashlib

    import slicer

    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    array = slicer.util.arrayFromSegmentInternalBinaryLabelmap(segmentation_node, segment_id)
    mask = np.ascontiguousarray(array == segment.GetLabelValue()) if array is not None else np.zeros(0, bool)
    return hashlib.sha1(mask.tobytes() + str(mask.shape).encode()).hexdigest()


def edited_segments(segmentation_node) -> list[str]:
    """Names of the module's segments in this node that are not as the module wrote them (edited by the user,
    or made by someone else): replacing them would destroy work, so the caller must ask first."""
    import vtk

    segmentation = segmentation_node.GetSegmentation()
    edited = []
    for spec, _ in SEGMENTS:
        segment_id = segmentation.GetSegmentIdBySegmentName(spec.name)
        if not segment_id:
            continue
        stored = vtk.reference("")
        segment = segmentation.GetSegment(segment_id)
        if not segment.GetTag(FINGERPRINT_TAG, stored) or stored.get() != segment_fingerprint(segmentation_node, segment_id):
            edited.append(spec.name)
    return edited


def labelmap_from_segmentation(segmentation_node, volume_node) -> np.ndarray:
    """The "Liver" and "Liver tumor" segments as a [k, j, i] labelmap (0/1/2) on the volume's grid (tumor over
    liver; tumor voxels count as liver too, as everywhere in the project)."""
    import slicer

    segmentation = segmentation_node.GetSegmentation()
    labelmap = np.zeros(slicer.util.arrayFromVolume(volume_node).shape, np.uint8)
    for spec, _ in SEGMENTS:
        segment_id = segmentation.GetSegmentIdBySegmentName(spec.name)
        if segment_id:
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, volume_node)
            labelmap[mask > 0] = spec.value
    return labelmap


def place_in_hierarchy(segmentation_node, volume_node) -> None:
    """Put the segmentation under the same study (parent item) as its source volume."""
    sh = segmentation_node.GetScene().GetSubjectHierarchyNode()
    if sh is None:
        return
    volume_item = sh.GetItemByDataNode(volume_node)
    if not volume_item:
        return
    seg_item = sh.GetItemByDataNode(segmentation_node) or sh.CreateItem(sh.GetSceneItemID(), segmentation_node)
    sh.SetItemParent(seg_item, sh.GetItemParent(volume_item))


def statistics(labelmap: np.ndarray, volume_node) -> dict:
    return labelmap_statistics(labelmap, voxel_volume_mm3(volume_node))


def write_table_csv(table_node, path) -> None:
    """A table node as CSV through Slicer's own table storage (``slicer.util.saveNode`` is this plus the
    application's IO manager, which slicer-core and the web app do not have)."""
    import slicer

    storage = slicer.vtkMRMLTableStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(table_node):
        raise RuntimeError(f"Could not write {path}; choose another folder.")


def fill_statistics_table(table_node, stats: dict) -> None:
    """One row: liver volume (mL), tumor count, total tumor volume (mL), tumor burden (%)."""
    import slicer

    values = np.array([[float(stats[key]) for key, _ in STATISTICS_COLUMNS]])
    slicer.util.updateTableFromArray(table_node, values, [title for _, title in STATISTICS_COLUMNS])
