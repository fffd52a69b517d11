"""Training/scripts/release.py: a limitation learned after a release reaches the shipped cards without retraining."""
import importlib.util
import shutil

import pytest
import torch

from helpers import REPO


@pytest.fixture(scope="module")
def release():
    spec = importlib.util.spec_from_file_location("release", REPO / "Training" / "scripts" / "release.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refresh_limitations_rewrites_only_the_limitations(release, tiny_model_path, tmp_path, capsys):
    from liverseg.modelfile import load_model, read_card

    path = shutil.copy(tiny_model_path, tmp_path / "model.safetensors")
    before = load_model(path)
    release.refresh_limitations([str(path)], ["only this model"])
    after = load_model(path)
    assert after.card["limitations"] == release.LIMITATIONS + ["only this model"]
    assert any("heart" in line for line in after.card["limitations"])
    assert {k: v for k, v in read_card(path).items() if k != "limitations"} == \
        {k: v for k, v in before.card.items() if k != "limitations"}
    old, new = before.network.state_dict(), after.network.state_dict()
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)
    assert "weights identical" in capsys.readouterr().out


def test_the_shipped_cards_carry_the_current_limitations(release):
    """The bundled cards were refreshed with this script's list (each may add its own after it)."""
    from liverseg.modelfile import read_card

    for path in sorted((REPO / "LiverSegmentation" / "liverseg" / "weights").glob("*.safetensors")):
        limitations = read_card(path)["limitations"]
        assert limitations[:len(release.LIMITATIONS)] == release.LIMITATIONS, path.name
