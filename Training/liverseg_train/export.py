"""Export: a training run's best model becomes a model file whose card carries the measured metrics."""
from __future__ import annotations

import json
from pathlib import Path

from liverseg.modelfile import load_model, save_model


def export_model(run_dir: str | Path, output: str | Path, metrics: dict | None = None, name: str | None = None,
                 version: str | None = None, extra_card: dict | None = None) -> Path:
    """Copy the run's best model to ``output`` with ``metrics`` (e.g. an evaluation's metrics.json) in its card."""
    run_dir = Path(run_dir)
    config = run_dir / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{run_dir} has no config.json: not a training run folder (train first).")
    best = run_dir / f"{json.loads(config.read_text())['name']}.safetensors"  # what training wrote, by name
    if not best.is_file():
        raise FileNotFoundError(f"{best} does not exist yet; training has not saved a model in {run_dir}.")
    model = load_model(best)
    card = dict(model.card)
    if name:
        card["name"] = name
    if version:
        card["version"] = version
    if metrics:
        card["metrics"] = {**card.get("metrics", {}), **metrics}
    for key, value in (extra_card or {}).items():
        card[key] = value
    log_path = run_dir / "log.csv"
    if log_path.exists():
        card["training"]["epochs_run"] = max(0, len(log_path.read_text().strip().splitlines()) - 1)
    return save_model(output, model.network, card)


def load_metrics(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
