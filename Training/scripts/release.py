"""Assemble the model card metrics of a release and export the bundled model file.

    python Training/scripts/release.py --run runs/final_resunet --name liver-resunet --version 1.0.0 \
        --loco chaos_eval_ct=reports/loco_chaos_eval_ct_resunet/metrics.json ... \
        --loco-crop chaos_eval_ct=reports/loco_chaos_eval_ct_resunet_crop/metrics.json \
        --sample reports/final_resunet_lits117/metrics.json -o LiverSegmentation/liverseg/weights/liver-resunet.safetensors

    python Training/scripts/release.py --refresh LiverSegmentation/liverseg/weights/*.safetensors
    python Training/scripts/release.py --refresh LiverSegmentation/liverseg/weights/liver-unet.safetensors \
        --loco chaos_eval_ct=reports/.../metrics.json ... --loco-crop ...

``--refresh`` rewrites the cards of released files without touching their weights: the limitations from this
script's list, and with ``--loco``/``--loco-crop`` (one file only) the leave-one-case-out figures re-measured with
the engine's current inference, dated; with ``--sample`` (one file only) the public-sample figures and their floors
re-measured the same way, dated; without it they stay.

The public-sample floors written into the card are the measured Dice minus 0.02, rounded down to two decimals
(a margin that another BLAS or torch build does not cross, while a real regression does); the test suite checks
that the shipped model still reaches them.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from liverseg_train.export import export_model

LIMITATIONS = [
    "Research use only; not a medical device.",
    "Trained on 4 CT scans (2 with expert liver labels, 2 labelled by another model); no real tumor labels: the tumor "
    "class was learned from synthetic lesions only.",
    "Homogeneous water-density lesions are reported as cysts (liver) or gallbladder/fluid (background), not tumor, by "
    "the engine's postprocessing: fully cystic or necrotic tumors are missed.",
    "A lesion whose median density is within 10 HU of the liver around it, and no less homogeneous, is reported as liver "
    "by the engine's postprocessing: iso-attenuating lesions are missed.",
    "On contrast-enhanced CT (liver at least 70 HU), a hypodense lesion at the liver's edge whose neighbours outside "
    "the liver are mostly fluid (-15 to 35 HU: the gallbladder, ascites) is reported as the gallbladder's edge, not "
    "tumor, by the engine's postprocessing; a gallbladder the liver result takes in whole, or its edge on non-contrast "
    "CT, can still be called tumor.",
    "Trained mostly on portal-venous adult abdominal CT; arterial phase checked on one unseen 11-slice slab (README); "
    "paediatric and post-surgical livers untested.",
    "2.5D network at 2 mm in-plane pixels: fine boundary detail below that is interpolated.",
    "One training scan shows the heart (above the liver's dome): models trained without it call the heart liver; the "
    "engine warns when the top of a result lies against the left lung as the heart does. Check the dome on scans that "
    "reach into the chest.",
]


def _pairs(items):
    return {k: json.loads(Path(v).read_text()) for k, v in (i.split("=", 1) for i in items or [])}


FLOOR_MARGIN = 0.02


def floor2(x: float) -> float:
    return math.floor((x - FLOOR_MARGIN) * 100) / 100


def loco_metrics(loco: dict, loco_crop: dict) -> dict:
    """The card's leave-one-case-out sections from per-case evaluation metrics (``metrics.json`` ``cases`` entries)."""
    return {
        "leave_one_case_out": {case: {"liver_dice": m["liver"]["dice"], "liver_hd95_mm": m["liver"]["hd95_mm"],
                                      "liver_assd_mm": m["liver"]["assd_mm"], "liver_rvd": m["liver"]["rvd"]}
                               for case, m in loco.items()},
        "leave_one_case_out_liver_crop": {case: {"liver_dice": m["liver"]["dice"]} for case, m in loco_crop.items()},
    }


def sample_metrics(sample: dict) -> dict:
    """The card's public-sample section, floors included, from the sample's evaluation metrics (its ``cases`` entry)."""
    lits = {"liver_dice": sample["liver"]["dice"], "tumor_dice": sample["tumor"]["dice"],
            "liver_hd95_mm": sample["liver"]["hd95_mm"], "tumor_hd95_mm": sample["tumor"]["hd95_mm"],
            "liver_assd_mm": sample["liver"]["assd_mm"], "tumor_detection_recall": sample["tumor"]["detection_recall"],
            "tumor_detection_recall_iou50": sample["tumor"]["detection_recall_iou50"],
            "tumor_detection_precision": sample["tumor"]["detection_precision"]}
    lits["liver_dice_floor"] = floor2(lits["liver_dice"])
    lits["tumor_dice_floor"] = floor2(lits["tumor_dice"])
    return lits


def summary(metrics: dict) -> dict:
    """The card's one-line figures, from its leave-one-case-out and public-sample sections."""
    out = {f"LOCO liver Dice {case}": round(m["liver_dice"], 3) for case, m in metrics["leave_one_case_out"].items()}
    out.update({f"LOCO liver Dice {case} (liver crop)": round(m["liver_dice"], 3)
                for case, m in metrics["leave_one_case_out_liver_crop"].items()})
    out["LiTS 117 liver Dice"] = round(metrics["public_sample_lits117"]["liver_dice"], 3)
    out["LiTS 117 tumor Dice"] = round(metrics["public_sample_lits117"]["tumor_dice"], 3)
    return out


def refresh(paths: list[str], extra: list[str] | None, loco: dict | None = None, loco_crop: dict | None = None,
            sample: dict | None = None) -> None:
    """Rewrite the cards of released model files, weights untouched: the ``limitations`` (LIMITATIONS + ``extra``;
    ``extra`` None keeps each card's own, those after the common list), given ``loco`` the leave-one-case-out
    figures, given ``sample`` (a ``cases`` entry of the public sample's metrics) the public-sample figures and floors,
    each dated. So what is learned after a release (a limitation, the figures under a changed inference or
    postprocessing) reaches the cards users read, and the floors the tests enforce, without retraining. Checks that
    every tensor reads back identical."""
    import datetime

    import torch

    from liverseg.modelfile import load_model, save_model

    if (loco or sample) and len(paths) != 1:
        raise SystemExit("measured figures belong to one model: give one file with --loco or --sample")
    for path in paths:
        before = load_model(path)
        own = extra
        if own is None:
            common, old = len(LIMITATIONS), before.card.get("limitations", [])
            if old[:common] != LIMITATIONS:
                raise SystemExit(f"{path}: its limitations do not start with this script's list, so its own ones are "
                                 "not known; give them with --limitation")
            own = old[common:]
        card = dict(before.card, limitations=LIMITATIONS + own)
        measured = f"{datetime.date.today().isoformat()}, with the engine's inference and postprocessing of that date"
        metrics = dict(card["metrics"])
        if loco:
            metrics.update(loco_metrics(loco, loco_crop or {}), leave_one_case_out_measured=measured)
        if sample:
            metrics.update(public_sample_lits117=sample_metrics(sample), public_sample_measured=measured)
        if loco or sample:
            card["metrics"] = {"summary": summary(metrics), **{k: v for k, v in metrics.items() if k != "summary"}}
        save_model(path, before.network, card)
        after = load_model(path)
        old, new = before.network.state_dict(), after.network.state_dict()
        if old.keys() != new.keys() or not all(torch.equal(old[k], new[k]) for k in old):
            raise SystemExit(f"{path}: the weights changed while rewriting the card")
        print(f"{path}: limitations {len(before.card.get('limitations', []))} -> {len(card['limitations'])}"
              f"{', leave-one-case-out figures ' + ', '.join(sorted(loco)) if loco else ''}"
              f"{', public-sample figures and floors' if sample else ''}, weights identical")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--refresh", nargs="+", metavar="MODEL_FILE",
                   help="only rewrite these released files' cards: limitations from this script's list (plus "
                        "--limitation) and, with --loco/--loco-crop/--sample, the leave-one-case-out or public-sample "
                        "figures")
    p.add_argument("--run")
    p.add_argument("--name")
    p.add_argument("--version")
    p.add_argument("--loco", action="append", help="HELD_OUT_CASE=metrics.json of the model trained without it")
    p.add_argument("--loco-crop", action="append", help="same, evaluated on a liver bounding-box crop")
    p.add_argument("--sample", help="metrics.json of this model on the public sample LiTS 117")
    p.add_argument("--limitation", action="append",
                   help="a model-specific limitation for the card (with --refresh: replaces the card's own ones)")
    p.add_argument("-o", "--output")
    args = p.parse_args()
    loco = {case: m["cases"][case] for case, m in _pairs(args.loco).items()}
    loco_crop = {case: m["cases"][case] for case, m in _pairs(args.loco_crop).items()}
    sample = next(iter(json.loads(Path(args.sample).read_text())["cases"].values())) if args.sample else None
    if args.refresh:
        refresh(args.refresh, args.limitation, loco, loco_crop, sample)
        return
    missing = [f"--{k}" for k in ("run", "name", "version", "sample", "output") if not getattr(args, k)]
    if missing:
        p.error(f"a release needs {', '.join(missing)}")

    metrics = {
        **loco_metrics(loco, loco_crop),
        "public_sample_lits117": sample_metrics(sample),
        "notes": "Leave-one-case-out: a model of the same recipe trained without that case. LiTS 117 (public sample, "
                 "PyPI liver-ct-segmentation-package 1.6.0) was never used for training or model selection; its "
                 "voxel size is estimated (1.1 x 1.1 x 1.35 mm).",
    }
    metrics = {"summary": summary(metrics), **metrics}
    out = export_model(args.run, args.output, metrics, name=args.name, version=args.version,
                       extra_card={"limitations": LIMITATIONS + (args.limitation or [])})
    print(out)


if __name__ == "__main__":
    main()
