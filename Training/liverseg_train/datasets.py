"""Dataset adapters: each turns a public dataset's on-disk layout into a list of cases (image + label readers).

Every adapter yields :class:`CaseSource` objects; ``load()`` returns an engine ``ImageData`` for the image and a
label array on the same grid with values 0 background, 1 liver, 2 tumor.
"""
from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from liverseg.io import ImageData, read_image
from liverseg.labels import LIVER, TUMOR

log = logging.getLogger("liverseg.train")


@dataclass
class CaseSource:
    case_id: str
    patient_id: str
    dataset: str
    loader: Callable[[], tuple[ImageData, np.ndarray]]
    hu: bool = True  # False for 2D PNG/JPG slices (no Hounsfield units)
    meta: dict = field(default_factory=dict)

    def load(self) -> tuple[ImageData, np.ndarray]:
        image, label = self.loader()
        if label.shape != image.array.shape:
            raise ValueError(f"{self.case_id}: label shape {label.shape} differs from image {image.array.shape}.")
        return image, label.astype(np.uint8)


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _map_labels(label: np.ndarray, mapping: dict[int, int] | None) -> np.ndarray:
    if mapping is None:
        return label
    out = np.zeros(label.shape, np.uint8)
    for src, dst in mapping.items():
        out[label == src] = dst
    return out


def _pair_loader(image_path: Path, label_path: Path, mapping: dict[int, int] | None = None):
    def load():
        image = read_image(image_path)
        return image, _map_labels(read_image(label_path).array, mapping)
    return load


def lits(root: Path) -> list[CaseSource]:
    """LiTS: volume-N.nii + segmentation-N.nii (0 bg, 1 liver, 2 tumor), possibly in sub-folders."""
    cases = []
    for vol in sorted(root.rglob("volume-*.nii*"), key=lambda p: _natural_key(p.name)):
        n = re.search(r"volume-(\d+)", vol.name).group(1)
        segs = list(vol.parent.glob(f"segmentation-{n}.nii*")) or list(root.rglob(f"segmentation-{n}.nii*"))
        if segs:
            cases.append(CaseSource(f"lits_{n}", f"lits_{n}", "LiTS", _pair_loader(vol, segs[0])))
    return cases


def msd_liver(root: Path) -> list[CaseSource]:
    """MSD Task03_Liver: imagesTr/liver_N.nii.gz + labelsTr/liver_N.nii.gz."""
    cases = []
    for img in sorted((root / "imagesTr").glob("liver_*.nii*"), key=lambda p: _natural_key(p.name)):
        if img.name.startswith("._"):
            continue
        lab = root / "labelsTr" / img.name
        if lab.exists():
            cid = img.name.split(".")[0]
            cases.append(CaseSource(f"msd_{cid}", f"msd_{cid}", "MSD Task03 Liver", _pair_loader(img, lab)))
    return cases


def _read_dicom_masks(folder: Path, shape) -> np.ndarray:
    mask = read_image(folder).array
    if mask.shape != shape:
        raise ValueError(f"Mask series {folder} has shape {mask.shape}, image {shape}.")
    return mask > 0


def _dicom_folder(case_dir: Path, name: str, stack: contextlib.ExitStack) -> Path:
    """``case_dir/name`` as a folder; 3D-IRCADb ships it as ``name.zip`` inside each patient folder, which is
    unpacked into a temporary folder for as long as ``stack`` is open."""
    folder = case_dir / name
    if folder.is_dir():
        return folder
    archive = case_dir / f"{name}.zip"
    if not archive.is_file():
        raise FileNotFoundError(f"{case_dir} has neither {name}/ nor {name}.zip.")
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ircadb-")))
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp)
    inner = tmp / name
    return inner if inner.is_dir() else tmp


def ircadb(root: Path) -> list[CaseSource]:
    """3D-IRCADb-01: 3Dircadb1.N/PATIENT_DICOM + MASKS_DICOM/liver and every MASKS_DICOM/livertumor* (-> label 2).

    Works on the download as it is: patient folders anywhere below ``root`` (e.g. after unpacking 3Dircadb1.zip),
    and PATIENT_DICOM/MASKS_DICOM either as folders or as the .zip files the download has inside each patient."""
    cases = []
    dirs = [p for p in root.rglob("3Dircadb1.*") if p.is_dir() and re.fullmatch(r"3Dircadb1\.\d+", p.name)]
    for case_dir in sorted(dirs, key=lambda p: _natural_key(p.name)):
        def load(case_dir=case_dir):
            with contextlib.ExitStack() as stack:
                image = read_image(_dicom_folder(case_dir, "PATIENT_DICOM", stack))
                masks = _dicom_folder(case_dir, "MASKS_DICOM", stack)
                label = np.zeros(image.array.shape, np.uint8)
                label[_read_dicom_masks(masks / "liver", label.shape)] = LIVER
                for tumor_dir in sorted(masks.glob("livertumor*")):
                    label[_read_dicom_masks(tumor_dir, label.shape)] = TUMOR
                return image, label
        cid = case_dir.name.replace("3Dircadb1.", "ircadb_")
        cases.append(CaseSource(cid, cid, "3D-IRCADb-01", load))
    return cases


def chaos_ct(root: Path) -> list[CaseSource]:
    """CHAOS CT: CT/N/DICOM_anon/*.dcm + CT/N/Ground/liver_GT_*.png, slices paired by file name order."""
    import SimpleITK as sitk

    # Case folders anywhere below root: CT/N, or CHAOS_Train_Sets/Train_Sets/CT/N as the zip unpacks.
    case_dirs = [p.parent for p in root.rglob("DICOM_anon") if p.is_dir() and (p.parent / "Ground").is_dir()]
    cases = []
    for case_dir in sorted(case_dirs, key=lambda p: _natural_key(p.name)):
        def load(case_dir=case_dir):
            dcm = sorted((case_dir / "DICOM_anon").glob("*.dcm"), key=lambda p: _natural_key(p.name))
            pngs = sorted((case_dir / "Ground").glob("*.png"), key=lambda p: _natural_key(p.name))
            if len(dcm) != len(pngs):
                raise ValueError(f"{case_dir}: {len(dcm)} DICOM slices but {len(pngs)} ground-truth PNGs.")
            # CHAOS prescribes file-name order; read slices in that order rather than by position tags.
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames([str(p) for p in dcm])
            image = reader.Execute()
            first = sitk.ReadImage(str(dcm[0]))
            last = sitk.ReadImage(str(dcm[-1]))
            spacing = list(image.GetSpacing())
            if len(dcm) > 1:
                dist = np.linalg.norm(np.subtract(last.GetOrigin(), first.GetOrigin())) / (len(dcm) - 1)
                spacing[2] = float(dist) or spacing[2]
            arr = sitk.GetArrayFromImage(image)
            label = np.stack([(sitk.GetArrayFromImage(sitk.ReadImage(str(p))) > 0) for p in pngs]).astype(np.uint8)
            label = label.reshape(arr.shape) * LIVER
            data = ImageData(arr, tuple(spacing), first.GetOrigin(), image.GetDirection())
            return data, label
        cid = f"chaos_{case_dir.name}"
        cases.append(CaseSource(cid, cid, "CHAOS CT", load))
    return cases


def slices_2d(root: Path, image_dir: str = "images", mask_dir: str = "masks", spacing_mm: float = 1.0) -> list[CaseSource]:
    """Kaggle-style 2D folders: images/<name>.png|jpg + masks/<name>.png. No HU: see the warning in README."""
    import SimpleITK as sitk

    log.warning("2D slice folders carry no Hounsfield units: models trained on them need windowed input at inference.")
    imgs = sorted([p for p in (root / image_dir).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")],
                  key=lambda p: _natural_key(p.name))
    cases = []
    for img in imgs:
        masks = [m for m in (root / mask_dir).glob(img.stem + ".*") if m.suffix.lower() in (".png", ".jpg", ".jpeg")]
        if not masks:
            continue

        def load(img=img, msk=masks[0]):
            a = sitk.GetArrayFromImage(sitk.ReadImage(str(img)))
            m = sitk.GetArrayFromImage(sitk.ReadImage(str(msk)))
            a = a.mean(-1) if a.ndim == 3 else a
            m = m.max(-1) if m.ndim == 3 else m
            # Map 0..255 grey values onto the default window so the same preprocessing applies.
            hu = (a.astype(np.float32) / 255.0) * 500.0 - 100.0
            lab = np.where(m > 127, TUMOR, np.where(m > 0, LIVER, 0)).astype(np.uint8) if m.max() > 1 else (m > 0).astype(np.uint8)
            return ImageData(hu[None], (spacing_mm, spacing_mm, spacing_mm), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)), lab[None]
        cases.append(CaseSource(f"slice_{img.stem}", f"slice_{img.stem}", "2D slices", load, hu=False))
    return cases


def generic(root: Path, image_glob: str = "*_image.nii*", label_token: tuple[str, str] = ("_image", "_label"),
            label_map: dict[int, int] | None = None) -> list[CaseSource]:
    """A folder of image/label pairs (NIfTI/NRRD): the label is the image's name with ``label_token`` replaced.

    ``label_map`` maps source label values to 1 (liver) / 2 (tumor), e.g. {6: 1} for an organ dataset whose liver is 6.
    """
    cases = []
    for img in sorted(root.glob(image_glob), key=lambda p: _natural_key(p.name)):
        lab = img.with_name(img.name.replace(*label_token))
        if lab == img or not lab.exists():
            continue
        cid = img.name.split(label_token[0])[0]
        meta_path = img.with_name(f"{cid}_meta.json")
        meta = {}
        if meta_path.exists():
            import json

            meta = json.loads(meta_path.read_text())
        cases.append(CaseSource(cid, cid, "generic", _pair_loader(img, lab, label_map), meta=meta))
    return cases


ADAPTERS: dict[str, Callable[..., list[CaseSource]]] = {
    "lits": lits, "msd": msd_liver, "ircadb": ircadb, "chaos": chaos_ct, "slices2d": slices_2d, "generic": generic,
}


def find_cases(kind: str, root: str | Path, **options) -> list[CaseSource]:
    if kind not in ADAPTERS:
        raise ValueError(f"Unknown dataset kind {kind!r}; choose one of {', '.join(ADAPTERS)}.")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Dataset folder {root} does not exist.")
    cases = ADAPTERS[kind](root, **options)
    if not cases:
        raise FileNotFoundError(f"No {kind} cases found under {root}; check the folder layout in Training/README.md.")
    return cases
