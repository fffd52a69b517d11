"""Preparation: every case becomes a compact cache of network-ready slices, made by the engine's own code.

Each case is brought to the canonical orientation, resampled in-plane to the model spacing and windowed with
``liverseg.preprocessing`` (the functions inference uses), then stored as float16 image + uint8 label (.npz).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from liverseg.orientation import canonical_transform, to_canonical
from liverseg.preprocessing import PreprocessingSpec, inplane_shape, normalize_hu, resize_slices

from .datasets import CaseSource

log = logging.getLogger("liverseg.train")


def prepare_case(case: CaseSource, spec: PreprocessingSpec) -> dict:
    """Return arrays on the network grid: image (Z, H, W) float16 in [0, 1], label (Z, H, W) uint8."""
    image, label = case.load()
    transform = canonical_transform(image.array.shape, image.ijk_to_ras)
    vol = to_canonical(image.array, transform)
    lab = to_canonical(label, transform)
    dz, dy, dx = transform.spacing
    hw = inplane_shape(vol.shape[1:], (dy, dx), spec.spacing_mm)
    img = resize_slices(normalize_hu(torch.from_numpy(np.ascontiguousarray(vol)), spec.window)[:, None], hw)[:, 0]
    # Labels: resample each class's mask smoothly and threshold, which keeps thin parts better than nearest.
    lab_t = torch.from_numpy(np.ascontiguousarray(lab))
    liver = resize_slices((lab_t >= 1).float()[:, None], hw)[:, 0] >= 0.5
    tumor = resize_slices((lab_t == 2).float()[:, None], hw)[:, 0] >= 0.5
    out = np.zeros(liver.shape, np.uint8)
    out[liver.numpy()] = 1
    out[tumor.numpy()] = 2
    return {"image": img.numpy().astype(np.float16), "label": out, "slice_spacing": float(dz), "native_shape": vol.shape}


def prepare(cases: list[CaseSource], out_dir: str | Path, spec: PreprocessingSpec, overwrite: bool = False) -> Path:
    """Cache every case and write ``manifest.json`` (cases, spacing, label provenance, licences)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() and not overwrite else {"cases": {}}
    if manifest.get("preprocessing") not in (None, spec.to_dict()):
        raise ValueError(f"{out_dir} was prepared with other preprocessing; use a new folder or --overwrite.")
    manifest["preprocessing"] = spec.to_dict()
    for case in cases:
        path = out_dir / f"{case.case_id}.npz"
        if path.exists() and case.case_id in manifest["cases"] and not overwrite:
            log.info("%s: cached", case.case_id)
            continue
        data = prepare_case(case, spec)
        np.savez_compressed(path, image=data["image"], label=data["label"])
        liver_slices = int((data["label"] >= 1).any(axis=(1, 2)).sum())
        manifest["cases"][case.case_id] = {
            "file": path.name, "patient_id": case.patient_id, "dataset": case.dataset, "hu": case.hu,
            "slices": int(data["image"].shape[0]), "shape": list(data["image"].shape),
            "slice_spacing_mm": data["slice_spacing"], "liver_slices": liver_slices,
            "tumor_voxels": int((data["label"] == 2).sum()),
            "label_made_by": case.meta.get("label_kind", case.meta.get("label_made_by", "")),
            "licence": case.meta.get("licence", case.meta.get("license", "")),
            "source": case.meta.get("dataset", case.meta.get("source", case.dataset)),
        }
        log.info("%s: %d slices, %d with liver", case.case_id, data["image"].shape[0], liver_slices)
        manifest_path.write_text(json.dumps(manifest, indent=1))
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest_path


def load_prepared(out_dir: str | Path) -> tuple[dict, dict[str, dict]]:
    """The manifest and the cached arrays of every case (float16 images stay float16 in memory)."""
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    arrays = {}
    for cid, info in manifest["cases"].items():
        with np.load(out_dir / info["file"]) as z:
            arrays[cid] = {"image": z["image"], "label": z["label"], "slice_spacing": info["slice_spacing_mm"]}
    return manifest, arrays
