"""The catalogue of bundled models: a declarative table, so adding a model is adding a row."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class BundledModel:
    name: str
    filename: str
    summary: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.filename


BUNDLED_MODELS: dict[str, BundledModel] = {
    m.name: m
    for m in [
        BundledModel("liver-unet", "liver-unet.safetensors", "2.5D U-Net, liver + liver tumor"),
        BundledModel("liver-resunet", "liver-resunet.safetensors", "2.5D residual U-Net, liver + liver tumor"),
    ]
}
DEFAULT_MODEL = "liver-unet"  # best leave-one-case-out mean among the models that pass the hard-negative test (README)


def model_members(model) -> list:
    """The members of a model choice: several bundled names/files joined by commas (an ensemble, e.g.
    ``"liver-unet,liver-resunet"``) or a list of them; anything else is a single member."""
    if isinstance(model, (list, tuple)):
        return list(model)
    if isinstance(model, str) and "," in model:
        return [m.strip() for m in model.split(",") if m.strip()]
    return [model]


def resolve_model_path(name_or_path: str | Path | None) -> Path:
    """A bundled model's name (or ``default``/None) or a path to a model file -> the file's path."""
    from .modelfile import ModelFileError

    if name_or_path in (None, "", "default"):
        name_or_path = DEFAULT_MODEL
    key = str(name_or_path)
    if key in BUNDLED_MODELS:
        path = BUNDLED_MODELS[key].path
        if not path.exists():
            raise ModelFileError(f"The bundled model {key!r} is missing from {WEIGHTS_DIR}; reinstall liverseg.")
        return path
    path = Path(key).expanduser()
    if path.exists():
        return path
    raise ModelFileError(f"{key!r} is neither a bundled model ({', '.join(BUNDLED_MODELS)}) nor an existing file.")


def available_models() -> list[BundledModel]:
    return [m for m in BUNDLED_MODELS.values() if m.path.exists()]
