"""Background worker: ``python -m liverseg.worker JOB_DIR`` segments ``JOB_DIR/input.npy`` with the options in
``JOB_DIR/job.json`` and writes ``labelmap.npy`` + ``result.json``.

Used by the Slicer module so inference runs outside Slicer's main thread (and process). Progress goes to stdout
as lines ``PROGRESS <fraction> <message>``; the parent cancels by terminating the process. Outputs are written
under temporary names and renamed, so the parent never reads a half-written file.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import numpy as np


def run(job_dir: Path) -> int:
    job = json.loads((job_dir / "job.json").read_text())
    try:
        from .inference import InferenceOptions
        from .pipeline import Segmenter
        from .postprocess import PostprocessConfig

        def progress(fraction: float, message: str) -> None:
            print(f"PROGRESS {fraction:.4f} {message}", flush=True)

        progress(0.0, "Loading model")
        segmenter = Segmenter(job.get("model") or None, job.get("device", "auto"),
                              InferenceOptions(roi=bool(job.get("fast", True))))
        array = np.load(job_dir / "input.npy", mmap_mode="r")
        result = segmenter.segment(np.asarray(array), np.asarray(job["ijk_to_ras"], float), tumor=bool(job.get("tumor", True)),
                                   postprocessing=PostprocessConfig(enabled=bool(job.get("postprocessing", True))),
                                   progress=progress, allow_non_hu=bool(job.get("allow_non_hu", False)))
        np.save(job_dir / "labelmap.tmp.npy", result.labelmap)
        os.replace(job_dir / "labelmap.tmp.npy", job_dir / "labelmap.npy")
        summary = {"ok": True, "statistics": result.statistics, "timings": result.timings, "model": result.model,
                   "device": result.device, "warnings": result.warnings}
    except Exception as exc:  # reported to the GUI as one message
        summary = {"ok": False, "error": str(exc), "error_type": type(exc).__name__, "traceback": traceback.format_exc()}
    (job_dir / "result.tmp.json").write_text(json.dumps(summary))
    os.replace(job_dir / "result.tmp.json", job_dir / "result.json")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
