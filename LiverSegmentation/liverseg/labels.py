"""Label values, names, colours and terminology: the one place every part of the project reads them from.

The Slicer module, the CLI, the model cards and training all import these, so a label value or a SNOMED code
cannot disagree between the engine's output and what Slicer shows.
"""
from __future__ import annotations

from dataclasses import dataclass

BACKGROUND = 0
LIVER = 1
TUMOR = 2


@dataclass(frozen=True)
class CodedConcept:
    """A DICOM-style coded concept (coding scheme, code value, meaning)."""

    scheme: str
    code: str
    meaning: str


@dataclass(frozen=True)
class LabelSpec:
    """Everything a viewer needs to present one output label."""

    value: int
    name: str
    color_rgb: tuple[int, int, int]
    category: CodedConcept
    type: CodedConcept
    region: CodedConcept | None = None

    @property
    def color_float(self) -> tuple[float, float, float]:
        return tuple(c / 255.0 for c in self.color_rgb)  # type: ignore[return-value]


SCT_LIVER = CodedConcept("SCT", "10200004", "Liver")

LABELS: dict[int, LabelSpec] = {
    LIVER: LabelSpec(
        value=LIVER,
        name="Liver",
        color_rgb=(221, 130, 101),
        category=CodedConcept("SCT", "123037004", "Anatomical Structure"),
        type=SCT_LIVER,
    ),
    TUMOR: LabelSpec(
        value=TUMOR,
        name="Liver tumor",
        color_rgb=(144, 238, 144),
        category=CodedConcept("SCT", "49755003", "Morphologically Altered Structure"),
        type=CodedConcept("SCT", "108369006", "Neoplasm"),
        region=SCT_LIVER,
    ),
}


def segment_mask(labelmap, spec: LabelSpec):
    """The voxels of one label's segment in a labelmap: "Liver" includes the tumors (as LiTS scores it and as the
    Slicer module shows it) and "Liver tumor" overlaps it. Every segment-per-label output uses this one rule."""
    return labelmap >= LIVER if spec.value == LIVER else labelmap == spec.value


# Slicer's serialised terminology entries (what a segment's "TerminologyEntry" tag holds, in the Slicer module and
# in .seg.nrrd files). The category/type context is the module's own (Slicer's general anatomy list has no
# Neoplasm); regions come from Slicer's DICOM master list.
CATEGORY_CONTEXT = "Segmentation category and type - LiverSegmentation"
REGION_CONTEXT = "Anatomic codes - DICOM master list"


def _triple(concept: CodedConcept | None) -> str:
    return "^^" if concept is None else f"{concept.scheme}^{concept.code}^{concept.meaning}"


def terminology_entry(spec: LabelSpec) -> str:
    """The serialised terminology string of one label (category, type, no modifier, anatomic region), in the
    format of Slicer's ``vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry``."""
    return "~".join([CATEGORY_CONTEXT, _triple(spec.category), _triple(spec.type), "^^", REGION_CONTEXT,
                     _triple(spec.region), "^^"])


def label_table() -> list[dict]:
    """Labels as plain dicts, the form stored in model cards and printed by the CLI."""
    out = []
    for spec in LABELS.values():
        entry = {
            "value": spec.value,
            "name": spec.name,
            "color": list(spec.color_rgb),
            "category": [spec.category.scheme, spec.category.code, spec.category.meaning],
            "type": [spec.type.scheme, spec.type.code, spec.type.meaning],
        }
        if spec.region is not None:
            entry["region"] = [spec.region.scheme, spec.region.code, spec.region.meaning]
        out.append(entry)
    return out
