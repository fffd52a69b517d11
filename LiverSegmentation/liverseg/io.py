"""File input/output through SimpleITK: NIfTI, NRRD, MHA and DICOM series folders.

Outputs are written under a temporary name and renamed at the end, so a failed or cancelled run never leaves a
partial file where the user expects a result.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checks import InputError
from .orientation import ijk_to_ras_from_geometry, lps_to_ras

log = logging.getLogger("liverseg")
READ_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd")


@dataclass
class ImageData:
    """A [k, j, i] array plus geometry; ``spacing``/``origin``/``direction`` are ITK (LPS) style."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    path: Path | None = None

    @property
    def ijk_to_ras(self) -> np.ndarray:
        return ijk_to_ras_from_geometry(self.spacing, self.origin, self.direction, lps=True)

    @classmethod
    def from_array(cls, array: np.ndarray, ijk_to_ras: np.ndarray) -> "ImageData":
        lps = lps_to_ras(ijk_to_ras)
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        direction = (lps[:3, :3] / spacing).ravel()
        return cls(array, tuple(spacing), tuple(lps[:3, 3]), tuple(direction))


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in (".seg.nrrd", ".nii.gz"):
        if name.endswith(s):
            return s
    return path.suffix.lower()


def read_image(path: str | Path) -> ImageData:
    """Read a volume file or a DICOM series folder (the largest series if the folder holds several)."""
    import SimpleITK as sitk

    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path} does not exist.")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(path))
            if not series:
                raise InputError(f"{path} is a folder without a DICOM series; give a NIfTI/NRRD file or a DICOM folder.")
            files = max((reader.GetGDCMSeriesFileNames(str(path), s) for s in series), key=len)
            if len(series) > 1:
                log.warning("%s holds %d DICOM series; using the largest (%d files).", path, len(series), len(files))
            reader.SetFileNames(files)
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"Could not read {path} as an image ({str(exc).strip().splitlines()[-1][:200]}).") from exc
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path} has {image.GetNumberOfComponentsPerPixel()} components per voxel (RGB/vector); "
                         "a scalar CT volume is needed.")
    if image.GetDimension() != 3:
        raise InputError(f"{path} is a {image.GetDimension()}D image; a 3D CT volume is needed.")
    return ImageData(array=sitk.GetArrayFromImage(image), spacing=image.GetSpacing(), origin=image.GetOrigin(),
                     direction=image.GetDirection(), path=path)


def check_output_path(path: str | Path, overwrite: bool) -> Path:
    path = Path(path).expanduser()
    if _suffix(path) not in WRITE_SUFFIXES:
        raise InputError(f"Output {path} must end in one of {', '.join(WRITE_SUFFIXES)}.")
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; pass --overwrite (overwrite=True) to replace it.")
    return path


def write_labelmap(path: str | Path, labelmap: np.ndarray, reference: ImageData, overwrite: bool = False) -> Path:
    """Write a uint8 labelmap with exactly the reference's origin, spacing and direction, atomically."""
    import SimpleITK as sitk

    path = check_output_path(path, overwrite)
    if labelmap.shape != reference.array.shape[:3]:
        raise ValueError(f"Labelmap shape {labelmap.shape} differs from the reference {reference.array.shape}.")
    image = sitk.GetImageFromArray(np.ascontiguousarray(labelmap.astype(np.uint8)))
    image.SetSpacing(tuple(float(s) for s in reference.spacing))
    image.SetOrigin(tuple(float(o) for o in reference.origin))
    image.SetDirection(tuple(float(d) for d in reference.direction))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".liverseg-", suffix=_suffix(path), dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, useCompression=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_image(path: str | Path, data: ImageData) -> Path:
    """Write a volume (used by the sample converter and tests)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(data.array))
    image.SetSpacing(tuple(float(s) for s in data.spacing))
    image.SetOrigin(tuple(float(o) for o in data.origin))
    image.SetDirection(tuple(float(d) for d in data.direction))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    return Path(path)
