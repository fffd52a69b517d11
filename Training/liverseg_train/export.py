"""Export: a training run's best model becomes a model file whose card carries the measured metrics."""
from __future__ import annotations

import json
from pathlib import Path

from liverseg.modelfile import load_model, save_model


def export_model(run_dir: str | Path, output: str | Path, metrics: dict | None = None, name: str | None = None,
                 version: str | None = None, extra_card: dict | None = None) -> Path:
    """Copy the run's best model to ``output`` with ``metrics`` (e.g. an evaluation's metrics.json) in its card."""
    run_dir = Path(run_dir)
    candidates = sorted(run_dir.glob("*.safetensors"))
    if not candidates:
        raise FileNotFoundError(f"{run_dir} holds no model file; train first.")
    model = load_model(candidates[0])
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
