"""Synthetic liver lesions and look-alikes inserted into real livers, after Hu et al., "Label-free liver tumor
segmentation" (CVPR 2023) and its follow-ups (lesion spectrum, hard negatives).

Why: the development CTs have liver labels but no tumor labels. Lesions drawn into real livers teach the tumor
class, and teach the liver class that lesions are liver (so a liver with a large lesion is not cut open). Their
look-alikes teach what is *not* tumor: water-density cysts inside the liver stay liver, and a gallbladder-like
water-density pouch at the liver's edge is background.

Everything is drawn on a 2.5D stack (context slices at their real slice spacing), so neighbouring slices stay
consistent. Lesion kinds cover the spectrum seen in practice:

- hypo-attenuating (most metastases and HCC washout in the portal-venous phase), iso-attenuating (barely visible,
  small contrast), hyper-attenuating (hypervascular lesions in the arterial phase);
- rim-enhancing (a darker core with a brighter ring, e.g. colorectal metastases, abscess-like);
- 3-80 mm in diameter (log-uniform), several per slice, optionally confluent (clustered, touching);
- subcapsular and dome lesions (centred on the liver's edge, clipped to the liver), and optionally
  (``exophytic_probability``) edge lesions that bulge out of it: beyond the healthy outline they replace whatever is
  there inside the body and are labelled tumor, so the model learns that the liver follows such a lesion out;
- mass effect (optional, ``mass_effect_probability``): a growing lesion pushes the vessels and the capsule around it
  outwards (a smooth radial warp of image and labels), so the liver's contour bulges over a subcapsular lesion
  instead of keeping the healthy liver's outline.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


LESION_TEXTURES = ("blend", "grain")


@dataclass
class TumorSynthesisConfig:
    probability: float = 0.5  # per training sample that shows liver
    max_lesions: int = 3
    radius_mm: tuple[float, float] = (1.5, 40.0)  # log-uniform: 3-80 mm diameter
    hypo_probability: float = 0.85  # share of hypo-attenuating lesions (the rest: hyper); most are hypo in PV phase
    iso_probability: float = 0.1  # share of lesions with a small contrast (delta_hu_iso), hypo or hyper
    rim_probability: float = 0.15  # share of hypo lesions with an enhancing rim
    confluent_probability: float = 0.2  # later lesions of a sample cluster around the first one
    edge_probability: float = 0.25  # lesion centred on the liver's edge (subcapsular, dome)
    # Share of edge lesions not clipped to the liver but bulging out of it (exophytic, or a subcapsular lesion that
    # pushes the capsule out). 0 keeps the 2.0.0 recipe's sample stream unchanged.
    exophytic_probability: float = 0.0
    delta_hu_hypo: tuple[float, float] = (25.0, 90.0)
    delta_hu_hyper: tuple[float, float] = (15.0, 50.0)
    delta_hu_iso: tuple[float, float] = (10.0, 25.0)
    rim_delta_hu: tuple[float, float] = (20.0, 60.0)  # rim brightness above the liver
    texture_hu: tuple[float, float] = (3.0, 15.0)
    margin_blur_mm: tuple[float, float] = (0.5, 3.0)
    # What of the liver shows through a lesion: "blend" (2.0.0 recipe) keeps 30 % of the liver's deviation from its
    # median, vessels included; "grain" keeps only the scan's fine grain (the image minus its smoothing at
    # grain_sigma_px), so no vessel runs through a lesion, as in most real metastases.
    lesion_texture: str = "blend"
    grain_sigma_px: float = 1.5
    mass_effect_probability: float = 0.0  # per lesion; 0 keeps the 2.0.0 recipe's sample stream unchanged
    mass_effect_strength: tuple[float, float] = (0.2, 0.5)  # see push_aside
    # Hard negatives (label stays liver, or becomes background), per sample that shows liver.
    cyst_probability: float = 0.15  # simple cysts: water density, round, sharp, homogeneous; stay liver
    cyst_radius_mm: tuple[float, float] = (3.0, 25.0)
    gallbladder_probability: float = 0.1  # water-density pouch carved into the liver edge; background
    water_hu: tuple[float, float] = (-5.0, 20.0)  # absolute HU of cysts
    # Absolute HU of the gallbladder pouch. Real gallbladders read denser than clear fluid (bile concentration,
    # sludge, partial volume with its wall and the liver on thick slices): 27 HU (median of the labelled gallbladder of
    # an arterial-phase 5 mm AMOS slab) and about 34 HU (median of the "tumor" a held-out model called on the CHAOS
    # gallbladder) in the two the project has looked at; models called both tumor.
    bile_hu: tuple[float, float] = (-5.0, 20.0)
    window: tuple[float, float] = (-100.0, 400.0)  # the model's HU window, to place absolute HU in the image

    def __post_init__(self):
        if self.lesion_texture not in LESION_TEXTURES:
            raise ValueError(f"tumors.lesion_texture must be one of {', '.join(LESION_TEXTURES)}, got {self.lesion_texture!r}")
        if not 0.0 <= self.mass_effect_strength[0] <= self.mass_effect_strength[1] < 1.0:
            raise ValueError(f"tumors.mass_effect_strength must be an ordered range within [0, 1) (1 or more folds the "
                             f"tissue over itself), got {self.mass_effect_strength}")


def _grids(shape, spacing_mm: float, slice_spacing_mm: float):
    c, h, w = shape
    zz = (np.arange(c) - c // 2)[:, None, None] * slice_spacing_mm
    yy = np.arange(h)[None, :, None] * spacing_mm
    xx = np.arange(w)[None, None, :] * spacing_mm
    return zz, yy, xx


def _ellipsoid(grids, centre_zyx, axes, theta: float, irregularity: float, rng) -> np.ndarray:
    """Boolean rotated ellipsoid (rotation in-plane) whose boundary is perturbed by smooth noise."""
    zz, yy, xx = grids
    ct, st = np.cos(theta), np.sin(theta)
    dy, dx = yy - centre_zyx[1], xx - centre_zyx[2]
    u, v = ct * dy + st * dx, -st * dy + ct * dx
    dist = ((zz - centre_zyx[0]) / axes[0]) ** 2 + (u / axes[1]) ** 2 + (v / axes[2]) ** 2
    if irregularity > 0:
        shape = np.broadcast_shapes(zz.shape, yy.shape, xx.shape)
        dist = dist + irregularity * ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(0, 3, 3)) * 6.0
    return dist < 1.0


def push_aside(stack: np.ndarray, label_stack: np.ndarray, centre_mm: tuple[float, float, float], radius_mm: float,
               strength: float, spacing_mm: float, slice_spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Mass effect: warp a (C, H, W) stack and its labels radially away from a lesion centre, in-plane.

    An output pixel at offset v from the centre shows the tissue at ``v * (1 - s * exp(-|v|^2 / R^2))`` with
    R = 1.5 x radius and s = strength x exp(-(dz / radius)^2) on a slice dz mm from the centre: tissue at the lesion's
    boundary comes from about 0.64 s radius nearer the centre, the push fades within about 3 R, and for s < 1 the map
    is monotone along every ray (no folding). Centre in mm as in ``_grids``: (z from the middle slice, y, x)."""
    c, h, w = stack.shape
    cz, cy, cx = centre_mm
    big_r = 1.5 * radius_mm
    reach = 3.0 * big_r
    y0, y1 = max(0, int((cy - reach) / spacing_mm)), min(h, int((cy + reach) / spacing_mm) + 2)
    x0, x1 = max(0, int((cx - reach) / spacing_mm)), min(w, int((cx + reach) / spacing_mm) + 2)
    if y0 >= y1 or x0 >= x1:
        return stack, label_stack
    vy = np.arange(y0, y1)[:, None] * spacing_mm - cy
    vx = np.arange(x0, x1)[None, :] * spacing_mm - cx
    fall = np.exp(-(vy ** 2 + vx ** 2) / big_r ** 2)
    stack, label_stack = stack.copy(), label_stack.copy()
    for k in range(c):
        s = strength * np.exp(-(((k - c // 2) * slice_spacing_mm - cz) / radius_mm) ** 2)
        if s < 1e-3:
            continue
        f = 1.0 - s * fall
        coords = [(cy + vy * f) / spacing_mm, (cx + vx * f) / spacing_mm]
        stack[k, y0:y1, x0:x1] = ndimage.map_coordinates(stack[k], coords, order=1, mode="nearest")
        label_stack[k, y0:y1, x0:x1] = ndimage.map_coordinates(label_stack[k], coords, order=0, mode="nearest")
    return stack, label_stack


def _edge_pixels(liver_slice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    edge = liver_slice & ~ndimage.binary_erosion(liver_slice)
    return np.nonzero(edge)


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
    liver_mean = float(np.median(stack[liver]))
    unit = 1.0 / (cfg.window[1] - cfg.window[0])
    grids = _grids(stack.shape, spacing_mm, slice_spacing_mm)
    ey, ex = _edge_pixels(liver[centre])
    first = None
    for n in range(rng.integers(1, cfg.max_lesions + 1)):
        r = float(np.exp(rng.uniform(*np.log(cfg.radius_mm))))
        bulge = False
        if first is not None and rng.random() < cfg.confluent_probability:
            angle = rng.uniform(0, 2 * np.pi)
            dist = (first[1] + r) * rng.uniform(0.5, 1.0)  # touching or overlapping the first lesion
            cy, cx = first[0][0] + dist * np.sin(angle), first[0][1] + dist * np.cos(angle)
        elif len(ey) and rng.random() < cfg.edge_probability:
            i = rng.integers(len(ey))
            cy, cx = ey[i] * spacing_mm, ex[i] * spacing_mm
            bulge = bool(cfg.exophytic_probability) and rng.random() < cfg.exophytic_probability
        else:
            i = rng.integers(len(ys))
            cy, cx = ys[i] * spacing_mm, xs[i] * spacing_mm
        if first is None:
            first = ((cy, cx), r)
        cz = rng.uniform(-0.5, 0.5) * slice_spacing_mm
        if cfg.mass_effect_probability and rng.random() < cfg.mass_effect_probability:
            stack, label_stack = push_aside(stack, label_stack, (cz, cy, cx), r, rng.uniform(*cfg.mass_effect_strength),
                                            spacing_mm, slice_spacing_mm)
            liver = label_stack >= 1
        shape = _ellipsoid(grids, (cz, cy, cx), r * rng.uniform(0.7, 1.3, size=3), rng.uniform(0, np.pi), 0.25, rng)
        region = _body(stack) | liver if bulge else liver
        shape &= region
        if not shape[centre].any():
            continue
        blur = rng.uniform(*cfg.margin_blur_mm) / spacing_mm
        alpha = ndimage.gaussian_filter(shape.astype(np.float32), sigma=(0, blur, blur)) * region
        hypo = rng.random() < cfg.hypo_probability
        if rng.random() < cfg.iso_probability:
            delta = rng.uniform(*cfg.delta_hu_iso) * (-1 if hypo else 1)
        elif hypo:
            delta = -rng.uniform(*cfg.delta_hu_hypo)
        else:
            delta = rng.uniform(*cfg.delta_hu_hyper)
        texture = ndimage.gaussian_filter(rng.standard_normal((c, h, w)), sigma=(0, 1.0, 1.0))
        texture *= rng.uniform(*cfg.texture_hu) / (texture.std() + 1e-6)
        target = liver_mean + (delta + texture) * unit
        if hypo and r > 4.0 and rng.random() < cfg.rim_probability:
            # Enhancing rim: a ring about a fifth of the radius thick just inside the boundary.
            inner = ndimage.binary_erosion(shape, structure=np.ones((1, 3, 3), bool),
                                           iterations=max(1, int(round(0.2 * r / spacing_mm))))
            ring = ndimage.gaussian_filter((shape & ~inner).astype(np.float32), sigma=(0, 0.7, 0.7))
            target = target + ring * rng.uniform(*cfg.rim_delta_hu) * unit - ring * delta * unit
        # Replace liver tissue by lesion tissue, keeping some of the original texture so it looks scanned, not painted
        # (beyond the liver, where a bulging lesion pushed other tissue aside, nothing of it shows through).
        base = np.where(liver, stack, liver_mean) if bulge else stack
        stack = stack * (1 - alpha) + (_shown_through(base, liver_mean, cfg) + target) * alpha
        label_stack[(alpha >= 0.5) & region] = 2
        if bulge:
            liver = label_stack >= 1
    return np.clip(stack, 0.0, 1.0).astype(np.float32), label_stack


def _body(stack: np.ndarray) -> np.ndarray:
    """Inside the patient, slice by slice: tissue above the window's floor with what it encloses (fat at the floor,
    lungs, bowel gas), not the air around the patient."""
    return np.stack([ndimage.binary_fill_holes(k > 0.01) for k in stack])


def _shown_through(stack: np.ndarray, liver_mean: float, cfg: TumorSynthesisConfig) -> np.ndarray:
    """The part of the underlying image a lesion keeps (see ``TumorSynthesisConfig.lesion_texture``)."""
    if cfg.lesion_texture == "grain":
        return stack - ndimage.gaussian_filter(stack, sigma=(0, cfg.grain_sigma_px, cfg.grain_sigma_px))
    return 0.3 * (stack - liver_mean)


def _water(shape, hu_range: tuple[float, float], cfg: TumorSynthesisConfig, rng) -> np.ndarray:
    """Homogeneous fluid in ``hu_range`` (normalised units) with scanner-like noise only."""
    hu = rng.uniform(*hu_range) + rng.standard_normal(shape) * rng.uniform(2.0, 8.0)
    return ((hu - cfg.window[0]) / (cfg.window[1] - cfg.window[0])).astype(np.float32)


def insert_look_alikes(stack: np.ndarray, label_stack: np.ndarray, spacing_mm: float, slice_spacing_mm: float,
                       rng: np.random.Generator, config: TumorSynthesisConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hard negatives: simple cysts inside the liver (label unchanged: liver) and a gallbladder-like pouch at the
    liver's edge (label 0). Both are water density with sharp margins, unlike the textured, blurred lesions."""
    cfg = config or TumorSynthesisConfig()
    liver = label_stack >= 1
    centre = stack.shape[0] // 2
    ys, xs = np.nonzero(liver[centre])
    if len(ys) == 0:
        return stack, label_stack
    stack = stack.astype(np.float32, copy=True)
    label_stack = label_stack.copy()
    grids = _grids(stack.shape, spacing_mm, slice_spacing_mm)
    if rng.random() < cfg.cyst_probability:
        for _ in range(rng.integers(1, 3)):
            i = rng.integers(len(ys))
            r = float(np.exp(rng.uniform(*np.log(cfg.cyst_radius_mm))))
            shape = _ellipsoid(grids, (rng.uniform(-0.5, 0.5) * slice_spacing_mm, ys[i] * spacing_mm, xs[i] * spacing_mm),
                               r * rng.uniform(0.85, 1.15, size=3), rng.uniform(0, np.pi), 0.0, rng)
            shape &= liver & (label_stack != 2)
            alpha = ndimage.gaussian_filter(shape.astype(np.float32), sigma=(0, 0.4, 0.4)) * liver
            stack = stack * (1 - alpha) + _water(stack.shape, cfg.water_hu, cfg, rng) * alpha
    ey, ex = _edge_pixels(liver[centre])
    if len(ey) and rng.random() < cfg.gallbladder_probability:
        i = rng.integers(len(ey))
        axes = np.array([rng.uniform(25, 45), rng.uniform(10, 20), rng.uniform(12, 25)])
        shape = _ellipsoid(grids, (rng.uniform(-10, 10), ey[i] * spacing_mm, ex[i] * spacing_mm), axes,
                           rng.uniform(0, np.pi), 0.05, rng)
        shape &= (label_stack != 2)
        wall = ndimage.binary_dilation(shape, structure=np.ones((1, 3, 3), bool)) & ~shape
        alpha = ndimage.gaussian_filter(shape.astype(np.float32), sigma=(0, 0.5, 0.5))
        stack = stack * (1 - alpha) + _water(stack.shape, cfg.bile_hu, cfg, rng) * alpha
        stack[wall] = np.maximum(stack[wall], 0.9 * float(np.median(stack[liver])))  # thin enhancing wall
        label_stack[shape] = 0
    return np.clip(stack, 0.0, 1.0), label_stack
