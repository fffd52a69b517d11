"""Checks of a finished segmentation, so that an empty, partial or misplaced result is never reported as plain
success.

A network always returns *something*; whether that is a liver segmentation a user may measure on is a separate
question. These checks run on the canonical masks (slices inferior -> superior, rows anterior -> posterior, columns
patient right -> left, see :mod:`liverseg.orientation`) after postprocessing:

- no liver at all: :class:`NoLiverFound` (an error: nothing is written, the module shows it);
- a "liver" that the scan holds completely but that is far smaller than any liver (:data:`MIN_LIVER_ML`), or a
  sliver at the scan's edge (:data:`MIN_PARTIAL_LIVER_ML`): the same error. Measured on slabs of real CT below or
  above the liver: the network leaves 0.03-1.2 mL of scattered "liver" there (0.9 mL at the edge of a 4-slice
  chest slab), which would otherwise be written as a result;
- the liver reaches the first/last slice or the edge of the field of view: the scan does not hold the whole liver,
  so its volume (and any tumor burden) is partial; a warning says so and by which edge;
- the liver's centre lies on the patient's left of the body's centre: a left-right flipped header, or situs
  inversus; a warning asks the user to check the orientation;
- a complete liver outside :data:`LIVER_ML` (adult livers are 1-2 L; hepatomegaly reaches 3-4 L): a warning;
- the top of the liver borders lung on its left more than on its right, as the heart does (the liver's dome lies
  under the right lung, the heart between the lungs): the heart was probably taken for liver; a warning
  (:func:`heart_warning`);
- the network sees more liver in the left-right mirrored image than in the image as given: the header's left-right
  axis is probably wrong (the model then labels the spleen, which only the volume rule would otherwise notice, and
  not with an enlarged spleen): a warning (:func:`mirror_warning`).
"""
from __future__ import annotations

import numpy as np

from .checks import InputError

EDGE_AREA_MM2 = 100.0  # liver cut over at least 1 cm^2 of an edge face: the scan ends inside the liver
LIVER_ML = (400.0, 5000.0)
MIN_LIVER_ML = 50.0  # a complete liver smaller than this is not a liver (a newborn's is about 100-150 mL)
MIN_PARTIAL_LIVER_ML = 5.0  # less than this where the scan ends inside the liver: too little to be worth a result
BODY_HU = -500.0  # voxels denser than this are the body (air and the table's foam are below)
LEFT_MARGIN = 0.05  # fraction of the body's width the liver's centre may lie left of the body's centre
# Coarse-pass liver area of the mirrored image over the image as given: 0.13-0.60 on correctly stored CT and
# 1.67-7.7 on the same CT with a mirrored header (the 4 development CTs and LiTS 117, measured 2026-11-28).
MIRROR_RATIO = 1.25
# The heart taken for liver: over the top DOME_MM of the result, the share of lung in a SIDE_MM band beside it on the
# patient's left is at least HEART_LEFT_LUNG and above the share on its right. Measured 2026-11-28 (top 20 mm, 10 mm
# band): real domes 0.00-0.10 left / 0.00-0.66 right (references and bundled models' results on the 4 development
# CTs and LiTS 117, 10 held-out AMOS results); the held-out CHAOS results of ten models that had never seen a heart:
# 0.28-0.39 left vs 0.00-0.17 right in eight (two, 0.00 left, are missed). One scan shows the heart, so this is a
# warning only.
DOME_MM, SIDE_MM, HEART_LEFT_LUNG = 20.0, 10.0, 0.2


class NoLiverFound(InputError):
    """The model found no liver in the volume."""


LOWEST, HIGHEST = "lowest (inferior) slice", "highest (superior) slice"


def cut_faces(liver: np.ndarray, spacing: tuple[float, float, float]) -> list[str]:
    """The faces of the scan (its first/last slice, the field of view's edges) where the canonical liver mask is cut
    over at least :data:`EDGE_AREA_MM2`: there the scan ends inside the liver."""
    dz, dy, dx = spacing
    return [name for name, face, area in (
        (LOWEST, liver[0], dy * dx), (HIGHEST, liver[-1], dy * dx),
        ("anterior edge", liver[:, 0, :], dz * dx), ("posterior edge", liver[:, -1, :], dz * dx),
        ("right edge", liver[:, :, 0], dz * dy), ("left edge", liver[:, :, -1], dz * dy))
        if float(face.sum()) * area >= EDGE_AREA_MM2]


def check_result(liver: np.ndarray, image_hu: np.ndarray, spacing: tuple[float, float, float]) -> list[str]:
    """Warnings about a canonical liver mask (``spacing`` in mm, canonical order); raises :class:`NoLiverFound`."""
    if not liver.any():
        raise NoLiverFound("No liver was found in this volume. Is it an abdominal CT that covers the liver, in "
                           "Hounsfield units and with a correct orientation? Nothing was written.")
    warnings = []
    dz, dy, dx = spacing
    volume_ml = float(liver.sum()) * dz * dy * dx / 1000.0
    cut = cut_faces(liver, spacing)
    if volume_ml < (MIN_PARTIAL_LIVER_ML if cut else MIN_LIVER_ML):
        raise NoLiverFound(f"No liver was found in this volume: only {volume_ml:.1f} mL of liver-like tissue"
                           f"{' at the edge of the scan' if cut else ', far less than any liver'}. Does the scan cover "
                           "the liver? (A scan that ends inside the liver is segmented; one that misses it is not.) "
                           "Nothing was written.")
    if cut:
        warnings.append(f"The liver reaches the {' and the '.join(cut)} of the scan: the scan does not hold the whole "
                        f"liver, so the liver volume ({volume_ml:.0f} mL here) and the tumor burden are partial.")
    elif not LIVER_ML[0] <= volume_ml <= LIVER_ML[1]:
        warnings.append(f"The liver volume, {volume_ml:.0f} mL, is outside {LIVER_ML[0]:.0f}-{LIVER_ML[1]:.0f} mL, "
                        "unusual for a complete adult liver: check the result and the voxel size.")
    slices = np.nonzero(liver.any(axis=(1, 2)))[0]
    body = (image_hu[slices] > BODY_HU).sum(axis=(0, 1))  # voxels per column (no index arrays: CTs are large)
    if body.any():
        columns = np.nonzero(body)[0]
        index = np.arange(body.size)
        body_centre = float((body * index).sum() / body.sum())
        per_column = liver[slices].sum(axis=(0, 1))
        liver_centre = float((per_column * index).sum() / per_column.sum())
        if liver_centre > body_centre + LEFT_MARGIN * (columns[-1] - columns[0] + 1):
            warnings.append("The segmented liver lies on the patient's left side. Check the image orientation (a "
                            "left-right flipped header misplaces the result) or whether the patient has situs inversus.")
    heart = heart_warning(liver, image_hu, spacing)
    if heart:
        warnings.append(heart)
    return warnings


def _side_lung_shares(liver: np.ndarray, image_hu: np.ndarray, spacing) -> tuple[float, float]:
    """Share of lung (air inside the body's outline) in a :data:`SIDE_MM` band on the patient's left and on the
    right of each slice's liver section, over the top :data:`DOME_MM` of a non-empty canonical liver mask."""
    from scipy import ndimage

    slices = np.nonzero(liver.any(axis=(1, 2)))[0]
    top = int(slices[-1])
    first = max(int(slices[0]), top - int(round(DOME_MM / spacing[0])) + 1)
    reach = max(1, int(round(SIDE_MM / spacing[2])))
    counts = np.zeros(4)  # lung left, band left, lung right, band right
    for k in range(first, top + 1):
        section = liver[k]
        left, right = np.zeros_like(section), np.zeros_like(section)
        for shift in range(1, reach + 1):  # canonical columns run patient right -> left
            left[:, shift:] |= section[:, :-shift]
            right[:, :-shift] |= section[:, shift:]
        left &= ~section
        right &= ~section
        air = image_hu[k] < BODY_HU
        lung = air & ndimage.binary_fill_holes(~air)  # air enclosed by the body, not the air around it
        counts += [(lung & left).sum(), left.sum(), (lung & right).sum(), right.sum()]
    return counts[0] / max(counts[1], 1.0), counts[2] / max(counts[3], 1.0)


def heart_warning(liver: np.ndarray, image_hu: np.ndarray, spacing) -> str | None:
    """A warning when the top of a (non-empty, canonical) liver result lies against lung on its left rather than on
    its right, as the heart does.

    Why: models that never saw the heart call it liver and then miss the dome beside it (README, Limitations); on
    the result alone that looks like a plausible liver top. The dome lies under the right lung, so at the top of a
    real liver the lung is on its right; the heart has the left lung on its left."""
    left, right = _side_lung_shares(liver, image_hu, spacing)
    if left >= HEART_LEFT_LUNG and left > right:
        return (f"The top of the liver result lies against lung on its left ({left:.0%} of a {SIDE_MM:.0f} mm band "
                f"beside its top {DOME_MM:.0f} mm, {right:.0%} on its right), as the heart does; the liver's dome lies "
                "under the right lung. Check that 'Liver' does not include the heart and that it covers the dome.")
    return None


def mirror_warning(area_mm2: float, mirrored_area_mm2: float, cut_below: bool = False) -> str | None:
    """A warning when the network finds clearly more liver in the left-right mirrored image (coarse-pass areas).

    ``cut_below``: the scan ends inside the liver at its lowest slice (a chest CT, an upper-abdomen slab, a slab
    through the dome whose top slice is liver too). There the check also fires with a correct header (slabs of 4-16
    slices within the top 16 of a 2 mm CT: 1.5x to 8.7x; the heart, mirrored onto the liver's side, is taken for
    liver), so the warning says so instead of blaming the header; it is kept because a mirrored header on such a
    scan looks the same to it."""
    if mirrored_area_mm2 <= MIRROR_RATIO * max(area_mm2, 1.0):
        return None
    found = (f"The network finds more liver when the image is mirrored left-right ({mirrored_area_mm2 / 100:.0f} vs "
             f"{area_mm2 / 100:.0f} cm^2 on sample slices)")
    if cut_below:
        return (f"{found}. The scan ends inside the liver at its lowest slice; on scans of the top of the liver and "
                "the heart the mirrored heart can look like liver to the network even with a correct header: check "
                "that the result is the liver (not the heart or the spleen) and, if it is not, the image's left-right "
                "orientation in its header.")
    return (f"{found}: the image's left-right orientation is probably wrong in its header, and the result may be "
            "another organ. Check the header.")
