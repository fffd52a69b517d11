"""The web session's loading rules without a browser: a session app is built in this process (its trame server is
never started) and its panel logic is called as the page would call it."""
from __future__ import annotations

import asyncio
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trame_slicer", reason="the web extra is not installed (pip install 'liverseg[web]')")


@pytest.fixture()
def session(tmp_path):
    """A session app; the slicer globals it installs are put back afterwards (the module tests own them)."""
    import slicer
    from trame.app import get_server

    from liverseg_web.app import LiverWebApp

    saved = {name: getattr(slicer, name) for name in ("mrmlScene", "modules") if hasattr(slicer, name)}
    server = get_server(name=f"test-{tmp_path.name}", client_type="vue3")
    app = LiverWebApp(server, session_dir=tmp_path, max_upload_bytes=1_000_000)
    yield app
    for name, value in saved.items():
        setattr(slicer, name, value)


def _zip_series(tmp_path: Path, array: np.ndarray) -> Path:
    from helpers import write_dicom_series

    folder = write_dicom_series(tmp_path / "series", array, spacing=(0.8, 0.8, 2.5))
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f"CT/{f.name}")
    return archive


def test_a_zipped_dicom_series_loads_as_one_ct(session, tmp_path):
    import slicer

    from liverseg_web.liver_logic import unpack_upload

    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 400, size=(12, 40, 48)).astype(np.int16)
    session.liver.load_files(unpack_upload([_zip_series(tmp_path, array)], tmp_path / "upload"))
    loaded = slicer.util.arrayFromVolume(session.liver.volume_node)
    assert np.array_equal(np.sort(loaded.ravel()), np.sort(array.ravel()))  # same voxels (slice order per reader)
    assert loaded.shape == array.shape and session.server.state.liver_has_volume
    assert np.allclose(session.liver.volume_node.GetSpacing(), (0.8, 0.8, 2.5))


def test_a_zip_that_writes_outside_its_folder_is_refused(tmp_path):
    from liverseg_web.liver_logic import unpack_upload

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../escape.nii.gz", b"x")
    with pytest.raises(ValueError, match="outside its own folder"):
        unpack_upload([archive], tmp_path / "upload")
    assert not (tmp_path / "escape.nii.gz").exists()


def test_the_server_refuses_an_upload_over_the_limit_even_if_the_page_did_not(session):
    """The page checks the size first; a client that skips that check is stopped by the server, and the chunks
    are dropped instead of being written."""
    liver = session.liver
    asyncio.run(liver.load_chunk([{"name": "big.nii.gz", "size": 800_000, "content": b"\0" * 800_000}]))
    asyncio.run(liver.load_chunk([{"name": "big2.nii.gz", "size": 800_000, "content": b"\0" * 800_000}]))
    asyncio.run(liver.load_chunk([]))
    assert "larger than this server accepts (1 MB)" in session.server.state.liver_error
    assert not list(Path(liver.session_dir).glob("upload-*")) and not session.server.state.liver_has_volume


def test_segment_and_downloads_need_a_ct_and_a_result(session):
    session.liver.segment()
    assert session.server.state.liver_error == "Load a CT first."
    with pytest.raises(RuntimeError, match="segment a CT first"):
        session.liver.result_file("nii.gz")


def test_cancel_stops_the_worker_and_adds_nothing(session, tmp_path):
    """Cancel during a run: the worker's process group is gone, its temporary folder removed, no segmentation
    with segments is added and the page says so."""
    from liverseg.benchmark import phantom_ijk_to_ras, synthetic_case
    from liverseg.io import ImageData, write_image

    spacing = (2.5, 0.8, 0.8)
    volume, _ = synthetic_case((60, 256, 256), spacing)
    path = write_image(tmp_path / "ct.nii.gz", ImageData.from_array(volume, phantom_ijk_to_ras(spacing)))
    liver = session.liver
    liver.load_files([path])

    async def run_and_cancel():
        liver.segment()
        process = liver.process
        await asyncio.sleep(0.5)  # the worker is importing torch: well before its result
        liver.cancel()
        await liver.task
        return process

    process = asyncio.run(run_and_cancel())
    state = session.server.state
    assert state.liver_status == "Cancelled; nothing was added." and not state.liver_busy
    assert process._proc.poll() is not None and not process.job_dir.exists()
    nodes = session.slicer_app.scene.GetNodesByClass("vtkMRMLSegmentationNode")
    assert all(nodes.GetItemAsObject(i).GetSegmentation().GetNumberOfSegments() == 0
               for i in range(nodes.GetNumberOfItems()))


def test_an_erased_result_is_not_downloaded_as_if_it_were_one(session, tmp_path):
    """After the user erased or deleted the Liver segment, downloads refuse instead of writing an empty result."""
    from liverseg.benchmark import phantom_ijk_to_ras, synthetic_case
    from liverseg.io import ImageData, write_image
    from LiverSegmentationLib import scene

    spacing = (2.5, 0.8, 0.8)
    volume, label = synthetic_case((20, 96, 96), spacing, tumors=1)
    liver = session.liver
    liver.load_files([write_image(tmp_path / "ct.nii.gz", ImageData.from_array(volume, phantom_ijk_to_ras(spacing)))])
    node = scene.add_result_segmentation(session.slicer_app.scene, liver.volume_node, label)  # as _finish adds it
    session.slicer_app.segmentation_editor.set_active_segmentation(node, liver.volume_node)
    session.server.state.liver_has_result = True
    assert len(liver.result_file("nii.gz")) > 0  # with the result, the download works
    scene.fill_segmentation(node, liver.volume_node, np.zeros_like(label))  # everything erased
    for kind in ("nii.gz", "seg.nrrd", "csv"):
        with pytest.raises(RuntimeError, match="no 'Liver' voxels"):
            liver.result_file(kind)


def test_stopping_the_launcher_stops_slow_sessions_together(tmp_path):
    """Ctrl+C on the launcher: sessions that ignore SIGTERM are killed after one shared grace period, not one
    grace period each (three stubborn sessions used to take three times as long); a session that honours SIGTERM
    ends at once. No process is left behind."""
    import subprocess
    import sys
    import time

    from liverseg_web.launcher import Launcher

    stubborn = "import signal, time; signal.signal(signal.SIGTERM, lambda *a: None); print('ready', flush=True); time.sleep(120)"
    polite = "import time; print('ready', flush=True); time.sleep(120)"
    launcher = Launcher("127.0.0.1", 0, [], max_sessions=4, stop_grace_s=2.0)
    for port, code in enumerate([stubborn, stubborn, stubborn, polite], start=1):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
        assert proc.stdout.readline().strip() == b"ready"  # its SIGTERM handler is in place
        launcher.sessions[port] = proc
    t0 = time.monotonic()
    launcher.stop_all()
    elapsed = time.monotonic() - t0
    assert 1.9 <= elapsed < 4.0, elapsed  # one grace period, not three
    assert all(proc.poll() is not None for proc in launcher.sessions.values())
    assert launcher.sessions[4].returncode == -15 and launcher.sessions[1].returncode == -9  # SIGTERM / SIGKILL


def test_regions_to_review_are_points_in_the_views_and_a_list_that_centres_them(session, tmp_path):
    """A result with regions that a density rule took from the network's tumor: the scene gets the Slicer module's
    locked "<CT> regions to review" point list, the page lists each region in the engine's words, and clicking one
    centres every slice view on it. A new result replaces the points; a new CT clears them. The worker is replaced
    by a stand-in that has already succeeded (state and result() are all ``_finish`` reads)."""
    import types

    from liverseg.benchmark import phantom_ijk_to_ras, synthetic_case
    from liverseg.io import ImageData, write_image
    from liverseg.pipeline import describe_region
    from LiverSegmentationLib.process import JobResult, JobState

    spacing = (2.5, 0.8, 0.8)
    volume, label = synthetic_case((20, 96, 96), spacing, tumors=1)
    path = write_image(tmp_path / "ct.nii.gz", ImageData.from_array(volume, phantom_ijk_to_ras(spacing)))
    liver, state, mrml = session.liver, session.server.state, session.slicer_app.scene
    liver.load_files([path])
    regions = [{"rule": "parenchyma", "volume_ml": 26.7, "mean_hu": 116.0, "centre_ras": [-20.0, 10.0, 5.0]},
               {"rule": "outside", "volume_ml": 2.5, "mean_hu": 8.0, "centre_ras": [-30.0, -5.0, -12.5]}]

    def finish(found):
        done = types.SimpleNamespace(state=JobState.SUCCEEDED, result=lambda: JobResult(
            label, {"warnings": ["w"], "reclassified": found, "model": "m", "device": "cpu"}))
        liver._finish(done, liver.volume_node.GetID(), True, 1.0)

    def review_nodes():
        nodes = mrml.GetNodesByClass("vtkMRMLMarkupsFiducialNode")
        return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]

    finish(regions)
    [points] = review_nodes()
    assert points.GetName().endswith("regions to review") and points.GetNumberOfControlPoints() == 2
    assert [r["text"] for r in state.liver_review] == [describe_region(r) for r in regions]
    slice_nodes = mrml.GetNodesByClass("vtkMRMLSliceNode")
    assert slice_nodes.GetNumberOfItems() >= 1
    for index, region in ((1, regions[1]), (0, regions[0])):
        liver.show_review(index)
        assert state.liver_status == f"Views centred on region {index + 1}: {describe_region(region)}"
        for i in range(slice_nodes.GetNumberOfItems()):
            m = slice_nodes.GetItemAsObject(i).GetSliceToRAS()
            assert [m.GetElement(r, 3) for r in range(3)] == pytest.approx(region["centre_ras"], abs=1e-3)

    finish(regions[1:])  # a new result: its own points only
    [points] = review_nodes()
    assert points.GetNumberOfControlPoints() == 1 and len(state.liver_review) == 1
    liver.show_review(1)  # an entry of the earlier list
    assert "no longer in the scene" in state.liver_error

    finish([])
    assert review_nodes() == [] and state.liver_review == []
    finish(regions)
    liver.load_files([path])
    assert review_nodes() == [] and state.liver_review == [] and liver.review_node is None
