"""Console presentation shared by ``liverseg`` and ``liverseg-train``: a progress bar and the rule that every
command error is one line on stderr with a non-zero exit code (a traceback only with ``--debug``)."""
from __future__ import annotations

import argparse
import signal
import sys
import threading

EXIT_ERROR, EXIT_CANCELLED = 1, 130


def non_negative_mm(text: str) -> float:
    """An argparse type for a distance in mm that may be 0 (off) but not negative or not a number."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a distance in mm >= 0 (0: off), got {text!r}")
    return value


class ProgressBar:
    """A plain-text progress bar on stderr (redrawn in place on a terminal, a few lines otherwise)."""

    def __init__(self, label: str, enabled: bool = True):
        self.label, self.enabled, self.last = label, enabled, -1
        self.tty = sys.stderr.isatty()

    def __call__(self, fraction: float, message: str) -> None:
        if not self.enabled:
            return
        pct = int(fraction * 100)
        if pct == self.last or (not self.tty and pct % 25 and pct != 100):
            return
        self.last = pct
        bar = "#" * (pct // 4) + "-" * (25 - pct // 4)
        end = "\r" if self.tty and pct < 100 else "\n"
        sys.stderr.write(f"{self.label} [{bar}] {pct:3d}% {message:<20}{end}")
        sys.stderr.flush()


def _terminated(signum, frame) -> None:
    from .progress import Cancelled

    raise Cancelled("terminated by a signal")


def run_cli(func, args, prog: str) -> int:
    """Run a subcommand: one clear line on stderr and a non-zero exit code on any error (traceback with --debug).

    SIGTERM becomes a cancellation, so the ``finally`` blocks that remove temporary files run (a batch system or
    ``timeout`` killing a run must not leave a half-written ``.liverseg-*`` file beside the results)."""
    from .progress import Cancelled

    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        return int(func(args) or 0)
    except (KeyboardInterrupt, Cancelled) as exc:
        print(f"{prog}: cancelled{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
