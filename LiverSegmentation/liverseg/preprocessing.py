"""Intensity and geometry preprocessing shared by inference and training.

Training imports these same functions, so the model sees identical inputs in both places.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .spec import PreprocessingSpec  # noqa: F401  (re-exported: the spec and its functions belong together)


def normalize_hu(volume: np.ndarray | torch.Tensor, window: tuple[float, float]):
    """Clip to the HU window and map it linearly to [0, 1] (float32)."""
    lo, hi = window
    if isinstance(volume, torch.Tensor):
        return ((volume.float().clamp(lo, hi) - lo) / (hi - lo))
    return ((np.clip(volume.astype(np.float32, copy=False), lo, hi) - lo) / (hi - lo)).astype(np.float32)


def inplane_shape(shape_hw: tuple[int, int], spacing_hw: tuple[float, float], target_mm: float) -> tuple[int, int]:
    """Pixel size of a slice once resampled to ``target_mm`` pixels (at least 1 pixel per side)."""
    return tuple(max(1, int(round(n * s / target_mm))) for n, s in zip(shape_hw, spacing_hw))  # type: ignore


def resize_slices(slices: torch.Tensor, size_hw: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize a (N, C, H, W) stack in-plane; ``align_corners=False`` keeps pixel centres consistent both ways."""
    if tuple(slices.shape[-2:]) == tuple(size_hw):
        return slices
    if mode == "nearest":
        return F.interpolate(slices, size=size_hw, mode="nearest-exact")
    return F.interpolate(slices, size=size_hw, mode=mode, align_corners=False, antialias=False)


def resample_slices_z(volume: torch.Tensor, n_out: int) -> torch.Tensor:
    """Linear resampling of a (Z, H, W) or (C, Z, H, W) stack along Z to ``n_out`` slices (3D models)."""
    squeeze = volume.dim() == 3
    x = volume[None, None] if squeeze else volume[None]
    if x.shape[2] == n_out:
        return volume
    out = F.interpolate(x, size=(n_out, *x.shape[-2:]), mode="trilinear", align_corners=False)
    return out[0, 0] if squeeze else out[0]


def context_indices(centre: np.ndarray, n_slices: int, context: int, stride: int = 1) -> np.ndarray:
    """Indices of each slice and its neighbours ``stride`` slices apart (clamped at the volume ends):
    shape (len(centre), 2*context+1)."""
    offsets = np.arange(-context, context + 1) * stride
    return np.clip(np.asarray(centre)[:, None] + offsets[None, :], 0, n_slices - 1)


PAD_VALUE = 0.0  # normalised intensity of everything at or below the window's lower end (air, fat)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the last two dims at the far end to a multiple of ``multiple`` with ``PAD_VALUE``, as training pads
    its crops; returns the original (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="constant", value=PAD_VALUE)
    return x, (h, w)
