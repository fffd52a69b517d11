"""Bring any volume to one canonical axial orientation and back, without resampling.

Volumes come as numpy arrays indexed [k, j, i] (the order of Slicer's ``arrayFromVolume`` and SimpleITK's
``GetArrayFromImage``) plus a 4x4 IJK-to-RAS matrix. The model was trained on axial slices whose rows run
anterior->posterior and columns right->left (the usual radiological view) with slices running inferior->superior.
Only axis permutations and flips are used (the closest canonical orientation for oblique data), so
``from_canonical(to_canonical(x))`` is exact, voxel for voxel, on the input grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Canonical voxel axes expressed as RAS world directions: i -> patient left (-R), j -> posterior (-A), k -> superior.
_CANONICAL_RAS = np.array([[-1, 0, 0], [0, -1, 0], [0, 0, 1]], dtype=float)  # rows: i, j, k


@dataclass(frozen=True)
class CanonicalTransform:
    """How an input array maps to the canonical one: ``canonical = flip(transpose(input, axes), flips)``."""

    axes: tuple[int, int, int]  # numpy axis of the input used for canonical numpy axes (k, j, i)
    flips: tuple[bool, bool, bool]  # whether each canonical numpy axis was reversed
    spacing: tuple[float, float, float]  # canonical voxel size in mm, numpy order (k, j, i)
    input_shape: tuple[int, int, int]


def voxel_spacing(ijk_to_ras: np.ndarray) -> np.ndarray:
    """Voxel size along i, j, k in mm (column norms of the 3x3 part)."""
    return np.linalg.norm(np.asarray(ijk_to_ras, dtype=float)[:3, :3], axis=0)


def canonical_transform(shape: tuple[int, ...], ijk_to_ras: np.ndarray) -> CanonicalTransform:
    """Work out the permutation and flips that make the volume closest to canonical axial."""
    m = np.asarray(ijk_to_ras, dtype=float)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError("The IJK-to-RAS matrix must be a finite 4x4 matrix.")
    spacing_ijk = voxel_spacing(m)
    if np.any(spacing_ijk <= 0):
        raise ValueError("The image geometry is degenerate (a voxel size is zero).")
    directions = m[:3, :3] / spacing_ijk  # columns: world direction of voxel axes i, j, k
    # Score every assignment of input voxel axes to canonical axes and keep the best (3! = 6 options).
    from itertools import permutations

    best = None
    for perm in permutations(range(3)):  # perm[c] = input voxel axis used for canonical voxel axis c (i, j, k)
        score = sum(abs(float(directions[:, perm[c]] @ _CANONICAL_RAS[c])) for c in range(3))
        if best is None or score > best[0] + 1e-9:
            best = (score, perm)
    perm = best[1]
    flips_ijk = [float(directions[:, perm[c]] @ _CANONICAL_RAS[c]) < 0 for c in range(3)]
    # Voxel axis v (0=i,1=j,2=k) is numpy axis 2 - v.
    axes = tuple(2 - perm[c] for c in (2, 1, 0))
    flips = (flips_ijk[2], flips_ijk[1], flips_ijk[0])
    spacing = tuple(float(spacing_ijk[perm[c]]) for c in (2, 1, 0))
    return CanonicalTransform(axes=axes, flips=flips, spacing=spacing, input_shape=tuple(shape[:3]))


def to_canonical(array: np.ndarray, transform: CanonicalTransform) -> np.ndarray:
    """Input [k, j, i] array -> canonical [slice, row, column] array (a view where possible)."""
    out = np.transpose(array, transform.axes)
    for axis, flip in enumerate(transform.flips):
        if flip:
            out = np.flip(out, axis=axis)
    return out


def from_canonical(array: np.ndarray, transform: CanonicalTransform) -> np.ndarray:
    """Exact inverse of :func:`to_canonical`, returning a contiguous array on the input grid."""
    out = array
    for axis, flip in enumerate(transform.flips):
        if flip:
            out = np.flip(out, axis=axis)
    return np.ascontiguousarray(np.transpose(out, np.argsort(transform.axes)))


def canonical_point_to_ras(point, transform: CanonicalTransform, ijk_to_ras: np.ndarray) -> tuple[float, float, float]:
    """RAS position (mm) of a canonical voxel index (slice, row, column; fractional allowed), the inverse of
    :func:`to_canonical` for one point: what a user types into Slicer to go to a place the engine found."""
    kji = [0.0, 0.0, 0.0]
    for axis, (c, flip) in enumerate(zip(point, transform.flips)):
        n = transform.input_shape[transform.axes[axis]]
        kji[transform.axes[axis]] = (n - 1 - c) if flip else c
    ras = np.asarray(ijk_to_ras, float) @ np.array([kji[2], kji[1], kji[0], 1.0])
    return float(ras[0]), float(ras[1]), float(ras[2])


def lps_to_ras(matrix: np.ndarray) -> np.ndarray:
    """Convert a 4x4 IJK-to-LPS matrix (ITK, DICOM, files) to IJK-to-RAS (Slicer), or back: it is its own inverse."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ np.asarray(matrix, dtype=float)


def ijk_to_ras_from_geometry(spacing, origin, direction, lps: bool = True) -> np.ndarray:
    """Build a 4x4 IJK-to-RAS matrix from ITK-style spacing, origin and 3x3 direction (row-major, 9 values)."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) @ np.diag(np.asarray(spacing, dtype=float))
    m[:3, 3] = np.asarray(origin, dtype=float)
    return lps_to_ras(m) if lps else m
