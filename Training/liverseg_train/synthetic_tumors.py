"""Synthetic liver tumors inserted into real livers, after Hu et al., "Label-free liver tumor segmentation" (CVPR 2023).

Lesions are irregular ellipsoids (random size, elongation, rotation and a noise-distorted boundary) placed inside
the liver, filled with hypo- or hyper-attenuating tissue with its own texture and a blurred margin. They are
drawn on a 2.5D stack (context slices at the real slice spacing) so neighbouring slices stay consistent. The
lesion becomes label 2, and stays liver for the liver output, which teaches the liver class that lesions are liver.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class TumorSynthesisConfig:
    probability: float = 0.5  # per training sample that shows liver
    max_lesions: int = 3
    radius_mm: tuple[float, float] = (4.0, 30.0)  # log-uniform
    hypo_probability: float = 0.85  # most liver lesions are hypo-attenuating in portal venous phase
    delta_hu_hypo: tuple[float, float] = (25.0, 90.0)
    delta_hu_hyper: tuple[float, float] = (15.0, 50.0)
    texture_hu: tuple[float, float] = (3.0, 15.0)
    margin_blur_mm: tuple[float, float] = (0.5, 3.0)
    window_width_hu: float = 500.0  # normalised image units per HU = 1 / window width


def insert_tumors(stack: np.ndarray, label_stack: np.ndarray, spacing_mm: float, slice_spacing_mm: float,
                  rng: np.random.Generator, config: TumorSynthesisConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Add lesions to a (C, H, W) normalised image stack whose liver mask is ``label_stack >= 1`` (C, H, W).

    Returns the new image stack and label stack (label 2 where a lesion covers at least half a pixel).
    """
    cfg = config or TumorSynthesisConfig()
    c, h, w = stack.shape
    liver = label_stack >= 1
    centre = c // 2
    ys, xs = np.nonzero(liver[centre])
    if len(ys) == 0:
        return stack, label_stack
    stack = stack.astype(np.float32, copy=True)
    label_stack = label_stack.copy()
    liver_vals = stack[liver]
    liver_mean = float(np.median(liver_vals))
    unit = 1.0 / cfg.window_width_hu
    zz = (np.arange(c) - centre)[:, None, None] * slice_spacing_mm
    yy = np.arange(h)[None, :, None] * spacing_mm
    xx = np.arange(w)[None, None, :] * spacing_mm
    for _ in range(rng.integers(1, cfg.max_lesions + 1)):
        i = rng.integers(len(ys))
        cy, cx = ys[i] * spacing_mm, xs[i] * spacing_mm
        cz = rng.uniform(-0.5, 0.5) * slice_spacing_mm
        r = float(np.exp(rng.uniform(*np.log(cfg.radius_mm))))
        axes = r * rng.uniform(0.7, 1.3, size=3)
        theta = rng.uniform(0, np.pi)
        ct, st = np.cos(theta), np.sin(theta)
        dy, dx = yy - cy, xx - cx
        u, v = ct * dy + st * dx, -st * dy + ct * dx
        dist = ((zz - cz) / axes[0]) ** 2 + (u / axes[1]) ** 2 + (v / axes[2]) ** 2
        # Irregular boundary: perturb the level set with smooth noise.
        noise = ndimage.gaussian_filter(rng.standard_normal((c, h, w)), sigma=(0, 3, 3)) * 6.0
        shape = dist + 0.25 * noise < 1.0
        shape &= liver
        if not shape[centre].any():
            continue
        blur = rng.uniform(*cfg.margin_blur_mm) / spacing_mm
        alpha = ndimage.gaussian_filter(shape.astype(np.float32), sigma=(0, blur, blur))
        alpha *= liver  # lesion tissue never leaks out of the liver
        if rng.random() < cfg.hypo_probability:
            delta = -rng.uniform(*cfg.delta_hu_hypo)
        else:
            delta = rng.uniform(*cfg.delta_hu_hyper)
        texture = ndimage.gaussian_filter(rng.standard_normal((c, h, w)), sigma=(0, 1.0, 1.0))
        texture *= rng.uniform(*cfg.texture_hu) / (texture.std() + 1e-6)
        target = liver_mean + (delta + texture) * unit
        # Replace liver tissue by lesion tissue: keep some of the original texture so it looks scanned, not painted.
        stack = stack * (1 - alpha) + (0.3 * (stack - liver_mean) + target) * alpha
        label_stack[(alpha >= 0.5) & liver] = 2
    return np.clip(stack, 0.0, 1.0).astype(np.float32), label_stack
