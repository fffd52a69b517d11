"""Progress reporting and cancellation shared by the engine, the CLI and the Slicer module."""
from __future__ import annotations

from typing import Callable, Protocol


class ProgressCallback(Protocol):
    def __call__(self, fraction: float, message: str) -> None: ...


class CancelToken(Protocol):
    """Anything with ``is_set()``, e.g. ``threading.Event`` or ``multiprocessing.Event``."""

    def is_set(self) -> bool: ...


class Cancelled(RuntimeError):
    """The run was cancelled by the user; nothing was written."""


class Reporter:
    """Maps a stage's local progress into the overall [0, 1] range and checks cancellation on every report."""

    def __init__(self, callback: ProgressCallback | None = None, cancel: CancelToken | Callable[[], bool] | None = None):
        self._callback = callback
        self._cancel = cancel
        self._start, self._span = 0.0, 1.0

    def cancelled(self) -> bool:
        if self._cancel is None:
            return False
        return bool(self._cancel.is_set() if hasattr(self._cancel, "is_set") else self._cancel())

    def check(self) -> None:
        if self.cancelled():
            raise Cancelled("Segmentation cancelled.")

    def stage(self, start: float, end: float) -> "Reporter":
        sub = Reporter(self._callback, self._cancel)
        sub._start, sub._span = self._start + start * self._span, (end - start) * self._span
        return sub

    def __call__(self, fraction: float, message: str = "") -> None:
        self.check()
        if self._callback is not None:
            self._callback(min(1.0, max(0.0, self._start + fraction * self._span)), message)
