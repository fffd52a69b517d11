"""The job a caller (the Slicer module) hands to the background worker: one dataclass, serialised to JSON.

One source of truth for its keys, types and defaults: the module builds a :class:`Job`, the worker reads it back
with :meth:`Job.from_json`, which refuses a malformed job with one clear message instead of a traceback.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from .checks import InputError


@dataclass(frozen=True)
class Job:
    ijk_to_ras: list = field(default_factory=list)  # 4x4 voxel-to-RAS matrix of input.npy ([k, j, i] array)
    model: str | None = None  # bundled model name or model file; None: the default model
    device: str = "auto"
    tumor: bool = True
    postprocessing: bool = True
    roi: bool = True  # liver ROI: find the liver with a coarse pass first, then run only there
    allow_non_hu: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Job":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"The job file is not valid JSON ({exc}).") from exc
        if not isinstance(data, dict):
            raise InputError("The job file must hold a JSON object.")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InputError(f"The job file has unknown key(s) {', '.join(unknown)}; the module and engine versions differ.")
        for key, value in data.items():
            if key in ("tumor", "postprocessing", "roi", "allow_non_hu") and not isinstance(value, bool):
                raise InputError(f"The job's {key!r} must be true or false, not {value!r}.")
            if key in ("model",) and value is not None and not isinstance(value, str):
                raise InputError(f"The job's 'model' must be a name or path, not {value!r}.")
            if key == "device" and not isinstance(value, str):
                raise InputError(f"The job's 'device' must be a string, not {value!r}.")
        if "ijk_to_ras" not in data:
            raise InputError("The job file lacks 'ijk_to_ras', the volume's geometry.")
        return cls(**data)
