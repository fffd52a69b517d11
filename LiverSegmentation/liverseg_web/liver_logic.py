"""What the "Liver Segmentation" panel of the web app does: load a CT, segment it in a background process, show
progress, put the result into the scene for the segment editor, and hand out the (edited) result as files.

Every step is the Slicer module's or the engine's own code: ``SegmentationProcess`` (worker process, progress,
cancel of the whole process tree), ``scene.add_result_segmentation`` (segments with terminology and colours),
``scene.labelmap_from_segmentation`` / ``scene.statistics`` / ``scene.write_table_csv`` and the engine's
``write_labelmap`` (.seg.nrrd and NIfTI exactly as the CLI writes them). This class only wires them to the page.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import slicer

from liverseg.checks import InputError, check_volume
from liverseg.io import ImageData, write_labelmap
from liverseg.pipeline import describe_region
from liverseg.sample import fetch_sample
from LiverSegmentationLib import scene
from LiverSegmentationLib.parameters import SegmentationParameters
from LiverSegmentationLib.process import JobState, SegmentationProcess

log = logging.getLogger("liverseg.web")

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


class UploadTooLarge(ValueError):
    pass


def upload_limit_message(limit_bytes: int) -> str:
    return (f"The upload is larger than this server accepts ({limit_bytes / 1e6:.0f} MB). Crop or compress the CT "
            "(e.g. .nii.gz), or ask the administrator to start the server with a larger --max-upload-mb.")


def unpack_upload(paths: list[Path], dest: Path) -> list[Path]:
    """The image files among uploaded files: a .zip (e.g. a DICOM series) is extracted into ``dest`` first;
    members that would land outside ``dest`` are refused."""
    files: list[Path] = []
    for path in paths:
        if path.suffix.lower() == ".zip":
            target = dest / (path.stem + "_unzipped")
            with zipfile.ZipFile(path) as archive:
                for member in archive.infolist():
                    out = (target / member.filename).resolve()
                    if not out.is_relative_to(target.resolve()):
                        raise ValueError(f"{path.name} holds a file outside its own folder ({member.filename}); not loaded.")
                archive.extractall(target)
            files += sorted(p for p in target.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            files.append(path)
    if not files:
        raise ValueError("No files were uploaded.")
    return files


class LiverLogic:
    """State names start with ``liver_``; the panel (``ui.LiverPanel``) binds to them."""

    def __init__(self, server, slicer_app, on_volume_loaded: Callable, session_dir: Path, max_upload_bytes: int,
                 python_executable: str | None = None):
        self.server, self.app = server, slicer_app
        self.on_volume_loaded = on_volume_loaded  # shows the volume and hands it to the segment editor
        self.session_dir = Path(session_dir)
        self.max_upload_bytes = max_upload_bytes
        self.python = python_executable or sys.executable
        self.volume_node = None
        self.result_node = None
        self.review_node = None  # the latest result's "regions to review" point list
        self.process = None
        self.task: asyncio.Task | None = None  # the running segmentation's follower (progress, then the result)
        self._chunks: list[dict] = []
        self._upload_bytes = 0
        self._upload_refused = False
        state = server.state
        state.update({"liver_busy": False, "liver_progress": 0.0, "liver_message": "", "liver_log": "",
                      "liver_error": "", "liver_warnings": [], "liver_review": [], "liver_status": "Load a CT to start.",
                      "liver_tumor": True, "liver_has_volume": False, "liver_has_result": False, "liver_stats": [],
                      "liver_stem": "liver",  # downloads are named <stem>.seg.nrrd etc.
                      "liver_max_upload_mb": max_upload_bytes / 1e6,
                      "liver_upload_refusal": upload_limit_message(max_upload_bytes)})  # the page shows the same text
        ctrl = server.controller
        ctrl.liver_load_sample = self.load_sample
        ctrl.liver_segment = self.segment
        ctrl.liver_cancel = self.cancel
        ctrl.liver_update_statistics = self.update_statistics
        ctrl.liver_show_review = self.show_review

    @property
    def state(self):
        return self.server.state

    def report(self, error: str = "", status: str | None = None) -> None:
        self.state.liver_error = error
        if status is not None:
            self.state.liver_status = status
        if error:
            log.error(error)

    # ---- loading -------------------------------------------------------------------------------------------
    async def load_chunk(self, files: list[dict]) -> None:
        """Chunks of an upload from the page (``window.load_files_by_chunks``); an empty list ends the upload.
        The size limit is enforced here too, not only in the page."""
        if files:
            self._upload_bytes += sum(int(f.get("size") or 0) for f in files)
            if self._upload_bytes > self.max_upload_bytes:
                self._upload_refused, self._chunks = True, []
            elif not self._upload_refused:
                self._chunks += files
            return
        chunks, refused = self._chunks, self._upload_refused
        self._chunks, self._upload_bytes, self._upload_refused = [], 0, False
        if refused:
            self.report(upload_limit_message(self.max_upload_bytes))
            return
        upload_dir = self.session_dir / f"upload-{time.monotonic_ns()}"
        upload_dir.mkdir(parents=True)
        paths = []
        for f in chunks:
            content = f.get("content")
            path = upload_dir / Path(str(f.get("name") or "upload")).name
            path.write_bytes(b"".join(content) if isinstance(content, list) else (content or b""))
            paths.append(path)
        try:
            self.load_files(unpack_upload(paths, upload_dir))
        except Exception as exc:  # a corrupt zip or unreadable image: say so on the page
            self.report(str(exc))

    def load_sample(self) -> None:
        """The public sample CT (LiTS 117), fetched once from PyPI by the engine."""
        try:
            self.load_files([fetch_sample()["image"]])
        except Exception as exc:
            self.report(f"Could not load the sample CT: {exc}")

    def load_files(self, paths: list[Path]) -> None:
        """A new CT replaces the scene (the previous CT, result and edits of this session are dropped; download
        them first)."""
        if self.state.liver_busy:
            raise RuntimeError("A segmentation is running; cancel it before loading another CT.")
        self.app.scene.Clear()
        volumes = self.app.io_manager.load_volumes([str(p) for p in paths])
        if not volumes:
            raise ValueError("None of the uploaded files is a CT volume Slicer can read (NIfTI, NRRD, MHA, or a "
                             "zip of one DICOM series).")
        volume = max(volumes, key=lambda v: int(np.prod(v.GetImageData().GetDimensions())))
        self.volume_node, self.result_node, self.review_node = volume, None, None
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in volume.GetName()) + "_liver"
        self.state.update({"liver_stem": stem, "liver_has_volume": True, "liver_has_result": False, "liver_stats": [],
                           "liver_warnings": [], "liver_review": [], "liver_log": "", "liver_progress": 0.0})
        self.report(status=f"Loaded '{volume.GetName()}' ({' x '.join(map(str, volume.GetImageData().GetDimensions()))}). "
                            "Click Segment liver.")
        self.on_volume_loaded(volume)

    # ---- segmentation --------------------------------------------------------------------------------------
    def segment(self) -> None:
        if self.state.liver_busy:
            return
        if self.volume_node is None or self.volume_node.GetScene() is None:
            self.report("Load a CT first.")
            return
        array = slicer.util.arrayFromVolume(self.volume_node)
        try:
            check_volume(array)
        except InputError as exc:
            self.report(f"'{self.volume_node.GetName()}': {exc}")
            return
        parameters = SegmentationParameters(tumor=bool(self.state.liver_tumor))
        process = SegmentationProcess(array, parameters.to_job(scene.ijk_to_ras(self.volume_node)), self.python)
        try:
            process.start()
        except RuntimeError as exc:
            self.report(str(exc))
            return
        self.process = process
        self.state.update({"liver_busy": True, "liver_progress": 0.0, "liver_message": "Starting", "liver_log": "",
                           "liver_warnings": []})
        self.report(status="Segmenting...")
        self.task = asyncio.get_event_loop().create_task(self._follow(process, self.volume_node.GetID(), parameters.tumor))

    async def _follow(self, process, volume_id: str, tumor: bool) -> None:
        started = time.monotonic()
        try:
            while process.poll() is JobState.RUNNING:
                with self.state:
                    self.state.liver_progress = round(100 * process.progress, 1)
                    self.state.liver_message = process.message or self.state.liver_message
                    self.state.liver_log = "\n".join(process.log[-200:])
                await asyncio.sleep(0.25)
            with self.state:
                self.state.liver_log = "\n".join(process.log[-200:])
                self._finish(process, volume_id, tumor, time.monotonic() - started)
        except Exception as exc:  # never leave the page spinning
            with self.state:
                self.report(f"The segmentation failed: {exc}", status="Failed.")
        finally:
            self.process = None
            with self.state:
                self.state.liver_busy = False

    def _finish(self, process, volume_id: str, tumor: bool, seconds: float) -> None:
        if process.state is JobState.CANCELLED:
            self.report(status="Cancelled; nothing was added.")
            return
        if process.state is not JobState.SUCCEEDED:
            process.cleanup()
            self.report(process.error or "The segmentation failed.", status="Failed; nothing was added.")
            return
        volume = self.app.scene.GetNodeByID(volume_id)
        result = process.result()
        if volume is None or volume is not self.volume_node:
            self.report("Another CT was loaded during the run; the result was discarded.", status="Discarded.")
            return
        editor = self.app.segmentation_editor
        previous = editor.active_segmentation_node
        node = scene.add_result_segmentation(self.app.scene, volume, result.labelmap, include_tumor=tumor)
        if previous is not None and previous.GetScene() is not None:
            if previous.GetSegmentation().GetNumberOfSegments() == 0:
                self.app.scene.RemoveNode(previous)  # the empty segmentation made when the CT was loaded
            elif previous.GetDisplayNode() is not None:
                previous.GetDisplayNode().SetVisibility(False)  # an earlier result or the user's own: kept, hidden
        editor.set_active_segmentation(node, volume)
        editor.show_3d(True)
        self.result_node = node
        self.state.liver_warnings = list(result.summary.get("warnings", []))
        self._show_review_points(volume, result.summary.get("reclassified", []))
        self.state.liver_has_result = True
        self._show_statistics(result.labelmap)
        self.report(status=f"Done in {seconds:.1f} s ({result.summary.get('model', '')}, "
                            f"{result.summary.get('device', '')}). Refine with the brush tools, then download.")

    def _show_review_points(self, volume, regions: list[dict]) -> None:
        """The regions a density rule took from the network's tumor, as points in the views (the Slicer module's
        "<CT> regions to review" list) and as a list on the page whose entries centre the views on them; an
        earlier result's points go (they describe a result that is no longer shown)."""
        if self.review_node is not None and self.review_node.GetScene() is not None:
            self.app.scene.RemoveNode(self.review_node)
        self.review_node = scene.add_review_points(self.app.scene, volume, regions)
        self.state.liver_review = [
            {"index": i, "text": describe_region(r)} for i, r in enumerate(regions)]

    def show_review(self, index: int) -> None:
        """Centre the slice views on review point ``index`` (its world position, transforms included)."""
        node = self.review_node
        if node is None or node.GetScene() is None or not 0 <= int(index) < node.GetNumberOfControlPoints():
            self.report("That region is no longer in the scene; segment the CT again to list the regions.")
            return
        position = node.GetNthControlPointPositionWorld(int(index))
        slicer.vtkMRMLSliceNode.JumpAllSlices(self.app.scene, *position, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
        self.report(status=f"Views centred on region {int(index) + 1}: {self.state.liver_review[int(index)]['text']}")

    def cancel(self) -> None:
        if self.process is not None:
            self.process.cancel()  # the whole process tree; _follow reports it

    # ---- results -------------------------------------------------------------------------------------------
    def _current_result(self):
        """(segmentation node, CT node) of the result as it is now, edits included."""
        node = self.app.segmentation_editor.active_segmentation_node
        if node is None or node.GetScene() is None or self.volume_node is None or not self.state.liver_has_result:
            raise RuntimeError("There is no result yet: segment a CT first.")
        return node, self.volume_node

    def current_labelmap(self) -> np.ndarray:
        node, volume = self._current_result()
        return scene.labelmap_from_segmentation(node, volume)

    def _downloadable_labelmap(self) -> np.ndarray:
        """The current labelmap, refused when no Liver voxel is left (segment deleted or erased): a file with an
        empty result would look like a finished segmentation."""
        labelmap = self.current_labelmap()
        if not (labelmap >= 1).any():
            raise RuntimeError("The segmentation has no 'Liver' voxels now (the segment was deleted or erased); "
                               "nothing was downloaded. Undo the edit or segment the CT again.")
        return labelmap

    def _show_statistics(self, labelmap: np.ndarray) -> dict:
        """Statistics of ``labelmap`` on the loaded CT, shown in the page's table and returned."""
        stats = scene.statistics(labelmap, self.volume_node)
        self.state.liver_stats = [{"name": title, "value": f"{float(stats[key]):.1f}" if "count" not in key
                                   else str(int(stats[key]))} for key, title in scene.STATISTICS_COLUMNS]
        return stats

    def update_statistics(self) -> dict:
        """Statistics of the result as edited now (the table on the page and the CSV)."""
        return self._show_statistics(self.current_labelmap())

    def result_file(self, kind: str) -> bytes:
        """The current result as a file's bytes: ``seg.nrrd`` (Slicer segmentation with names, colours and
        terminology), ``nii.gz`` (labelmap 0/1/2), ``csv`` (statistics through Slicer's table storage)."""
        volume = self._current_result()[1]  # "segment first" before anything is written
        out_dir = self.session_dir / f"download-{time.monotonic_ns()}"
        out_dir.mkdir(parents=True)
        try:
            path = out_dir / f"{self.state.liver_stem}.{kind}"
            if kind == "csv":
                table = self.app.scene.AddNewNodeByClass("vtkMRMLTableNode", "Liver statistics")
                try:
                    scene.fill_statistics_table(table, self._show_statistics(self._downloadable_labelmap()))
                    scene.write_table_csv(table, path)
                finally:
                    self.app.scene.RemoveNode(table)
            elif kind in ("seg.nrrd", "nii.gz"):
                reference = ImageData.from_array(slicer.util.arrayFromVolume(volume), scene.ijk_to_ras(volume))
                write_labelmap(path, self._downloadable_labelmap(), reference, overwrite=True)
            else:
                raise ValueError(f"Unknown download {kind!r}.")
            return path.read_bytes()
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)

    def shutdown(self) -> None:
        """Stop a running worker (its temporary files go with it)."""
        if self.process is not None:
            self.process.cancel()
