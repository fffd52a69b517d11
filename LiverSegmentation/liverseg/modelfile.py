"""Model files: safetensors weights with the JSON model card embedded in the file's metadata.

One file carries both, so a card can never be separated from (or disagree with) its weights. Loading never
unpickles anything: safetensors holds raw tensors only, and legacy ``.pt``/``.pth`` state dicts are read with
``torch.load(weights_only=True)`` next to a ``.json`` card.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .labels import label_table
from .spec import PreprocessingSpec

if TYPE_CHECKING:  # torch is imported only where weights are touched, so cards can be read without it
    import torch

CARD_KEY = "liverseg_model_card"
FORMAT_VERSION = 1
OUTPUTS = ["liver", "tumor"]  # sigmoid channels: liver (tumors included, as LiTS scores it) and tumor


class ModelFileError(RuntimeError):
    """A model file cannot be used; the message says why and what to do."""


@dataclass
class LoadedModel:
    """A validated network in eval mode plus the card it came with."""

    network: "torch.nn.Module"
    card: dict
    path: Path | None

    @property
    def preprocessing(self) -> PreprocessingSpec:
        return PreprocessingSpec.from_dict(self.card["preprocessing"])

    @property
    def name(self) -> str:
        return str(self.card.get("name", "unnamed"))

    @property
    def thresholds(self) -> dict:
        return {"liver": 0.5, "tumor": 0.5, **self.card.get("thresholds", {})}


def make_card(*, name: str, version: str, architecture: str, network: dict, preprocessing: PreprocessingSpec,
              description: str = "", training: dict | None = None, metrics: dict | None = None,
              intended_use: str = "Research use only. Not a medical device; not for diagnosis or treatment.",
              limitations: list[str] | None = None, thresholds: dict | None = None) -> dict:
    """A complete model card; everything the engine needs to rebuild the network and its preprocessing."""
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "description": description,
        "architecture": architecture,
        "network": dict(network),
        "preprocessing": preprocessing.to_dict(),
        "outputs": list(OUTPUTS),
        "labels": label_table(),
        "thresholds": thresholds or {"liver": 0.5, "tumor": 0.5},
        "training": training or {},
        "metrics": metrics or {},
        "intended_use": intended_use,
        "limitations": limitations or [],
    }


def validate_card(card: dict) -> None:
    """Raise :class:`ModelFileError` when a card is incomplete or inconsistent."""
    if not isinstance(card, dict):
        raise ModelFileError("The model card is not a JSON object.")
    missing = [k for k in ("format_version", "name", "architecture", "network", "preprocessing", "outputs") if k not in card]
    if missing:
        raise ModelFileError(f"The model card lacks {', '.join(missing)}; re-export the model with 'liverseg-train export'.")
    if int(card["format_version"]) > FORMAT_VERSION:
        raise ModelFileError(
            f"The model file uses format {card['format_version']}, newer than this liverseg ({FORMAT_VERSION}); update liverseg.")
    if list(card["outputs"]) != OUTPUTS:
        raise ModelFileError(f"The model predicts {card['outputs']}, but this liverseg expects {OUTPUTS}.")
    try:
        spec = PreprocessingSpec.from_dict(card["preprocessing"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelFileError(f"The model card's preprocessing section is invalid ({exc}).") from exc
    net = card["network"]
    if int(net.get("in_channels", -1)) != spec.in_channels or int(net.get("out_channels", -1)) != len(OUTPUTS):
        raise ModelFileError("The model card's network channels disagree with its preprocessing/outputs.")
    if spec.window[1] <= spec.window[0] or spec.spacing_mm <= 0:
        raise ModelFileError("The model card's window or spacing is invalid.")


def save_model(path: str | Path, network: "torch.nn.Module", card: dict) -> Path:
    """Write weights and card into one safetensors file (written to a temporary name, then renamed)."""
    from safetensors.torch import save_file

    validate_card(card)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata={CARD_KEY: json.dumps(card)})
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def _safetensors_metadata(path: Path) -> dict:
    """The ``__metadata__`` of a safetensors file, read from its header (8-byte length + JSON): no torch needed."""
    try:
        with path.open("rb") as f:
            size_bytes = f.read(8)
            if len(size_bytes) != 8:
                raise ValueError("file too short")
            (size,) = struct.unpack("<Q", size_bytes)
            if size > 100 * 2**20 or size > path.stat().st_size:
                raise ValueError("header length out of range")
            header = json.loads(f.read(size))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path} is not a valid safetensors model file ({exc}).") from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"{path} is not a valid safetensors model file (bad header).")
    return header.get("__metadata__") or {}


def read_card(path: str | Path) -> dict:
    """The card of a model file without loading its weights (works without torch)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        meta = _safetensors_metadata(path)
        if CARD_KEY not in meta:
            raise ModelFileError(f"{path} has no liverseg model card; export it with 'liverseg-train export'.")
        try:
            card = json.loads(meta[CARD_KEY])
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"The model card in {path} is not valid JSON ({exc}).") from exc
    else:
        card_path = path.with_suffix(".json")
        if not card_path.exists():
            raise ModelFileError(f"{path} needs its model card {card_path.name} beside it (or use a .safetensors file).")
        card = json.loads(card_path.read_text())
    validate_card(card)
    return card


def load_model(path: str | Path, device: "str | torch.device" = "cpu") -> LoadedModel:
    """Load, validate and rebuild a model; any problem becomes one clear :class:`ModelFileError`."""
    import torch

    from .networks import build_network

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file {path} does not exist.")
    card = read_card(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif path.suffix in (".pt", ".pth"):
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise ModelFileError(f"Unsupported model file type {path.suffix!r}; use .safetensors.")
    except ModelFileError:
        raise
    except Exception as exc:  # weights_only refuses pickled objects with an UnpicklingError
        raise ModelFileError(f"Could not read weights from {path}: {str(exc).splitlines()[0]}") from exc
    try:
        network = build_network(card["architecture"], card["network"])
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path} does not hold a plain tensor state dict.")
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"The weights in {path} do not fit the architecture in its card: {str(exc).splitlines()[0]}") from exc
    network.eval().to(device)
    return LoadedModel(network=network, card=card, path=path)
