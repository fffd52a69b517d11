"""``liverseg-train``: prepare -> split -> train -> evaluate -> export, and add-case -> finetune for a user's own
corrected cases. Each step has --help."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path


def _sources(specs: list[str], label_map: str | None):
    from .datasets import find_cases

    mapping = None
    if label_map:
        mapping = {int(a): int(b) for a, b in (pair.split(":") for pair in label_map.split(","))}
    cases = []
    for spec in specs:
        kind, _, root = spec.partition(":")
        options = {"label_map": mapping} if kind == "generic" and mapping else {}
        cases += find_cases(kind, root, **options)
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError("Two sources produce the same case id; prepare them into separate folders.")
    return cases


def cmd_prepare(args) -> int:
    from liverseg.preprocessing import PreprocessingSpec

    from .prepare import prepare

    spec = PreprocessingSpec(window=(args.window[0], args.window[1]), spacing_mm=args.spacing, context_slices=args.context)
    cases = _sources(args.source, args.label_map)
    if args.exclude:
        cases = [c for c in cases if c.case_id not in set(args.exclude)]
    print(prepare(cases, args.out, spec, overwrite=args.overwrite))
    return 0


def cmd_split(args) -> int:
    from .splits import holdout_split, kfold_splits, leave_one_out_splits

    manifest = json.loads((Path(args.data) / "manifest.json").read_text())
    patients = {cid: info["patient_id"] for cid, info in manifest["cases"].items()}
    if args.scheme == "holdout":
        splits = [holdout_split(patients, tuple(args.fractions), args.seed)]
    elif args.scheme == "kfold":
        splits = kfold_splits(patients, args.k, args.seed)
    else:
        splits = leave_one_out_splits(patients)
    Path(args.output).write_text(json.dumps(splits, indent=1))
    print(f"{len(splits)} split(s) -> {args.output}")
    return 0


def _load_config(path: str | None) -> dict:
    if not path:
        return {}
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def _apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    for item in overrides:
        key, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = cfg
        *parents, last = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[last] = value
    return cfg


def cmd_train(args) -> int:
    from .train import TrainConfig, train

    cfg = _load_config(args.config)
    if args.split:
        split = json.loads(Path(args.split).read_text())[args.fold]
        cfg.update(train_cases=split["train"], val_cases=split["val"], test_cases=split["test"])
    for key in ("data", "output"):
        if getattr(args, key):
            cfg[key] = getattr(args, key)
    cfg = _apply_overrides(cfg, args.set or [])
    print(train(TrainConfig.from_dict(cfg)))
    return 0


def cmd_preview(args) -> int:
    """Write a PNG of augmented training samples (image with liver/tumor outlines) to check a configuration."""
    import numpy as np
    from scipy import ndimage
    from skimage.io import imsave

    from liverseg.preprocessing import PreprocessingSpec

    from .prepare import load_prepared
    from .train import SliceSampler, TrainConfig

    cfg = _apply_overrides(_load_config(args.config), args.set or [])
    cfg["data"] = args.data or cfg.get("data", "prepared")
    cfg.setdefault("tumors", {}).setdefault("probability", 1.0)  # show lesions unless the config says otherwise
    config = TrainConfig.from_dict(cfg)
    manifest, arrays = load_prepared(config.data)
    sampler = SliceSampler(arrays, list(arrays), PreprocessingSpec.from_dict(manifest["preprocessing"]), config, args.seed)
    image, label = sampler.batch(args.n)
    tiles = []
    for img, lab in zip(image.numpy(), label.numpy()):
        rgb = np.repeat(img[img.shape[0] // 2][..., None], 3, axis=-1)
        for value, colour in ((1, (0.87, 0.51, 0.40)), (2, (0.2, 1.0, 0.2))):
            mask = lab >= value if value == 1 else lab == value
            rgb[mask & ~ndimage.binary_erosion(mask)] = colour
        tiles.append(np.pad(rgb, ((2, 2), (2, 2), (0, 0))))
    cols = min(len(tiles), 4)
    rows = [np.concatenate(tiles[i:i + cols], axis=1) for i in range(0, len(tiles) - cols + 1, cols)]
    picture = np.concatenate(rows, axis=0)
    picture = picture.repeat(2, axis=0).repeat(2, axis=1)
    imsave(args.output, (np.clip(picture, 0, 1) * 255).astype(np.uint8), check_contrast=False)
    print(args.output)
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_cases
    from .lesion_probe import PROBE_SIZES_MM

    cases = _sources(args.source, args.label_map)
    if args.cases:
        cases = [c for c in cases if c.case_id in set(args.cases)]
        if not cases:
            raise ValueError(f"None of {args.cases} found in the sources.")
    summary = evaluate_cases(args.model, cases, args.out, device=args.device, tumor=not args.no_tumor,
                             crop_margin_mm=args.crop_to_liver, tta_scales=tuple(args.tta),
                             lesion_sizes_mm=() if args.lesion_probe is None else tuple(args.lesion_probe) or PROBE_SIZES_MM,
                             lesion_places=args.lesion_places, lesion_draws=args.lesion_study, edge_draws=args.edge_study,
                             lesion_growth_mm=args.lesion_margins, without=tuple(args.without_rule),
                             review_beyond=args.review_beyond)
    print(f"liver Dice mean {summary['liver_dice_mean']:.4f} global {summary['liver_dice_global']:.4f}; report: {args.out}/report.md")
    return 0


def cmd_export(args) -> int:
    from .export import export_model, load_metrics

    metrics = {}
    for item in args.metrics or []:
        label, _, path = item.partition("=")
        metrics[label] = load_metrics(path)
    print(export_model(args.run, args.output, metrics or None, name=args.name, version=args.version,
                       allow_unfinished=args.allow_unfinished))
    return 0


def cmd_add_case(args) -> int:
    import numpy as np

    from liverseg.cases import add_case
    from liverseg.io import read_image, read_labelmap

    image, seg = read_image(args.ct, series=args.series), read_labelmap(args.segmentation)
    if seg.array.shape != image.array.shape or not np.allclose(seg.ijk_to_ras, image.ijk_to_ras, atol=1e-3):
        raise ValueError(f"{args.segmentation} is not on the grid of {args.ct} (size or geometry differ); export the "
                         "segmentation with the CT as reference.")
    provenance = {"source": str(args.ct), "segmentation": str(args.segmentation), "model": args.model or "",
                  "note": args.note or "", "edited_segments": args.edited or []}
    print(add_case(image, seg.array.astype(np.uint8), args.to, args.name or Path(args.ct).name.split(".")[0], provenance))
    return 0


def cmd_finetune(args) -> int:
    from liverseg.cases import describe_finetune

    from .finetune import Budget, finetune

    budget = Budget.for_device(args.device != "cpu" and __import__("torch").cuda.is_available())
    budget = dataclasses.replace(budget, **{k: v for k, v in (("epochs", args.epochs), ("samples_per_epoch", args.samples),
                                                              ("threads", args.threads)) if v})
    def progress_line(fraction: float, message: str) -> None:  # the Slicer module reads these, like the worker's
        print(f"PROGRESS {fraction:.4f} {message}", flush=True)

    progress = progress_line if args.progress_lines else None
    report = finetune(args.base, args.data, args.output, replay=args.replay, replay_fraction=args.replay_fraction,
                      budget=budget, name=args.name, device=args.device, progress=progress)
    print(describe_finetune(report))
    print(f"model: {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from liverseg.console import non_negative_mm
    from liverseg.density_rules import DENSITY_RULES

    p = argparse.ArgumentParser(prog="liverseg-train", description="Train liverseg models on public liver CT datasets.")
    p.add_argument("--debug", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    src_help = "KIND:PATH, KIND one of lits, msd, ircadb, chaos, slices2d, generic (repeatable)"

    pr = sub.add_parser("prepare", help="cache network-ready slices of every case (engine preprocessing)")
    pr.add_argument("--source", action="append", required=True, help=src_help)
    pr.add_argument("--out", required=True, help="output folder (npz per case + manifest.json)")
    pr.add_argument("--label-map", help="generic datasets: SRC:DST pairs, e.g. 6:1 for an organ dataset's liver")
    pr.add_argument("--spacing", type=float, default=2.0, help="in-plane spacing in mm (default 2.0)")
    pr.add_argument("--window", type=float, nargs=2, default=(-100.0, 400.0), help="HU window (default -100 400)")
    pr.add_argument("--context", type=int, default=1, help="neighbour slices per side (1 = 3-slice 2.5D)")
    pr.add_argument("--exclude", nargs="*", help="case ids to leave out (e.g. test cases)")
    pr.add_argument("--overwrite", action="store_true")
    pr.set_defaults(func=cmd_prepare)

    sp = sub.add_parser("split", help="patient-level splits: holdout (70/15/15), kfold or loo")
    sp.add_argument("--data", required=True)
    sp.add_argument("--scheme", choices=["holdout", "kfold", "loo"], default="holdout")
    sp.add_argument("--fractions", type=float, nargs=3, default=(0.7, 0.15, 0.15))
    sp.add_argument("--k", type=int, default=5)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("-o", "--output", required=True)
    sp.set_defaults(func=cmd_split)

    tr = sub.add_parser("train", help="train or resume (same command) a model")
    tr.add_argument("--config", help="YAML/JSON config (see Training/configs/)")
    tr.add_argument("--data", help="prepared folder (overrides the config)")
    tr.add_argument("--output", help="run folder (overrides the config); rerun to resume")
    tr.add_argument("--split", help="splits JSON from 'split'")
    tr.add_argument("--fold", type=int, default=0)
    tr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. epochs=80")
    tr.set_defaults(func=cmd_train)

    pv = sub.add_parser("preview", help="PNG of augmented training samples with synthetic tumors (check a config)")
    pv.add_argument("--data", help="prepared folder")
    pv.add_argument("--config")
    pv.add_argument("--set", action="append", metavar="KEY=VALUE")
    pv.add_argument("-n", type=int, default=8)
    pv.add_argument("--seed", type=int, default=0)
    pv.add_argument("-o", "--output", required=True)
    pv.set_defaults(func=cmd_preview)

    ev = sub.add_parser("evaluate", help="segment cases with a model file and report metrics, charts and overlays")
    ev.add_argument("--model", required=True)
    ev.add_argument("--source", action="append", required=True, help=src_help)
    ev.add_argument("--label-map")
    ev.add_argument("--cases", nargs="*", help="only these case ids")
    ev.add_argument("--out", required=True)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--no-tumor", action="store_true")
    ev.add_argument("--crop-to-liver", type=float, metavar="MM", help="evaluate on liver bounding-box crops with this margin")
    ev.add_argument("--tta", type=float, nargs="+", default=[], metavar="SCALE",
                    help="test-time augmentation: also run at these in-plane pixel-size factors, e.g. --tta 0.9 1.1")
    ev.add_argument("--lesion-margins", type=non_negative_mm, default=0.0, metavar="MM",
                    help="segment with lesion margins of MM (as 'liverseg segment --lesion-margins'; default 0: off)")
    ev.add_argument("--review-beyond", action="store_true",
                    help="segment with the check for tissue beyond the liver on (as 'liverseg segment --review-beyond'); "
                         "on tumor-labelled cases the report gives the share of it that is reference tumor")
    ev.add_argument("--without-rule", action="append", default=[], choices=list(DENSITY_RULES), metavar="RULE",
                    help="segment with this density rule switched off (repeatable; as 'liverseg segment "
                         "--without-rule'): water, fluid or parenchyma")
    ev.add_argument("--lesion-probe", type=float, nargs="*", metavar="MM",
                    help="also draw hypodense lesions of these diameters into each reference liver, one at a time, and "
                         "report the share called tumor (default sizes 30 50 70 90 110; one segmentation per size and "
                         "place)")
    ev.add_argument("--lesion-places", type=int, default=3, help="places per size for --lesion-probe (default 3)")
    ev.add_argument("--lesion-study", type=int, default=0, metavar="DRAWS",
                    help="also draw 4-6 hypodense lesions of 8-50 mm into each reference liver, DRAWS times, and report "
                         "lesion Dice, lesions found and false tumor (one segmentation per draw; e.g. 6)")
    ev.add_argument("--edge-study", type=int, default=0, metavar="DRAWS",
                    help="also draw 1-3 hypodense lesions of 20-60 mm centred on each reference liver's surface, "
                         "bulging out of it, DRAWS times, and report how much of them (above all of the bulge) the "
                         "result keeps in the liver and calls tumor (one segmentation per draw; e.g. 6)")
    ev.set_defaults(func=cmd_evaluate)

    ex = sub.add_parser("export", help="turn a run's best model into a model file with metrics in its card")
    ex.add_argument("--run", required=True)
    ex.add_argument("-o", "--output", required=True)
    ex.add_argument("--metrics", action="append", metavar="LABEL=metrics.json", help="evaluation results to record")
    ex.add_argument("--name")
    ex.add_argument("--version")
    ex.add_argument("--allow-unfinished", action="store_true",
                    help="export a run that has not finished (stopped on purpose); refused otherwise")
    ex.set_defaults(func=cmd_export)

    ac = sub.add_parser("add-case", help="add a CT and its corrected segmentation to a folder of your own training cases")
    ac.add_argument("ct", metavar="CT", help="CT file or DICOM folder")
    ac.add_argument("segmentation", metavar="SEG", help="labelmap (0/1/2) or .seg.nrrd on the CT's grid")
    ac.add_argument("--to", required=True, metavar="DIR", help="the cases folder (created if needed; nothing in it is overwritten)")
    ac.add_argument("--name", help="case name (default: the CT's file name); a number is added if it exists")
    ac.add_argument("--note", help="free text kept in the case's meta file")
    ac.add_argument("--model", help="the model whose result was corrected (provenance)")
    ac.add_argument("--edited", nargs="*", help="which segments were edited (provenance)")
    ac.add_argument("--series", help="DICOM folder with several series: the SeriesInstanceUID")
    ac.set_defaults(func=cmd_add_case)

    ft = sub.add_parser("finetune", help="fine-tune a model on your cases; compares it with the base on held-out cases")
    ft.add_argument("--base", default="liver-unet", help="bundled model name or model file (default liver-unet)")
    ft.add_argument("--data", required=True, metavar="DIR", help="your cases folder (add-case / the module)")
    ft.add_argument("--output", required=True, help="the new model file (.safetensors); work files go to OUTPUT.work/")
    ft.add_argument("--replay", metavar="DIR", help="a folder of original-distribution cases (same layout) mixed in so "
                    "that the model does not forget (recommended)")
    ft.add_argument("--replay-fraction", type=float, default=0.5, help="share of samples from --replay (default 0.5)")
    ft.add_argument("--name", help="model name (default: the output file's name)")
    ft.add_argument("--epochs", type=int, help="epochs per run (default 20 on CPU, 60 on GPU)")
    ft.add_argument("--samples", type=int, help="samples per epoch (default 128 on CPU, 512 on GPU)")
    ft.add_argument("--threads", type=int, default=0)
    ft.add_argument("--device", default="auto", help="for the comparison's inference (training uses the GPU if any)")
    ft.add_argument("--progress-lines", action="store_true", help=argparse.SUPPRESS)
    ft.set_defaults(func=cmd_finetune)
    return p


def main(argv=None) -> int:
    from liverseg.console import run_cli

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(asctime)s %(message)s")
    return run_cli(args.func, args, "liverseg-train")


if __name__ == "__main__":
    sys.exit(main())
