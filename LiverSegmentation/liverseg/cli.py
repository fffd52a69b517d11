"""Command line interface: ``liverseg segment|evaluate|sample|benchmark|info``.

Errors are one line on stderr and a non-zero exit code; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

from . import __version__

EXIT_ERROR, EXIT_CANCELLED = 1, 130
log = logging.getLogger("liverseg")


class ProgressBar:
    """A plain-text progress bar on stderr (redrawn in place on a terminal, a few lines otherwise)."""

    def __init__(self, label: str, enabled: bool = True):
        self.label, self.enabled, self.last = label, enabled, -1
        self.tty = sys.stderr.isatty()

    def __call__(self, fraction: float, message: str) -> None:
        if not self.enabled:
            return
        pct = int(fraction * 100)
        if pct == self.last or (not self.tty and pct % 25 and pct != 100):
            return
        self.last = pct
        bar = "#" * (pct // 4) + "-" * (25 - pct // 4)
        end = "\r" if self.tty and pct < 100 else "\n"
        sys.stderr.write(f"{self.label} [{bar}] {pct:3d}% {message:<20}{end}")
        sys.stderr.flush()


def _output_for(inp: Path, output: Path, many: bool) -> Path:
    if not many and output.suffix:
        return output
    name = inp.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return output / f"{name}_liverseg.nii.gz"


def cmd_segment(args) -> int:
    from .io import check_output_path, write_labelmap
    from .pipeline import Segmenter
    from .postprocess import PostprocessConfig

    inputs = [Path(p) for p in args.inputs]
    output = Path(args.output)
    many = len(inputs) > 1
    if many and output.suffix:
        raise ValueError("With several inputs, -o/--output must be a folder.")
    targets = [_output_for(i, output, many) for i in inputs]
    from .checks import InputError

    for inp in inputs:
        if not inp.exists():
            raise InputError(f"{inp} does not exist.")
    for t in targets:  # refuse before spending minutes on inference
        check_output_path(t, args.overwrite)
    from .inference import InferenceOptions

    segmenter = Segmenter(args.model, args.device, InferenceOptions(roi=not args.full_scan), threads=args.threads)
    post = PostprocessConfig(enabled=not args.no_postprocessing)
    summaries = []
    for inp, target in zip(inputs, targets):
        t0 = time.perf_counter()
        bar = ProgressBar(inp.name, enabled=not args.quiet)
        result, ref = segmenter.segment_file(inp, tumor=not args.no_tumor, postprocessing=post, progress=bar,
                                             allow_non_hu=args.allow_non_hu)
        write_labelmap(target, result.labelmap, ref, overwrite=args.overwrite)
        s = result.statistics
        summary = {"input": str(inp), "output": str(target), **{k: round(v, 3) for k, v in s.items()},
                   "seconds": round(time.perf_counter() - t0, 2), "device": result.device, "model": result.model}
        summaries.append(summary)
        print(f"{inp.name}: liver {s['liver_volume_ml']:.1f} mL, {s['tumor_count']} tumor(s) "
              f"{s['tumor_volume_ml']:.1f} mL ({s['tumor_burden_percent']:.1f} %), {summary['seconds']:.1f} s -> {target}")
    if args.json:
        print(json.dumps(summaries if many else summaries[0], indent=1))
    return 0


def _fmt(v) -> str:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4f}"
    return str(v)


def cmd_evaluate(args) -> int:
    import numpy as np

    from .io import read_image
    from .metrics import evaluate_labelmaps, json_safe

    pred, ref = read_image(args.prediction), read_image(args.reference)
    if pred.array.shape != ref.array.shape:
        raise ValueError(f"Prediction {pred.array.shape} and reference {ref.array.shape} are on different grids.")
    if not np.allclose(pred.ijk_to_ras, ref.ijk_to_ras, atol=1e-3):
        log.warning("Prediction and reference geometry differ; comparing voxel by voxel anyway.")
    spacing = tuple(reversed(ref.spacing))  # [k, j, i] order
    result = evaluate_labelmaps(pred.array.astype(np.uint8), ref.array.astype(np.uint8), spacing, tumor=not args.no_tumor)
    keys = ["dice", "iou", "precision", "recall", "specificity", "accuracy", "rvd", "hd95_mm", "assd_mm"]
    print(f"{'metric':<20}" + "".join(f"{s:>12}" for s in result))
    for k in keys + ["detection_recall", "detection_precision", "reference_lesions", "predicted_lesions"]:
        if any(k in result[s] for s in result):
            print(f"{k:<20}" + "".join(f"{_fmt(result[s].get(k, '')):>12}" for s in result))
    clean = json_safe(result)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(clean, indent=1))
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
    if len(shape) != 3:
        raise ValueError("--shape takes WIDTHxHEIGHTxSLICES, e.g. 512x512x200")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = run_benchmark((shape[2], shape[1], shape[0]), device=args.device, model=args.model, repeats=args.repeats,
                        input_path=args.input)
    print(json.dumps(out, indent=1))
    return 0


def cmd_overlay(args) -> int:
    from .io import read_image
    from .overlay import save_overlay

    ct, pred = read_image(args.ct), read_image(args.labelmap)
    ref = read_image(args.reference).array if args.reference else None
    for name, other in (("labelmap", pred.array), ("reference", ref)):
        if other is not None and other.shape != ct.array.shape:
            raise ValueError(f"The {name} grid {other.shape} differs from the CT {ct.array.shape}.")
    print(save_overlay(args.output, ct.array, ct.ijk_to_ras, pred.array, ref))
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

    p = argparse.ArgumentParser(prog="liverseg", description="Liver and liver-tumor segmentation of abdominal CT "
                                "(labels: 0 background, 1 liver, 2 liver tumor). Research use only.")
    p.add_argument("--version", action="version", version=f"liverseg {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment one or more CT volumes (NIfTI, NRRD, MHA or DICOM folder)")
    s.add_argument("inputs", nargs="+", metavar="INPUT")
    s.add_argument("-o", "--output", required=True, help="output .nii.gz/.nrrd file, or a folder for several inputs")
    s.add_argument("--model", default=None, help="bundled model name or model file (default: the bundled default)")
    s.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    s.add_argument("--no-tumor", action="store_true", help="liver only")
    s.add_argument("--no-postprocessing", action="store_true", help="raw network output (no largest component etc.)")
    s.add_argument("--full-scan", action="store_true",
                   help="run the network on every slice over the whole field of view instead of finding the liver first (slower)")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
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
    o.set_defaults(func=cmd_overlay)

    i = sub.add_parser("info", help="list bundled models and devices")
    i.add_argument("--model", help="print the full model card of this model (name or file)")
    i.set_defaults(func=cmd_info)
    return p


def run_cli(func, args, prog: str) -> int:
    """Run a subcommand: one clear line on stderr and a non-zero exit code on any error (traceback with --debug)."""
    from .progress import Cancelled

    try:
        return int(func(args) or 0)
    except (KeyboardInterrupt, Cancelled) as exc:
        print(f"{prog}: cancelled{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:
        if args.debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="liverseg: %(levelname)s: %(message)s")
    return run_cli(args.func, args, "liverseg")


if __name__ == "__main__":
    sys.exit(main())
