"""Device selection: ``auto`` picks CUDA, then Apple MPS, then CPU."""
from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def available_devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found.insert(0, "cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.insert(0, "mps")
    return found


def resolve_device(choice: str = "auto") -> torch.device:
    """Turn a user choice into a device, with an actionable error when it is not present."""
    choice = (choice or "auto").lower()
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"Unknown device {choice!r}; choose one of {', '.join(DEVICE_CHOICES)}.")
    if choice == "auto":
        return torch.device(available_devices()[0])
    if choice not in available_devices():
        raise ValueError(f"Device {choice!r} is not available here (found: {', '.join(available_devices())}); use --device cpu.")
    return torch.device(choice)


def describe_devices() -> list[str]:
    lines = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i} {p.name} ({p.total_memory / 2**30:.1f} GiB)")
    if "mps" in available_devices():
        lines.append("mps (Apple GPU)")
    lines.append(f"cpu ({torch.get_num_threads()} threads)")
    return lines
