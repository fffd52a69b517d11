"""Training/scripts/release.py: what is learned after a release (a limitation, figures under a changed inference)
reaches the shipped cards without retraining."""
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


def _weights_equal(a, b) -> bool:
    old, new = a.network.state_dict(), b.network.state_dict()
    return old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)


def test_refresh_rewrites_only_the_limitations(release, tiny_model_path, tmp_path, capsys):
    from liverseg.modelfile import load_model, read_card

    path = shutil.copy(tiny_model_path, tmp_path / "model.safetensors")
    before = load_model(path)
    release.refresh([str(path)], ["only this model"])
    after = load_model(path)
    assert after.card["limitations"] == release.LIMITATIONS + ["only this model"]
    assert any("heart" in line for line in after.card["limitations"])
    assert {k: v for k, v in read_card(path).items() if k != "limitations"} == \
        {k: v for k, v in before.card.items() if k != "limitations"}
    assert _weights_equal(before, after)
    assert "weights identical" in capsys.readouterr().out
    release.refresh([str(path)], None)  # without --limitation a card keeps its own
    assert read_card(path)["limitations"] == release.LIMITATIONS + ["only this model"]


def _case(dice: float) -> dict:
    return {"liver": {"dice": dice, "hd95_mm": 9.0, "assd_mm": 2.0, "rvd": 0.01}}


def test_refresh_with_loco_replaces_those_figures_and_keeps_the_rest(release, tiny_model_path, tmp_path):
    from liverseg.modelfile import load_model, read_card, save_model

    path = tmp_path / "model.safetensors"
    before = load_model(tiny_model_path)
    lits = {"liver_dice": 0.917, "tumor_dice": 0.411, "liver_dice_floor": 0.89, "tumor_dice_floor": 0.39}
    card = dict(before.card, limitations=release.LIMITATIONS + ["own"], metrics={
        **release.loco_metrics({"a": _case(0.80), "b": _case(0.70)}, {"a": _case(0.75)}),
        "public_sample_lits117": lits, "notes": "kept"})
    save_model(path, before.network, card)
    release.refresh([str(path)], None, {"a": _case(0.90), "b": _case(0.85)}, {"a": _case(0.88)})
    metrics = read_card(path)["metrics"]
    assert metrics["leave_one_case_out"]["a"]["liver_dice"] == 0.90
    assert metrics["leave_one_case_out"]["b"]["liver_dice"] == 0.85
    assert metrics["leave_one_case_out_liver_crop"] == {"a": {"liver_dice": 0.88}}
    assert metrics["summary"]["LOCO liver Dice b"] == 0.85 and metrics["summary"]["LiTS 117 tumor Dice"] == 0.411
    assert metrics["public_sample_lits117"] == lits and metrics["notes"] == "kept"
    assert "leave_one_case_out_measured" in metrics
    assert read_card(path)["limitations"] == release.LIMITATIONS + ["own"]
    assert _weights_equal(before, load_model(path))
    with pytest.raises(SystemExit, match="one model"):
        release.refresh([str(path), str(path)], None, {"a": _case(0.9)})


def test_refresh_with_sample_replaces_the_public_sample_figures_and_their_floors(release, tiny_model_path, tmp_path):
    """A postprocessing change moves the public-sample figures: ``--refresh --sample`` rewrites them, and the floors
    the tests enforce follow (measured - 0.02, rounded down); the leave-one-case-out figures stay."""
    from liverseg.modelfile import load_model, read_card, save_model

    path = tmp_path / "model.safetensors"
    before = load_model(tiny_model_path)
    loco = release.loco_metrics({"a": _case(0.80)}, {})
    card = dict(before.card, limitations=release.LIMITATIONS, metrics={
        **loco, "public_sample_lits117": {"liver_dice": 0.917, "tumor_dice": 0.411, "liver_dice_floor": 0.89,
                                          "tumor_dice_floor": 0.39}})
    save_model(path, before.network, card)
    tumor = {"dice": 0.6401, "hd95_mm": 20.0, "detection_recall": 0.34, "detection_recall_iou50": 0.17,
             "detection_precision": 0.9}
    release.refresh([str(path)], None, sample={"liver": {"dice": 0.9173, "hd95_mm": 10.0, "assd_mm": 2.5},
                                               "tumor": tumor})
    metrics = read_card(path)["metrics"]
    lits = metrics["public_sample_lits117"]
    assert (lits["tumor_dice"], lits["tumor_dice_floor"], lits["liver_dice_floor"]) == (0.6401, 0.62, 0.89)
    assert metrics["summary"]["LiTS 117 tumor Dice"] == 0.64 and metrics["summary"]["LOCO liver Dice a"] == 0.8
    assert "public_sample_measured" in metrics and "leave_one_case_out_measured" not in metrics
    assert metrics["leave_one_case_out"] == loco["leave_one_case_out"]
    assert _weights_equal(before, load_model(path))
    with pytest.raises(SystemExit, match="one model"):
        release.refresh([str(path), str(path)], None, sample={"liver": {}, "tumor": {}})


def test_the_shipped_cards_carry_the_current_limitations(release):
    """The bundled cards were refreshed with this script's list (each may add its own after it)."""
    from liverseg.modelfile import read_card

    for path in sorted((REPO / "LiverSegmentation" / "liverseg" / "weights").glob("*.safetensors")):
        limitations = read_card(path)["limitations"]
        assert limitations[:len(release.LIMITATIONS)] == release.LIMITATIONS, path.name


def test_export_states_what_a_continued_run_started_from(tiny_model_path, tmp_path):
    """A run started from another model (``init_from``: a continued stage, a fine-tuning) carries that model's budget,
    so the card's total samples count everything the weights have seen."""
    import json

    from liverseg.modelfile import load_model, save_model
    from liverseg_train.export import training_budget

    base = load_model(tiny_model_path)
    base_path = save_model(tmp_path / "base.safetensors", base.network,
                           dict(base.card, training={"samples_seen": 38400, "train_seconds": 1740.0, "epochs_run": 100}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"name": "x", "samples_per_epoch": 384, "init_from": str(base_path)}))
    (run / "log.csv").write_text("epoch,loss,seconds\n0,1.0,30.0\n1,0.9,31.0\n")
    budget = training_budget(run)
    assert budget["samples_seen"] == 768 and budget["samples_seen_total"] == 38400 + 768
    assert budget["initialised_from"]["samples_seen"] == 38400 and budget["initialised_from"]["model"] == "tiny-test"
    (run / "config.json").write_text(json.dumps({"name": "x", "samples_per_epoch": 384}))
    assert "initialised_from" not in training_budget(run)
