"""Command line interface: ``liverseg segment|evaluate|sample|benchmark|info``.

Errors are one line on stderr and a non-zero exit code; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

from . import __version__
from .console import EXIT_ERROR, ProgressBar, non_negative_mm, run_cli
from .progress import Cancelled

log = logging.getLogger("liverseg")


def _case_name(inp: Path) -> str:
    """The input's name without its image suffix (a DICOM folder keeps its name)."""
    from .io import READ_SUFFIXES

    name = inp.name
    for suffix in READ_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def output_paths(inputs: list[Path], output: Path, root: Path | None = None, suffix: str = ".nii.gz") -> list[Path]:
    """Where each input's result goes. One input and a file name: that file. Otherwise ``output`` is a folder
    that mirrors the inputs' layout below ``root`` (``--input-dir``) or their common folder (``A/ct.nii.gz`` and
    ``B/ct.nii.gz`` become ``A/ct_liverseg.nii.gz`` and ``B/ct_liverseg.nii.gz``; ``suffix`` is ``--format``), so
    two cases never share one."""
    from .checks import InputError

    if len(inputs) == 1 and root is None and output.suffix and not output.is_dir():
        return [output]  # a file name (its suffix is checked with the other output rules)
    if output.suffix and not output.is_dir():
        raise InputError("With several inputs or --input-dir, -o/--output must be a folder.")
    resolved = [p.expanduser().resolve() for p in inputs]
    if len(set(resolved)) != len(resolved):
        raise InputError("An input is given twice.")
    common = root.resolve() if root is not None else Path(os.path.commonpath([str(p.parent) for p in resolved]))
    return [output / p.parent.relative_to(common) / f"{_case_name(p)}_liverseg{suffix}" for p in resolved]


STATS_COLUMNS = ["input", "output", "ok", "error", "liver_volume_ml", "tumor_count", "tumor_volume_ml",
                 "tumor_burden_percent", "largest_tumor_diameter_mm", "model", "model_version", "device", "seconds",
                 "warnings"]


def _write_stats(path: Path, rows: list[dict]) -> None:
    """The whole table, rewritten atomically after every case: complete after each case, even if a later one
    crashes the run."""
    import csv
    import io

    from .outputs import write_json, write_text

    if path.suffix.lower() == ".json":
        write_json(path, rows, overwrite=True, checked=True)
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=STATS_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "warnings": "; ".join(row.get("warnings") or [])})
    write_text(path, buffer.getvalue(), overwrite=True, checked=True)


def cmd_segment(args) -> int:
    from .checks import InputError
    from .inference import InferenceOptions
    from .dicomseg import SUFFIX as SEG_SUFFIX
    from .dicomseg import Algorithm, check_dicom_seg_input, load_sources, require_highdicom
    from .io import RESULT_SUFFIXES, find_inputs, inspect_input, read_image, write_labelmap
    from .modelfile import ModelFileError
    from .outputs import check_output_path, compound_suffix
    from .pipeline import Segmenter
    from .postprocess import BEYOND_REVIEW_MM, PostprocessConfig, without_rules

    if args.no_tumor and (args.lesion_margins > 0 or args.without_rule or args.review_beyond):
        raise InputError("--lesion-margins, --without-rule and --review-beyond act on tumors, so they have nothing to do "
                         "with --no-tumor. Drop one of the two.")
    post = without_rules(PostprocessConfig(enabled=not args.no_postprocessing, lesion_growth_mm=args.lesion_margins,
                                           beyond_review_mm=BEYOND_REVIEW_MM if args.review_beyond else None),
                         args.without_rule)  # checked first
    output = Path(args.output).expanduser()
    inputs = [Path(p).expanduser() for p in args.inputs]
    root = Path(args.input_dir).expanduser() if args.input_dir else None
    if root is not None:
        if not root.is_dir():
            raise InputError(f"--input-dir {root} is not a folder.")
        found = find_inputs(root, exclude=output)
        if not found:
            raise InputError(f"No NIfTI/NRRD/MHA file or DICOM series below {root}.")
        inputs += found
    if not inputs:
        raise InputError("Give one or more inputs, or --input-dir DIR.")
    targets = output_paths(inputs, output, root if not args.inputs else None, "." + args.format)
    for t in targets:  # every output and every input is checked before minutes go into inference
        check_output_path(t, args.overwrite, suffixes=RESULT_SUFFIXES, inputs=inputs)
    dicom_seg = {t for t in targets if compound_suffix(t) == SEG_SUFFIX}
    if dicom_seg:
        require_highdicom()
    stats_path = Path(args.stats).expanduser() if args.stats else None
    if stats_path is not None:
        check_output_path(stats_path, args.overwrite, suffixes=(".csv", ".json"), inputs=inputs)
    broken = {}
    for inp, target in zip(inputs, targets):
        try:
            inspect_input(inp)
            if target in dicom_seg:
                check_dicom_seg_input(inp)
        except InputError as exc:
            if len(inputs) == 1 or args.stop_on_error:
                raise
            broken[inp] = exc  # reported now; the other cases still run
            print(f"liverseg: error: {inp}: {exc}", file=sys.stderr)
    segmenter = None  # loaded once the first input has been read: a bad single input is reported at once
    summaries = []
    started = time.perf_counter()
    for n, (inp, target) in enumerate(zip(inputs, targets), start=1):
        t0 = time.perf_counter()
        label = f"[{n}/{len(inputs)}] {inp.name}" if len(inputs) > 1 else inp.name
        bar = ProgressBar(label, enabled=not args.quiet)
        try:
            if inp in broken:
                raise broken[inp]
            image = read_image(inp, series=args.series)
            # a series without UIDs is refused before inference; the headers are kept for the SEG
            sources = load_sources(image.source_files) if target in dicom_seg else None
            if segmenter is None:
                segmenter = Segmenter(args.model, args.device, InferenceOptions(roi=not args.no_roi, tta_scales=tuple(args.tta)),
                                      threads=args.threads)
            result = segmenter.segment(image.array, image.ijk_to_ras, tumor=not args.no_tumor, postprocessing=post,
                                       progress=bar, allow_non_hu=args.allow_non_hu)
            write_labelmap(target, result.labelmap, image, overwrite=args.overwrite,
                           algorithm=Algorithm(result.model, segmenter.version), dicom_sources=sources)
        except (Exception, Cancelled) as exc:
            if isinstance(exc, (Cancelled, ModelFileError)) or args.stop_on_error or len(inputs) == 1:
                raise
            if inp not in broken:
                print(f"liverseg: error: {inp}: {exc}", file=sys.stderr)
            summaries.append({"input": str(inp), "output": None, "ok": False, "error": str(exc),
                              "seconds": round(time.perf_counter() - t0, 2)})
        else:
            s = result.statistics
            summaries.append({"input": str(inp), "output": str(target), "ok": True, **{k: round(v, 3) for k, v in s.items()},
                              "seconds": round(time.perf_counter() - t0, 2), "device": result.device, "model": result.model,
                              "model_version": segmenter.version, "warnings": result.warnings})
            print(f"{label}: liver {s['liver_volume_ml']:.1f} mL, {s['tumor_count']} tumor(s) {s['tumor_volume_ml']:.1f} mL "
                  f"({s['tumor_burden_percent']:.1f} %, largest {s['largest_tumor_diameter_mm']:.0f} mm), "
                  f"{summaries[-1]['seconds']:.1f} s -> {target}")
        if stats_path is not None:
            _write_stats(stats_path, summaries)
    failed = [s for s in summaries if not s["ok"]]
    if args.json:
        print(json.dumps(summaries if len(inputs) > 1 else summaries[0], indent=1))
    if len(inputs) > 1:
        print(f"liverseg: {len(inputs)} cases: {len(inputs) - len(failed)} ok, {len(failed)} failed, "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    if failed:
        print(f"liverseg: {len(failed)} of {len(summaries)} cases failed: " + ", ".join(s["input"] for s in failed),
              file=sys.stderr)
        return EXIT_ERROR
    return 0


def _fmt(v) -> str:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4f}"
    return str(v)


def cmd_evaluate(args) -> int:
    import numpy as np

    from .io import read_labelmap
    from .metrics import evaluate_labelmaps, json_safe
    from .outputs import check_output_path, write_json

    if args.json_out:
        check_output_path(args.json_out, args.overwrite, suffixes=(".json",))
    pred, ref = read_labelmap(args.prediction), read_labelmap(args.reference)
    if pred.array.shape != ref.array.shape:
        raise ValueError(f"Prediction {pred.array.shape} and reference {ref.array.shape} are on different grids.")
    if not np.allclose(pred.ijk_to_ras, ref.ijk_to_ras, atol=1e-3):
        log.warning("Prediction and reference geometry differ; comparing voxel by voxel anyway.")
    spacing = tuple(reversed(ref.spacing))  # [k, j, i] order
    result = evaluate_labelmaps(pred.array.astype(np.uint8), ref.array.astype(np.uint8), spacing, tumor=not args.no_tumor)
    keys = ["dice", "iou", "precision", "recall", "specificity", "accuracy", "rvd", "hd95_mm", "assd_mm"]
    print(f"{'metric':<24}" + "".join(f"{s:>12}" for s in result))
    for k in keys + ["detection_recall", "detection_recall_iou50", "detection_precision", "reference_lesions",
                   "predicted_lesions"]:
        if any(k in result[s] for s in result):
            print(f"{k:<24}" + "".join(f"{_fmt(result[s].get(k, '')):>12}" for s in result))
    clean = json_safe(result)
    if args.json_out:
        write_json(args.json_out, clean, overwrite=args.overwrite)
    else:
        print(json.dumps(clean))
    return 0


def cmd_sample(args) -> int:
    from .sample import fetch_sample

    paths = fetch_sample(Path(args.dest) if args.dest else None)
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


def cmd_benchmark(args) -> int:
    from .benchmark import run_benchmark

    shape = tuple(int(v) for v in args.shape.lower().split("x"))
    if len(shape) != 3 or min(shape) < 3:
        raise ValueError("--shape takes WIDTHxHEIGHTxSLICES, each at least 3, e.g. 512x512x200")
    from .checks import check_memory

    check_memory(math.prod(shape), f"A {args.shape} benchmark volume")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = run_benchmark((shape[2], shape[1], shape[0]), device=args.device, model=args.model, repeats=args.repeats,
                        input_path=args.input)
    print(json.dumps(out, indent=1))
    return 0


def cmd_overlay(args) -> int:
    from .io import read_image, read_labelmap
    from .outputs import check_output_path
    from .overlay import save_overlay

    check_output_path(args.output, args.overwrite, suffixes=(".png",))
    ct, pred = read_image(args.ct), read_labelmap(args.labelmap)
    ref = read_labelmap(args.reference).array if args.reference else None
    for name, other in (("labelmap", pred.array), ("reference", ref)):
        if other is not None and other.shape != ct.array.shape:
            raise ValueError(f"The {name} grid {other.shape} differs from the CT {ct.array.shape}.")
    print(save_overlay(args.output, ct.array, ct.ijk_to_ras, pred.array, ref, overwrite=args.overwrite))
    return 0


def cmd_info(args) -> int:
    from .devices import describe_devices
    from .modelfile import read_card
    from .registry import BUNDLED_MODELS, DEFAULT_MODEL, resolve_model_path

    print(f"liverseg {__version__}")
    print("devices: " + "; ".join(describe_devices()))
    names = [args.model] if args.model else list(BUNDLED_MODELS)
    for name in names:
        try:
            card = read_card(resolve_model_path(name))
        except Exception as exc:  # list what is there even if one model is broken
            if args.model:
                raise
            print(f"model {name}: unavailable ({exc})")
            continue
        flag = " (default)" if name == DEFAULT_MODEL else ""
        metrics = card.get("metrics", {})
        print(f"model {name}{flag}: {card['architecture']} v{card.get('version', '?')}, "
              f"window {card['preprocessing']['window']}, {card['preprocessing']['spacing_mm']} mm, "
              f"{2 * card['preprocessing']['context_slices'] + 1} slices")
        for k, v in metrics.get("summary", {}).items():
            print(f"    {k}: {v}")
        if args.model:
            print(json.dumps(card, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .devices import DEVICE_CHOICES
    from .density_rules import DENSITY_RULES

    p = argparse.ArgumentParser(prog="liverseg", description="Liver and liver-tumor segmentation of abdominal CT "
                                "(labels: 0 background, 1 liver, 2 liver tumor). Research use only.")
    p.add_argument("--version", action="version", version=f"liverseg {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment one or more CT volumes (NIfTI, NRRD, MHA or DICOM folder)")
    s.add_argument("inputs", nargs="*", metavar="INPUT")
    s.add_argument("--input-dir", metavar="DIR", help="segment every NIfTI/NRRD/MHA file and DICOM series below DIR "
                   "(the output folder keeps the layout; a failing case is reported and the others go on)")
    s.add_argument("--stats", metavar="FILE", help="per-case statistics table (.csv or .json): volumes, tumor count, "
                   "largest tumor diameter (RECIST-style, longest axial), model, device, seconds, warnings")
    s.add_argument("-o", "--output", required=True,
                   help="output file: .nii.gz/.nii/.nrrd (labelmap 0/1/2), .seg.nrrd (Slicer segmentation with named "
                        "segments and terminology) or .dcm (DICOM SEG referencing a DICOM input series); or a folder: "
                        "several inputs keep their relative layout there (<name>_liverseg.<--format>)")
    s.add_argument("--format", default="nii.gz", choices=[x.lstrip(".") for x in (".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".dcm")],
                   help="file type of the results when -o is a folder (default nii.gz; dcm needs DICOM inputs)")
    s.add_argument("--model", default=None, help="bundled model name or model file (default: the bundled default); "
                   "several joined by commas are an ensemble whose probabilities are averaged, e.g. "
                   "liver-unet,liver-resunet (time: the sum of the members')")
    s.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    s.add_argument("--no-tumor", action="store_true", help="liver only")
    s.add_argument("--no-postprocessing", action="store_true", help="raw network output (no largest component etc.)")
    s.add_argument("--lesion-margins", type=non_negative_mm, default=0.0, metavar="MM",
                   help="grow each hypodense tumor into the darker connected liver up to MM around it, e.g. 10 "
                        "(default 0: off; larger lesions and more false tumor, README 'Lesion margins'; refused with "
                        "--no-postprocessing or --no-tumor, which would ignore it)")
    s.add_argument("--review-beyond", action="store_true",
                   help="also name for review tissue of a hypodense tumor's density that continues outside the liver "
                        "next to it (a lesion bulging out of the liver is mostly left out of the result); off by "
                        "default: on held-out CT it found 2 of 4 such lesions and also fires around false tumors "
                        "(README 'Tumors that may extend beyond the liver'). The result is not changed")
    s.add_argument("--without-rule", action="append", default=[], choices=list(DENSITY_RULES), metavar="RULE",
                   help="switch off one density rule of the postprocessing (repeatable): water (water-density 'tumors' "
                        "are cysts or the gallbladder), fluid ('tumors' against fluid outside the liver are the "
                        "gallbladder's edge), parenchyma ('tumors' as dense as the liver around them are liver). E.g. "
                        "'--without-rule water' on non-contrast CT, where hypodense lesions can sit at water density "
                        "(README, Limitations); cysts are then called tumor. Refused with --no-postprocessing or --no-tumor")
    s.add_argument("--no-roi", action="store_true",
                   help="no liver ROI: run the network on every slice over the whole field of view instead of finding the "
                        "liver first (slower; the tumor then also comes from the whole field, which segmented lesions "
                        "worse in our tests: README, 'The in-plane crop')")
    s.add_argument("--tta", type=float, nargs="+", default=[], metavar="SCALE",
                   help="test-time augmentation: also run at these in-plane pixel-size factors and average, e.g. "
                        "--tta 0.9 1.1 (about 3x the inference time)")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files (never an input)")
    s.add_argument("--series", metavar="UID", help="DICOM folder with several series: the SeriesInstanceUID to use "
                   "(default: the largest series, with a warning listing the others)")
    s.add_argument("--stop-on-error", action="store_true",
                   help="with several inputs, stop at the first failing case (default: go on, report it, exit 1)")
    s.add_argument("--allow-non-hu", action="store_true", help="skip the check that intensities are CT Hounsfield units")
    s.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    s.add_argument("--json", action="store_true", help="also print the per-case summary as JSON")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_segment)

    e = sub.add_parser("evaluate", help="compare a predicted labelmap with a reference labelmap")
    e.add_argument("prediction", metavar="PRED")
    e.add_argument("reference", metavar="REFERENCE")
    e.add_argument("--no-tumor", action="store_true", help="liver metrics only")
    e.add_argument("--json-out", help="write the metrics JSON to this file instead of stdout")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --json-out file")
    e.set_defaults(func=cmd_evaluate)

    sa = sub.add_parser("sample", help="download the public sample case (LiTS 117) and print its paths")
    sa.add_argument("--dest", help="folder (default: $LIVERSEG_CACHE/sample or ~/.cache/liverseg/sample)")
    sa.set_defaults(func=cmd_sample)

    b = sub.add_parser("benchmark", help="time every pipeline stage on a 512x512x200 CT (phantom or --input) and print JSON")
    b.add_argument("--shape", default="512x512x200", help="WIDTHxHEIGHTxSLICES (default 512x512x200)")
    b.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    b.add_argument("--model", default=None)
    b.add_argument("--repeats", type=int, default=1)
    b.add_argument("--input", help="a real CT file/DICOM folder, resampled to --shape (default: a synthetic phantom)")
    b.add_argument("--threads", type=int, default=0)
    b.set_defaults(func=cmd_benchmark)

    o = sub.add_parser("overlay", help="write a PNG of a labelmap over its CT (CT | reference | prediction | overlay)")
    o.add_argument("ct", metavar="CT")
    o.add_argument("labelmap", metavar="LABELMAP")
    o.add_argument("output", metavar="OUTPUT_PNG")
    o.add_argument("--reference", help="reference labelmap, drawn as yellow outlines")
    o.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    o.set_defaults(func=cmd_overlay)

    i = sub.add_parser("info", help="list bundled models and devices")
    i.add_argument("--model", help="print the full model card of this model (name or file)")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="liverseg: %(levelname)s: %(message)s")
    return run_cli(args.func, args, "liverseg")


if __name__ == "__main__":
    sys.exit(main())
