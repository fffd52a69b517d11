"""A user's own training cases: a CT and its corrected segmentation saved in the ``generic`` layout that
``liverseg-train prepare``/``finetune`` read (``<case>_image.nii.gz``, ``<case>_label.nii.gz``,
``<case>_meta.json``).

Why in the engine: the Slicer module ("Add to my training cases") and ``liverseg-train add-case`` both write
cases, and the module never imports training code. Nothing is ever overwritten: a case name that exists gets a
numbered suffix, and all three files are written completely (read back) or not at all.
"""
from __future__ import annotations

import datetime
import re
from pathlib import Path

import numpy as np

from .checks import InputError
from .io import ImageData, write_image, write_labelmap
from .labels import LABELS
from .outputs import write_json

CASE_FILES = ("_image.nii.gz", "_label.nii.gz", "_meta.json")


def case_name(text: str) -> str:
    """A file-safe case name from e.g. a volume name ("CT 2024/03 (venous)" -> "CT_2024_03_venous")."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return name[:60] or "case"


def _free_name(folder: Path, base: str) -> str:
    name, n = base, 1
    while any((folder / f"{name}{suffix}").exists() for suffix in CASE_FILES):
        n += 1
        name = f"{base}_{n}"
    return name


def add_case(image: ImageData, labelmap: np.ndarray, folder: str | Path, name: str, provenance: dict) -> Path:
    """Save one case; returns the image file's path. ``labelmap`` ([k, j, i], values of the label table) must lie on
    the image's grid and contain liver; ``provenance`` (source, model, edited segments, note, ...) goes into the
    meta file with the date and the label values."""
    if labelmap.shape != image.array.shape[:3]:
        raise InputError(f"The segmentation grid {labelmap.shape} differs from the CT's {image.array.shape[:3]}; "
                         "resample it onto the CT first.")
    values = set(np.unique(labelmap).tolist())
    if not values <= {0, *LABELS}:
        raise InputError(f"The segmentation has label values {sorted(values)}; only 0 (background), 1 (liver) and "
                         "2 (liver tumor) belong in a training case.")
    if not (labelmap >= 1).any():
        raise InputError("The segmentation has no liver; a training case needs the liver segmented.")
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    name = _free_name(folder, case_name(name))
    image_path, label_path, meta_path = (folder / f"{name}{suffix}" for suffix in CASE_FILES)
    meta = {"case": name, "added": datetime.datetime.now().isoformat(timespec="seconds"),
            "labels": {str(v): spec.name for v, spec in LABELS.items()},
            "label_made_by": "user (corrected in 3D Slicer or by hand)", **provenance}
    written = []
    try:
        written.append(write_image(image_path, image, overwrite=False))
        written.append(write_labelmap(label_path, labelmap.astype(np.uint8), image))
        written.append(write_json(meta_path, meta))
    except BaseException:
        for path in written:  # a case is three files or none
            path.unlink(missing_ok=True)
        raise
    return image_path


def list_cases(folder: str | Path) -> list[str]:
    """The case names in a folder of training cases (image and label present)."""
    folder = Path(folder).expanduser()
    return sorted(p.name[: -len(CASE_FILES[0])] for p in folder.glob(f"*{CASE_FILES[0]}")
                  if (folder / p.name.replace(CASE_FILES[0], CASE_FILES[1])).exists())


def describe_finetune(report: dict) -> str:
    """A fine-tuned model's comparison with its base (the ``finetune`` section of its card) in plain words, for
    ``liverseg-train finetune`` and the Slicer module."""
    c = report["comparison"]
    if c["verdict"] == "not compared":
        return (f"Fine-tuned on {len(report['cases'])} case(s); with one case there is nothing to compare on, so it is "
                f"not known to be better: keep {report['base_model']} as the default.")
    lines = [f"{r['case']}: liver Dice {r['base_liver_dice']:.3f} (base) -> {r['finetuned_liver_dice']:.3f} (fine-tuned)"
             for r in c["cases"]]
    mean = f"mean {c['base_mean_liver_dice']:.3f} -> {c['finetuned_mean_liver_dice']:.3f} ({c['method']})"
    tail = ("The fine-tuned model is better on cases it did not see." if c["verdict"] == "better" else
            f"The fine-tuned model is NOT better on cases it did not see; keep {report['base_model']} as the default.")
    return "\n".join(lines + [mean, tail])
