"""Helpers shared by the test modules (import as ``from helpers import ...``)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "LiverSegmentation"
SHARED_DATA = Path(os.environ.get("LIVERSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_case(name: str) -> tuple[Path, Path]:
    img = SHARED_DATA / "ct" / f"{name}_image.nii.gz"
    if not img.exists():
        pytest.skip(f"{img} not present (the ../shared data folder is only on development machines)")
    return img, SHARED_DATA / "ct" / f"{name}_label.nii.gz"


def liver_block(outside: int = 5):
    """A grid of 1 mm voxels, 40 slices of 90 + 2 x ``outside`` rows and columns, with a box-shaped liver (slices
    2-37, rows and columns ``outside`` to ``outside`` + 89), its open grid coordinates and ``ball(cz, cy, cx, r)`` for
    lesions: the scene of the analytic lesion-margin tests (a wider ``outside`` leaves room for what lies beyond the
    liver)."""
    n = 90 + 2 * outside
    zz, yy, xx = np.ogrid[:40, :n, :n]
    liver = np.zeros((40, n, n), bool)
    liver[2:38, outside:outside + 90, outside:outside + 90] = True

    def ball(cz, cy, cx, r):
        return (zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
    return liver, (zz, yy, xx), ball


def random_rotation_matrix(seed: int, max_deg: float = 20.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.deg2rad(rng.uniform(-max_deg, max_deg, 3))).as_matrix()


def write_dicom_series(folder: Path, array: np.ndarray, spacing=(3.0, 3.0, 5.0), series_uid="1.2.826.0.1.3680043.2.1125.1.1",
                       reverse_names: bool = False) -> Path:
    """Write a [k, j, i] int16 array as a DICOM series (one file per slice, axial, LPS identity direction)."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    n = array.shape[0]
    for k in range(n):
        sl = sitk.GetImageFromArray(array[k].astype(np.int16))
        sl.SetSpacing(spacing[:2])
        for tag, value in {"0008|0060": "CT", "0020|000e": series_uid, "0020|000d": series_uid + ".0",
                           "0020|0032": f"0\\0\\{spacing[2] * k}", "0020|0037": "1\\0\\0\\0\\1\\0",
                           "0020|0013": str(k + 1), "0028|0030": f"{spacing[1]}\\{spacing[0]}",
                           "0018|0050": str(spacing[2]), "0008|0018": f"{series_uid}.{k + 1}",
                           "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0020|0052": series_uid + ".9"}.items():
            sl.SetMetaData(tag, value)
        name = f"i{(n - 1 - k) if reverse_names else k:04d},0000b.dcm"
        writer.SetFileName(str(folder / name))
        writer.Execute(sl)
    return folder
