"""The module's background process without Slicer: start failures clean up, cancel stops the whole tree."""
import os
import stat
import sys
import tempfile
import time

import numpy as np
import pytest

from LiverSegmentationLib.process import JobState, SegmentationProcess
from liverseg.job import Job


@pytest.fixture()
def private_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_missing_launcher_gives_a_clear_error_and_removes_the_ct_copy(private_tmp):
    proc = SegmentationProcess(np.zeros((4, 8, 8), np.int16), Job(ijk_to_ras=np.eye(4).tolist()),
                               python_executable=str(private_tmp / "no-such-PythonSlicer"))
    with pytest.raises(RuntimeError, match="Could not start the segmentation process"):
        proc.start()
    assert not list(private_tmp.glob("LiverSegmentation-*"))


def test_full_temp_disk_at_start_gives_a_clear_error(private_tmp, monkeypatch):
    def no_space(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", no_space)
    proc = SegmentationProcess(np.zeros((4, 8, 8), np.int16), Job(ijk_to_ras=np.eye(4).tolist()))
    with pytest.raises(RuntimeError, match="free disk space"):
        proc.start()
    assert not list(private_tmp.glob("LiverSegmentation-*"))


def test_failed_job_removes_its_temporary_folder(private_tmp):
    bad = Job(ijk_to_ras=np.full((4, 4), np.nan).tolist())  # the worker refuses the geometry
    proc = SegmentationProcess(np.zeros((4, 8, 8), np.int16), bad)
    proc.start()
    assert proc.wait(timeout_s=120) is JobState.FAILED and "NaN" in proc.error
    assert not list(private_tmp.glob("LiverSegmentation-*"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:  # a zombie is dead
            return f.read().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):  # gone (possibly between the two checks)
        return False


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
def test_cancel_stops_the_launchers_child_too(private_tmp):
    """PythonSlicer is a launcher that starts the real Python as a child; cancel must stop both."""
    pidfile = private_tmp / "child.pid"
    launcher = private_tmp / "PythonSlicer"
    launcher.write_text(f"#!/bin/sh\n{sys.executable} -c 'import time; time.sleep(600)' &\necho $! > {pidfile}\nwait\n")
    launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC)
    proc = SegmentationProcess(np.zeros((4, 8, 8), np.int16), Job(ijk_to_ras=np.eye(4).tolist()), str(launcher))
    proc.start()
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    child = int(pidfile.read_text())
    assert _alive(child)
    proc.cancel()
    for _ in range(100):
        if not _alive(child):
            break
        time.sleep(0.05)
    assert not _alive(child), "the worker's child survived cancel"
    assert proc.state is JobState.CANCELLED
