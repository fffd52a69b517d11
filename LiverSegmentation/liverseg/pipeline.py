"""The public segmentation API: ``Segmenter`` (load once, segment many) and the one-call ``segment``."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checks import check_geometry, check_volume
from .density_rules import RECLASSIFICATIONS
from .devices import resolve_device
from .inference import EnsemblePredictor, InferenceOptions, make_predictor
from .metrics import labelmap_statistics, longest_axial_diameter_mm
from .modelfile import LoadedModel, load_model, unfinished_warning
from .orientation import canonical_point_to_ras, canonical_transform, from_canonical, to_canonical, voxel_spacing
from .plausibility import LOWEST, NoLiverFound, check_result, cut_faces, mirror_warning
from .postprocess import PostprocessConfig, postprocess, to_labelmap
from .progress import CancelToken, ProgressCallback, Reporter
from .registry import model_members, resolve_model_path

log = logging.getLogger("liverseg")


@dataclass
class SegmentationResult:
    """A labelmap on exactly the input grid ([k, j, i], uint8: 0 background, 1 liver, 2 liver tumor)."""

    labelmap: np.ndarray
    ijk_to_ras: np.ndarray
    statistics: dict
    timings: dict
    model: str
    device: str
    warnings: list[str] = field(default_factory=list)
    roi_slices: tuple[int, int] = (0, 0)  # canonical slice range the fine pass ran on
    slices_run: int = 0  # network evaluations of a slice (coarse + fine)
    # Regions to review: ones the network called tumor that a density rule reported otherwise, darker liver right
    # around a tumor (rule "margin") and tissue of a tumor's density outside the liver next to it (rule "beyond"):
    # rule, volume_ml, mean_hu, centre_ras
    reclassified: list[dict] = field(default_factory=list)


def _where(region: dict) -> str:
    """A region's size, place (RAS, as Slicer's data probe shows it) and density."""
    x, y, z = region["centre_ras"]
    return f"{region['volume_ml']:.1f} mL at R {x:.0f}, A {y:.0f}, S {z:.0f} (mean {region['mean_hu']:.0f} HU)"


def describe_region(region: dict) -> str:
    """One region to review (an entry of ``SegmentationResult.reclassified``) in the words the user reads: size,
    where, density and what the rule made of it."""
    return f"{_where(region)}: {RECLASSIFICATIONS[region['rule']]}"


def review_warnings(regions: list[dict], shown: int = 5) -> list[str]:
    """The regions to review, in at most three lines with where to find each one (largest first), so a reader can
    check them: those the network called tumor and a density rule did not, the tumors with darker liver right around
    them (rule "margin"), which may be larger than segmented, and those with tissue of their density continuing
    outside the liver (rule "beyond"), which may extend beyond it."""
    def listed(group: list[dict], describe) -> str:
        more = f"; and {len(group) - shown} smaller" if len(group) > shown else ""
        return "; ".join(describe(r) for r in group[:shown]) + more

    rules = [r for r in regions if r["rule"] not in ("margin", "beyond")]
    margins = [r for r in regions if r["rule"] == "margin"]
    beyond = [r for r in regions if r["rule"] == "beyond"]
    lines = []
    if rules:
        lines.append(f"The network called {len(rules)} region(s) tumor that the density rules did not report as "
                     f"tumor; review them: {listed(rules, describe_region)}.")
    if margins:
        total = sum(r["volume_ml"] for r in margins)
        lines.append(f"{len(margins)} tumor(s) may be larger than segmented: {total:.1f} mL of darker liver lies "
                     f"right around them, left as liver, so the tumor volume may be too small. Review their margins: "
                     f"{listed(margins, _where)} (lesion margins, `--lesion-margins 10` on the command line, would "
                     "take such liver in).")
    if beyond:
        total = sum(r["volume_ml"] for r in beyond)
        lines.append(f"{len(beyond)} tumor(s) may extend beyond the liver: {total:.1f} mL of tissue of their density "
                     "continues outside the liver right next to them, left out of liver and tumor, so both volumes "
                     f"may be too small. Review them: {listed(beyond, _where)}.")
    return lines


class Segmenter:
    """Initialise once from a model (bundled name or file), then segment in-memory volumes or files."""

    def __init__(self, model: str | Path | LoadedModel | list | None = None, device: str = "auto",
                 inference: InferenceOptions | None = None, threads: int | None = None):
        """``model``: a bundled name, a file, a loaded model, or several of them (a list, or names/files joined by
        commas, e.g. ``"liver-unet,liver-resunet"``): an ensemble whose probabilities are averaged and compared
        with the mean of the members' thresholds."""
        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.models = [m if isinstance(m, LoadedModel) else load_model(resolve_model_path(m), "cpu")
                       for m in model_members(model)]
        self.model = self.models[0]
        predictors = [make_predictor(m, self.device, inference) for m in self.models]
        self.predictor = predictors[0] if len(predictors) == 1 else EnsemblePredictor(predictors)
        self.name = "+".join(m.name for m in self.models)
        self.version = "+".join(str(m.card.get("version", "")) for m in self.models)
        self.thresholds = {k: float(np.mean([m.thresholds[k] for m in self.models])) for k in ("liver", "tumor")}
        # Said with every result, not only at load time: a result from a half-trained model must not pass unnoticed.
        self.model_warnings = [w for w in (unfinished_warning(m.card) for m in self.models) if w]
        for w in self.model_warnings:
            log.warning(w)

    def segment(self, array: np.ndarray, ijk_to_ras: np.ndarray, *, tumor: bool = True,
                postprocessing: PostprocessConfig | None = None, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None, allow_non_hu: bool = False,
                require_liver: bool = True) -> SegmentationResult:
        """Segment a [k, j, i] CT array in HU whose voxel-to-RAS geometry is ``ijk_to_ras`` (4x4).

        An empty result, or a "liver" too small to be one (:mod:`liverseg.plausibility`), raises
        :class:`liverseg.plausibility.NoLiverFound` (never a silent empty or stray segmentation);
        ``require_liver=False`` returns it instead (the benchmark times phantoms; evaluations score an empty result 0). Partial coverage, a liver on the
        patient's left and unusual volumes come back as ``warnings``."""
        report = Reporter(progress, cancel)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        array = np.asarray(array)
        if array.ndim == 4 and array.shape[-1] == 1:
            array = array[..., 0]
        ijk_to_ras = check_geometry(ijk_to_ras)
        warnings = check_volume(array, allow_non_hu=allow_non_hu)
        for w in warnings:
            log.warning(w)
        warnings = list(self.model_warnings) + warnings
        transform = canonical_transform(array.shape, ijk_to_ras)
        canonical = to_canonical(array, transform)
        timings["checks_orientation"] = time.perf_counter() - t0
        report(0.02, "Preparing volume")

        t = time.perf_counter()
        probs = self.predictor.predict(canonical, transform.spacing, report.stage(0.02, 0.9))
        timings["inference"] = time.perf_counter() - t
        roi, slices_run = probs.roi_slices, probs.slices_run
        self.device = self.predictor.device  # may have fallen back to CPU

        report(0.9, "Postprocessing")
        t = time.perf_counter()
        th = self.thresholds
        liver = probs.liver >= round(th["liver"] * 255)
        tumor_mask = (probs.tumor >= round(th["tumor"] * 255)) if tumor else np.zeros_like(liver)
        probe_pixels = probs.probe_liver_pixels
        del probs
        cleaned = postprocess(liver, tumor_mask, transform.spacing, postprocessing, image_hu=canonical)
        liver, tumor_mask = cleaned.liver, cleaned.tumor
        reclassified = [{"rule": r.rule, "volume_ml": r.volume_ml, "mean_hu": r.mean_hu,
                         "centre_ras": canonical_point_to_ras(r.centre, transform, ijk_to_ras)}
                        for r in cleaned.reclassified]
        for w in review_warnings(reclassified):
            log.warning(w)
            warnings.append(w)
        report.check()
        if liver.any() or require_liver:
            try:
                checks = check_result(liver, canonical, transform.spacing)  # raises NoLiverFound: empty, or no liver
            except NoLiverFound as error:
                if require_liver:
                    raise
                checks = [str(error)]  # scored as it is (an evaluation, the benchmark)
            probe = getattr(self.predictor, "predictors", [self.predictor])[0]  # an ensemble: its first member
            if not probe.spec.volumetric:
                if probe_pixels is None:  # no coarse pass ran (no liver ROI, or a single slice)
                    probe_pixels = probe.probe_liver_pixels(canonical, transform.spacing)
                mirrored = probe.probe_liver_pixels(np.ascontiguousarray(canonical[:, :, ::-1]), transform.spacing)
                pixel_mm2 = probe.spec.spacing_mm ** 2
                faces = cut_faces(liver, transform.spacing)
                checks.append(mirror_warning(probe_pixels * pixel_mm2, mirrored * pixel_mm2,
                                             cut_below=LOWEST in faces))
            for w in filter(None, checks):
                log.warning(w)
                warnings.append(w)
        diameter = longest_axial_diameter_mm(tumor_mask, transform.spacing[1:])
        labelmap = from_canonical(to_labelmap(liver, tumor_mask), transform)
        timings["postprocessing"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        stats = labelmap_statistics(labelmap, float(np.prod(voxel_spacing(ijk_to_ras))))
        stats["largest_tumor_diameter_mm"] = diameter
        report(1.0, "Done")
        return SegmentationResult(labelmap=labelmap, ijk_to_ras=np.asarray(ijk_to_ras, float), statistics=stats,
                                  timings=timings, model=self.name, device=str(self.device), warnings=warnings,
                                  roi_slices=roi, slices_run=slices_run, reclassified=reclassified)


_CACHE: dict[tuple, Segmenter] = {}


def segment(image: np.ndarray | str | Path, ijk_to_ras: np.ndarray | None = None, *, model: str | Path | None = None,
            device: str = "auto", tumor: bool = True, postprocessing: PostprocessConfig | None = None,
            progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
            output: str | Path | None = None, overwrite: bool = False, allow_non_hu: bool = False) -> SegmentationResult:
    """Segment the liver and liver tumors in one call.

    ``image`` is a [k, j, i] HU array with its 4x4 ``ijk_to_ras`` matrix, or a path (NIfTI, NRRD, MHA, DICOM folder).
    With ``output`` the labelmap is also written there on exactly the input geometry.
    """
    from .dicomseg import SUFFIX as SEG_SUFFIX
    from .dicomseg import Algorithm, check_dicom_seg_input, load_sources, require_highdicom
    from .io import RESULT_SUFFIXES, ImageData, read_image, write_labelmap
    from .outputs import check_output_path, compound_suffix

    kwargs = dict(tumor=tumor, postprocessing=postprocessing, progress=progress, cancel=cancel, allow_non_hu=allow_non_hu)
    from_file = isinstance(image, (str, Path))
    dicom_seg = output is not None and compound_suffix(Path(output)) == SEG_SUFFIX
    if output is not None:  # refuse before spending time on inference
        check_output_path(output, overwrite, suffixes=RESULT_SUFFIXES, inputs=[image] if from_file else [])
        if dicom_seg:
            require_highdicom()
            check_dicom_seg_input(Path(image) if from_file else None)
    reference = read_image(image) if from_file else None
    sources = load_sources(reference.source_files) if dicom_seg else None  # e.g. UIDs blanked: refused now
    key = (str(model), device)
    if key not in _CACHE:
        _CACHE[key] = Segmenter(model, device)
    seg = _CACHE[key]
    if from_file:
        result = seg.segment(reference.array, reference.ijk_to_ras, **kwargs)
        if output is not None:
            write_labelmap(output, result.labelmap, reference, overwrite=overwrite,
                           algorithm=Algorithm(result.model, seg.version), dicom_sources=sources)
        return result
    if ijk_to_ras is None:
        raise ValueError("An in-memory array needs its 4x4 ijk_to_ras matrix.")
    result = seg.segment(image, ijk_to_ras, **kwargs)
    if output is not None:
        write_labelmap(output, result.labelmap, ImageData.from_array(np.asarray(image), ijk_to_ras), overwrite=overwrite)
    return result
