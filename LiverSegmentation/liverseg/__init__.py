"""liverseg: liver and liver-tumor segmentation of abdominal CT (the engine behind the LiverSegmentation module).

Pure Python (numpy, scipy, scikit-image, torch, SimpleITK for files); it never imports Slicer, Qt or VTK.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .checks import InputError
from .labels import LABELS, LIVER, TUMOR
from .modelfile import ModelFileError, load_model
from .pipeline import SegmentationResult, Segmenter, segment
from .postprocess import PostprocessConfig
from .progress import Cancelled

__all__ = ["segment", "Segmenter", "SegmentationResult", "PostprocessConfig", "InputError", "ModelFileError",
           "Cancelled", "load_model", "LABELS", "LIVER", "TUMOR", "__version__"]
