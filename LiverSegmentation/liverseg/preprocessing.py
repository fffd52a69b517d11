"""Intensity and geometry preprocessing shared by inference and training.

Training imports these same functions, so the model sees identical inputs in both places.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PreprocessingSpec:
    """The preprocessing a model was trained with; read from its model card."""

    window: tuple[float, float] = (-100.0, 400.0)  # HU window, mapped to [0, 1]
    spacing_mm: float = 2.0  # in-plane pixel size the network works at; slice spacing is kept native
    context_slices: int = 1  # neighbours on each side fed as extra channels (1 -> 3-channel 2.5D input)
    size_multiple: int = 16  # network input sides must be multiples of this (2 ** depth)
    # 3D models only: slices are resampled to this spacing and the network sees patches of this size (z, y, x).
    slice_spacing_mm: float | None = None
    patch_size: tuple[int, int, int] | None = None

    @property
    def volumetric(self) -> bool:
        return self.patch_size is not None

    @property
    def in_channels(self) -> int:
        return 1 if self.volumetric else 2 * self.context_slices + 1

    def to_dict(self) -> dict:
        d = {
            "window": list(self.window),
            "spacing_mm": self.spacing_mm,
            "context_slices": self.context_slices,
            "size_multiple": self.size_multiple,
        }
        if self.volumetric:
            d.update(slice_spacing_mm=self.slice_spacing_mm, patch_size=list(self.patch_size))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessingSpec":
        patch = d.get("patch_size")
        return cls(
            window=(float(d["window"][0]), float(d["window"][1])),
            spacing_mm=float(d["spacing_mm"]),
            context_slices=int(d["context_slices"]),
            size_multiple=int(d.get("size_multiple", 16)),
            slice_spacing_mm=float(d["slice_spacing_mm"]) if d.get("slice_spacing_mm") else None,
            patch_size=tuple(int(v) for v in patch) if patch else None,
        )


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


def context_indices(centre: np.ndarray, n_slices: int, context: int) -> np.ndarray:
    """Indices of each slice and its neighbours (clamped at the volume ends): shape (len(centre), 2*context+1)."""
    offsets = np.arange(-context, context + 1)
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
