"""Model files: safetensors weights with the JSON model card embedded in the file's metadata.

One file carries both, so a card can never be separated from (or disagree with) its weights. Loading never
unpickles anything: safetensors holds raw tensors only, and legacy ``.pt``/``.pth`` state dicts are read with
``torch.load(weights_only=True)`` next to a ``.json`` card.
"""
from __future__ import annotations

import json
import pickle
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

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


def unfinished_warning(card: dict) -> str | None:
    """A warning when the card says its weights were saved by a training run that had not ended yet.

    Why: training rewrites its best model file every time validation improves, so a file picked up mid-run (or
    left by a run that was killed) looks like any other model. Cards from before this field existed say nothing."""
    training = card.get("training") or {}
    if training.get("finished", True) is not False:
        return None
    planned = (training.get("config") or {}).get("epochs")
    return (f"The model '{card.get('name', 'unnamed')}' was saved by a training run that had not finished (best epoch "
            f"{training.get('best_epoch', '?')} of up to {planned or '?'} planned); its results are not those of the "
            "finished model. Let the run end (or resume it with the same command) before using or evaluating this file.")


# The card schema with ranges, checked before any network is built (so a hostile or broken card can neither
# allocate gigabytes nor produce nonsense): (section, field) -> (type, low, high). Bounds are generous for real
# models (the bundled ones use 16 channels, depth 4, 2 mm) and tight enough to keep a network small.
CARD_RANGES: dict[tuple[str, str], tuple[type, float, float]] = {
    ("network", "base_channels"): (int, 4, 128),
    ("network", "depth"): (int, 1, 7),
    ("network", "dropout"): (float, 0.0, 0.9),
    ("network", "in_channels"): (int, 1, 15),
    ("network", "out_channels"): (int, 2, 2),
    ("preprocessing", "spacing_mm"): (float, 0.3, 10.0),
    ("preprocessing", "context_slices"): (int, 0, 7),
    ("preprocessing", "size_multiple"): (int, 1, 256),
    ("preprocessing", "slice_spacing_mm"): (float, 0.3, 10.0),
    ("preprocessing", "context_spacing_mm"): (float, 0.3, 10.0),
    ("thresholds", "liver"): (float, 0.0, 1.0),
    ("thresholds", "tumor"): (float, 0.0, 1.0),
}
WINDOW_HU = (-2000.0, 5000.0)
PATCH_RANGE = (4, 512)
WEIGHT_DTYPES = ("F32", "F16")  # safetensors dtype names a model file may use


def _number(value, kind: type, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and float(value) != int(value)):
        raise ModelFileError(f"The model card's {where} must be {'an integer' if kind is int else 'a number'}, not {value!r}.")
    if not np.isfinite(value):
        raise ModelFileError(f"The model card's {where} is {value}; it must be finite.")
    return float(value)


def validate_card(card: dict) -> None:
    """Raise :class:`ModelFileError`, naming the field and its allowed range, when a card is incomplete,
    inconsistent or out of range."""
    if not isinstance(card, dict):
        raise ModelFileError("The model card is not a JSON object.")
    missing = [k for k in ("format_version", "name", "architecture", "network", "preprocessing", "outputs") if k not in card]
    if missing:
        raise ModelFileError(f"The model card lacks {', '.join(missing)}; re-export the model with 'liverseg-train export'.")
    if _number(card["format_version"], int, "format_version") > FORMAT_VERSION:
        raise ModelFileError(
            f"The model file uses format {card['format_version']}, newer than this liverseg ({FORMAT_VERSION}); update liverseg.")
    if list(card["outputs"]) != OUTPUTS:
        raise ModelFileError(f"The model predicts {card['outputs']}, but this liverseg expects {OUTPUTS}.")
    for section in ("network", "preprocessing"):
        if not isinstance(card[section], dict):
            raise ModelFileError(f"The model card's {section} must be an object.")
    if not isinstance(card.get("thresholds", {}), dict):
        raise ModelFileError("The model card's thresholds must be an object.")
    for (section, key), (kind, lo, hi) in CARD_RANGES.items():
        value = card.get(section, {}).get(key)
        if value is None:
            continue
        v = _number(value, kind, f"{section}.{key}")
        if section == "thresholds" and not lo < v < hi:
            raise ModelFileError(f"The model card's {section}.{key} is {value}; it must lie strictly between {lo:g} and {hi:g}.")
        if not lo <= v <= hi:
            raise ModelFileError(f"The model card's {section}.{key} is {value}; allowed: {lo:g} to {hi:g}.")
    window = card["preprocessing"].get("window")
    if not isinstance(window, (list, tuple)) or len(window) != 2:
        raise ModelFileError("The model card's preprocessing.window must be [low, high] in HU.")
    lo_hu, hi_hu = (_number(v, float, "preprocessing.window") for v in window)
    if not (WINDOW_HU[0] <= lo_hu < hi_hu <= WINDOW_HU[1]):
        raise ModelFileError(f"The model card's preprocessing.window {list(window)} must be ordered (low < high) and "
                             f"within {WINDOW_HU[0]:g} to {WINDOW_HU[1]:g} HU.")
    patch = card["preprocessing"].get("patch_size")
    if patch is not None and (not isinstance(patch, (list, tuple)) or len(patch) != 3 or
                              not all(PATCH_RANGE[0] <= _number(v, int, "preprocessing.patch_size") <= PATCH_RANGE[1] for v in patch)):
        raise ModelFileError(f"The model card's preprocessing.patch_size {patch} must be 3 integers from "
                             f"{PATCH_RANGE[0]} to {PATCH_RANGE[1]}.")
    try:
        spec = PreprocessingSpec.from_dict(card["preprocessing"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelFileError(f"The model card's preprocessing section is invalid ({exc}).") from exc
    net = card["network"]
    if int(net.get("in_channels", -1)) != spec.in_channels or int(net.get("out_channels", -1)) != len(OUTPUTS):
        raise ModelFileError("The model card's network channels disagree with its preprocessing/outputs.")


def _check_weights(header: dict, expected: dict, path: Path) -> None:
    """Compare the tensors a safetensors header declares with the network's parameters, before reading them."""
    declared = {k: v for k, v in header.items() if k != "__metadata__"}
    if set(declared) != set(expected):
        extra, lacking = sorted(set(declared) - set(expected)), sorted(set(expected) - set(declared))
        raise ModelFileError(f"The weights in {path} do not fit the architecture in its card "
                             f"(unexpected: {extra[:3]}, missing: {lacking[:3]}).")
    for name, info in declared.items():
        if not isinstance(info, dict) or info.get("dtype") not in WEIGHT_DTYPES:
            raise ModelFileError(f"{path}: tensor {name} has dtype {info.get('dtype') if isinstance(info, dict) else '?'}; "
                                 f"model weights must be one of {', '.join(WEIGHT_DTYPES)}.")
        if list(info.get("shape", [])) != list(expected[name]):
            raise ModelFileError(f"The weights in {path} do not fit the architecture in its card: tensor {name} has "
                                 f"shape {info.get('shape')}, the card's network needs {list(expected[name])}.")


def save_model(path: str | Path, network: "torch.nn.Module", card: dict, overwrite: bool = True) -> Path:
    """Write weights and card into one safetensors file, atomically, after reading the card back from it."""
    from safetensors.torch import save_file

    from .outputs import write_atomic

    validate_card(card)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}

    def verify(tmp: Path) -> None:
        header = _safetensors_header(tmp)
        _check_weights(header, {k: list(v.shape) for k, v in state.items()}, tmp)
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        if tmp.stat().st_size < end or read_card(tmp) != json.loads(json.dumps(card)):
            raise ModelFileError("short file or card mismatch")

    return write_atomic(path, lambda tmp: save_file(state, str(tmp), metadata={CARD_KEY: json.dumps(card)}), verify,
                        overwrite=overwrite)


def _safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (8-byte length + JSON): tensor names, dtypes, shapes and
    ``__metadata__``; no torch needed."""
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
    return header


def read_card(path: str | Path) -> dict:
    """The card of a model file without loading its weights (works without torch)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        meta = _safetensors_header(path).get("__metadata__") or {}
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
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file; give the .safetensors file.")
    if not path.is_file():
        raise ModelFileError(f"Model file {path} does not exist or is not a regular file.")
    card = read_card(path)
    try:
        network = build_network(card["architecture"], card["network"])  # small: the card's ranges bound it
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    expected = {k: list(v.shape) for k, v in network.state_dict().items()}
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            _check_weights(_safetensors_header(path), expected, path)
            state = load_file(str(path), device="cpu")
        elif path.suffix in (".pt", ".pth"):
            with warnings.catch_warnings():  # torch's pickle-protocol remarks are not for users
                warnings.simplefilter("ignore")
                state = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise ModelFileError(f"Unsupported model file type {path.suffix!r}; use .safetensors.")
    except ModelFileError:
        raise
    except pickle.UnpicklingError as exc:  # torch's own message suggests weights_only=False: never to a user
        raise ModelFileError(f"{path} contains pickled Python objects, which liverseg never loads (only plain "
                             "tensors); convert it to safetensors with 'liverseg-train export'.") from exc
    except Exception as exc:
        raise ModelFileError(f"Could not read weights from {path}: {str(exc).splitlines()[0][:200]}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path} does not hold a plain tensor state dict.")
    if any(v.dtype not in (torch.float32, torch.float16) for v in state.values()):
        raise ModelFileError(f"{path}: model weights must be float32 or float16.")
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"The weights in {path} do not fit the architecture in its card: {str(exc).splitlines()[0]}") from exc
    network.eval().to(device)
    return LoadedModel(network=network, card=card, path=path)
