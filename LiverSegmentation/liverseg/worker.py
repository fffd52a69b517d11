"""Background worker: ``python -m liverseg.worker JOB_DIR`` segments ``JOB_DIR/input.npy`` with the
:class:`liverseg.job.Job` in ``JOB_DIR/job.json`` and writes ``labelmap.npy`` + ``result.json``.

Used by the Slicer module so inference runs outside Slicer's main thread (and process). Progress goes to stdout
as lines ``PROGRESS <fraction> <message>``; the parent cancels by terminating the process tree. Every problem,
including a malformed job, becomes ``result.json`` with ``ok: false`` and one message; outputs are written
atomically, so the parent never reads a half-written file.
"""
from __future__ import annotations

import sys
import traceback
from pathlib import Path

import numpy as np

from .job import Job
from .outputs import write_atomic, write_json


def _save_labelmap(path: Path, labelmap: np.ndarray) -> None:
    def verify(tmp: Path) -> None:
        if not np.array_equal(np.load(tmp, mmap_mode="r"), labelmap):
            raise ValueError("labelmap differs")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, labelmap)

    write_atomic(path, write, verify, overwrite=True)


def run(job_dir: Path) -> int:
    if not job_dir.is_dir():
        print(f"liverseg.worker: error: job folder {job_dir} does not exist.", file=sys.stderr)
        return 2
    try:
        job_path = job_dir / "job.json"
        if not job_path.is_file():
            raise FileNotFoundError(f"The job folder {job_dir} has no job.json.")
        job = Job.from_json(job_path.read_text())
        from .inference import InferenceOptions
        from .pipeline import Segmenter
        from .postprocess import PostprocessConfig

        def progress(fraction: float, message: str) -> None:
            print(f"PROGRESS {fraction:.4f} {message}", flush=True)

        progress(0.0, "Loading model")
        segmenter = Segmenter(job.model or None, job.device, InferenceOptions(roi=job.roi))
        array = np.load(job_dir / "input.npy", mmap_mode="r")
        result = segmenter.segment(np.asarray(array), np.asarray(job.ijk_to_ras, float), tumor=job.tumor,
                                   postprocessing=PostprocessConfig(enabled=job.postprocessing),
                                   progress=progress, allow_non_hu=job.allow_non_hu)
        _save_labelmap(job_dir / "labelmap.npy", result.labelmap)
        summary = {"ok": True, "statistics": result.statistics, "timings": result.timings, "model": result.model,
                   "device": result.device, "warnings": result.warnings, "reclassified": result.reclassified}
    except Exception as exc:  # reported to the GUI as one message
        summary = {"ok": False, "error": str(exc), "error_type": type(exc).__name__, "traceback": traceback.format_exc()}
    try:
        write_json(job_dir / "result.json", summary, overwrite=True)
    except Exception as exc:  # e.g. the disk is full: the parent sees no result.json and reports the exit code
        print(f"liverseg.worker: error: could not write the result: {exc}", file=sys.stderr)
        return 1
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])) if len(sys.argv) == 2 else 2)
