"""Lesions of known size and place drawn into a real liver: how much of each a model calls tumor.

Two measurements, both on cases with a liver label and no tumor label (the development data):

- the size probe (:func:`probe_lesion_sizes`): one lesion at a time, 30-110 mm, share called tumor per size;
- the lesion study (:func:`study_lesions`): draws of 4-6 lesions of 8-50 mm each (the range most metastases fall
  in), lesion Dice, lesions found and false tumor; the figure the project's recipe decisions were taken on;
- the edge study (:func:`study_edge_lesions`): lesions of 20-60 mm centred on the liver's surface that bulge out of
  it, as subcapsular and exophytic lesions do: how much of each the result keeps in the liver (above all the part
  outside the healthy outline) and calls tumor.

Why: the development cases have no tumor labels, and a model learns the lesion sizes its synthetic lesions show
(radii 1.5-40 mm in the default recipe). It can then call most of a large lesion liver while the liver Dice hardly
moves (measured 2026-11-28: 70-110 mm lesions about a third called tumor, 30-50 mm ones about 70 %;
Training/EXPERIMENTS.md, "Large lesions"). And a lesion at the liver's edge that bulges beyond the healthy outline
is missed as background by the liver mask as well (LiTS 117: 54 mL of the 212 mL of reference tumor lay outside the
default's liver), which lesions clipped to the liver never show. The lesions here come from this module's own
generator, not from training's ``synthetic_tumors``, so a model is not judged on the very lesions it was trained to
find.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from liverseg.labels import TUMOR

PROBE_SIZES_MM = (30.0, 50.0, 70.0, 90.0, 110.0)


def draw_lesion(image_hu: np.ndarray, liver: np.ndarray, spacing: tuple[float, float, float], diameter_mm: float,
                rng: np.random.Generator, delta_hu: float = -45.0, texture_hu: float = 10.0,
                margin_mm: float = 1.0, depth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw one lesion into the liver: an ellipsoid (axes 0.85-1.15 x the radius) centred at least a third of its
    radius inside the liver (so large ones may reach the capsule), ``delta_hu`` from the tissue it replaces, with a
    smooth texture and a soft margin, clipped to the liver. Returns (new image as float32, lesion mask: voxels at
    least half covered). ``depth``: the liver's distance transform (mm), when drawing several into one liver."""
    radius = diameter_mm / 2
    if depth is None:
        depth = ndimage.distance_transform_edt(liver, sampling=spacing)
    candidates = np.argwhere(depth > radius / 3)
    if not len(candidates):  # a liver too thin for this size: its deepest point
        candidates = np.argwhere(depth == depth.max())
    centre = candidates[rng.integers(len(candidates))]
    return _paint(image_hu, liver, spacing, centre, radius, rng, delta_hu, texture_hu, margin_mm)


def _paint(image_hu: np.ndarray, liver: np.ndarray, spacing, centre, radius: float, rng: np.random.Generator,
           delta_hu: float, texture_hu: float, margin_mm: float,
           beyond: tuple[np.ndarray, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paint an ellipsoidal lesion (axes 0.85-1.15 x ``radius``) at ``centre``: inside the liver ``delta_hu`` plus
    texture added to the tissue there; clipped to the liver, or with ``beyond`` = (region, liver HU) also over the
    voxels of that region outside the liver, which it replaces by lesion tissue (the liver's HU plus the same
    delta and texture): a lesion that bulges out of the liver pushes its neighbours away."""
    axes = radius * rng.uniform(0.85, 1.15, 3)
    reach = [int(np.ceil((a + 6 * margin_mm) / s)) for a, s in zip(axes, spacing)]
    box = tuple(slice(max(0, c - r), min(n, c + r + 1)) for c, r, n in zip(centre, reach, liver.shape))
    grids = np.ogrid[box]
    rho = np.sqrt(sum((((g - c) * s) / a) ** 2 for g, c, s, a in zip(grids, centre, spacing, axes)))
    inside = liver[box] if beyond is None else beyond[0][box] | liver[box]
    weight = inside / (1.0 + np.exp(np.clip((rho - 1.0) * radius / margin_mm, -50, 50)))  # rho 1 = surface
    texture = ndimage.gaussian_filter(rng.standard_normal(weight.shape), 1.5)
    texture *= texture_hu / (texture.std() + 1e-6)
    out = image_hu.astype(np.float32, copy=True)
    shift = delta_hu + texture
    if beyond is not None:  # outside the liver: from the neighbour's density to the liver's, then the lesion's
        shift = shift + np.where(liver[box], 0.0, beyond[1] - out[box])
    out[box] += weight * shift
    mask = np.zeros(liver.shape, bool)
    mask[box] = weight >= 0.5
    return out, mask


class _Scorer:
    """Segments an image with drawn lesions and returns the tumor it calls near the reference liver (within 3
    voxels, so e.g. the heart taken for liver does not count) and the mL of it farther than 2 voxels from the
    drawn lesions (tumor called elsewhere)."""

    def __init__(self, segment: Callable[[np.ndarray], np.ndarray], liver: np.ndarray,
                 spacing: tuple[float, float, float]):
        self.segment = segment
        self.near = ndimage.binary_dilation(liver, iterations=3)
        self.voxel_ml = float(np.prod(spacing)) / 1000.0

    def __call__(self, image: np.ndarray, lesions: np.ndarray) -> tuple[np.ndarray, float]:
        return self.score(self.segment(image), lesions)

    def score(self, labelmap: np.ndarray, lesions: np.ndarray) -> tuple[np.ndarray, float]:
        tumor = (labelmap == TUMOR) & self.near
        elsewhere = tumor & ~ndimage.binary_dilation(lesions, iterations=2)
        return tumor, float(elsewhere.sum()) * self.voxel_ml


def probe_lesion_sizes(segment: Callable[[np.ndarray], np.ndarray], image_hu: np.ndarray, liver: np.ndarray,
                       spacing: tuple[float, float, float], sizes_mm: tuple[float, ...] = PROBE_SIZES_MM,
                       places: int = 3, seed: int = 0) -> dict:
    """Draw each size at ``places`` places (one at a time) and segment: the mean share of the lesion called tumor
    per size, and the tumor called elsewhere near the liver (mL per draw; see :class:`_Scorer`).

    ``segment(image) -> labelmap`` on the same grid (0 background, 1 liver, 2 tumor)."""
    scorer = _Scorer(segment, liver, spacing)
    depth = ndimage.distance_transform_edt(liver, sampling=spacing)
    shares: dict[float, list[float]] = {}
    false_ml = []
    for place in range(places):
        for size in sizes_mm:
            image, lesion = draw_lesion(image_hu, liver, spacing, size, np.random.default_rng([seed, place, int(size)]),
                                        depth=depth)
            tumor, elsewhere_ml = scorer(image, lesion)
            shares.setdefault(size, []).append(float((tumor & lesion).sum() / max(int(lesion.sum()), 1)))
            false_ml.append(elsewhere_ml)
    return {"share_called_tumor": {f"{size:g}": float(np.mean(v)) for size, v in shares.items()},
            "false_tumor_ml": float(np.mean(false_ml)), "places": places}


def draw_lesions(image_hu: np.ndarray, liver: np.ndarray, spacing: tuple[float, float, float],
                 rng: np.random.Generator, count: tuple[int, int] = (4, 6),
                 diameters_mm: tuple[float, float] = (8.0, 50.0), depth: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Several hypodense lesions (log-uniform diameters, -25 to -70 HU, 5-12 HU texture, 0.5-1.5 mm margins) drawn
    into one liver: (new image, union of their masks). ``depth`` as for :func:`draw_lesion`."""
    if depth is None:
        depth = ndimage.distance_transform_edt(liver, sampling=spacing)
    image, mask = image_hu.astype(np.float32, copy=True), np.zeros(liver.shape, bool)
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        diameter = float(np.exp(rng.uniform(*np.log(diameters_mm))))
        image, one = draw_lesion(image, liver, spacing, diameter, rng, delta_hu=-rng.uniform(25.0, 70.0),
                                 texture_hu=rng.uniform(5.0, 12.0), margin_mm=rng.uniform(0.5, 1.5), depth=depth)
        mask |= one
    return image, mask


def study_lesions(segment: Callable[[np.ndarray], np.ndarray], image_hu: np.ndarray, liver: np.ndarray,
                  spacing: tuple[float, float, float], draws: int = 6, seed: int = 0) -> dict:
    """``draws`` draws of :func:`draw_lesions`, each segmented: mean lesion Dice, lesions found (touched by tumor),
    mean ratio of tumor to lesion volume, and tumor called elsewhere near the liver (as in the size probe)."""
    scorer = _Scorer(segment, liver, spacing)
    depth = ndimage.distance_transform_edt(liver, sampling=spacing)
    dice, ratio, false_ml, found, total = [], [], [], 0, 0
    for draw in range(draws):
        image, lesions = draw_lesions(image_hu, liver, spacing, np.random.default_rng([seed, draw]), depth=depth)
        tumor, elsewhere_ml = scorer(image, lesions)
        lesion_dice, hit, n = _lesion_scores(tumor, lesions)
        dice.append(lesion_dice)
        ratio.append(_share(tumor, lesions))
        false_ml.append(elsewhere_ml)
        found += hit
        total += n
    return {"lesion_dice": float(np.mean(dice)), "found": found, "lesions": total,
            "volume_ratio": float(np.mean(ratio)), "false_tumor_ml": float(np.mean(false_ml)), "draws": draws}


def _share(part: np.ndarray, whole: np.ndarray) -> float:
    """Voxels of ``part`` per voxel of ``whole`` (0 for an empty ``whole``)."""
    return float(part.sum()) / max(int(whole.sum()), 1)


def _lesion_scores(tumor: np.ndarray, lesions: np.ndarray) -> tuple[float, int, int]:
    """(lesion Dice, drawn lesions touched by tumor, drawn lesions) of one draw."""
    dice = 2.0 * float((tumor & lesions).sum()) / max(int(tumor.sum() + lesions.sum()), 1)
    components, n = ndimage.label(lesions)
    touched = np.unique(components[tumor & lesions])
    return dice, int((touched > 0).sum()), n


EDGE_DIAMETERS_MM = (20.0, 60.0)


def edge_places(image_hu: np.ndarray, liver: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Where edge lesions go and what they replace: (surface voxels that may be a centre, the body they may reach
    beyond the liver, the liver's median HU). The scan's first and last slices are not surface (a slab's cut faces
    are not the capsule); the body is filled slice by slice, so the lungs are inside it."""
    surface = liver & ~ndimage.binary_erosion(liver, border_value=1)
    surface[[0, -1]] = False
    body = np.stack([ndimage.binary_fill_holes(k > -500) for k in image_hu])
    return np.argwhere(surface), body, float(np.median(image_hu[liver])) if liver.any() else 0.0


def draw_edge_lesions(image_hu: np.ndarray, liver: np.ndarray, spacing: tuple[float, float, float],
                      rng: np.random.Generator, count: tuple[int, int] = (1, 3),
                      diameters_mm: tuple[float, float] = EDGE_DIAMETERS_MM,
                      places: tuple[np.ndarray, np.ndarray, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hypodense lesions (log-uniform diameters, -25 to -70 HU against the liver, 5-12 HU texture, 0.5-1.5 mm
    margins) centred on the liver's surface, so about half of each lies beyond the healthy outline, where it
    replaces what is there inside the body (fat, organs, bowel gas, lung at the dome: what a growing lesion pushes
    aside). Returns (new image, union of the lesion masks). ``places``: :func:`edge_places` of this image and
    liver, when drawing several times into one liver."""
    candidates, body, liver_hu = places or edge_places(image_hu, liver)
    image, mask = image_hu.astype(np.float32, copy=True), np.zeros(liver.shape, bool)
    if not len(candidates):
        return image, mask
    beyond = (body, liver_hu)
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        diameter = float(np.exp(rng.uniform(*np.log(diameters_mm))))
        centre = candidates[rng.integers(len(candidates))]
        image, one = _paint(image, liver, spacing, centre, diameter / 2, rng, -rng.uniform(25.0, 70.0),
                            rng.uniform(5.0, 12.0), rng.uniform(0.5, 1.5), beyond)
        mask |= one
    return image, mask


def study_edge_lesions(segment: Callable[[np.ndarray], np.ndarray], image_hu: np.ndarray, liver: np.ndarray,
                       spacing: tuple[float, float, float], draws: int = 6, seed: int = 0) -> dict:
    """``draws`` draws of :func:`draw_edge_lesions`, each segmented. Means over the draws: the share of the lesions
    kept in the result's liver (liver or tumor), the same for their part beyond the healthy outline (``bulge_kept``:
    the liver mask must follow the lesion out) and the share of that part called tumor; lesion Dice; liver Dice with
    the lesions counted as liver; lesions found; tumor called elsewhere near the liver."""
    places = edge_places(image_hu, liver)
    dice, liver_dice, kept, bulge_kept, bulge_tumor, false_ml, found, total = [], [], [], [], [], [], 0, 0
    for draw in range(draws):
        image, lesions = draw_edge_lesions(image_hu, liver, spacing, np.random.default_rng([seed, draw, 1]),
                                           places=places)
        labelmap = segment(image)
        organ = liver | lesions  # the tumor near it counts, as in the other studies
        tumor, elsewhere_ml = _Scorer(segment, organ, spacing).score(labelmap, lesions)
        result = labelmap >= 1
        bulge = lesions & ~liver
        lesion_dice, hit, n = _lesion_scores(tumor, lesions)
        dice.append(lesion_dice)
        liver_dice.append(2.0 * float((result & organ).sum()) / max(int(result.sum() + organ.sum()), 1))
        kept.append(_share(result & lesions, lesions))
        bulge_kept.append(_share(result & bulge, bulge))
        bulge_tumor.append(_share(tumor & bulge, bulge))
        false_ml.append(elsewhere_ml)
        found += hit
        total += n
    return {"lesion_dice": float(np.mean(dice)), "liver_dice": float(np.mean(liver_dice)),
            "kept_in_liver": float(np.mean(kept)), "bulge_kept": float(np.mean(bulge_kept)),
            "bulge_tumor": float(np.mean(bulge_tumor)), "found": found, "lesions": total,
            "false_tumor_ml": float(np.mean(false_ml)), "draws": draws}


def report_lines(probes: dict[str, dict]) -> list[str]:
    """Markdown table of the size probes of several cases."""
    sizes = list(next(iter(probes.values()))["share_called_tumor"])
    lines = ["Lesion-size probe: share of a drawn lesion called tumor (hypodense, -45 HU; mean over "
             f"{next(iter(probes.values()))['places']} places), and tumor called elsewhere near the liver per draw.", "",
             "| case | " + " | ".join(f"{s} mm" for s in sizes) + " | elsewhere mL |",
             "|---|" + "---|" * (len(sizes) + 1)]
    for cid, p in probes.items():
        lines.append(f"| {cid} | " + " | ".join(f"{p['share_called_tumor'][s]:.2f}" for s in sizes)
                     + f" | {p['false_tumor_ml']:.1f} |")
    return lines


def study_report_lines(studies: dict[str, dict]) -> list[str]:
    """Markdown table of the lesion studies of several cases."""
    lines = [f"Lesion study: {next(iter(studies.values()))['draws']} draws of 4-6 hypodense lesions (8-50 mm) per case.", "",
             "| case | lesion Dice | lesions found | tumor / lesion volume | elsewhere mL |", "|---|---|---|---|---|"]
    for cid, st in studies.items():
        lines.append(f"| {cid} | {st['lesion_dice']:.3f} | {st['found']} of {st['lesions']} | {st['volume_ratio']:.2f} | "
                     f"{st['false_tumor_ml']:.1f} |")
    return lines


def edge_report_lines(studies: dict[str, dict]) -> list[str]:
    """Markdown table of the edge studies of several cases."""
    lo, hi = EDGE_DIAMETERS_MM
    lines = [f"Edge study: {next(iter(studies.values()))['draws']} draws of 1-3 hypodense lesions ({lo:g}-{hi:g} mm) "
             "centred on the liver's surface, bulging out of it; \"bulge\": their part beyond the healthy outline.", "",
             "| case | lesion Dice | lesions found | kept in the liver | bulge kept in the liver | bulge called tumor | "
             "liver Dice (lesions as liver) | elsewhere mL |", "|---|---|---|---|---|---|---|---|"]
    for cid, st in studies.items():
        lines.append(f"| {cid} | {st['lesion_dice']:.3f} | {st['found']} of {st['lesions']} | {st['kept_in_liver']:.2f} | "
                     f"{st['bulge_kept']:.2f} | {st['bulge_tumor']:.2f} | {st['liver_dice']:.4f} | "
                     f"{st['false_tumor_ml']:.1f} |")
    return lines
