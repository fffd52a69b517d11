"""The public sample case: LiTS case 117 (liver + tumor, expert labels) from the PyPI package
``liver-ct-segmentation-package==1.6.0``.

It is obtained with ``pip download --no-deps`` (never installed: that package pins very old dependencies) and its
two MRC volumes are converted to NIfTI. The case is a liver bounding-box crop resized to 128^3; the package does not
document the voxel size, so the spacing below is an estimate from the anatomy. This case is for testing and
reporting only and is never used for training or model selection.
"""
from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

PACKAGE = "liver-ct-segmentation-package==1.6.0"
MEMBERS = {"image": "liver_ct_segmentation_package/data/img_117.mrc", "label": "liver_ct_segmentation_package/data/lab_117.mrc"}
# SHA-256 of each member as published in that release: a changed or corrupted download is refused, never used.
SHA256 = {"image": "6519548844be8c92a6f37dff22961800ec4baad72a4efbb9f7061ffd265e1780",
          "label": "0f4950afdb218ae1a8790c2367a3f1bffe3d68cf186239cdfae897e4d4f99240"}
ESTIMATED_SPACING_MM = (1.1, 1.1, 1.35)  # along R->L, A->P, I->S (not documented by the source; see module docstring)
_MRC_DTYPES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16}


def cache_dir() -> Path:
    return Path(os.environ.get("LIVERSEG_CACHE", Path.home() / ".cache" / "liverseg")).expanduser() / "sample"


def read_mrc(data: bytes) -> np.ndarray:
    """Read an MRC2014 volume (1024-byte header + extended header) as a numpy array of shape (nz, ny, nx)."""
    nx, ny, nz, mode = struct.unpack("<4i", data[:16])
    if mode not in _MRC_DTYPES:
        raise ValueError(f"Unsupported MRC mode {mode}.")
    extended = struct.unpack("<i", data[92:96])[0]
    dtype = _MRC_DTYPES[mode]
    offset = 1024 + extended
    count = nx * ny * nz
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(nz, ny, nx)


def sample_geometry():
    """Array axes of the MRC are (R->L, A->P, I->S); transposed to [k, j, i] = (S, P, L) this is LPS-ordered."""
    from .io import ImageData

    sx, sy, sz = ESTIMATED_SPACING_MM
    # ITK/LPS geometry: i -> +L, j -> +P, k -> +S, so the direction is the identity.
    return dict(spacing=(sx, sy, sz), origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)), ImageData


def fetch_sample(dest: Path | None = None, quiet: bool = True) -> dict[str, Path]:
    """Download (once) and convert the sample; returns {'image': path, 'label': path} of NIfTI files."""
    from .io import write_image

    dest = Path(dest) if dest else cache_dir()
    paths = {"image": dest / "lits117_image.nii.gz", "label": dest / "lits117_label.nii.gz"}
    if all(p.exists() for p in paths.values()):
        return paths
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", tmp, PACKAGE]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(f"Could not download {PACKAGE} from PyPI (pip said: {proc.stderr.strip()[-300:]}). "
                               "Check the network/proxy, or download the wheel by hand and unpack it into " + str(dest))
        geometry, ImageData = sample_geometry()
        with zipfile.ZipFile(wheels[0]) as wheel:
            for key, member in MEMBERS.items():
                data = wheel.read(member)
                if hashlib.sha256(data).hexdigest() != SHA256[key]:
                    raise RuntimeError(f"{member} in the downloaded {PACKAGE} does not have the expected checksum; "
                                       "the download is corrupt or the package changed. Nothing was written.")
                array = np.ascontiguousarray(read_mrc(data).transpose(2, 1, 0))
                array = array.astype(np.int16) if key == "image" else array.astype(np.uint8)
                write_image(paths[key], ImageData(array=array, **geometry))
    (dest / "README.txt").write_text(
        "LiTS case 117 (liver + tumor, expert labels), from the PyPI package " + PACKAGE + ".\n"
        "Liver bounding-box crop resized to 128^3; spacing estimated as " + str(ESTIMATED_SPACING_MM) + " mm.\n"
        "LiTS data licence: CC BY-NC-SA 4.0. Test/reporting use only; never train on it.\n")
    return paths
