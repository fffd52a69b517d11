"""Batch augmentation on torch tensors: geometry (rotation, scaling, elastic) and intensity.

Image and label go through the same sampling grid (bilinear for the image, nearest for labels), so they stay
aligned. No left-right flip by default: the liver is on the patient's right and the network may use that.
"""
from __future__ import annotations

from dataclasses import dataclass

import math

import torch
import torch.nn.functional as F


# Soft-tissue band of ``enhancement`` (HU): fully shifted inside, tapering to no shift at fat and at bone. The tapers'
# widths bound the shift that keeps the curve monotone (tissue order kept).
ENHANCED_BAND_HU = (-60.0, 20.0, 180.0, 300.0)


@dataclass
class AugmentConfig:
    rotation_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    elastic_probability: float = 0.3
    elastic_magnitude: float = 0.03  # displacement, fraction of the field of view
    flip_lr: bool = False
    brightness: float = 0.05  # additive, in normalised units (x500 HU)
    contrast: tuple[float, float] = (0.85, 1.15)
    gamma: tuple[float, float] = (0.8, 1.25)
    noise_std: float = 0.02
    low_dose_probability: float = 0.2  # extra correlated noise that mimics low-dose CT
    window_jitter_hu: float = 20.0
    tissue_contrast: float = 0.04  # monotone HU remap: knots moved up to this much (x500 HU); contrast phases
    kernel_probability: float = 0.3  # reconstruction kernel: half soft (blurred), half sharp (unsharp mask)
    # Contrast phase: soft tissue (liver, spleen, vessels, heart) shifted together by this many HU, fat, air and bone
    # not (see ``enhancement``). (0, 0): off
    enhancement_hu: tuple[float, float] = (0.0, 0.0)
    enhancement_probability: float = 0.5
    window: tuple[float, float] = (-100.0, 400.0)  # HU at 0 and 1 of the normalised image (set from the model's spec)

    def __post_init__(self):
        a, b, c, d = ENHANCED_BAND_HU
        lo, hi = self.enhancement_hu
        if (lo, hi) != (0, 0) and not (-(b - a) < lo <= hi < d - c):
            raise ValueError(f"enhancement_hu must lie within ({a - b:g}, {d - c:g}) HU to keep tissue order.")


def geometric(image: torch.Tensor, label: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) float image and (N, H, W) long label (or (N, D, H, W) for 3D patches, slices as channels)
    through one random affine (+ elastic) grid per sample."""
    n = image.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(cfg.rotation_deg)
    scale = torch.empty(n).uniform_(*cfg.scale, generator=gen)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, :, 2] = (torch.rand(n, 2, generator=gen) * 2 - 1) * 0.05
    if cfg.flip_lr:
        flip = torch.rand(n, generator=gen) < 0.5
        theta[flip, :, 0] *= -1
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    if cfg.elastic_probability > 0:
        coarse = torch.randn(n, 2, 6, 6, generator=gen) * cfg.elastic_magnitude * 2
        coarse *= (torch.rand(n, 1, 1, 1, generator=gen) < cfg.elastic_probability)
        disp = F.interpolate(coarse, size=image.shape[-2:], mode="bicubic", align_corners=False)
        grid = grid + disp.permute(0, 2, 3, 1)
    image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    planar = label.dim() == 3
    lab = label[:, None].float() if planar else label.float()
    lab = F.grid_sample(lab, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    label = (lab[:, 0] if planar else lab).long()
    return image, label


def intensity(image: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, gamma, tissue contrast, reconstruction kernel, Gaussian and low-dose-like noise,
    window jitter; result stays in [0, 1]."""
    n = image.shape[0]
    shape = (n, 1, 1, 1)
    image = enhancement(image, cfg, gen)
    image = tissue_contrast(image, cfg.tissue_contrast, gen)
    image = reconstruction_kernel(image, cfg.kernel_probability, gen)
    window_width_hu = cfg.window[1] - cfg.window[0]  # HU -> normalised units
    jitter = (torch.rand(shape, generator=gen) * 2 - 1) * cfg.window_jitter_hu / window_width_hu
    image = image + jitter + (torch.rand(shape, generator=gen) * 2 - 1) * cfg.brightness
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    image = (image - mean) * torch.empty(shape).uniform_(*cfg.contrast, generator=gen) + mean
    image = image.clamp(0, 1) ** torch.empty(shape).uniform_(*cfg.gamma, generator=gen)
    image = image + torch.randn(image.shape, generator=gen) * cfg.noise_std * torch.rand(shape, generator=gen)
    low_dose = (torch.rand(shape, generator=gen) < cfg.low_dose_probability).float()
    streaky = F.avg_pool2d(torch.randn(image.shape, generator=gen), 3, stride=1, padding=1) * 0.05
    image = image + low_dose * streaky
    return image.clamp(0, 1)


def tissue_contrast(image: torch.Tensor, amount: float, gen: torch.Generator, knots: int = 6) -> torch.Tensor:
    """A random monotone piecewise-linear intensity curve per sample. Unlike brightness/contrast it changes how
    tissues compare (liver vs. muscle vs. vessels), as non-contrast, arterial and portal-venous phases do, without
    looking at the label (a label-driven change would leave an edge exactly on the label for the network to find)."""
    if amount <= 0:
        return image
    n = image.shape[0]
    x = torch.linspace(0, 1, knots)
    y = x + (torch.rand(n, knots, generator=gen) * 2 - 1) * amount
    y = torch.cummax(y.clamp(0, 1), dim=1).values  # monotone: tissue order is kept
    flat = image.reshape(n, -1).clamp(0, 1) * (knots - 1)
    i = flat.floor().long().clamp(0, knots - 2)
    t = flat - i
    lo, hi = torch.gather(y, 1, i), torch.gather(y, 1, i + 1)
    return (lo + (hi - lo) * t).reshape(image.shape)


def enhancement(image: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Mimic another contrast phase: shift the soft-tissue band (liver ~50 HU without contrast, 100-150 HU portal-
    venous) by one random amount per sample, leaving fat, air and bone where they are.

    Why: brightness/contrast/gamma move fat and air along with the liver, and ``tissue_contrast`` moves each knot a
    little; a scan whose liver sits 90 HU above every training scan's (CHAOS, 143 HU, against 46-93 HU in the other
    development cases) needs the whole band moved while its surroundings stay."""
    lo_shift, hi_shift = cfg.enhancement_hu
    if lo_shift == hi_shift == 0 or cfg.enhancement_probability <= 0:
        return image
    a, b, c, d = ENHANCED_BAND_HU  # the shift's bounds were checked when the config was made
    w_lo, w_hi = cfg.window
    hu = image * (w_hi - w_lo) + w_lo
    n = image.shape[0]
    shape = (n,) + (1,) * (image.dim() - 1)
    shift = torch.empty(shape).uniform_(lo_shift, hi_shift, generator=gen)
    shift = shift * (torch.rand(shape, generator=gen) < cfg.enhancement_probability)
    weight = torch.minimum(((hu - a) / (b - a)).clamp(0, 1), ((d - hu) / (d - c)).clamp(0, 1))
    return (image + shift * weight / (w_hi - w_lo)).clamp(0, 1)


def reconstruction_kernel(image: torch.Tensor, probability: float, gen: torch.Generator) -> torch.Tensor:
    """Soft kernels blur, sharp kernels enhance edges (and noise): blur or unsharp-mask a random subset."""
    if probability <= 0:
        return image
    n, c = image.shape[:2]
    blurred = F.avg_pool2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    pick = torch.rand(n, 1, 1, 1, generator=gen)
    strength = torch.rand(n, 1, 1, 1, generator=gen)
    soft = (pick < probability / 2).float() * strength
    sharp = ((pick >= probability / 2) & (pick < probability)).float() * strength
    return (image + soft * (blurred - image) + sharp * (image - blurred)).clamp(0, 1)
