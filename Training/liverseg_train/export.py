"""Export: a training run's best model becomes a model file whose card carries the measured metrics."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from liverseg.modelfile import load_model, save_model, unfinished_warning


def export_model(run_dir: str | Path, output: str | Path, metrics: dict | None = None, name: str | None = None,
                 version: str | None = None, extra_card: dict | None = None, allow_unfinished: bool = False) -> Path:
    """Copy the run's best model to ``output`` with ``metrics`` (e.g. an evaluation's metrics.json) in its card.

    A run that has not finished (still training, or killed) is refused unless ``allow_unfinished``: its file is
    only the best model so far, and an exported copy would carry no trace of that except the card's flag."""
    run_dir = Path(run_dir)
    config = run_dir / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{run_dir} has no config.json: not a training run folder (train first).")
    best = run_dir / f"{json.loads(config.read_text())['name']}.safetensors"  # what training wrote, by name
    if not best.is_file():
        raise FileNotFoundError(f"{best} does not exist yet; training has not saved a model in {run_dir}.")
    model = load_model(best)
    unfinished = unfinished_warning(model.card)
    if unfinished and not allow_unfinished:
        raise ValueError(unfinished + " To export it anyway (e.g. a run you stopped on purpose), pass --allow-unfinished.")
    card = dict(model.card)
    if name:
        card["name"] = name
    if version:
        card["version"] = version
    if metrics:
        card["metrics"] = {**card.get("metrics", {}), **metrics}
    for key, value in (extra_card or {}).items():
        card[key] = value
    card["training"].update(training_budget(run_dir))
    return save_model(output, model.network, card)


def training_budget(run_dir: Path) -> dict:
    """Epochs, samples seen, wall time and hardware of a run (from its log.csv, config.json, hardware.json)."""
    out: dict = {}
    config_path = run_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    log_path = run_dir / "log.csv"
    if log_path.exists():
        with log_path.open() as f:
            rows = list(csv.DictReader(f))
        out["epochs_run"] = len(rows)
        out["samples_seen"] = len(rows) * int(config.get("samples_per_epoch", 0))
        out["train_seconds"] = round(sum(float(r["seconds"]) for r in rows), 1)
    hardware = run_dir / "hardware.json"
    if hardware.exists():
        out["hardware"] = json.loads(hardware.read_text())
    base = _initialised_from(config.get("init_from", ""))
    if base:
        out["initialised_from"] = base
        out["samples_seen_total"] = out.get("samples_seen", 0) + base.get("samples_seen_total", base.get("samples_seen", 0))
    return out


def _initialised_from(init: str) -> dict:
    """The training budget of the model a run started from (its ``init_from``), so that a card of a continued or
    fine-tuned model states everything its weights have seen, not only the last stage."""
    if not init:
        return {}
    from liverseg.modelfile import read_card
    from liverseg.registry import resolve_model_path

    card = read_card(resolve_model_path(init))
    training = card.get("training", {})
    keep = ("epochs_run", "samples_seen", "samples_seen_total", "train_seconds", "hardware", "initialised_from")
    return {"model": card.get("name", ""), "version": card.get("version", ""), "file": init,
            **{k: training[k] for k in keep if k in training}}


def load_metrics(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
