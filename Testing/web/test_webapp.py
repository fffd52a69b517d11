"""The browser app end to end: ``liverseg-web`` on 127.0.0.1 (a free port), driven in headless Debian chromium.

Skipped with the reason when trame-slicer, selenium, chromium/chromedriver (``make browser`` installs them as root)
or the public sample (downloaded once from PyPI) are missing. Every server started here stops by itself: sessions
after their idle timeout, the launcher at the end of the module.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trame_slicer", reason="the web extra is not installed (pip install 'liverseg[web]')")
pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip("chromium and chromedriver are not installed ('make browser' installs them as root with apt-get)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

pytestmark = pytest.mark.slow
IDLE_S = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing answers on port {port}")


@pytest.fixture(scope="module")
def sample():
    from liverseg.sample import fetch_sample

    try:
        return fetch_sample()
    except RuntimeError as exc:
        pytest.skip(f"the public sample could not be downloaded: {exc}")


def _start_launcher(tmp: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """``liverseg-web`` as installed (no PYTHONPATH), with its own TMPDIR to see that sessions remove their files."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "liverseg_web", "--port", str(port), *args], env=env,
                            start_new_session=True)
    _wait_port(port)
    return proc, f"http://127.0.0.1:{port}/"


def _stop_launcher(proc: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    """SIGINT as Ctrl+C, SIGTERM as a service manager: either way the launcher stops every session it started."""
    os.killpg(proc.pid, sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def _session_folders(tmp: Path) -> list[Path]:
    return list(Path(tmp).glob("liverseg-web-*"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The launcher with a short idle timeout and a 1 MB upload limit."""
    tmp = tmp_path_factory.mktemp("webtmp")
    proc, url = _start_launcher(tmp, "--idle-timeout", str(IDLE_S), "--max-upload-mb", "1", "--max-sessions", "4")
    try:
        yield {"url": url, "tmp": tmp, "proc": proc}
    finally:
        _stop_launcher(proc)


@pytest.fixture()
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.download_dir = tmp_path
    yield driver
    driver.quit()


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def _text(driver, css: str) -> str:
    elements = driver.find_elements(By.CSS_SELECTOR, css)
    return elements[0].text if elements else ""


def _download(driver, css: str, suffix: str) -> Path:
    """Click a download button and return the new file (the download folder is emptied first)."""
    for old in driver.download_dir.iterdir():
        old.unlink()
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, css), 20, css)[0].click()
    return _wait(lambda: next((p for p in driver.download_dir.iterdir() if p.name.endswith(suffix)), None), 60,
                 f"the {suffix} download")


def _read_labelmap(path: Path) -> np.ndarray:
    from liverseg.io import read_labelmap

    return read_labelmap(path).array


def _button_with_icon(driver, icon: str, in_drawer: bool):
    """A visible button showing ``icon``: in the wide drawer (the segment editor panel) or in the narrow tool bar."""
    def find():
        buttons = driver.find_elements(By.XPATH, f"//button[.//i[contains(@class, '{icon}')]]")
        return [b for b in buttons if b.is_displayed() and (b.rect["x"] < 340) == in_drawer]

    return _wait(find, 20, f"the {icon} button")[0]


def test_sample_segment_paint_undo_download(server, browser, sample):
    """Load the sample, Segment, compare with the engine voxel for voxel, paint a brush stroke and undo it, download
    .seg.nrrd / NIfTI / CSV and reload the .seg.nrrd with Slicer's own reader."""
    import slicer

    from liverseg import Segmenter
    from liverseg.io import read_image
    from liverseg.pipeline import describe_region

    browser.get(server["url"])
    assert _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".liver-sample"), 60, "the page")
    assert browser.current_url != server["url"]  # the launcher sent this browser to its own session
    browser.find_element(By.CSS_SELECTOR, ".liver-sample").click()
    _wait(lambda: _text(browser, ".liver-status").startswith("Loaded"), 60, "the sample to load")
    browser.find_element(By.CSS_SELECTOR, ".liver-segment").click()
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".liver-progress") or
          _text(browser, ".liver-status").startswith("Done"), 60, "progress")
    status = _wait(lambda: (lambda s: s if s.startswith(("Done", "Failed")) else "")(_text(browser, ".liver-status")),
                   180, "the segmentation")
    assert status.startswith("Done"), (status, _text(browser, ".liver-error"))
    assert "Liver volume" in _text(browser, ".liver-statistics")

    image = read_image(sample["image"])
    engine = Segmenter().segment(image.array, image.ijk_to_ras)
    expected = engine.labelmap
    # The regions a density rule took from the network's tumor: listed in the engine's words; a click centres the
    # views on one (the session says so in its status line).
    items = browser.find_elements(By.CSS_SELECTOR, ".liver-review-item")
    assert [i.text for i in items] == [describe_region(r) for r in engine.reclassified] and items
    items[-1].click()
    _wait(lambda: _text(browser, ".liver-status").startswith(f"Views centred on region {len(items)}:"), 30,
          "the views to centre on the last region")
    web = _read_labelmap(_download(browser, ".liver-download-nii-gz", ".nii.gz"))
    assert web.shape == expected.shape and (expected == 2).any()
    assert np.array_equal(web, expected), f"{int((web != expected).sum())} voxels differ from the engine"

    # A brush stroke in the axial view, away from the liver, changes the active segment; Undo restores it.
    browser.find_element(By.CSS_SELECTOR, ".liver-tool-SegmentEditorUI").click()
    _button_with_icon(browser, "mdi-brush", in_drawer=True).click()
    view = browser.find_elements(By.CSS_SELECTOR, ".layout-grid-item")[0]
    width, height = view.rect["width"], view.rect["height"]
    (ActionChains(browser).move_to_element_with_offset(view, int(-0.3 * width), int(-0.35 * height)).click_and_hold()
     .move_by_offset(int(0.15 * width), 0).move_by_offset(0, int(0.05 * height)).release().perform())
    undo = _button_with_icon(browser, "mdi-undo", in_drawer=False)
    _wait(lambda: undo.is_enabled(), 30, "the stroke to reach the undo stack")
    browser.find_element(By.CSS_SELECTOR, ".liver-tool-LiverPanel").click()
    painted = _read_labelmap(_download(browser, ".liver-download-nii-gz", ".nii.gz"))
    assert (painted >= 1).sum() > (expected >= 1).sum(), "the brush stroke did not change the segmentation"
    browser.find_element(By.CSS_SELECTOR, ".liver-tool-SegmentEditorUI").click()
    _button_with_icon(browser, "mdi-undo", in_drawer=False).click()
    browser.find_element(By.CSS_SELECTOR, ".liver-tool-LiverPanel").click()
    _wait(lambda: np.array_equal(_read_labelmap(_download(browser, ".liver-download-nii-gz", ".nii.gz")), expected),
          30, "the undo to restore the engine's result")

    # .seg.nrrd: Slicer reads it back with the segment names and the same voxels.
    seg_path = _download(browser, ".liver-download-seg-nrrd", ".seg.nrrd")
    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    node = logic.LoadSegmentationFromFile(str(seg_path), False, "reloaded")
    segmentation = node.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == ["Liver", "Liver tumor"]
    from vtk.util.numpy_support import vtk_to_numpy

    for name, mask in (("Liver", expected >= 1), ("Liver tumor", expected == 2)):
        segment_id = segmentation.GetSegmentIdBySegmentName(name)
        layer = node.GetBinaryLabelmapInternalRepresentation(segment_id)
        voxels = vtk_to_numpy(layer.GetPointData().GetScalars())
        assert int((voxels == segmentation.GetSegment(segment_id).GetLabelValue()).sum()) == int(mask.sum()), name

    csv_text = _download(browser, ".liver-download-csv", ".csv").read_text()
    assert "Liver volume (mL)" in csv_text and "Tumor count" in csv_text


def test_uploads_sessions_and_idle_cleanup(server, browser, tmp_path):
    """A zip of a DICOM series uploads and loads; an upload over the limit is refused on the page; each visit gets
    its own session; sessions end after the idle timeout and leave no temporary folder."""
    import zipfile

    from helpers import write_dicom_series

    series = write_dicom_series(tmp_path / "series", np.random.default_rng(0).integers(-1000, 400, (12, 40, 48)))
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(series.iterdir()):
            z.write(f, f"CT/{f.name}")
    browser.get(server["url"])
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".liver-upload input[type=file]"), 60, "the page")
    browser.find_element(By.CSS_SELECTOR, ".liver-upload input[type=file]").send_keys(str(archive))
    status = _wait(lambda: (lambda s: s if s.startswith("Loaded") else "")(_text(browser, ".liver-status")), 60,
                   "the zipped DICOM series to load")
    assert "(48 x 40 x 12)" in status  # i x j x k
    first_session = browser.current_url

    big = tmp_path / "big.nii.gz"
    big.write_bytes(os.urandom(2_000_000))
    browser.get(server["url"])  # a new visit: a new, empty session
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".liver-upload input[type=file]"), 60, "the page")
    assert browser.current_url != first_session  # every visitor gets its own session
    browser.find_element(By.CSS_SELECTOR, ".liver-upload input[type=file]").send_keys(str(big))
    error = _wait(lambda: _text(browser, ".liver-error"), 30, "the refusal")
    assert "larger than this server accepts (1 MB)" in error
    assert not browser.find_element(By.CSS_SELECTOR, ".liver-segment").is_enabled()  # nothing was loaded
    browser.get("about:blank")  # the tab leaves: its session ends after the idle timeout

    _wait(lambda: not _session_folders(server["tmp"]), IDLE_S + 60, "the sessions to end and remove their folders")


def test_session_limit_and_stopping_the_server(tmp_path):
    """At most --max-sessions sessions, then a clear refusal; SIGTERM on the server (a service manager stopping it;
    the module's other launcher is stopped with Ctrl+C's SIGINT) ends every session, and their temporary folders are
    gone. (Idle timeout long here, so that no session ends by itself during the test.)"""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    proc, url = _start_launcher(tmp_path, "--idle-timeout", "600", "--max-sessions", "2")
    try:
        opener = urllib.request.build_opener(NoRedirect)
        codes, locations = [], []
        for _ in range(3):
            with pytest.raises(urllib.error.HTTPError) as err:
                opener.open(url, timeout=180)
            codes.append(err.value.code)
            if err.value.code == 302:
                locations.append(err.value.headers["Location"])
            else:
                refusal = err.value.read().decode()
        assert codes == [302, 302, 503] and len(set(locations)) == 2
        assert "All 2 sessions of this server are in use" in refusal
        assert len(_session_folders(tmp_path)) == 2
    finally:
        _stop_launcher(proc, signal.SIGTERM)
    assert not _session_folders(tmp_path)
    for location in locations:  # the session servers are gone too
        port = int(location.rstrip("/").rsplit(":", 1)[1])
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
