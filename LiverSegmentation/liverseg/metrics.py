"""Segmentation metrics, spacing-aware, used by the CLI, the Slicer module and training.

Conventions (as LiTS reports them): liver is scored as label >= 1 (liver including tumors), tumor as label == 2.
When both masks are empty, overlap scores are 1 and distances 0; when only one is empty, distances are inf.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .labels import LIVER, TUMOR


def _confusion(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int, int]:
    pred, ref = pred.astype(bool), ref.astype(bool)
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred & ~ref))
    fn = int(np.count_nonzero(~pred & ref))
    tn = int(pred.size - tp - fp - fn)
    return tp, fp, fn, tn


def _ratio(num: float, den: float, empty: float = 1.0) -> float:
    return float(num) / den if den else empty


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    tp, fp, fn, _ = _confusion(pred, ref)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    tp, fp, fn, _ = _confusion(pred, ref)
    return _ratio(tp, tp + fp + fn)


def precision(pred, ref) -> float:
    tp, fp, _, _ = _confusion(pred, ref)
    return _ratio(tp, tp + fp)


def recall(pred, ref) -> float:
    tp, _, fn, _ = _confusion(pred, ref)
    return _ratio(tp, tp + fn)


def specificity(pred, ref) -> float:
    _, fp, _, tn = _confusion(pred, ref)
    return _ratio(tn, tn + fp)


def accuracy(pred, ref) -> float:
    tp, fp, fn, tn = _confusion(pred, ref)
    return _ratio(tp + tn, tp + fp + fn + tn)


def relative_volume_difference(pred, ref) -> float:
    """(V_pred - V_ref) / V_ref; signed, so over-segmentation is positive."""
    vp, vr = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    if vr == 0:
        return 0.0 if vp == 0 else math.inf
    return (vp - vr) / vr


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of pred to ref's surface, and back; computed on the joint bbox."""
    pred, ref = pred.astype(bool), ref.astype(bool)
    box = bounding_box(pred | ref, (1, 1, 1))
    p, r = _surface(pred[box]), _surface(ref[box])
    dt_r = ndimage.distance_transform_edt(~r, sampling=spacing)
    dt_p = ndimage.distance_transform_edt(~p, sampling=spacing)
    return dt_r[p], dt_p[r]


def surface_distance_metrics(pred, ref, spacing) -> tuple[float, float]:
    """(HD95, ASSD) in mm from one pair of distance transforms (each is the expensive part).

    Convention: a mask's surface is its voxels with a face-neighbour (6-connectivity) outside the mask; distances
    run from each surface voxel centre of one mask to the nearest surface voxel centre of the other, in mm.
    HD95 is the larger of the two directed 95th percentiles; ASSD the mean over both directed sets pooled.
    Both are 0 when both masks are empty and inf when only one is."""
    if not np.any(pred) and not np.any(ref):
        return 0.0, 0.0
    if not np.any(pred) or not np.any(ref):
        return math.inf, math.inf
    a, b = surface_distances(pred, ref, spacing)
    return float(max(np.percentile(a, 95), np.percentile(b, 95))), float((a.sum() + b.sum()) / (len(a) + len(b)))


def hd95(pred, ref, spacing) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (see :func:`surface_distance_metrics`)."""
    return surface_distance_metrics(pred, ref, spacing)[0]


def assd(pred, ref, spacing) -> float:
    """Average symmetric surface distance in mm (see :func:`surface_distance_metrics`)."""
    return surface_distance_metrics(pred, ref, spacing)[1]


_LESION_CONNECTIVITY = np.ones((3, 3, 3), bool)  # lesions touching at a corner are one lesion
MATCH_IOU = 0.5  # the stricter detection rule: the lesion and the predicted lesions touching it overlap this much


def reference_lesion_matches(pred: np.ndarray, ref: np.ndarray) -> list[tuple[tuple[slice, ...], np.ndarray, float]]:
    """Each reference lesion (26-connected) as (bounding slices, its mask there, IoU with the predicted lesions that
    touch it); IoU 0 when none touches it.

    Why the IoU and not only "touched": one large predicted region that touches many small lesions counts them all as
    found, which flatters a model that paints the liver's edge; the IoU counts a lesion only when it is segmented."""
    pred = pred.astype(bool)
    return _matches(pred, ndimage.label(pred, _LESION_CONNECTIVITY)[0], ref)


def _matches(pred: np.ndarray, pred_lab: np.ndarray, ref: np.ndarray) -> list[tuple[tuple[slice, ...], np.ndarray, float]]:
    ref_lab, _ = ndimage.label(ref, _LESION_CONNECTIVITY)
    pred_sizes = np.bincount(pred_lab.ravel())
    out = []
    for i, sl in enumerate(ndimage.find_objects(ref_lab), start=1):
        lesion = ref_lab[sl] == i
        touching = np.unique(pred_lab[sl][lesion])
        touching = touching[touching > 0]
        inter = int(np.count_nonzero(lesion & pred[sl]))
        union = int(lesion.sum()) + int(pred_sizes[touching].sum()) - inter
        out.append((sl, lesion, inter / union if touching.size else 0.0))
    return out


def lesion_detection(pred: np.ndarray, ref: np.ndarray) -> dict:
    """Lesion-wise detection. A reference lesion is "detected" when a predicted lesion touches it and
    "detected_iou50" when its IoU with the predicted lesions touching it exceeds 0.5 (:data:`MATCH_IOU`); a
    predicted lesion is a true one when it touches a reference lesion."""
    pred, ref = pred.astype(bool), ref.astype(bool)
    pred_lab, n_pred = ndimage.label(pred, _LESION_CONNECTIVITY)
    matches = _matches(pred, pred_lab, ref)
    found = sum(iou > 0 for _, _, iou in matches)
    matched = sum(iou > MATCH_IOU for _, _, iou in matches)
    true_pred = int(np.count_nonzero(np.unique(pred_lab[ref])))  # the predicted lesions with a reference voxel
    n_ref = len(matches)
    return {
        "reference_lesions": n_ref, "predicted_lesions": int(n_pred), "detected": int(found),
        "detected_iou50": int(matched), "detection_recall": _ratio(found, n_ref),
        "detection_recall_iou50": _ratio(matched, n_ref), "detection_precision": _ratio(true_pred, n_pred),
    }


def binary_metrics(pred: np.ndarray, ref: np.ndarray, spacing) -> dict:
    """All voxel and surface metrics for one structure."""
    tp, fp, fn, tn = _confusion(pred, ref)
    hd, asd = surface_distance_metrics(pred, ref, spacing)
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn), "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn), "rvd": relative_volume_difference(pred, ref),
        "hd95_mm": hd, "assd_mm": asd,
        "tp": tp, "fp": fp, "fn": fn,
    }


def evaluate_labelmaps(pred: np.ndarray, ref: np.ndarray, spacing, tumor: bool = True) -> dict:
    """Liver (label >= 1) and tumor (label 2) metrics for one case; ``spacing`` follows the array's axis order."""
    if pred.shape != ref.shape:
        raise ValueError(f"Prediction {pred.shape} and reference {ref.shape} have different shapes.")
    out = {"liver": binary_metrics(pred >= LIVER, ref >= LIVER, spacing)}
    if tumor:
        out["tumor"] = binary_metrics(pred == TUMOR, ref == TUMOR, spacing)
        out["tumor"].update(lesion_detection(pred == TUMOR, ref == TUMOR))
    return out


def global_dice(cases: list[dict], structure: str) -> float:
    """Dice over a whole set (all voxels pooled), as LiTS reports beside the per-case mean."""
    tp = sum(c[structure]["tp"] for c in cases)
    fp = sum(c[structure]["fp"] for c in cases)
    fn = sum(c[structure]["fn"] for c in cases)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def json_safe(obj):
    """Metrics as plain JSON: numpy scalars become Python numbers, inf/NaN (e.g. HD95 of an empty mask) become None."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def bounding_box(mask: np.ndarray, margin: tuple[int, ...] | None = None) -> tuple[slice, ...]:
    """The slices that hold every set voxel of a non-empty ``mask``, widened by ``margin`` voxels per axis (within
    the array). Why: labelling or morphology on a whole CT costs ~0.3 s per pass on 512 x 512 x 200 when the
    voxels that matter fill a small box."""
    margin = margin or (0,) * mask.ndim
    idx = [np.nonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))[0] for ax in range(mask.ndim)]
    return tuple(slice(max(0, int(i.min()) - m), min(n, int(i.max()) + m + 1)) for i, m, n in zip(idx, margin, mask.shape))


def labelmap_statistics(labelmap: np.ndarray, voxel_mm3: float) -> dict:
    """Liver volume (tumors included), tumor count and volume, tumor burden: what the GUI and CLI summarise."""
    liver_vox = int(np.count_nonzero(labelmap >= LIVER))
    tumor_mask = labelmap == TUMOR
    tumor_vox = int(np.count_nonzero(tumor_mask))
    count = int(ndimage.label(tumor_mask[bounding_box(tumor_mask)], _LESION_CONNECTIVITY)[1]) if tumor_vox else 0
    return {
        "liver_volume_ml": liver_vox * voxel_mm3 / 1000.0,
        "tumor_count": count,
        "tumor_volume_ml": tumor_vox * voxel_mm3 / 1000.0,
        "tumor_burden_percent": 100.0 * tumor_vox / liver_vox if liver_vox else 0.0,
    }


def longest_axial_diameter_mm(mask: np.ndarray, spacing_yx: tuple[float, float]) -> float:
    """The largest lesion's longest in-plane diameter (mm), as RECIST measures it: over every 3D lesion and every
    axial slice of it, the largest distance between two points of the lesion's outline in that slice (pixel
    centres, so a one-pixel lesion measures 0). ``mask`` is [slice, row, column] on the canonical axial grid."""
    from scipy.spatial.distance import pdist

    best = 0.0
    if not mask.any():
        return best
    labels, _ = ndimage.label(mask[bounding_box(mask)], _LESION_CONNECTIVITY)
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        for k in range(sl[0].start, sl[0].stop):
            region = labels[k, sl[1], sl[2]] == i
            if not region.any():
                continue
            outline = region & ~ndimage.binary_erosion(region)
            points = np.argwhere(outline) * np.asarray(spacing_yx, float)
            if len(points) > 2000:  # plenty for a diameter; keeps pdist small on huge lesions
                points = points[np.linspace(0, len(points) - 1, 2000).astype(int)]
            if len(points) > 1:
                best = max(best, float(pdist(points).max()))
    return best
