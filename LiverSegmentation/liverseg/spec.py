"""What a model expects of its input, as stored in its model card (no torch needed to read it)."""
from __future__ import annotations

from dataclasses import dataclass


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
