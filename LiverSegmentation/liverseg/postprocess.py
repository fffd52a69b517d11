"""Small, pure postprocessing functions on binary masks, parameterised in millimetres, not voxels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .labels import BACKGROUND, LIVER, TUMOR


@dataclass
class PostprocessConfig:
    """Each step can be switched off; sizes are physical so results do not depend on the scan's voxel size."""

    enabled: bool = True
    largest_liver_component: bool = True
    fill_liver_holes: bool = True
    liver_closing_mm: float = 2.0  # 0 disables
    liver_opening_mm: float = 0.0  # 0 disables
    tumor_inside_liver: bool = True
    tumor_liver_dilation_mm: float = 3.0
    min_tumor_mm3: float = 30.0  # tumor components smaller than this are removed (0 keeps all)


def ellipsoid(radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """A boolean ball of ``radius_mm`` on an anisotropic voxel grid."""
    r = [max(0, int(np.floor(radius_mm / s))) for s in spacing]
    grids = np.ogrid[tuple(slice(-n, n + 1) for n in r)]
    dist = sum((g * s / radius_mm) ** 2 for g, s in zip(grids, spacing))
    return dist <= 1.0


def _bbox(mask: np.ndarray, margin: tuple[int, int, int]) -> tuple[slice, ...]:
    idx = [np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0] for ax in range(3)]
    return tuple(slice(max(0, i.min() - m), min(n, i.max() + m + 1)) for i, m, n in zip(idx, margin, mask.shape))


def _in_bbox(mask: np.ndarray, radius_vox: tuple[int, int, int], op) -> np.ndarray:
    """Apply ``op`` on the mask's bounding box (plus a margin) only: morphology on a whole CT is wasted work."""
    if not mask.any():
        return mask
    box = _bbox(mask, tuple(r + 1 for r in radius_vox))
    out = np.zeros_like(mask)
    out[box] = op(mask[box])
    return out


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component (empty stays empty)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def remove_small_components(mask: np.ndarray, spacing: tuple[float, float, float], min_mm3: float) -> np.ndarray:
    """Drop components smaller than ``min_mm3`` cubic millimetres."""
    if min_mm3 <= 0 or not mask.any():
        return mask.astype(bool)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    voxel_mm3 = float(np.prod(spacing))
    sizes = np.bincount(labels.ravel()) * voxel_mm3
    keep = sizes >= min_mm3
    keep[0] = False
    return keep[labels]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill 3D cavities and, slice by slice, holes that touch the volume only through other slices."""
    filled = ndimage.binary_fill_holes(mask)
    for z in np.nonzero(filled.any(axis=(1, 2)))[0]:
        filled[z] = ndimage.binary_fill_holes(filled[z])
    return filled


def binary_closing_mm(mask: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    if radius_mm <= 0:
        return mask
    st = ellipsoid(radius_mm, spacing)
    return _in_bbox(mask, tuple(s // 2 for s in st.shape), lambda m: ndimage.binary_closing(m, st, border_value=0))


def binary_opening_mm(mask: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    if radius_mm <= 0:
        return mask
    st = ellipsoid(radius_mm, spacing)
    return _in_bbox(mask, tuple(s // 2 for s in st.shape), lambda m: ndimage.binary_opening(m, st))


def binary_dilation_mm(mask: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    if radius_mm <= 0:
        return mask
    st = ellipsoid(radius_mm, spacing)
    return _in_bbox(mask, tuple(s // 2 for s in st.shape), lambda m: ndimage.binary_dilation(m, st))


def postprocess(liver: np.ndarray, tumor: np.ndarray, spacing: tuple[float, float, float],
                config: PostprocessConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Clean liver and tumor masks (canonical grid, spacing in mm as (dz, dy, dx))."""
    config = config or PostprocessConfig()
    liver, tumor = liver.astype(bool), tumor.astype(bool)
    if not config.enabled:
        return liver | tumor, tumor
    if config.tumor_inside_liver:
        # Tumor voxels are liver (LiTS convention); keep them only where they touch the dilated liver.
        liver_region = binary_dilation_mm(liver, spacing, config.tumor_liver_dilation_mm)
        tumor = tumor & liver_region
    liver = liver | tumor
    if config.liver_opening_mm > 0:
        liver = binary_opening_mm(liver, spacing, config.liver_opening_mm)
    if config.largest_liver_component:
        liver = keep_largest_component(liver)
    if config.liver_closing_mm > 0:
        liver = binary_closing_mm(liver, spacing, config.liver_closing_mm)
    if config.fill_liver_holes:
        liver = fill_holes(liver)
    if config.tumor_inside_liver:
        tumor = tumor & liver
    tumor = remove_small_components(tumor, spacing, config.min_tumor_mm3)
    return liver, tumor


def to_labelmap(liver: np.ndarray, tumor: np.ndarray) -> np.ndarray:
    """0 background, 1 liver, 2 liver tumor (tumor wins where both are set)."""
    out = np.full(liver.shape, BACKGROUND, dtype=np.uint8)
    out[liver] = LIVER
    out[tumor] = TUMOR
    return out
