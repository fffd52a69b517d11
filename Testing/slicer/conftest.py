import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MODULE_DIR = HERE.parents[1] / "LiverSegmentation"
for p in (str(HERE), str(MODULE_DIR)):
    if p not in sys.path:
        sys.path.insert(0, p)

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")


@pytest.fixture(scope="session")
def headless():
    from harness import make_headless_slicer

    make_headless_slicer()
    import LiverSegmentation

    return LiverSegmentation


@pytest.fixture()
def scene(headless):
    import slicer

    slicer.mrmlScene.Clear(0)
    yield slicer.mrmlScene
    slicer.mrmlScene.Clear(0)
