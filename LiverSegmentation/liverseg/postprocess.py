"""Small, pure postprocessing functions on binary masks, parameterised in millimetres, not voxels."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from .density_rules import DENSITY_RULES
from .labels import BACKGROUND, LIVER, TUMOR
from .metrics import bounding_box


BEYOND_REVIEW_MM = 15.0  # the distance of the opt-in check for tissue beyond the liver (`--review-beyond`)


@dataclass
class PostprocessConfig:
    """Each step can be switched off; sizes are physical so results do not depend on the scan's voxel size."""

    enabled: bool = True
    largest_liver_component: bool = True
    fill_liver_holes: bool = True
    liver_closing_mm: float = 2.0  # 0 disables
    liver_opening_mm: float = 0.0  # 0 disables
    tumor_inside_liver: bool = True
    tumor_liver_dilation_mm: float = 3.0
    min_tumor_mm3: float = 30.0  # tumor components smaller than this are removed (0 keeps all)
    # Water-density look-alikes: a "tumor" whose mean HU lies in this range and is homogeneous is a simple cyst
    # (kept as liver) or, where it bulges out of the liver, the gallbladder or fluid (removed). None disables.
    water_hu: tuple[float, float] | None = (-15.0, 20.0)
    water_max_std_hu: float = 25.0
    water_outside_fraction: float = 0.3  # share of a look-alike's border outside the liver that makes it extrahepatic
    # Fluid beside the liver: a hypodense "tumor" at the liver's edge (more than water_outside_fraction of its border
    # outside the liver) whose border outside the liver is at least fluid_share voxels of fluid_hu is the edge of the
    # gallbladder or of fluid, not a lesion. None disables.
    fluid_hu: tuple[float, float] | None = (-15.0, 35.0)
    fluid_share: float = 0.5
    # ... only on contrast-enhanced CT, where the liver (median outside tumors) is at least this bright: without
    # contrast (liver about 40-65 HU) unenhanced organs and hypodense lesions themselves read in the fluid band.
    fluid_min_liver_hu: float = 70.0
    # Parenchyma look-alikes: a "tumor" whose median HU lies within this of the liver around it (a shell of
    # parenchyma_ring_mm) and that is no less homogeneous than that liver is liver tissue, not a lesion. None disables.
    parenchyma_max_delta_hu: float | None = 10.0
    parenchyma_ring_mm: float = 5.0
    # Lesion margins: a hypodense tumor grows into connected liver up to this far (mm) whose smoothed density is
    # nearer the lesion's than the parenchyma's (at least lesion_growth_min_contrast_hu apart). 0 (the default)
    # disables: 10 mm did not pass its leave-one-case-out check (README, "Lesion margins"), so it is an option.
    lesion_growth_mm: float = 0.0
    lesion_growth_min_contrast_hu: float = 20.0
    lesion_growth_smoothing_mm: float = 1.0
    lesion_growth_capsule_mm: float = 2.0  # not into the liver's outermost layer, where partial volume darkens it
    # Lesions that may be larger than segmented: with lesion margins off, the liver the margins would take within
    # margin_review_mm of a hypodense tumor is reported for review when it is at least margin_review_min_ml and
    # margin_review_share of that tumor's volume. The result is not changed. None disables.
    margin_review_mm: float | None = 10.0
    margin_review_min_ml: float = 2.0
    margin_review_share: float = 0.5
    # Tumors that may extend beyond the liver: tissue outside the liver within beyond_review_mm of a hypodense tumor
    # whose density (smoothed outside the liver only) lies within beyond_band_hu of the tumor's median, and within half
    # the tumor's contrast to the parenchyma, is reported for review where, continuous with the tumor and after an
    # opening of beyond_opening_mm (thin sheets such as the diaphragm or a bowel wall are not a lesion's
    # continuation), it is at least beyond_review_min_ml. The result is not changed. None (the default) disables: the
    # check did not pass its leave-one-case-out check (README, "Tumors that may extend beyond the liver"), so it is an
    # option (BEYOND_REVIEW_MM).
    beyond_review_mm: float | None = None
    beyond_band_hu: float = 20.0
    beyond_opening_mm: float = 3.0
    beyond_review_min_ml: float = 1.0

    def __post_init__(self) -> None:
        """Refuse settings that would be ignored without a word: margins and the beyond check are postprocessing."""
        if self.lesion_growth_mm < 0:
            raise ValueError(f"Lesion margins must be 0 (off) or a positive distance in mm, not {self.lesion_growth_mm}.")
        if self.lesion_growth_mm > 0 and not self.enabled:
            raise ValueError("Lesion margins are a postprocessing step: they cannot be combined with postprocessing "
                             "switched off (--no-postprocessing). Drop one of the two.")
        if self.beyond_review_mm is not None and not self.enabled:
            raise ValueError("The check for tissue beyond the liver (--review-beyond) is a postprocessing step: it cannot "
                             "be combined with postprocessing switched off (--no-postprocessing). Drop one of the two.")


def without_rules(config: PostprocessConfig, rules) -> PostprocessConfig:
    """``config`` with the named density rules (keys of DENSITY_RULES) switched off; refused where postprocessing is
    off altogether, which would ignore them."""
    unknown = set(rules) - set(DENSITY_RULES)
    if unknown:
        raise ValueError(f"Unknown density rule(s) {', '.join(sorted(unknown))}; choose from {', '.join(DENSITY_RULES)}.")
    if rules and not config.enabled:
        raise ValueError("--without-rule switches off one postprocessing rule; --no-postprocessing switches off all. "
                         "Drop one of the two.")
    return replace(config, **{DENSITY_RULES[r]: None for r in rules})


@dataclass(frozen=True)
class Reclassified:
    """A region to review: one the network called tumor that a density rule reported as something else, or (rule
    "margin") darker liver right around a tumor, which the tumor may include (:func:`darker_margins`).

    Why it is kept: a rule can be wrong (a homogeneous hypodense metastasis on a non-contrast scan can sit at water
    density; an iso-attenuating lesion matches its surroundings), so the result names each such region for review
    instead of dropping the network's finding silently; and a tumor measured too small must not pass silently."""

    rule: str  # a key of density_rules.RECLASSIFICATIONS
    volume_ml: float
    mean_hu: float
    centre: tuple[float, float, float]  # canonical voxel index (slice, row, column) of its centre of mass


@dataclass
class Postprocessed:
    liver: np.ndarray
    tumor: np.ndarray
    reclassified: list[Reclassified]


def ellipsoid(radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """A boolean ball of ``radius_mm`` on an anisotropic voxel grid."""
    r = [max(0, int(np.floor(radius_mm / s))) for s in spacing]
    grids = np.ogrid[tuple(slice(-n, n + 1) for n in r)]
    dist = sum((g * s / radius_mm) ** 2 for g, s in zip(grids, spacing))
    return dist <= 1.0


def _in_bbox(mask: np.ndarray, radius_vox: tuple[int, int, int], op) -> np.ndarray:
    """Apply ``op`` on the mask's bounding box (plus a margin) only: morphology on a whole CT is wasted work."""
    if not mask.any():
        return mask
    box = bounding_box(mask, tuple(r + 1 for r in radius_vox))
    out = np.zeros_like(mask)
    out[box] = op(mask[box])
    return out


_FULL = np.ones((3, 3, 3), bool)
_INPLANE = np.zeros((3, 3, 3), bool)
_INPLANE[1] = True


def _components(mask: np.ndarray, pad=0):
    """Each 26-connected component of ``mask`` as ``(box, component)``: ``box`` its bounding box widened by ``pad``
    voxels (one number, or one per axis) and clipped to the array, ``component`` its boolean mask within that box.

    Why: the density rules and the lesion margins judge each component against its own surroundings; one box per
    component keeps that work proportional to the lesions, not to the scan."""
    labels, _ = ndimage.label(mask, structure=_FULL)
    pads = np.broadcast_to(pad, (mask.ndim,))
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        box = tuple(slice(max(0, s.start - int(m)), min(dim, s.stop + int(m)))
                    for s, m, dim in zip(sl, pads, mask.shape))
        yield box, labels[box] == i


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component (empty stays empty)."""
    labels, n = ndimage.label(mask, structure=_FULL)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def remove_small_components(mask: np.ndarray, spacing: tuple[float, float, float], min_mm3: float) -> np.ndarray:
    """Drop components smaller than ``min_mm3`` cubic millimetres."""
    if min_mm3 <= 0 or not mask.any():
        return mask.astype(bool)
    box = bounding_box(mask)  # lesions fill a small box of the scan: label only that
    labels, n = ndimage.label(mask[box], structure=_FULL)
    voxel_mm3 = float(np.prod(spacing))
    sizes = np.bincount(labels.ravel()) * voxel_mm3
    keep = sizes >= min_mm3
    keep[0] = False
    out = np.zeros(mask.shape, bool)
    out[box] = keep[labels]
    return out


def _fill(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Holes = background components that do not touch the array border (labelling is far faster than
    scipy's iterative ``binary_fill_holes`` on large volumes)."""
    background, n = ndimage.label(~mask, structure=structure)
    if n == 0:
        return mask.copy()
    border = np.zeros(n + 1, bool)
    for axis in range(mask.ndim):
        for index in (0, -1):
            border[np.unique(np.take(background, index, axis=axis))] = True
    border[0] = True  # label 0 is the mask itself
    return mask | ~border[background]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill 3D cavities and, slice by slice, holes that are open only through neighbouring slices."""
    mask = mask.astype(bool)
    if not mask.any():
        return mask
    box = bounding_box(mask, (1, 1, 1))
    sub = _fill(mask[box], ndimage.generate_binary_structure(3, 1))
    cross = ndimage.generate_binary_structure(2, 1)
    for z in np.nonzero(sub.any(axis=(1, 2)))[0]:
        sub[z] = _fill(sub[z], cross)
    out = np.zeros_like(mask)
    out[box] = sub
    return out


def near_mask(components: np.ndarray, target: np.ndarray, spacing, distance_mm: float) -> np.ndarray:
    """The components of ``components`` that come within ``distance_mm`` of ``target`` (each tested on its own
    small crop, instead of dilating the whole target)."""
    out = np.zeros_like(components, dtype=bool)
    ball = ellipsoid(distance_mm, spacing) if distance_mm > 0 else np.ones((1, 1, 1), bool)
    for box, comp in _components(components, [s // 2 for s in ball.shape]):
        reach = ndimage.binary_dilation(comp, ball) if distance_mm > 0 else comp
        if np.any(reach & target[box]):
            out[box] |= comp
    return out


def _morphology_mm(mask: np.ndarray, spacing, radius_mm: float, op) -> np.ndarray:
    """``op`` (a scipy binary morphology) with a ball of ``radius_mm``, where the scan's border is not an edge of
    the organ: the mask is extended past the array by repeating its border voxels.

    Why: a liver cut by the first or last slice of a partial scan (or by the field of view) continues beyond it.
    With a zero border, the erosion inside a closing ate the edge slice away (the last slice of a 2 mm scan through
    the liver came out empty)."""
    if radius_mm <= 0:
        return mask
    st = ellipsoid(radius_mm, spacing)
    r = tuple(s // 2 for s in st.shape)
    inner = tuple(slice(n, -n or None) for n in r)

    def run(m: np.ndarray) -> np.ndarray:
        return op(np.pad(m, [(n, n) for n in r], mode="edge"), st)[inner]
    return _in_bbox(mask, r, run)


def binary_closing_mm(mask: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    return _morphology_mm(mask, spacing, radius_mm, ndimage.binary_closing)


def binary_opening_mm(mask: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    return _morphology_mm(mask, spacing, radius_mm, ndimage.binary_opening)


def _smoothed_within(image_hu: np.ndarray, region: np.ndarray, sigma) -> np.ndarray:
    """``image_hu`` smoothed (Gaussian, ``sigma`` in voxels per axis) over ``region`` only, by normalised
    convolution: what lies outside the region does not mix into its values near the boundary."""
    weight = ndimage.gaussian_filter(region.astype(np.float32), sigma)
    smooth = ndimage.gaussian_filter(np.where(region, image_hu, 0).astype(np.float32), sigma)
    smooth /= np.maximum(weight, 1e-3)
    return smooth


def _interior_hu(component: np.ndarray, image_hu: np.ndarray) -> np.ndarray:
    """HU of a component's interior (in-plane erosion; the whole component when that leaves under 10 voxels): the
    border voxels mix in the surrounding tissue (partial volume), so density and homogeneity are judged inside."""
    interior = ndimage.binary_erosion(component, structure=_INPLANE)
    return image_hu[interior if interior.sum() >= 10 else component].astype(np.float32)


def water_look_alikes(liver: np.ndarray, tumor: np.ndarray, image_hu: np.ndarray,
                      config: PostprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Tumor components of homogeneous water density: (cysts inside the liver, gallbladder/fluid at its edge).

    Why: the networks learn lesions mostly as "darker than liver", and bile or cyst fluid is darker still; density
    is the one cue that tells them apart reliably. Limitation (README): a fully cystic or necrotic lesion at
    water density is not reported as tumor."""
    cysts, outside = np.zeros_like(tumor), np.zeros_like(tumor)
    lo, hi = config.water_hu
    for sl, comp in _components(tumor, 1):
        values = _interior_hu(comp, image_hu[sl])
        if not (lo <= float(values.mean()) <= hi and float(values.std()) <= config.water_max_std_hu):
            continue
        border = ndimage.binary_dilation(comp, structure=_FULL) & ~comp
        outside_share = float(np.mean(~liver[sl][border])) if border.any() else 0.0
        target = outside if outside_share > config.water_outside_fraction else cysts
        target[sl] |= comp
    return cysts, outside


def _records(mask: np.ndarray, rule: str, image_hu: np.ndarray, spacing, offset, min_mm3: float,
             groups: np.ndarray | None = None) -> list[Reclassified]:
    """One :class:`Reclassified` per component of ``mask`` (a box of the canonical grid starting at ``offset``);
    components below the tumor size limit would not have been reported as tumor anyway. With ``groups`` (a mask
    that holds ``mask``), one per component of ``groups`` instead: its part in ``mask`` (volume, density) and its
    centre (a lesion's possible margin is one region to review, centred on the lesion, however it is split)."""
    if not mask.any():
        return []
    groups = mask if groups is None else groups | mask
    voxel_mm3 = float(np.prod(spacing))
    box = bounding_box(groups)
    offset = [o + b.start for o, b in zip(offset, box)]
    out = []
    for sl, group in _components(groups[box]):
        part = group & mask[box][sl]
        if not part.any() or part.sum() * voxel_mm3 < min_mm3:
            continue
        centre = tuple(float(c + s.start + o) for c, s, o in zip(ndimage.center_of_mass(group), sl, offset))
        out.append(Reclassified(rule, float(part.sum() * voxel_mm3 / 1000), float(image_hu[box][sl][part].mean()),
                                centre))
    return out


def postprocess(liver: np.ndarray, tumor: np.ndarray, spacing: tuple[float, float, float],
                config: PostprocessConfig | None = None, image_hu: np.ndarray | None = None) -> Postprocessed:
    """Clean liver and tumor masks (canonical grid, spacing in mm as (dz, dy, dx)); ``image_hu`` (the canonical
    CT) enables the density rules, whose reclassified regions come back for the user to review.

    All work happens inside the bounding box of the predicted voxels, so cost follows the liver, not the scan.
    """
    config = config or PostprocessConfig()
    liver, tumor = liver.astype(bool), tumor.astype(bool)
    if not config.enabled:
        return Postprocessed(liver | tumor, tumor, [])
    if not (liver.any() or tumor.any()):
        return Postprocessed(liver, tumor, [])
    box = bounding_box(liver | tumor, (2, 2, 2))
    offset = [b.start for b in box]
    lv, tu = liver[box], tumor[box]
    candidates: list[tuple[str, np.ndarray]] = []  # (rule, region) as each density rule decided
    cysts = np.zeros_like(tu)
    if config.tumor_inside_liver:
        # Tumor voxels are liver (LiTS convention); keep tumor components that come near the liver.
        tu = tu & near_mask(tu, lv, spacing, config.tumor_liver_dilation_mm) if lv.any() else np.zeros_like(tu)
    if image_hu is not None and config.water_hu is not None and tu.any():
        cysts, outside = water_look_alikes(lv & ~tu, tu, image_hu[box], config)
        tu = tu & ~cysts & ~outside
        lv = (lv | cysts) & ~outside
        candidates += [("cyst", cysts), ("outside", outside)]
    if image_hu is not None and config.fluid_hu is not None and tu.any():
        beside = beside_fluid(lv & ~tu, tu, image_hu[box], config)
        tu = tu & ~beside
        lv = lv & ~beside
        candidates.append(("fluid", beside))
    if image_hu is not None and config.lesion_growth_mm > 0 and tu.any():
        # Before the parenchyma rule, which compares a tumor with the liver around it: around a lesion found only in
        # its core, that "liver" is the rest of the lesion. Cysts the water rule reported as liver stay liver.
        tu = grow_lesions((lv | tu) & ~cysts, tu, image_hu[box], spacing, config)
    if image_hu is not None and config.parenchyma_max_delta_hu is not None and tu.any():
        alike = parenchyma_look_alikes(lv & ~tu, tu, image_hu[box], spacing, config)
        tu = tu & ~alike
        candidates.append(("parenchyma", alike))
    lv = lv | tu
    if config.liver_opening_mm > 0:
        lv = binary_opening_mm(lv, spacing, config.liver_opening_mm)
    if config.largest_liver_component:
        lv = keep_largest_component(lv)
    if config.liver_closing_mm > 0:
        lv = binary_closing_mm(lv, spacing, config.liver_closing_mm)
    if config.fill_liver_holes:
        lv = fill_holes(lv)
    if config.tumor_inside_liver:
        tu = tu & lv
    tu = remove_small_components(tu, spacing, config.min_tumor_mm3)
    reclassified = []
    for rule, region in candidates:  # a region "reported as liver" in a liver part dropped later is not in the result
        region = region if rule in ("outside", "fluid") else region & lv
        reclassified += _records(region, rule, image_hu[box], spacing, offset, config.min_tumor_mm3)
    if image_hu is not None and config.margin_review_mm is not None and config.lesion_growth_mm <= 0 and tu.any():
        margin, lesions = darker_margins(lv, tu, image_hu[box], spacing, config)
        reclassified += _records(margin, "margin", image_hu[box], spacing, offset, 0.0, groups=lesions)
    liver_out, tumor_out = np.zeros_like(liver), np.zeros_like(tumor)
    liver_out[box], tumor_out[box] = lv, tu
    if image_hu is not None and config.beyond_review_mm is not None and tu.any():
        # On the whole grid: what lies beyond the liver is outside the box of the predicted voxels.
        beyond, groups = tissue_beyond(liver_out, tumor_out, image_hu, spacing, config)
        reclassified += _records(beyond, "beyond", image_hu, spacing, (0, 0, 0), 0.0, groups=groups)
    return Postprocessed(liver_out, tumor_out, sorted(reclassified, key=lambda r: -r.volume_ml))


def beside_fluid(liver: np.ndarray, tumor: np.ndarray, image_hu: np.ndarray,
                 config: PostprocessConfig) -> np.ndarray:
    """Hypodense tumor components at the liver's edge whose neighbours outside the liver are mostly fluid: the
    gallbladder's (or a fluid collection's) edge, taken in by the liver mask and called tumor. ``liver`` is the
    liver outside every tumor (the parenchyma).

    Why: the bundled default, on an unseen arterial-phase slab, called the part of the gallbladder next to the liver
    a "26 mm tumor" (Training/EXPERIMENTS.md, "Fluid beside the liver"). Bile there read 27 HU (concentration,
    sludge, partial volume on 5 mm slices) and the "tumor" 40-45 HU, where it mixes with the liver, so the water
    rule, which judges the component's own density, does not see it; its neighbours outside the liver are fluid. A
    lesion at the liver's edge borders fat, muscle, bowel or enhancing organs instead. The price: a subcapsular
    lesion against ascites is left out too, and reported for review. Only on a contrast-enhanced liver (median at
    least ``fluid_min_liver_hu``): without contrast the unenhanced kidney (about 30 HU) and the hypodense lesions
    themselves read in the fluid band, and the step cost lesions (held-out non-contrast slab: 2 of 24 drawn lesions
    left out, lesion Dice 0.445 -> 0.400; EXPERIMENTS.md, "Fluid beside the liver")."""
    found = np.zeros_like(tumor)
    lo, hi = config.fluid_hu
    if liver.sum() < 100:  # no parenchyma to compare with
        return found
    parenchyma_hu = float(np.median(image_hu[liver]))
    if parenchyma_hu < config.fluid_min_liver_hu:
        return found
    for sl, comp in _components(tumor, 1):
        border = ndimage.binary_dilation(comp, structure=_FULL) & ~comp
        outside = border & ~(liver[sl] | tumor[sl])
        if not border.any() or outside.sum() <= config.water_outside_fraction * border.sum():
            continue
        if float(np.median(_interior_hu(comp, image_hu[sl]))) >= parenchyma_hu:
            continue
        # Unsmoothed: smoothing would mix the component's own density into its neighbours.
        beside = image_hu[sl][outside]
        if np.mean((beside >= lo) & (beside <= hi)) >= config.fluid_share:
            found[sl] |= comp
    return found


def parenchyma_look_alikes(liver: np.ndarray, tumor: np.ndarray, image_hu: np.ndarray, spacing,
                           config: PostprocessConfig) -> np.ndarray:
    """Tumor components that look like the liver around them: their median density lies within
    ``parenchyma_max_delta_hu`` of the surrounding liver's, and their SD exceeds the surrounding liver's by less
    than that much (a heterogeneous lesion whose median happens to match stays tumor).

    Why: a lesion is, by definition of what a reader can see, tissue that differs from the parenchyma. On unseen CT
    whose liver is darker than the training livers (a non-contrast scan, measured on a held-out 11-slice slab), a
    model called 17 mL of plain liver "tumor" (median 54 HU in a 54 HU liver); density against the lesion's own
    surroundings tells them apart, whatever the contrast phase. The price (README): an iso-attenuating lesion the
    network found only by its shape is reported as liver."""
    found = np.zeros_like(tumor)
    ball = ellipsoid(config.parenchyma_ring_mm, spacing)
    for sl, comp in _components(tumor, [s // 2 + 1 for s in ball.shape]):
        ring = ndimage.binary_dilation(comp, ball) & liver[sl] & ~comp
        if ring.sum() < 10:  # no liver around it to compare with
            continue
        values = _interior_hu(comp, image_hu[sl])
        around = image_hu[sl][ring].astype(np.float32)
        if (abs(float(np.median(values)) - float(np.median(around))) < config.parenchyma_max_delta_hu
                and float(values.std()) <= float(around.std()) + config.parenchyma_max_delta_hu):
            found[sl] |= comp
    return found


def grow_lesions(liver: np.ndarray, tumor: np.ndarray, image_hu: np.ndarray, spacing,
                 config: PostprocessConfig) -> np.ndarray:
    """Each hypodense tumor component grown into the connected ``liver`` around it (up to ``lesion_growth_mm``) whose
    smoothed density is below the midpoint between the lesion's median and the parenchyma's (the median of the
    liver outside every tumor, over the whole liver). Components less than ``lesion_growth_min_contrast_hu`` darker
    than the parenchyma, and every hyperdense one, stay as they are.

    Why: the networks find lesions but segment them too small (LiTS 117: 95 % of the tumor voxels right, a quarter
    of the tumor found; lesions of 70-110 mm drawn into held-out livers about a third called tumor; README). The
    missed part is the lesion's margin and, in large lesions, the inside that looks less like the training lesions;
    density against the patient's own parenchyma decides it without a new network. Hyperdense "tumors" are not
    grown: on unseen CT the false tumor sits in the bright heart and dome (README), which growth would only enlarge.
    The whole-liver parenchyma is used, not a ring around the lesion, because around an under-segmented lesion a
    ring lies in the lesion itself. The caller leaves the cysts the water rule reported as liver out of ``liver``,
    so growth never takes back what that rule decided. Off unless asked for: it grows a false tumor that is darker
    than the parenchyma as readily as a lesion (leave-one-case-out on CHAOS: 30 -> 43 mL of false tumor)."""
    parenchyma = liver & ~tumor
    if parenchyma.sum() < 100:
        return tumor
    sigma = [config.lesion_growth_smoothing_mm / s for s in spacing]
    parenchyma_hu = float(np.median(image_hu[parenchyma]))
    margin = config.lesion_growth_mm + config.lesion_growth_capsule_mm
    reach = [int(np.ceil(margin / s)) + 2 for s in spacing]
    out = tumor.copy()
    for sl, comp in _components(tumor, reach):
        inside = liver[sl]
        # Smoothed over the liver only: dark fat or lung beyond the capsule must not make the liver's own edge look
        # like lesion.
        smooth = _smoothed_within(image_hu[sl], inside, sigma)
        lesion_hu = float(np.median(smooth[comp]))
        if parenchyma_hu - lesion_hu < config.lesion_growth_min_contrast_hu:
            continue
        near = ndimage.distance_transform_edt(~comp, sampling=spacing) <= config.lesion_growth_mm
        deep = ndimage.distance_transform_edt(inside, sampling=spacing) > config.lesion_growth_capsule_mm
        allowed = comp | (near & deep & (smooth < (lesion_hu + parenchyma_hu) / 2))
        out[sl] |= ndimage.binary_propagation(comp, mask=allowed)
    return out


def darker_margins(liver: np.ndarray, tumor: np.ndarray, image_hu: np.ndarray, spacing,
                   config: PostprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """The liver that lesion margins of ``margin_review_mm`` would add around the tumors (:func:`grow_lesions`),
    where it is at least ``margin_review_min_ml`` and ``margin_review_share`` of the tumor it surrounds: (that
    liver, the tumors it surrounds). ``liver`` holds the tumor.

    Why: the networks segment lesions too small (README: LiTS 117, 95 % of the tumor voxels right but a quarter of
    the tumor found; drawn lesions of 90-110 mm about 40 % called tumor), and the margins step that corrects it adds
    false tumor where the network is wrong (leave-one-case-out), so it is an option. Reported instead of applied, the
    same density evidence still keeps an under-measured tumor from passing as a plain result. On lesions drawn into
    CHAOS (Training/EXPERIMENTS.md, "Tumors that may be larger than segmented") the limits flag every lesion of at
    least 4 mL that the default called less than 60 % of, and none it called more than 73 % of."""
    grown = grow_lesions(liver, tumor, image_hu, spacing, replace(config, lesion_growth_mm=config.margin_review_mm))
    margin, lesions = np.zeros_like(tumor), np.zeros_like(tumor)
    voxel_ml = float(np.prod(spacing)) / 1000
    for sl, group in _components(grown):
        added = group & ~tumor[sl]
        own = int((group & tumor[sl]).sum())
        if added.sum() * voxel_ml >= config.margin_review_min_ml and added.sum() >= config.margin_review_share * own:
            margin[sl] |= added
            lesions[sl] |= group & tumor[sl]
    return margin, lesions


def tissue_beyond(liver: np.ndarray, tumor: np.ndarray, image_hu: np.ndarray, spacing,
                  config: PostprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Tissue outside the liver that continues a hypodense tumor: (that tissue, its groups: each such tumor with all
    that continues it, so that the pieces an opening leaves count as one region to review). ``liver`` holds the
    tumor.

    Why: a lesion that bulges out of the liver's outline is mostly left out of the result, liver and tumor alike
    (LiTS 117: a quarter of the reference tumor outside the default's liver; lesions drawn across the surface of
    CHAOS: the default kept 13 % of their part beyond it; Training/EXPERIMENTS.md, "Lesions that bulge out of the
    liver"), with the network confidently wrong there, so no threshold recovers it. What the network called tumor
    inside the liver gives the lesion's own density; the same density continuing outward, thicker than a sheet and
    touching that tumor, is what a reader should look at. Fat, lung, fluid and enhancing organs read outside the
    band; what reads inside it (muscle, an unenhanced bowel loop) can raise a false flag."""
    found, groups = np.zeros_like(tumor), np.zeros_like(tumor)
    parenchyma = liver & ~tumor
    if config.beyond_review_mm is None or parenchyma.sum() < 100 or not tumor.any():
        return found, groups
    parenchyma_hu = float(np.median(image_hu[parenchyma]))
    sigma = [config.lesion_growth_smoothing_mm / s for s in spacing]
    ball = ellipsoid(config.beyond_opening_mm, spacing)
    reach = [int(np.ceil(config.beyond_review_mm / s)) + 2 for s in spacing]
    box = bounding_box(tumor, reach)
    voxel_ml = float(np.prod(spacing)) / 1000
    for sl, comp in _components(tumor[box], reach):
        sl = tuple(slice(b.start + s.start, b.start + s.stop) for b, s in zip(box, sl))
        lesion_hu = float(np.median(_interior_hu(comp, image_hu[sl])))
        contrast = parenchyma_hu - lesion_hu
        if contrast < config.lesion_growth_min_contrast_hu:
            continue
        outside = ~liver[sl]
        smooth = _smoothed_within(image_hu[sl], outside, sigma)  # the tumor's own density must not leak out
        near = ndimage.distance_transform_edt(~comp, sampling=spacing) <= config.beyond_review_mm
        alike = outside & near & (np.abs(smooth - lesion_hu) <= min(contrast / 2, config.beyond_band_hu))
        # Continuous with the tumor (no fat plane between), then only what is thicker than a sheet.
        continuous = ndimage.binary_propagation(alike & ndimage.binary_dilation(comp, _FULL), _FULL, mask=alike)
        thick = ndimage.binary_opening(continuous, ball)
        if thick.sum() * voxel_ml >= config.beyond_review_min_ml:
            found[sl] |= thick
            groups[sl] |= comp | continuous
    return found, groups


def to_labelmap(liver: np.ndarray, tumor: np.ndarray) -> np.ndarray:
    """0 background, 1 liver, 2 liver tumor (tumor wins where both are set)."""
    out = np.full(liver.shape, BACKGROUND, dtype=np.uint8)
    out[liver] = LIVER
    out[tumor] = TUMOR
    return out
