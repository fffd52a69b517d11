"""Shared fixtures. Nothing here needs ../shared or a GPU; tests that need them skip with a reason."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helpers.py

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A small random-weight model file: exercises every code path without depending on accuracy."""
    from liverseg.modelfile import make_card, save_model
    from liverseg.networks import build_network
    from liverseg.preprocessing import PreprocessingSpec

    torch.manual_seed(0)
    spec = PreprocessingSpec(spacing_mm=4.0, context_slices=1, size_multiple=4)
    params = {"in_channels": 3, "out_channels": 2, "base_channels": 4, "depth": 2, "dropout": 0.0}
    net = build_network("unet", params)
    card = make_card(name="tiny-test", version="0", architecture="unet", network=params, preprocessing=spec)
    return save_model(tmp_path_factory.mktemp("models") / "tiny.safetensors", net, card)


@pytest.fixture(scope="session")
def constant_model(tmp_path_factory):
    """``constant_model(logit)``: a small model file whose output is the same logit everywhere: -20 finds nothing
    (for empty-result handling), +20 labels every voxel (for tests about input handling that need a result)."""
    from liverseg.modelfile import make_card, save_model
    from liverseg.networks import build_network
    from liverseg.preprocessing import PreprocessingSpec

    def make(logit: float) -> Path:
        params = {"in_channels": 3, "out_channels": 2, "base_channels": 4, "depth": 2, "dropout": 0.0}
        net = build_network("unet", params)
        last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(logit)
        card = make_card(name=f"constant{logit:+g}", version="0", architecture="unet", network=params,
                         preprocessing=PreprocessingSpec(spacing_mm=4.0, context_slices=1, size_multiple=4))
        return save_model(tmp_path_factory.mktemp("models") / f"constant{logit:+g}.safetensors", net, card)

    return make


@pytest.fixture(scope="session")
def phantom():
    """(volume [k, j, i] int16 HU, labelmap, ijk_to_ras) of a small synthetic abdomen with two tumors."""
    from liverseg.benchmark import phantom_ijk_to_ras, synthetic_case

    spacing = (5.0, 3.0, 3.0)
    vol, lab = synthetic_case((24, 96, 96), spacing, seed=1, tumors=2)
    return vol, lab, phantom_ijk_to_ras(spacing)


@pytest.fixture()
def postprocess_configs(monkeypatch) -> list:
    """The ``PostprocessConfig`` of every postprocessing call the pipeline makes during a test, in order: for tests
    that an option given on a command line reaches the engine (the real postprocessing still runs)."""
    import liverseg.pipeline as pipeline

    seen, real = [], pipeline.postprocess

    def recording(liver, tumor, spacing, config=None, **kwargs):
        seen.append(config)
        return real(liver, tumor, spacing, config, **kwargs)
    monkeypatch.setattr(pipeline, "postprocess", recording)
    return seen


@pytest.fixture(scope="session")
def public_sample(tmp_path_factory):
    """LiTS 117 from PyPI (pip download); skipped where PyPI cannot be reached."""
    from liverseg.sample import fetch_sample

    try:
        return fetch_sample()
    except RuntimeError as exc:
        pytest.skip(f"public sample unavailable: {exc}")


# ---- process exit -----------------------------------------------------------------------------------------------
# One test process holds several Slicer scenes and application logics (the module harness, the browser app's session
# tests, the .seg.nrrd reload) next to vtk's own objects; destroying them in the interpreter's arbitrary shutdown order
# occasionally segfaults AFTER every result is final (seen once in 2 full runs with slicer-core 5.11: "240 passed",
# then a segfault that made `make test` fail). So the run ends with pytest's own exit status as soon as pytest is done,
# without the interpreter's teardown. Test failures, errors and crashes during tests are unaffected.
_EXIT_STATUS = {"code": None}


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    import os

    if _EXIT_STATUS["code"] is not None and not hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS["code"])
