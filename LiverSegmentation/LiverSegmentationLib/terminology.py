"""Segment names, colours and DICOM terminology entries, built from the engine's one table (liverseg.labels).

Slicer stores a segment's terminology as one serialised string naming a terminology context; Segment Editor looks
the entry up in that context. Slicer's "General Anatomy list" has no "Neoplasm" type, so the module ships its own
context, ``Resources/Terminology/LiverSegmentation.term.json``, with exactly the categories and types of the
label table (a test regenerates it from the table and compares), and loads it when the module starts. Regions use
Slicer's own "DICOM master list", which contains Liver. The string format is the one
``vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry`` writes (the tests compare the two).
"""
from __future__ import annotations

import json
from pathlib import Path

from liverseg.labels import CATEGORY_CONTEXT, LABELS, CodedConcept, terminology_entry

CONTEXT_FILE = Path(__file__).resolve().parents[1] / "Resources" / "Terminology" / "LiverSegmentation.term.json"


def _code(concept: CodedConcept) -> dict:
    return {"CodeMeaning": concept.meaning, "CodingSchemeDesignator": concept.scheme, "CodeValue": concept.code}


def terminology_context() -> dict:
    """The module's terminology context (dcmqi segment-context schema) as built from the label table."""
    categories: dict[str, dict] = {}
    for spec in LABELS.values():
        category = categories.setdefault(spec.category.code, {**_code(spec.category), "showAnatomy": spec.region is not None,
                                                              "Type": []})
        category["Type"].append({**_code(spec.type), "recommendedDisplayRGBValue": list(spec.color_rgb),
                                 "3dSlicerLabel": spec.name.lower()})
    return {"SegmentationCategoryTypeContextName": CATEGORY_CONTEXT,
            "@schema": "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/schemas/segment-context-schema.json#",
            "SegmentationCodes": {"Category": list(categories.values())}}


def load_context(terminologies_logic) -> None:
    """Make the module's context known to Slicer's terminology logic (idempotent)."""
    if CATEGORY_CONTEXT not in _loaded_names(terminologies_logic):
        terminologies_logic.LoadTerminologyFromFile(str(CONTEXT_FILE))


def _loaded_names(terminologies_logic) -> list[str]:
    import vtk

    names = vtk.vtkStringArray()
    terminologies_logic.GetLoadedTerminologyNames(names)
    return [names.GetValue(i) for i in range(names.GetNumberOfValues())]


def write_context_file(path: Path = CONTEXT_FILE) -> Path:
    """(Re)generate the shipped context file from the label table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(terminology_context(), indent=2) + "\n")
    return path


SEGMENTS = [(spec, terminology_entry(spec)) for spec in LABELS.values()]
