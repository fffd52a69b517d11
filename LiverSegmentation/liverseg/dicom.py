"""DICOM series reading with the geometry checks a volume reader must make before anyone measures on it.

ITK stacks the files of a series and, when positions are irregular, averages the spacing and prints a multi-line
warning: a series with a missing slice, uneven spacing or gantry tilt then yields a volume whose voxels are in the
wrong place (labelmaps misplaced by centimetres, volumes 10-20 % off). liverseg refuses such series with the reason
and what to do (resample them first, as dcm2niix does for tilted series). A folder with several series: the one
named by ``series`` (``--series UID``), otherwise the largest, with one warning that lists the others. Localizer
(scout) images inside a series are left out with a warning.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checks import InputError, check_memory

log = logging.getLogger("liverseg")

SPACING_TOLERANCE = 0.05  # relative deviation of one gap from the median slice gap
TILT_TOLERANCE_DEG = 0.5


@dataclass(frozen=True)
class SliceInfo:
    path: str
    position: np.ndarray  # ImagePositionPatient (mm)
    orientation: np.ndarray  # ImageOrientationPatient (row, column direction cosines)
    localizer: bool
    rows: int
    columns: int


def _slice_info(path: str) -> SliceInfo | None:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None

    def tag(key: str) -> str:
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""

    try:
        position = np.array([float(v) for v in tag("0020|0032").split("\\")])
        orientation = np.array([float(v) for v in tag("0020|0037").split("\\")])
    except ValueError:
        position, orientation = np.full(3, np.nan), np.full(6, np.nan)
    size = reader.GetSize()
    return SliceInfo(path, position, orientation, "LOCALIZER" in tag("0008|0008").upper(), size[1], size[0])


def list_series(folder: Path) -> dict[str, list[str]]:
    """Series instance UID -> its files (GDCM's grouping and order); refuses a folder without a series."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    found = {uid: list(reader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in reader.GetGDCMSeriesIDs(str(folder))}
    if not found:
        raise InputError(f"{folder} is a folder without a DICOM series; give a NIfTI/NRRD file or a DICOM folder.")
    return found


def check_slice_geometry(slices: list[SliceInfo], folder: Path) -> list[SliceInfo]:
    """Slices sorted along the slice normal, or :class:`InputError` for geometry that stacking would get wrong."""
    if any(not (np.isfinite(s.position).all() and s.position.size == 3 and s.orientation.size == 6) for s in slices):
        raise InputError(f"{folder}: some slices lack ImagePositionPatient/ImageOrientationPatient; the volume's "
                         "geometry cannot be known. Convert the series with a tool that knows its geometry.")
    first = slices[0].orientation
    if any(np.abs(s.orientation - first).max() > 1e-3 for s in slices) or any(
            (s.rows, s.columns) != (slices[0].rows, slices[0].columns) for s in slices):
        raise InputError(f"{folder}: the slices of the series differ in orientation or size (mixed acquisitions); "
                         "export a single axial series.")
    normal = np.cross(first[:3], first[3:])
    slices = sorted(slices, key=lambda s: float(s.position @ normal))
    if len(slices) < 2:
        return slices
    along = np.array([float(s.position @ normal) for s in slices])
    gaps = np.diff(along)
    if (gaps < 1e-3).any():
        raise InputError(f"{folder}: two or more slices share a position (duplicates or several phases in one series); "
                         "export each acquisition as its own series.")
    typical = float(np.median(gaps))
    offsets = np.array([s.position - slices[0].position for s in slices])
    inplane = offsets - np.outer(along - along[0], normal)
    tilt = float(np.degrees(np.arctan2(np.linalg.norm(inplane[-1]), along[-1] - along[0])))
    if tilt > TILT_TOLERANCE_DEG:
        raise InputError(f"{folder}: the series has a gantry tilt of {tilt:.1f} degrees; stacking it would shear the "
                         "anatomy. Resample it to a regular grid first (e.g. dcm2niix corrects gantry tilt).")
    off = np.abs(gaps - typical) > SPACING_TOLERANCE * typical
    if off.any():
        i = int(np.argmax(np.abs(gaps - typical)))
        missing = int(round(gaps[i] / typical)) - 1
        what = (f"{missing} missing slice(s) between positions {along[i]:.1f} and {along[i + 1]:.1f} mm"
                if missing >= 1 and abs(gaps[i] - (missing + 1) * typical) < SPACING_TOLERANCE * typical
                else f"uneven slice spacing ({gaps.min():.2f} to {gaps.max():.2f} mm)")
        raise InputError(f"{folder}: {what}; the volume would be stretched and misplaced. Re-export the complete "
                         "series, or resample it to a regular grid first.")
    return slices


def read_dicom_series(folder: Path, series: str | None = None):
    """The chosen series of ``folder`` as a SimpleITK image, after the geometry checks above, and its files in
    slice order (file ``n`` is slice ``k = n`` of the image: what a DICOM SEG must reference)."""
    import SimpleITK as sitk

    found = list_series(folder)
    if series is not None:
        if series not in found:
            raise InputError(f"{folder} has no series {series}; it holds: "
                             + "; ".join(f"{uid} ({len(f)} files)" for uid, f in found.items()))
        uid = series
    else:
        uid = max(found, key=lambda u: len(found[u]))
        if len(found) > 1:
            others = ", ".join(f"{u} ({len(found[u])} files)" for u in found if u != uid)
            log.warning("%s holds %d DICOM series; using the largest, %s (%d files); choose another with --series "
                        "UID (others: %s).", folder, len(found), uid, len(found[uid]), others)
    infos = [i for i in (_slice_info(f) for f in found[uid]) if i is not None]
    if not infos:
        raise InputError(f"{folder}: no readable image in series {uid}.")
    localizers = [i for i in infos if i.localizer]
    if localizers and len(localizers) < len(infos):
        log.warning("%s: left out %d localizer image(s) of series %s.", folder, len(localizers), uid)
        infos = [i for i in infos if not i.localizer]
    check_memory(len(infos) * infos[0].rows * infos[0].columns, f"The series {uid} ({len(infos)} slices)")
    infos = check_slice_geometry(infos, folder)
    reader = sitk.ImageSeriesReader()
    files = [i.path for i in infos]
    reader.SetFileNames(files)
    return reader.Execute(), tuple(files)
