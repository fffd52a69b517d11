"""Runs the engine in a separate Python process, so Slicer's GUI never freezes and Cancel can stop it at once.

The volume goes to the worker as a .npy array plus its IJK-to-RAS matrix (no file-format geometry conversions),
the labelmap comes back the same way. Progress lines are read on a helper thread; the GUI polls ``poll()`` from a
timer, scripts call ``wait()``. Temporary files are removed on success, failure and cancel.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

ENGINE_DIR = Path(__file__).resolve().parents[1]  # the folder that holds the liverseg package


class JobState(Enum):
    NOT_STARTED = "not started"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class JobResult:
    labelmap: np.ndarray
    summary: dict


def default_python_executable() -> str:
    """Slicer ships ``PythonSlicer`` (its Python with the right environment); plain Python elsewhere."""
    return shutil.which("PythonSlicer") or sys.executable


class SegmentationProcess:
    def __init__(self, array: np.ndarray, ijk_to_ras: np.ndarray, job: dict, python_executable: str | None = None):
        self.array, self.ijk_to_ras, self.job = array, np.asarray(ijk_to_ras, float), dict(job)
        self.python = python_executable or default_python_executable()
        self.state = JobState.NOT_STARTED
        self.progress, self.message = 0.0, ""
        self.error: str | None = None
        self.log: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self.job_dir: Path | None = None

    def start(self) -> None:
        self.job_dir = Path(tempfile.mkdtemp(prefix="LiverSegmentation-"))
        np.save(self.job_dir / "input.npy", np.ascontiguousarray(self.array))
        (self.job_dir / "job.json").write_text(json.dumps({**self.job, "ijk_to_ras": self.ijk_to_ras.tolist()}))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ENGINE_DIR)] + [p for p in [env.get("PYTHONPATH")] if p])
        env["PYTHONUNBUFFERED"] = "1"
        self._proc = subprocess.Popen([self.python, "-m", "liverseg.worker", str(self.job_dir)], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, env=env, cwd=str(self.job_dir))
        self.state = JobState.RUNNING
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line.rstrip("\n"))

    def poll(self) -> JobState:
        """Consume progress lines and update the state; cheap enough to call from a 100 ms GUI timer."""
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if line.startswith("PROGRESS "):
                parts = line.split(" ", 2)
                self.progress = float(parts[1])
                self.message = parts[2] if len(parts) > 2 else ""
            else:
                self.log.append(line)
        if self.state is JobState.RUNNING and self._proc is not None and self._proc.poll() is not None:
            result_path = self.job_dir / "result.json"
            summary = json.loads(result_path.read_text()) if result_path.exists() else None
            if summary and summary.get("ok"):
                self.state = JobState.SUCCEEDED
            else:
                self.state = JobState.FAILED
                tail = "\n".join(self.log[-5:])
                self.error = summary["error"] if summary else f"The segmentation process stopped unexpectedly.\n{tail}"
        return self.state

    def wait(self, timeout_s: float | None = None) -> JobState:
        start = time.monotonic()
        while self.poll() is JobState.RUNNING:
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                self.cancel()
                raise TimeoutError(f"Segmentation did not finish within {timeout_s} s.")
            time.sleep(0.05)
        return self.state

    def result(self) -> JobResult:
        if self.state is not JobState.SUCCEEDED:
            raise RuntimeError(self.error or f"No result: the job is {self.state.value}.")
        labelmap = np.load(self.job_dir / "labelmap.npy")
        summary = json.loads((self.job_dir / "result.json").read_text())
        self.cleanup()
        return JobResult(labelmap=labelmap, summary=summary)

    def cancel(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self.state = JobState.CANCELLED
        self.cleanup()

    def cleanup(self) -> None:
        if self.job_dir is not None and self.job_dir.exists():
            shutil.rmtree(self.job_dir, ignore_errors=True)
