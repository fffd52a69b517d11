"""What a model expects of its input, as stored in its model card (no torch needed to read it)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PreprocessingSpec:
    """The preprocessing a model was trained with; read from its model card."""

    window: tuple[float, float] = (-100.0, 400.0)  # HU window, mapped to [0, 1]
    spacing_mm: float = 2.0  # in-plane pixel size the network works at; slice spacing is kept native
    context_slices: int = 1  # neighbours on each side fed as extra channels (1 -> 3-channel 2.5D input)
    # Neighbours are taken at least about this far apart (mm): on thin-slice CT (0.6-1.25 mm) the direct neighbours
    # are almost the same image, unlike the 2-5 mm slices models are trained on. None: direct neighbours.
    context_spacing_mm: float | None = None
    size_multiple: int = 16  # network input sides must be multiples of this (2 ** depth)
    # 3D models only: slices are resampled to this spacing and the network sees patches of this size (z, y, x).
    slice_spacing_mm: float | None = None
    patch_size: tuple[int, int, int] | None = None

    @property
    def volumetric(self) -> bool:
        return self.patch_size is not None

    def context_stride(self, slice_spacing_mm: float) -> int:
        """How many slices apart the 2.5D neighbours are taken on a scan with this slice spacing."""
        if not self.context_spacing_mm:
            return 1
        return max(1, int(round(self.context_spacing_mm / max(slice_spacing_mm, 1e-6))))

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
        if self.context_spacing_mm:
            d["context_spacing_mm"] = self.context_spacing_mm
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
            context_spacing_mm=float(d["context_spacing_mm"]) if d.get("context_spacing_mm") else None,
            slice_spacing_mm=float(d["slice_spacing_mm"]) if d.get("slice_spacing_mm") else None,
            patch_size=tuple(int(v) for v in patch) if patch else None,
        )
