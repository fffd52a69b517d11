"""Segment names, colours and DICOM terminology entries, built from the engine's one table (liverseg.labels).

Slicer stores a segment's terminology as one serialised string; it is built here in Python so the module needs no
terminology JSON files. The format is the one ``vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry``
writes (the tests compare the two).
"""
from __future__ import annotations

from liverseg.labels import LABELS, CodedConcept, LabelSpec

CATEGORY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
REGION_CONTEXT = "Anatomic codes - DICOM master list"


def _triple(concept: CodedConcept | None) -> str:
    if concept is None:
        return "^^"
    return f"{concept.scheme}^{concept.code}^{concept.meaning}"


def terminology_entry(spec: LabelSpec) -> str:
    """The serialised terminology string of one label (category, type, no modifier, anatomic region)."""
    return "~".join([CATEGORY_CONTEXT, _triple(spec.category), _triple(spec.type), "^^", REGION_CONTEXT,
                     _triple(spec.region), "^^"])


SEGMENTS = [(spec, terminology_entry(spec)) for spec in LABELS.values()]
