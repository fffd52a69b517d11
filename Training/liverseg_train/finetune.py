"""Fine-tune a model on a user's own corrected cases, and say honestly whether it got better.

The user's cases (``liverseg-train add-case`` or the module's "Add to my training cases": the ``generic`` layout)
are prepared with the base model's own preprocessing; training starts from the base model's weights with a small
learning rate, synthetic tumors still on, and optionally mixes in a replay folder of the original training
distribution (``--replay``: a folder of public cases in the same layout) so that the model does not forget.

Whether the result is better is measured on cases the fine-tuned model did not see: with 2-3 cases each case is
held out once (leave-one-case-out, one fine-tuning per case); with 4 or more every 4th case is held out. The
exported model (trained on all cases) carries the comparison in its card, and is called better only when the mean
held-out liver Dice rises by at least ``MIN_GAIN`` and no held-out case loses more than ``MAX_LOSS``; otherwise the
report says to keep the base model. One case cannot be compared; the model is then exported as "not compared".

Every run checkpoints into ``<output>.work/``; the same command resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from liverseg.metrics import dice
from liverseg.modelfile import read_card
from liverseg.preprocessing import PreprocessingSpec
from liverseg.registry import resolve_model_path

from .datasets import find_cases
from .prepare import prepare
from .train import TrainConfig, train

log = logging.getLogger("liverseg.train")

MIN_GAIN = 0.005  # mean held-out liver Dice must rise at least this much to call the fine-tuned model better
MAX_LOSS = 0.02  # ... and no held-out case may lose more than this


@dataclass(frozen=True)
class Budget:
    """How much each fine-tuning run trains. Defaults: a few minutes per run on 2 CPU cores."""

    epochs: int = 20
    samples_per_epoch: int = 128
    batch_size: int = 8
    lr: float = 3e-4
    threads: int = 0

    @classmethod
    def for_device(cls, gpu: bool) -> "Budget":
        return cls(epochs=60, samples_per_epoch=512) if gpu else cls()


def comparison_plan(cases: list[str]) -> list[list[str]]:
    """The held-out case sets: leave-one-case-out for 2-3 cases, every 4th case for more, none for one case."""
    if len(cases) < 2:
        return []
    if len(cases) <= 3:
        return [[c] for c in cases]
    return [cases[3::4]]


def verdict(rows: list[dict]) -> str:
    """``better`` / ``not better`` / ``not compared`` from per-case base and fine-tuned liver Dice."""
    if not rows:
        return "not compared"
    gain = float(np.mean([r["finetuned_liver_dice"] - r["base_liver_dice"] for r in rows]))
    worst = min(r["finetuned_liver_dice"] - r["base_liver_dice"] for r in rows)
    return "better" if gain >= MIN_GAIN and worst >= -MAX_LOSS else "not better"


def _config(base_card: dict, base: str, prepared: Path, run: Path, held_out: list[str], budget: Budget,
            replay: Path | None, replay_fraction: float, name: str) -> TrainConfig:
    net = base_card["network"]
    training = base_card.get("training", {}).get("config", {})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig.from_dict({k: v for k, v in training.items() if k in known}) if training else TrainConfig()
    return dataclasses.replace(
        cfg, data=str(prepared), output=str(run), name=name, architecture=base_card["architecture"],
        base_channels=net["base_channels"], depth=net["depth"], dropout=net.get("dropout", cfg.dropout),
        train_cases=[], val_cases=[], test_cases=list(held_out), epochs=budget.epochs,
        samples_per_epoch=budget.samples_per_epoch, batch_size=budget.batch_size, lr=budget.lr, warmup_epochs=1,
        patience=0, threads=budget.threads, init_from=str(base), replay_data=str(replay) if replay else "",
        replay_fraction=replay_fraction, time_limit_minutes=0.0)


def _compare(case, base, tuned) -> dict:
    """Liver (and, where the case has tumor labels, tumor) Dice of the base and the fine-tuned segmenter on one
    held-out case, read once."""
    image, label = case.load()
    row = {"case": case.case_id}
    for key, segmenter in (("base", base), ("finetuned", tuned)):
        result = segmenter.segment(image.array, image.ijk_to_ras, require_liver=False)  # an empty result scores 0
        row[f"{key}_liver_dice"] = round(dice(result.labelmap >= 1, label >= 1), 4)
        row[f"{key}_tumor_dice"] = round(dice(result.labelmap == 2, label == 2), 4) if (label == 2).any() else None
    return row


def finetune(base: str, data: str | Path, output: str | Path, *, replay: str | Path | None = None,
             replay_fraction: float = 0.5, budget: Budget | None = None, name: str | None = None,
             device: str = "auto", progress: Callable[[float, str], None] | None = None) -> dict:
    """Fine-tune ``base`` (bundled name or model file) on the cases in ``data``; write the model to ``output``
    and return the report (also in the model card under ``finetune``)."""
    import torch

    from liverseg import Segmenter
    from liverseg.outputs import check_output_path

    from .export import export_model

    progress = progress or (lambda f, m: log.info("%3.0f%% %s", 100 * f, m))
    output = Path(output).expanduser()
    check_output_path(output, overwrite=False, suffixes=(".safetensors",))
    base_path = resolve_model_path(base)
    base_card = read_card(base_path)
    cases = find_cases("generic", Path(data).expanduser())
    if not cases:
        raise ValueError(f"No training cases (<case>_image.nii.gz with <case>_label.nii.gz) in {data}; add some with "
                         "'liverseg-train add-case' or the module's 'Add to my training cases'.")
    budget = budget or Budget.for_device(torch.cuda.is_available())
    name = name or output.name[: -len(".safetensors")]
    work = output.with_name(output.name + ".work")
    spec = PreprocessingSpec.from_dict(base_card["preprocessing"])
    progress(0.0, f"Preparing {len(cases)} case(s)")
    prepare(cases, work / "prepared", spec)
    replay_dir = None
    if replay:
        replay_dir = work / "replay"
        prepare(find_cases("generic", Path(replay).expanduser()), replay_dir, spec)
    ids = [c.case_id for c in cases]
    plan = comparison_plan(ids)
    runs = [(f"heldout_{'_'.join(h)}", h) for h in plan] + [("final", [])]
    by_id = {c.case_id: c for c in cases}
    rows = []
    base_segmenter = Segmenter(base_path, device)
    started = time.time()
    for n, (run_name, held_out) in enumerate(runs):
        progress(0.05 + 0.9 * n / len(runs), f"Fine-tuning {n + 1}/{len(runs)}"
                 + (f" without {', '.join(held_out)}" if held_out else " on all cases"))
        cfg = _config(base_card, base_path, work / "prepared", work / run_name, held_out, budget, replay_dir,
                      replay_fraction, name)
        model_path = train(cfg)
        if held_out:
            tuned = Segmenter(model_path, device)
            for cid in held_out:
                rows.append(_compare(by_id[cid], base_segmenter, tuned))
                log.info("%s: liver Dice base %.4f, fine-tuned %.4f", cid, rows[-1]["base_liver_dice"],
                         rows[-1]["finetuned_liver_dice"])
    result = verdict(rows)
    report = {
        "base_model": base_card["name"], "base_version": base_card.get("version", ""), "base_file": str(base_path),
        "cases": ids, "replay": str(replay) if replay else None, "replay_fraction": replay_fraction if replay else 0.0,
        "budget": dataclasses.asdict(budget), "runs": len(runs), "wall_seconds": round(time.time() - started, 1),
        "comparison": {"method": "leave-one-case-out" if plan and len(plan) > 1 else ("held-out cases" if plan else "none"),
                       "cases": rows, "verdict": result, "rule": f"mean gain >= {MIN_GAIN}, no case worse by > {MAX_LOSS}",
                       "note": "the comparison models were trained without the held-out cases; the exported model saw all"},
        "date": datetime.date.today().isoformat(),
    }
    if rows:
        report["comparison"]["base_mean_liver_dice"] = round(float(np.mean([r["base_liver_dice"] for r in rows])), 4)
        report["comparison"]["finetuned_mean_liver_dice"] = round(float(np.mean([r["finetuned_liver_dice"] for r in rows])), 4)
    version = f"{base_card.get('version', '0')}+ft{datetime.date.today():%Y%m%d}"
    export_model(work / "final", output, name=name, version=version, extra_card={"finetune": report})
    progress(1.0, f"Done: {result}")
    return report
