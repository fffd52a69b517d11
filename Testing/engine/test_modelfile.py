import json
import pickle

import pytest
import torch

from liverseg.modelfile import ModelFileError, load_model, make_card, read_card, save_model
from liverseg.networks import build_network, count_parameters
from liverseg.preprocessing import PreprocessingSpec
from liverseg.registry import resolve_model_path

PARAMS = {"in_channels": 3, "out_channels": 2, "base_channels": 4, "depth": 2, "dropout": 0.0}


@pytest.mark.parametrize("arch", ["unet", "resunet"])
def test_networks_keep_the_input_size(arch):
    net = build_network(arch, PARAMS)
    assert net(torch.zeros(2, 3, 32, 48)).shape == (2, 2, 32, 48)


def test_resunet_differs_from_unet():
    assert count_parameters(build_network("resunet", PARAMS)) != count_parameters(build_network("unet", PARAMS))


def test_round_trip_keeps_weights_and_card(tmp_path):
    net = build_network("resunet", PARAMS)
    card = make_card(name="m", version="1", architecture="resunet", network=PARAMS, preprocessing=PreprocessingSpec(),
                     metrics={"liver_dice": 0.9})
    path = save_model(tmp_path / "m.safetensors", net, card)
    loaded = load_model(path)
    assert loaded.card["metrics"] == {"liver_dice": 0.9} and loaded.card["labels"][0]["name"] == "Liver"
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.network(x), net.eval()(x))
    assert read_card(path)["architecture"] == "resunet"


def test_corrupt_file_gives_a_clear_error(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ModelFileError, match="not a valid safetensors"):
        load_model(p)


def test_unknown_architecture_is_refused(tmp_path):
    net = build_network("unet", PARAMS)
    card = make_card(name="m", version="1", architecture="unet", network=PARAMS, preprocessing=PreprocessingSpec())
    path = save_model(tmp_path / "m.safetensors", net, card)
    from safetensors.torch import load_file, save_file

    card["architecture"] = "transformer9000"
    save_file(load_file(str(path)), str(path), metadata={"liverseg_model_card": json.dumps(card)})
    with pytest.raises(ModelFileError, match="Unknown architecture"):
        load_model(path)


def test_weights_that_do_not_fit_the_card_are_refused(tmp_path):
    net = build_network("unet", {**PARAMS, "base_channels": 8})
    card = make_card(name="m", version="1", architecture="unet", network=PARAMS, preprocessing=PreprocessingSpec())
    path = tmp_path / "m.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata={"liverseg_model_card": json.dumps(card)})
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(path)


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_MODEL_FILE",))


def test_pickled_malicious_file_is_refused_without_running_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"weight": _Exploit()}))
    card = make_card(name="evil", version="1", architecture="unet", network=PARAMS, preprocessing=PreprocessingSpec())
    (tmp_path / "evil.json").write_text(json.dumps(card))
    with pytest.raises(ModelFileError):
        load_model(path)
    assert not (tmp_path / "PWNED_BY_MODEL_FILE").exists()


def test_missing_card_and_unknown_names():
    with pytest.raises(ModelFileError, match="neither a bundled model"):
        resolve_model_path("no-such-model")


def test_cards_and_input_checks_work_without_torch(tmp_path):
    """The Slicer panel shows model cards and checks input before torch is installed."""
    import subprocess
    import sys

    net = build_network("unet", PARAMS)
    card = make_card(name="m", version="1", architecture="unet", network=PARAMS, preprocessing=PreprocessingSpec())
    path = save_model(tmp_path / "m.safetensors", net, card)
    code = ("import sys; sys.modules['torch'] = None\n"
            "from liverseg.modelfile import read_card\nimport liverseg.checks, liverseg.labels, liverseg.registry\n"
            f"print(read_card(r'{path}')['name'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "m", out.stderr
