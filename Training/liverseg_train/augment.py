"""Batch augmentation on torch tensors: geometry (rotation, scaling, elastic) and intensity.

Image and label go through the same sampling grid (bilinear for the image, nearest for labels), so they stay
aligned. No left-right flip by default: the liver is on the patient's right and the network may use that.
"""
from __future__ import annotations

from dataclasses import dataclass

import math

import torch
import torch.nn.functional as F


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
    """Brightness, contrast, gamma, Gaussian and low-dose-like noise, window jitter; result stays in [0, 1]."""
    n = image.shape[0]
    shape = (n, 1, 1, 1)
    jitter = (torch.rand(shape, generator=gen) * 2 - 1) * cfg.window_jitter_hu / 500.0
    image = image + jitter + (torch.rand(shape, generator=gen) * 2 - 1) * cfg.brightness
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    image = (image - mean) * torch.empty(shape).uniform_(*cfg.contrast, generator=gen) + mean
    image = image.clamp(0, 1) ** torch.empty(shape).uniform_(*cfg.gamma, generator=gen)
    image = image + torch.randn(image.shape, generator=gen) * cfg.noise_std * torch.rand(shape, generator=gen)
    low_dose = (torch.rand(shape, generator=gen) < cfg.low_dose_probability).float()
    streaky = F.avg_pool2d(torch.randn(image.shape, generator=gen), 3, stride=1, padding=1) * 0.05
    image = image + low_dose * streaky
    return image.clamp(0, 1)
