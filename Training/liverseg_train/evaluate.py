"""Evaluation of a model file on cases at their native resolution, through the full engine pipeline.

Writes metrics.json, a per-case Markdown report, bar charts and overlay PNGs (CT | reference | prediction | overlay).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from liverseg.metrics import evaluate_labelmaps, global_dice, json_safe
from liverseg.outputs import write_json
from liverseg.overlay import save_overlay
from liverseg.pipeline import Segmenter

from .analysis import analyse_case, plot_profiles, report_lines
from .datasets import CaseSource
from .lesion_probe import edge_report_lines, probe_lesion_sizes, study_edge_lesions, study_lesions, study_report_lines
from .lesion_probe import report_lines as probe_report_lines

log = logging.getLogger("liverseg.train")


def crop_to_label(image, label: np.ndarray, margin_mm: float):
    """Crop a case to its liver's bounding box plus ``margin_mm`` (how cropped datasets such as the LiTS 117
    sample are made), keeping the geometry of the cropped block exact."""
    from liverseg.io import ImageData

    idx = np.nonzero(label >= 1)
    spacing_kji = np.array(list(reversed(image.spacing)))
    margin = np.ceil(margin_mm / spacing_kji).astype(int)
    lo = np.maximum(0, np.array([i.min() for i in idx]) - margin)
    hi = np.minimum(label.shape, np.array([i.max() + 1 for i in idx]) + margin)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    direction = np.array(image.direction).reshape(3, 3)
    origin = np.array(image.origin) + direction @ (np.array(image.spacing) * lo[::-1])
    return ImageData(np.ascontiguousarray(image.array[box]), image.spacing, tuple(origin), image.direction), label[box]


def evaluate_cases(model: str | Path, cases: list[CaseSource], out_dir: str | Path, device: str = "auto",
                   tumor: bool = True, crop_margin_mm: float | None = None, tta_scales: tuple[float, ...] = (),
                   lesion_sizes_mm: tuple[float, ...] = (), lesion_places: int = 3, lesion_draws: int = 0,
                   edge_draws: int = 0, lesion_growth_mm: float = 0.0, without: tuple[str, ...] = (),
                   review_beyond: bool = False) -> dict:
    """Segment ``cases`` and write the report; ``without`` names density rules to switch off (see
    ``liverseg.density_rules.DENSITY_RULES``), e.g. to measure what a rule costs the drawn lesions;
    ``review_beyond`` switches on the opt-in check for tissue beyond the liver."""
    from liverseg.inference import InferenceOptions
    from liverseg.postprocess import BEYOND_REVIEW_MM, PostprocessConfig, without_rules

    if lesion_places < 1 or min(lesion_draws, edge_draws) < 0 or any(size <= 0 for size in lesion_sizes_mm):
        raise ValueError("Lesion measurements need sizes > 0 mm, at least 1 place per size and draw counts >= 0 "
                         f"(got sizes {list(lesion_sizes_mm)}, places {lesion_places}, draws {lesion_draws} and "
                         f"{edge_draws}).")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    segmenter = Segmenter(model, device, InferenceOptions(tta_scales=tuple(tta_scales)))
    post = without_rules(PostprocessConfig(lesion_growth_mm=lesion_growth_mm,
                                           beyond_review_mm=BEYOND_REVIEW_MM if review_beyond else None), without)
    per_case = {}
    for case in cases:
        image, label = case.load()
        if crop_margin_mm is not None:
            image, label = crop_to_label(image, label, crop_margin_mm)
        t0 = time.perf_counter()
        result = segmenter.segment(image.array, image.ijk_to_ras, tumor=tumor, postprocessing=post,
                                   require_liver=False)  # an empty result scores 0
        seconds = time.perf_counter() - t0
        spacing = tuple(reversed(image.spacing))
        has_tumor_label = bool((label == 2).any())
        m = evaluate_labelmaps(result.labelmap, label, spacing, tumor=tumor and has_tumor_label)
        m["seconds"] = seconds
        m["statistics"] = result.statistics
        m["analysis"] = analyse_case(image.array, image.ijk_to_ras, result.labelmap, label, tumor=tumor)
        m["review"] = review_regions(result, image.array, label, spacing, post)
        reference_liver = label >= 1
        drawn = lesion_sizes_mm or lesion_draws or edge_draws
        if drawn and not reference_liver.any():
            log.warning("%s has no liver label: no lesions drawn into it.", case.case_id)
        elif drawn:
            def segment(img: np.ndarray) -> np.ndarray:
                return segmenter.segment(img, image.ijk_to_ras, postprocessing=post, require_liver=False).labelmap

            if lesion_sizes_mm:
                m["lesion_probe"] = probe_lesion_sizes(segment, image.array, reference_liver, spacing,
                                                       tuple(lesion_sizes_mm), lesion_places)
            if lesion_draws:
                m["lesion_study"] = study_lesions(segment, image.array, reference_liver, spacing, lesion_draws)
            if edge_draws:
                m["edge_study"] = study_edge_lesions(segment, image.array, reference_liver, spacing, edge_draws)
        per_case[case.case_id] = m
        save_overlay(out_dir / f"{case.case_id}_overlay.png", image.array, image.ijk_to_ras, result.labelmap, label)
        log.info("%s: liver Dice %.4f%s (%.1f s)", case.case_id, m["liver"]["dice"],
                 f", tumor Dice {m['tumor']['dice']:.4f}" if "tumor" in m else "", seconds)
    summary = {"model": str(model), "model_warnings": segmenter.model_warnings, "cases": per_case,
               "crop_margin_mm": crop_margin_mm, "tta_scales": list(tta_scales), "without_rules": list(without),
               "lesion_growth_mm": lesion_growth_mm, "review_beyond": review_beyond,
               "liver_dice_mean": float(np.mean([c["liver"]["dice"] for c in per_case.values()])),
               "liver_dice_global": global_dice(list(per_case.values()), "liver")}
    tumor_cases = [c for c in per_case.values() if "tumor" in c]
    if tumor_cases:
        summary["tumor_dice_mean"] = float(np.mean([c["tumor"]["dice"] for c in tumor_cases]))
        summary["tumor_dice_global"] = global_dice(tumor_cases, "tumor")
    clean = json_safe(summary)
    write_json(out_dir / "metrics.json", clean, overwrite=True)
    write_report(clean, out_dir)
    return clean


def review_regions(result, image_hu: np.ndarray, label: np.ndarray, spacing, config) -> dict:
    """The result's regions to review by rule: {rule: {"regions", "ml"}}; for "margin" and "beyond" on a case with a
    tumor label also ``in_reference_tumor``, the share of the region (darker liver around the tumors, tissue outside
    the liver next to them) that is reference tumor, which says whether the check points at lesion (the same checks
    on the result, :func:`liverseg.postprocess.darker_margins` and :func:`liverseg.postprocess.tissue_beyond`)."""
    from liverseg.labels import LIVER, TUMOR
    from liverseg.postprocess import darker_margins, tissue_beyond

    by_rule: dict[str, dict] = {}
    for region in result.reclassified:
        entry = by_rule.setdefault(region["rule"], {"regions": 0, "ml": 0.0})
        entry["regions"] += 1
        entry["ml"] += region["volume_ml"]
    for rule, check in (("margin", darker_margins), ("beyond", tissue_beyond)):
        if rule in by_rule and (label == TUMOR).any():
            region, _ = check(result.labelmap >= LIVER, result.labelmap == TUMOR, image_hu.astype(np.float32),
                              spacing, config)
            by_rule[rule]["in_reference_tumor"] = float((label[region] == TUMOR).mean()) if region.any() else None
    return by_rule


def _review_line(cid: str, review: dict) -> str:
    parts = []
    for rule, e in review.items():
        share = e.get("in_reference_tumor")
        parts.append(f"{rule} {e['regions']} / {e['ml']:.1f} mL"
                     + (f" ({100 * share:.0f} % reference tumor)" if share is not None else ""))
    return f"- {cid}: " + ("; ".join(parts) if parts else "none")


def _num(v, fmt="{:.4f}"):
    return "n/a" if v is None else fmt.format(v)


def write_report(summary: dict, out_dir: Path) -> Path:
    lines = [f"# Evaluation of `{Path(summary['model']).name}`", ""]
    lines += [f"**Warning:** {w}\n" for w in summary.get("model_warnings", [])]
    changed = ([f"lesion margins {summary['lesion_growth_mm']:g} mm"] if summary.get("lesion_growth_mm") else []) + \
        [f"without the {rule} rule" for rule in summary.get("without_rules", [])] + \
        (["with the check for tissue beyond the liver"] if summary.get("review_beyond") else [])
    if changed:
        lines += [f"Postprocessing not the engine's default: {', '.join(changed)}.", ""]
    chart_at = len(lines)
    lines += ["| case | liver Dice | IoU | precision | recall | HD95 mm | ASSD mm | volume error | tumor Dice | lesions found (touched / IoU > 0.5) | seconds |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for cid, m in summary["cases"].items():
        lv, tu = m["liver"], m.get("tumor")
        lesions = f"{tu['detected']} / {tu['detected_iou50']} of {tu['reference_lesions']}" if tu else "n/a"
        lines.append(f"| {cid} | {_num(lv['dice'])} | {_num(lv['iou'])} | {_num(lv['precision'])} | {_num(lv['recall'])} | "
                     f"{_num(lv['hd95_mm'], '{:.1f}')} | {_num(lv['assd_mm'], '{:.2f}')} | {_num(lv['rvd'], '{:+.1%}')} | "
                     f"{_num(tu['dice']) if tu else 'n/a'} | {lesions} | {m['seconds']:.1f} |")
    lines += ["", f"Liver Dice: mean per case {summary['liver_dice_mean']:.4f}, global {summary['liver_dice_global']:.4f}."]
    if "tumor_dice_mean" in summary:
        lines.append(f"Tumor Dice: mean per case {summary['tumor_dice_mean']:.4f}, global {summary['tumor_dice_global']:.4f}.")
    reviews = {cid: m["review"] for cid, m in summary["cases"].items() if "review" in m}
    if reviews:
        lines += ["", "Regions to review (rule: regions / mL; for \"margin\", darker liver right around a tumor, the "
                  "share of it that is reference tumor where the case has tumor labels):", ""]
        lines += [_review_line(cid, review) for cid, review in reviews.items()]
    analysed = {cid: m["analysis"] for cid, m in summary["cases"].items() if "analysis" in m}
    if analysed:
        lines += [""] + report_lines(analysed)
    probes = {cid: m["lesion_probe"] for cid, m in summary["cases"].items() if "lesion_probe" in m}
    if probes:
        lines += [""] + probe_report_lines(probes)
    studies = {cid: m["lesion_study"] for cid, m in summary["cases"].items() if "lesion_study" in m}
    if studies:
        lines += [""] + study_report_lines(studies)
    edges = {cid: m["edge_study"] for cid, m in summary["cases"].items() if "edge_study" in m}
    if edges:
        lines += [""] + edge_report_lines(edges)
    lines += ["", "Overlays: CT | reference | prediction | prediction with reference outlines (yellow).", ""]
    lines += [f"![{cid}]({cid}_overlay.png)" for cid in summary["cases"]]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ids = list(summary["cases"])
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(ids)), 3))
        ax.bar(ids, [summary["cases"][c]["liver"]["dice"] for c in ids], color="#dd8265", label="liver")
        ax.bar(ids, [summary["cases"][c].get("tumor", {}).get("dice") or 0 for c in ids], color="#90ee90", width=0.4, label="tumor")
        ax.set_ylim(0, 1)
        ax.set_ylabel("Dice")
        ax.legend()
        plt.xticks(rotation=30, ha="right")
        plt.tight_layout()
        fig.savefig(out_dir / "dice.png", dpi=100)
        plt.close(fig)
        if analysed:
            plot_profiles(analysed, out_dir / "profile.png")
        lines.insert(chart_at, "![Dice per case](dice.png)\n")
    except ImportError:
        log.info("matplotlib not installed: no bar chart.")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
