"""Overlay pictures (PNG) of a segmentation on its CT: CT | reference | prediction | overlay panels.

Used by ``make demo``, ``liverseg overlay`` and Training's evaluation report. Rendering is plain numpy; the PNG is
written with scikit-image. Slices are shown in the radiological convention (canonical orientation).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from .labels import LABELS, LIVER, TUMOR
from .orientation import canonical_transform, to_canonical
from .preprocessing import normalize_hu


def _rgb(ct_slice: np.ndarray, window=(-160.0, 240.0)) -> np.ndarray:
    g = normalize_hu(ct_slice, window)
    return np.repeat(g[..., None], 3, axis=-1)


def _fill(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    out = rgb.copy()
    for value in (LIVER, TUMOR):
        mask = labels == value if value == TUMOR else labels >= LIVER
        colour = np.array(LABELS[value].color_float)
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
    return out


def _outline(rgb: np.ndarray, labels: np.ndarray, colour=(1.0, 1.0, 0.0)) -> np.ndarray:
    out = rgb.copy()
    for mask in (labels >= LIVER, labels == TUMOR):
        edge = mask & ~ndimage.binary_erosion(mask)
        out[edge] = colour
    return out


def _resample_rows(img: np.ndarray, row_mm: float, col_mm: float) -> np.ndarray:
    """Stretch rows so pixels look square (coronal views of thick-slice CT)."""
    factor = row_mm / col_mm
    if abs(factor - 1) < 0.05:
        return img
    idx = np.clip((np.arange(int(round(img.shape[0] * factor))) / factor).astype(int), 0, img.shape[0] - 1)
    return img[idx]


def render_overlay(ct: np.ndarray, ijk_to_ras: np.ndarray, prediction: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """An RGB uint8 picture: axial slice with the most liver (top) and coronal slice through it (bottom)."""
    t = canonical_transform(ct.shape, ijk_to_ras)
    ct_c, pred_c = to_canonical(ct, t), to_canonical(prediction, t)
    ref_c = to_canonical(reference, t) if reference is not None else None
    basis = ref_c if ref_c is not None else pred_c
    liver = basis >= LIVER
    z = int(np.argmax(liver.sum(axis=(1, 2)))) if liver.any() else ct_c.shape[0] // 2
    y = int(np.argmax(liver.sum(axis=(0, 2)))) if liver.any() else ct_c.shape[1] // 2
    rows = []
    for view in ("axial", "coronal"):
        if view == "axial":
            pick = lambda a: a[z]
        else:
            pick = lambda a: _resample_rows(a[::-1, y, :], t.spacing[0], t.spacing[2])
        base = _rgb(pick(ct_c).astype(np.float32))
        panels = [base]
        if ref_c is not None:
            panels.append(_fill(base, pick(ref_c)))
        panels.append(_fill(base, pick(pred_c)))
        over = _fill(base, pick(pred_c))
        panels.append(_outline(over, pick(ref_c)) if ref_c is not None else over)
        rows.append(np.concatenate(panels, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).astype(np.uint8)


def save_overlay(path: str | Path, ct: np.ndarray, ijk_to_ras: np.ndarray, prediction: np.ndarray,
                 reference: np.ndarray | None = None, overwrite: bool = True) -> Path:
    """Write the overlay PNG atomically (checked complete before it replaces anything)."""
    from skimage.io import imsave

    from .outputs import verify_png, write_atomic

    img = render_overlay(ct, ijk_to_ras, prediction, reference)
    if img.shape[0] < 384:  # small volumes: enlarge for viewing
        k = int(np.ceil(384 / img.shape[0]))
        img = img.repeat(k, axis=0).repeat(k, axis=1)
    return write_atomic(path, lambda tmp: imsave(str(tmp), img, check_contrast=False), verify_png,
                        overwrite=overwrite)
