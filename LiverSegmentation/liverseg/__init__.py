"""liverseg: liver and liver-tumor segmentation of abdominal CT (the engine behind the LiverSegmentation module).

Pure Python (numpy, scipy, scikit-image, torch, SimpleITK for files); it never imports Slicer, Qt or VTK.
Heavy names (anything that needs torch) are imported lazily, so ``import liverseg.labels`` or ``liverseg.checks``
works in a Python where torch is not installed yet (the Slicer module checks its dependencies that way).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "segment": "pipeline", "Segmenter": "pipeline", "SegmentationResult": "pipeline",
    "PostprocessConfig": "postprocess", "InputError": "checks", "ModelFileError": "modelfile",
    "NoLiverFound": "plausibility", "Cancelled": "progress", "load_model": "modelfile", "LABELS": "labels", "LIVER": "labels", "TUMOR": "labels",
}
__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'liverseg' has no attribute {name!r}")
