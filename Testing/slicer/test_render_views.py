"""The extension's picture is drawn by Slicer's own view code (displayable managers) offscreen: check that the
script's views really show the segments (run in a child process: an offscreen OpenGL failure may crash)."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import REPO

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {scripts!r})
    from render_views import render_views
    from harness import add_volume, make_headless_slicer
    import slicer, vtk
    from LiverSegmentationLib.scene import fill_segmentation
    from liverseg.benchmark import phantom_ijk_to_ras, synthetic_case

    make_headless_slicer()
    vol, lab = synthetic_case((24, 96, 96), (5.0, 3.0, 3.0), seed=1, tumors=2)
    volume = add_volume(slicer.mrmlScene, vol, phantom_ijk_to_ras((5.0, 3.0, 3.0)), "CT")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.CreateDefaultDisplayNodes()
    if {with_segments}:
        fill_segmentation(segmentation, volume, lab.astype(np.uint8))
    render_views(volume, segmentation, lab, {out!r}, size=96)
""")


def _render(tmp_path, with_segments: bool) -> np.ndarray:
    import SimpleITK as sitk

    out = tmp_path / f"views_{with_segments}.png"
    code = SCRIPT.format(scripts=str(REPO / "Resources" / "scripts"), with_segments=with_segments, out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "EGL" in proc.stderr + proc.stdout and not out.exists():
        pytest.skip("no offscreen OpenGL (EGL) on this machine")
    assert proc.returncode == 0 and out.exists(), proc.stderr[-2000:]
    return sitk.GetArrayFromImage(sitk.ReadImage(str(out)))  # (rows, columns, RGB)


def test_views_show_the_segments_in_slice_and_3d_views(tmp_path):
    shown, empty = _render(tmp_path, True), _render(tmp_path, False)
    assert shown.shape[:2] == (96, 3 * 96)
    for view in range(2):  # axial, coronal: the fill changes the pixels where the segments are
        a, b = shown[:, view * 96:(view + 1) * 96], empty[:, view * 96:(view + 1) * 96]
        assert (np.abs(a.astype(int) - b).sum(axis=-1) > 30).mean() > 0.05, view
    three_d = shown[:, 192:]
    background = three_d[0, 0]
    assert (np.abs(three_d.astype(int) - background).sum(axis=-1) > 30).mean() > 0.05  # surfaces drawn
    assert (np.abs(empty[:, 192:].astype(int) - background).sum(axis=-1) > 30).mean() < 0.01  # nothing without segments
