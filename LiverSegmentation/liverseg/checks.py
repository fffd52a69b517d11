"""Input checks that turn bad input into one clear message before any work is done."""
from __future__ import annotations

import os

import numpy as np


class InputError(ValueError):
    """The input cannot be segmented; the message says why and what to do."""


MIN_EXTENT = 3  # voxels along every axis: a 2.5D model reads each slice with its neighbours
VOXEL_SIZE_MM = (0.01, 50.0)  # anything outside is a units or header error, not a CT
BYTES_PER_VOXEL = 15  # measured: (1031 MB peak - 294 MB baseline) / 52.4 M voxels for an int16 512x512x200 CT (README)


def available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(voxels: int, what: str) -> None:
    """Refuse a volume that would not fit in free memory while it is segmented: before reading or allocating it."""
    need = voxels * BYTES_PER_VOXEL
    have = available_memory_bytes()
    if have is not None and need > have:
        raise InputError(f"{what} needs about {need / 2**30:.1f} GiB of memory to segment, but only "
                         f"{have / 2**30:.1f} GiB is free; crop or downsample it first.")


def check_geometry(ijk_to_ras) -> np.ndarray:
    """A usable voxel-to-RAS matrix: 4x4, finite, invertible, voxel sizes within ``VOXEL_SIZE_MM``."""
    try:
        m = np.asarray(ijk_to_ras, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"The ijk_to_ras matrix is not numeric ({exc}).") from exc
    if m.shape != (4, 4):
        raise InputError(f"The ijk_to_ras matrix must be 4x4, not {m.shape}.")
    if not np.isfinite(m).all():
        raise InputError("The ijk_to_ras matrix contains NaN or infinite values; check the image geometry.")
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    lo, hi = VOXEL_SIZE_MM
    if spacing.min() < lo or spacing.max() > hi:
        raise InputError(f"Voxel sizes {np.round(spacing, 6).tolist()} mm are outside {lo}-{hi} mm; the image "
                         "geometry (spacing/units) is wrong.")
    if abs(np.linalg.det(m[:3, :3] / spacing)) < 0.5:
        raise InputError("The ijk_to_ras matrix is degenerate (its axes are parallel); check the image geometry.")
    return m


def check_volume(array: np.ndarray, allow_non_hu: bool = False) -> list[str]:
    """Raise :class:`InputError` for data that is not a CT volume in HU; returns warnings for borderline data."""
    warnings: list[str] = []
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 4 or (array.ndim == 3 and array.shape[-1] in (3, 4) and array.dtype == np.uint8):
        raise InputError("The input has several components per voxel (vector, RGB or 4D/time series data); "
                         "select a single scalar CT volume.")
    if array.ndim != 3:
        raise InputError(f"The input is {array.ndim}D; a 3D CT volume is needed.")
    if min(array.shape) < MIN_EXTENT:
        raise InputError(f"The input of shape {array.shape} has fewer than {MIN_EXTENT} voxels along an axis: a single "
                         "2D image or a 2-slice stack, not a CT volume. liverseg needs a 3D CT of at least "
                         f"{MIN_EXTENT} slices (the network reads each slice with its neighbours).")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"The input has unsupported voxel type {array.dtype}.")
    check_memory(array.size, f"The volume ({array.size / 1e6:.0f} M voxels)")
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(f"The input contains {bad} NaN or infinite voxels; fix or mask them before segmenting.")
    lo, hi = float(array.min()), float(array.max())
    if lo == hi:
        raise InputError(f"The input is constant (every voxel is {lo:g}); it holds no image.")
    if np.issubdtype(array.dtype, np.integer) and hi - lo <= 255:
        values = np.unique(array[:: max(1, array.shape[0] // 16)])
        if len(values) <= 16 and lo >= 0:
            raise InputError(f"The input looks like a labelmap (only {len(values)} distinct values {values[:8].tolist()}...); "
                             "select the CT image, not a segmentation.")
    if not allow_non_hu:
        # Air outside the body is about -1000 HU in any CT; soft tissue and bone go above 100 HU.
        if lo > -500 or hi < 100:
            raise InputError(f"The intensities run from {lo:g} to {hi:g}, which is not a CT in Hounsfield units "
                             "(air should be near -1000). MR, PNG-derived 0..255 stacks and rescaled data are not "
                             "supported; pass allow_non_hu / --allow-non-hu only if you know the data is HU-like.")
        if hi > 10000 or lo < -10000:
            warnings.append(f"Unusual intensity range {lo:g}..{hi:g} for CT; check the rescale slope/intercept.")
    return warnings
