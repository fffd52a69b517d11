"""DICOM Segmentation (SEG) output for results of a DICOM input, so that PACS and DICOM viewers (OHIF, Slicer's
DICOM module, vendor workstations) open them next to the CT they belong to.

The SEG references the source series (study, series, SOP instance and frame-of-reference UIDs), holds one binary
segment per label of the engine's label table with its SNOMED codes and colour ("Liver" includes the tumors and
"Liver tumor" overlaps it, as in the ``.seg.nrrd`` output and the Slicer module), identifies the algorithm (model
name and version, liverseg version) and stores only the frames that contain a segment (highdicom's
``omit_empty_frames``). It is written with ``highdicom`` (the optional ``dicom`` extra: ``pip install
"liverseg[dicom]"``) through :func:`liverseg.outputs.write_atomic` and read back frame for frame before it
replaces anything.

A NIfTI/NRRD input has no DICOM instances to reference, so a SEG for it is refused before any work starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .checks import InputError
from .labels import LABELS, CodedConcept, segment_mask
from .outputs import OutputError, write_atomic

SUFFIX = ".dcm"
SERIES_NUMBER = 9901  # far from scanner series numbers, so the SEG sorts after the CT in a viewer


@dataclass(frozen=True)
class Algorithm:
    """What made the segmentation: stored in the SEG's Segment Algorithm Identification."""

    model: str
    model_version: str


def require_highdicom():
    """The highdicom module, or an error that says how to install it (asked before any work starts)."""
    try:
        import highdicom
    except ImportError as exc:
        raise InputError('DICOM SEG output needs highdicom: pip install "liverseg[dicom]" (or pip install '
                         "highdicom), or write .seg.nrrd / .nii.gz instead.") from exc
    return highdicom


def check_dicom_seg_input(source: Path | None) -> None:
    """Refuse a DICOM SEG for an input that is not a DICOM series (nothing to reference); ``None``: an in-memory
    array."""
    if source is None or not Path(source).expanduser().is_dir():
        what = "an in-memory array" if source is None else f"{source}, not a DICOM folder"
        raise InputError(f"DICOM SEG output needs a DICOM series as input; the input is {what}, so there are no "
                         "DICOM instances to reference. Write .seg.nrrd or .nii.gz instead.")


REFERENCED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID")


def load_sources(source_files: tuple[str, ...]) -> list:
    """The source instances' headers, checked for the UIDs a SEG must reference; call it before segmenting so that a
    series anonymised without UIDs is refused before minutes go into inference. The SOP class and instance UIDs of a
    DICOM file repeat those of its file meta header, which fills them where a de-identifier blanked the dataset's."""
    import pydicom

    if not source_files:
        raise InputError("DICOM SEG output needs a DICOM series as input (no source DICOM files are known).")
    sources = []
    for f in source_files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        meta = getattr(ds, "file_meta", None)
        for key, meta_key in (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not str(ds.get(key, "") or "") and meta is not None and meta.get(meta_key):
                setattr(ds, key, meta.get(meta_key))
        missing = [k for k in REFERENCED_UIDS if not str(ds.get(k, "") or "").strip()]
        if missing:
            raise InputError(f"{f} has no {', '.join(missing)} (de-identified without new UIDs?); a DICOM SEG could "
                             "not reference the CT. Write .seg.nrrd or .nii.gz instead.")
        sources.append(ds)
    return sources


def segment_masks(labelmap: np.ndarray) -> np.ndarray:
    """[k, j, i] labelmap -> [k, j, i, segment] binary masks in label-table order (Liver includes the tumors)."""
    return np.stack([segment_mask(labelmap, spec) for spec in LABELS.values()], axis=-1).astype(np.uint8)


def _code(hd, concept: CodedConcept):
    return hd.sr.CodedConcept(value=concept.code, scheme_designator=concept.scheme, meaning=concept.meaning)


def build_dicom_seg(labelmap: np.ndarray, sources: list, algorithm: Algorithm):
    """A highdicom Segmentation of ``labelmap`` ([k, j, i], slice k = ``sources[k]``, from :func:`load_sources`)."""
    hd = require_highdicom()
    from pydicom.sr.codedict import codes

    if len(sources) != labelmap.shape[0]:
        raise ValueError(f"{len(sources)} source instances for {labelmap.shape[0]} slices.")
    masks = segment_masks(labelmap)
    if not masks.any():
        raise OutputError("The segmentation is empty; no DICOM SEG was written.")
    family = codes.cid7162.ArtificialIntelligence
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.model, version=algorithm.model_version or "unknown", family=family,
        source=f"LiverSegmentation (liverseg {__version__})")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=spec.name, segmented_property_category=_code(hd, spec.category),
            segmented_property_type=_code(hd, spec.type), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=identification, tracking_uid=hd.UID(), tracking_id=spec.name,
            anatomic_regions=[_code(hd, spec.region)] if spec.region is not None else None,
            display_color=hd.color.CIELabColor.from_rgb(*spec.color_rgb))
        for n, spec in enumerate(LABELS.values(), start=1)]
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=masks, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="LiverSegmentation",
        manufacturer_model_name="liverseg", software_versions=__version__, device_serial_number="none",
        series_description=f"Liver segmentation ({algorithm.model} {algorithm.model_version})"[:64],
        content_label="LIVERSEG", content_description="Research use only, not for clinical use",
        omit_empty_frames=True)


def read_dicom_seg_masks(path: str | Path, source_sop_uids: list[str]) -> np.ndarray:
    """The [k, j, i, segment] masks of a SEG, in the order of the given source instances (slices without a frame
    are zero)."""
    hd = require_highdicom()
    seg = hd.seg.segread(str(path))
    numbers = list(range(1, len(LABELS) + 1))
    if list(seg.get_segment_numbers()) != numbers:
        raise ValueError(f"segments {seg.get_segment_numbers()} instead of {numbers}")
    return seg.get_pixels_by_source_instance(source_sop_uids, segment_numbers=numbers,
                                             assert_missing_frames_are_empty=True).astype(np.uint8)


def write_dicom_seg(path: str | Path, labelmap: np.ndarray, sources: list, algorithm: Algorithm,
                    overwrite: bool = False) -> Path:
    """Write the SEG (``sources`` from :func:`load_sources`) completely or not at all; the read-back must give the
    labelmap's masks voxel for voxel."""
    seg = build_dicom_seg(labelmap, sources, algorithm)
    masks = segment_masks(labelmap)
    uids = [str(ds.SOPInstanceUID) for ds in sources]

    def verify(tmp: Path) -> None:
        if not np.array_equal(read_dicom_seg_masks(tmp, uids), masks):
            raise ValueError("the segment masks read back differ from the labelmap")

    return write_atomic(path, lambda tmp: seg.save_as(str(tmp)), verify, overwrite=overwrite, checked=True)
