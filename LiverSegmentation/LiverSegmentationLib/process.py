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
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from liverseg.job import Job

ENGINE_DIR = Path(__file__).resolve().parents[1]  # the folder that holds the liverseg package


class JobState(Enum):
    NOT_STARTED = "not started"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class StartedJob:
    """Everything a run was started with. The result goes to the volume and output chosen at Apply time,
    whatever the user changes in the panel while it runs."""

    process: "SegmentationProcess"
    input_volume_id: str
    output_segmentation_id: str | None  # None: a new segmentation node is created
    parameters: object  # LiverSegmentationLib.parameters.SegmentationParameters
    started: float = field(default_factory=time.monotonic)

    @property
    def wall_seconds(self) -> float:
        """What the user waited, from Apply to now."""
        return time.monotonic() - self.started


@dataclass
class JobResult:
    labelmap: np.ndarray
    summary: dict


def _new_process_group() -> dict:
    """Popen options: its own process group on POSIX (so cancel reaches the grandchildren), no console window
    on Windows."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {"start_new_session": True}


def _terminate_tree(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Terminate a process and its descendants (SIGTERM to the group, SIGKILL after ``grace_s``)."""
    if os.name == "nt":
        if proc.poll() is None:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True)
        proc.wait()
        return
    import signal

    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The launcher is gone; its children may still be in the group.
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break


def default_python_executable() -> str:
    """Slicer ships ``PythonSlicer`` (its Python with the right environment); plain Python elsewhere."""
    return shutil.which("PythonSlicer") or sys.executable


class BackgroundProcess:
    """A Python module run as a child process in its own process group: ``PROGRESS <fraction> <message>`` lines
    update ``progress``/``message``, every other output line goes to ``log``; ``cancel`` stops the whole tree.
    Subclasses say what to run (``command``), how to read the outcome (``outcome``) and what to remove
    (``cleanup``)."""

    what = "process"

    def __init__(self, python_executable: str | None = None):
        self.python = python_executable or default_python_executable()
        self.state = JobState.NOT_STARTED
        self.progress, self.message = 0.0, ""
        self.error: str | None = None
        self.log: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader: threading.Thread | None = None

    def command(self) -> tuple[list[str], str]:
        """(arguments after the Python executable, working folder)."""
        raise NotImplementedError

    def python_path(self) -> list[str]:
        return [str(ENGINE_DIR)]

    def launch(self) -> None:
        args, cwd = self.command()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(self.python_path() + [p for p in [env.get("PYTHONPATH")] if p])
        env["PYTHONUNBUFFERED"] = "1"
        try:
            self._proc = subprocess.Popen([self.python, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, env=env, cwd=cwd, **_new_process_group())
        except OSError as exc:
            self.cleanup()
            raise RuntimeError(f"Could not start the {self.what} {self.python!r} ({exc.strerror or exc}).") from exc
        self.state = JobState.RUNNING
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line.rstrip("\n"))

    def outcome(self, returncode: int) -> str | None:
        """After the child exits: None for success, else the error message."""
        raise NotImplementedError

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
            self._drain()
            self.error = self.outcome(self._proc.returncode)
            if self.error is None:
                self.state = JobState.SUCCEEDED
            else:
                self.state = JobState.FAILED
                self.cleanup()
        return self.state

    def _drain(self) -> None:
        """The child has exited: let the reader thread reach the end of its output (the last lines carry the
        error message), then move what is left into the log."""
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if not line.startswith("PROGRESS "):
                self.log.append(line)

    def wait(self, timeout_s: float | None = None) -> JobState:
        start = time.monotonic()
        while self.poll() is JobState.RUNNING:
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                self.cancel()
                raise TimeoutError(f"The {self.what} did not finish within {timeout_s} s.")
            time.sleep(0.05)
        return self.state

    def cancel(self) -> None:
        """Stop the child and everything it started: ``PythonSlicer`` is a launcher, so terminating only it
        would leave the Python child running (and writing into a folder that is being removed)."""
        if self._proc is not None:
            _terminate_tree(self._proc)
        self.state = JobState.CANCELLED
        self.cleanup()

    def cleanup(self) -> None:
        pass


class SegmentationProcess(BackgroundProcess):
    """``python -m liverseg.worker JOB_DIR`` on a copy of the CT; the labelmap comes back as .npy."""

    what = "segmentation process"

    def __init__(self, array: np.ndarray, job: "Job", python_executable: str | None = None):
        super().__init__(python_executable)
        self.array, self.job = array, job
        self.job_dir: Path | None = None

    def start(self) -> None:
        """Write the job and start the worker; on any failure remove what was written (the CT copy) and raise
        one clear error."""
        try:
            self.job_dir = Path(tempfile.mkdtemp(prefix="LiverSegmentation-"))
            np.save(self.job_dir / "input.npy", np.ascontiguousarray(self.array))
            (self.job_dir / "job.json").write_text(self.job.to_json())
        except OSError as exc:
            self.cleanup()
            raise RuntimeError(f"Could not prepare the segmentation job in the temporary folder ({exc.strerror or exc}); "
                               "free disk space there or set TMPDIR to another folder.") from exc
        self.launch()

    def command(self) -> tuple[list[str], str]:
        return ["-m", "liverseg.worker", str(self.job_dir)], str(self.job_dir)

    def outcome(self, returncode: int) -> str | None:
        result_path = self.job_dir / "result.json"
        summary = json.loads(result_path.read_text()) if result_path.exists() else None
        if summary and summary.get("ok"):
            return None
        tail = "\n".join(self.log[-5:])
        return summary["error"] if summary else f"The segmentation process stopped unexpectedly.\n{tail}"

    def result(self) -> JobResult:
        if self.state is not JobState.SUCCEEDED:
            raise RuntimeError(self.error or f"No result: the job is {self.state.value}.")
        labelmap = np.load(self.job_dir / "labelmap.npy")
        summary = json.loads((self.job_dir / "result.json").read_text())
        self.cleanup()
        return JobResult(labelmap=labelmap, summary=summary)

    def cleanup(self) -> None:
        if self.job_dir is not None and self.job_dir.exists():
            shutil.rmtree(self.job_dir, ignore_errors=True)


def training_package_dirs() -> list[str]:
    """Where ``liverseg_train`` lives: shipped inside the extension next to ``liverseg`` (CMake installs it there),
    or ``Training/`` of a source checkout whose ``LiverSegmentation/`` folder Slicer loads the module from."""
    candidates = [ENGINE_DIR, ENGINE_DIR.parent / "Training"]
    return [str(d) for d in candidates if (d / "liverseg_train" / "__init__.py").exists()]


class FinetuneProcess(BackgroundProcess):
    """``python -m liverseg_train finetune`` on the user's cases folder, writing a new model file."""

    what = "fine-tuning process"

    def __init__(self, base: str, cases_folder: str, output: str, replay: str | None = None,
                 python_executable: str | None = None, epochs: int | None = None, samples: int | None = None):
        super().__init__(python_executable)
        self.base, self.cases_folder, self.output, self.replay = base, cases_folder, output, replay
        self.budget = [arg for flag, v in (("--epochs", epochs), ("--samples", samples)) if v for arg in (flag, str(v))]

    def python_path(self) -> list[str]:
        dirs = training_package_dirs()
        if not dirs:
            raise RuntimeError("The training package (liverseg_train) is not installed with this extension; reinstall "
                               "the extension, or add the Training/ folder of a source checkout.")
        return [str(ENGINE_DIR)] + dirs

    def start(self) -> None:
        self.python_path()  # a missing training package is reported before anything starts
        self.launch()

    def command(self) -> tuple[list[str], str]:
        args = ["-m", "liverseg_train", "finetune", "--base", self.base, "--data", self.cases_folder,
                "--output", self.output, "--progress-lines"]
        return args + (["--replay", self.replay] if self.replay else []) + self.budget, str(Path(self.output).parent)

    def outcome(self, returncode: int) -> str | None:
        if returncode == 0 and Path(self.output).is_file():
            return None
        errors = [ln for ln in self.log if "error" in ln.lower()] or self.log[-5:]
        return "Fine-tuning failed: " + ("\n".join(errors[-3:]) or f"exit code {returncode}")

    def report(self) -> dict:
        """The fine-tuned model's comparison with its base (from the new model's card)."""
        from liverseg.modelfile import read_card

        return read_card(Path(self.output))["finetune"]
