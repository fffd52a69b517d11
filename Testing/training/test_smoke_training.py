"""A real (tiny) training run on synthetic CT: prepare -> train -> export -> the engine loads and segments."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from liverseg.benchmark import phantom_ijk_to_ras, synthetic_case

SPACING = (5.0, 4.0, 4.0)  # [k, j, i] mm
SHAPE = (20, 80, 80)


def _write_cases(root: Path, seeds) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        vol, lab = synthetic_case(SHAPE, SPACING, seed=seed, tumors=1)
        for name, arr in (("image", vol), ("label", lab)):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing(tuple(reversed(SPACING)))
            sitk.WriteImage(img, str(root / f"syn{seed}_{name}.nii.gz"))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from liverseg.preprocessing import PreprocessingSpec
    from liverseg_train.datasets import find_cases
    from liverseg_train.prepare import prepare

    root = tmp_path_factory.mktemp("synthetic")
    _write_cases(root / "raw", range(4))
    prepare(find_cases("generic", root / "raw"), root / "prepared", PreprocessingSpec(spacing_mm=4.0, size_multiple=8))
    return root


def _config(prepared: Path, out: Path, **kw) -> dict:
    cfg = {"data": str(prepared / "prepared"), "output": str(out), "name": "smoke", "architecture": "resunet",
           "base_channels": 8, "depth": 3, "dropout": 0.0, "epochs": 12, "samples_per_epoch": 64, "batch_size": 8,
           "crop": 64, "lr": 0.005, "warmup_epochs": 1, "val_cases": ["syn3"], "validate_every": 4, "patience": 0,
           "tumors": {"probability": 0.3}, "augment": {"elastic_probability": 0.0}}
    cfg.update(kw)
    return cfg


def test_training_lowers_the_loss_and_exports_a_model_the_engine_uses(prepared, tmp_path):
    from liverseg import Segmenter
    from liverseg.metrics import dice
    from liverseg_train.cli import main as train_main

    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(_config(prepared, tmp_path / "run")))
    assert train_main(["train", "--config", str(cfg_path)]) == 0
    rows = (tmp_path / "run" / "log.csv").read_text().strip().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert len(losses) == 12 and np.mean(losses[-3:]) < 0.7 * np.mean(losses[:2])
    # Resume: asking for more epochs continues from the checkpoint instead of starting over.
    cfg_path.write_text(json.dumps(_config(prepared, tmp_path / "run", epochs=13)))
    assert train_main(["train", "--config", str(cfg_path)]) == 0
    assert len((tmp_path / "run" / "log.csv").read_text().strip().splitlines()) == 14
    assert train_main(["export", "--run", str(tmp_path / "run"), "-o", str(tmp_path / "smoke.safetensors"),
                       "--version", "0.0.1"]) == 0
    segmenter = Segmenter(tmp_path / "smoke.safetensors", "cpu")
    training = segmenter.model.card["training"]
    assert training["finished"] is True and not segmenter.model_warnings
    assert training["cases"][0]["id"] == "syn0"
    assert training["epochs_run"] == 13 and training["samples_seen"] == 13 * 64 and training["train_seconds"] > 0
    assert training["hardware"]["device"] == "cpu" and training["hardware"]["processes"] == 1
    vol, lab = synthetic_case(SHAPE, SPACING, seed=11, tumors=1)  # unseen
    result = segmenter.segment(vol, phantom_ijk_to_ras(SPACING))
    liver_dice = dice(result.labelmap >= 1, lab >= 1)
    chance = 2 * (lab >= 1).mean() / (1 + (lab >= 1).mean())  # Dice of labelling everything liver
    assert liver_dice > 0.8 and liver_dice > 2 * chance, liver_dice


def _train_two_processes(cfg: dict, tmp_path) -> subprocess.CompletedProcess:
    """``torchrun`` with two CPU processes (gloo); a hang would show as the timeout."""
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "liverseg_train", "train", "--config", str(cfg_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_ddp_with_two_cpu_processes(prepared, tmp_path):
    _train_two_processes(_config(prepared, tmp_path / "ddp", epochs=2, samples_per_epoch=32, val_cases=[]), tmp_path)
    rows = (tmp_path / "ddp" / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + 2 epochs, written by rank 0 only
    assert (tmp_path / "ddp" / "smoke.safetensors").exists()


def test_ddp_stops_together_on_early_stopping(prepared, tmp_path):
    """Only rank 0 validates; with patience 1 it stops early, and rank 1 must stop too instead of waiting in the
    next epoch's all-reduce for ever (the process would hang until the timeout)."""
    proc = _train_two_processes(_config(prepared, tmp_path / "ddp_es", epochs=30, samples_per_epoch=16, lr=0.0,
                                        val_cases=["syn3"], validate_every=1, patience=1), tmp_path)
    rows = (tmp_path / "ddp_es" / "log.csv").read_text().strip().splitlines()
    assert len(rows) - 1 < 30 and "Early stopping" in proc.stderr  # lr 0: validation never improves after epoch 1


def test_time_budget_plans_the_schedule_and_workers_draw_different_samples(prepared, tmp_path):
    """A lease of fixed length: after the warm-up epoch the run plans how many epochs fit the budget, the cosine
    schedule ends exactly there (last learning rate at its floor) and the run stops by itself; samples come from
    two worker processes."""
    from liverseg_train.cli import main as train_main
    from liverseg_train.train import plan_epochs, TrainConfig

    budget = TrainConfig(time_budget_minutes=1.0, epochs=1000)
    assert plan_epochs(budget, elapsed_s=6.0, epoch_s=6.0, done=1) == 1 + int((58.8 - 6) // 6)
    assert plan_epochs(budget, elapsed_s=70.0, epoch_s=6.0, done=1) == 2  # over budget: one more epoch, then stop
    assert plan_epochs(TrainConfig(time_budget_minutes=60, epochs=5), 1.0, 1.0, 1) == 5  # epochs stays the ceiling

    cfg = _config(prepared, tmp_path / "budget", epochs=10_000, samples_per_epoch=32, val_cases=[],
                  time_budget_minutes=0.25, loader_workers=2)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    assert train_main(["train", "--config", str(cfg_path)]) == 0
    rows = [r.split(",") for r in (tmp_path / "budget" / "log.csv").read_text().strip().splitlines()[1:]]
    seconds = [float(r[5]) for r in rows]
    # The plan may overrun the budget by the epoch it cannot foresee (a loaded machine: one epoch of ~12 s).
    assert 2 <= len(rows) < 10_000 and sum(seconds) < 0.25 * 60 + 2 * max(seconds), (len(rows), seconds)
    ck = __import__("torch").load(tmp_path / "budget" / "checkpoint_last.pt", weights_only=True)
    assert ck["state"]["planned_epochs"] == len(rows)
    assert float(rows[-1][4]) == pytest.approx(0.02 * cfg["lr"], rel=1e-3)  # the schedule reached its end
    assert json.loads((tmp_path / "budget" / "hardware.json").read_text())["loader_workers"] == 2


def test_weight_average_is_the_run_model_and_survives_a_resume(prepared, tmp_path):
    """With ema_decay the run's model file holds the averaged weights (the checkpoint keeps both, and a resumed run
    goes on averaging), and the latest weights are saved beside it for comparison."""
    import torch

    from liverseg.modelfile import load_model
    from liverseg_train.cli import main as train_main

    cfg_path = tmp_path / "cfg.json"
    run = tmp_path / "ema"
    for epochs in (1, 2):
        cfg_path.write_text(json.dumps(_config(prepared, run, architecture="unet", base_channels=4, depth=2,
                                               epochs=epochs, samples_per_epoch=16, val_cases=[], ema_decay=0.9)))
        assert train_main(["train", "--config", str(cfg_path)]) == 0
    ck = torch.load(run / "checkpoint_last.pt", weights_only=True)
    assert ck["ema"]["updates"] == 2 * 2  # 2 epochs x 16 samples / batch 8
    averaged = load_model(run / "smoke.safetensors", "cpu").network.state_dict()
    latest = load_model(run / "smoke.latest-weights.safetensors", "cpu").network.state_dict()
    for key, value in ck["ema"]["network"].items():
        assert torch.equal(averaged[key], value) and torch.equal(latest[key], ck["model"][key])
    assert any(not torch.equal(averaged[k], latest[k]) for k in averaged)


def test_a_model_from_an_unfinished_run_is_flagged_until_the_run_ends(prepared, tmp_path, monkeypatch):
    """Training rewrites its model file during the run; a file taken mid-run (or left by a killed run) must say so:
    the engine warns with every result, the evaluation report carries the warning, export refuses it. Resuming to
    the end clears the flag."""
    from liverseg import Segmenter
    from liverseg.modelfile import read_card
    from liverseg_train import train as train_module
    from liverseg_train.evaluate import evaluate_cases
    from liverseg_train.datasets import find_cases
    from liverseg_train.export import export_model

    cfg = train_module.TrainConfig.from_dict(_config(prepared, tmp_path / "run", architecture="unet", base_channels=4,
                                                     depth=2, epochs=4, samples_per_epoch=16, validate_every=1))

    def killed_after_two_epochs(cfg, state, started, epoch, distributed, device):
        if epoch == 1:
            raise KeyboardInterrupt  # what a kill or Ctrl-C does to the loop
        return False

    monkeypatch.setattr(train_module, "_stop_decision", killed_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(cfg)
    model = tmp_path / "run" / "smoke.safetensors"
    assert read_card(model)["training"]["finished"] is False
    vol, _ = synthetic_case(SHAPE, SPACING, seed=11, tumors=1)
    result = Segmenter(model, "cpu").segment(vol, phantom_ijk_to_ras(SPACING), require_liver=False)
    assert any("had not finished" in w and "of up to 4 planned" in w for w in result.warnings), result.warnings
    summary = evaluate_cases(model, [c for c in find_cases("generic", prepared / "raw") if c.case_id == "syn3"],
                             tmp_path / "eval", device="cpu")
    assert summary["model_warnings"] and "had not finished" in (tmp_path / "eval" / "report.md").read_text()
    with pytest.raises(ValueError, match="--allow-unfinished"):
        export_model(tmp_path / "run", tmp_path / "out.safetensors")
    assert export_model(tmp_path / "run", tmp_path / "stopped.safetensors", allow_unfinished=True).is_file()

    monkeypatch.undo()
    train_module.train(cfg)  # resumed from the checkpoint to the planned end
    assert read_card(model)["training"]["finished"] is True
    result = Segmenter(model, "cpu").segment(vol, phantom_ijk_to_ras(SPACING), require_liver=False)
    assert not any("had not finished" in w for w in result.warnings)
    assert export_model(tmp_path / "run", tmp_path / "out.safetensors").is_file()


def test_sample_stream_workers_are_seeded_apart(prepared):
    import torch

    from liverseg.preprocessing import PreprocessingSpec
    from liverseg_train.prepare import load_prepared
    from liverseg_train.train import SliceSampler, TrainConfig, batch_stream

    manifest, arrays = load_prepared(prepared / "prepared")
    cfg = TrainConfig(crop=64, batch_size=4, loader_workers=2)
    sampler = SliceSampler(arrays, list(arrays), PreprocessingSpec.from_dict(manifest["preprocessing"]), cfg, seed=0)
    first = [next(batch_stream(sampler, cfg, rank=0, start_epoch=0, pin=False))[0] for _ in range(2)]
    stream = batch_stream(sampler, cfg, rank=0, start_epoch=0, pin=False)
    a, b = next(stream)[0], next(stream)[0]  # consecutive batches come from the two workers
    assert torch.equal(a, first[0]) and torch.equal(first[0], first[1])  # same seed, same worker 0 -> same batch
    assert not torch.equal(a, b)
    resumed = next(batch_stream(sampler, cfg, rank=0, start_epoch=5, pin=False))[0]
    assert not torch.equal(resumed, a)  # a resumed run does not replay the samples it already trained on


def test_ddp_follows_one_time_budget_plan(prepared, tmp_path):
    """Clocks differ between ranks: each planning on its own would stop at different epochs and leave one waiting in
    an all-reduce (a hang, seen as the timeout). Rank 0's plan is broadcast."""
    proc = _train_two_processes(_config(prepared, tmp_path / "ddp_tb", epochs=10_000, samples_per_epoch=16,
                                        val_cases=[], time_budget_minutes=0.2), tmp_path)
    rows = (tmp_path / "ddp_tb" / "log.csv").read_text().strip().splitlines()
    assert 2 <= len(rows) - 1 < 10_000 and "Time budget" in proc.stderr


def test_validation_leaves_the_training_network_as_it_was(prepared):
    """The engine's predictor works on a copy: validation must not move the live network or change its layout."""
    import torch

    from liverseg.networks import build_network
    from liverseg.preprocessing import PreprocessingSpec
    from liverseg_train.prepare import load_prepared
    from liverseg_train.train import TrainConfig, card_for, validate

    manifest, arrays = load_prepared(prepared / "prepared")
    cfg = TrainConfig.from_dict(_config(prepared, prepared / "unused"))
    spec = PreprocessingSpec.from_dict(manifest["preprocessing"])
    card = card_for(cfg, spec, manifest, ["syn0"])
    net = build_network(cfg.architecture, card["network"]).train()
    before = {k: (v.clone(), v.stride()) for k, v in net.state_dict().items()}
    validate(net, card, arrays, ["syn3"], torch.device("cpu"))
    after = net.state_dict()
    assert net.training
    for k, (v, stride) in before.items():
        assert torch.equal(after[k], v) and after[k].stride() == stride, k


def test_3d_unet_trains_on_patches_and_segments_with_sliding_windows(prepared, tmp_path):
    from liverseg import Segmenter
    from liverseg.inference import VolumePredictor
    from liverseg.metrics import dice
    from liverseg_train.train import TrainConfig, train

    cfg = _config(prepared, tmp_path / "run3d", architecture="unet3d", base_channels=8, depth=2, epochs=10,
                  samples_per_epoch=32, batch_size=4, patch_size=[8, 48, 48], slice_spacing_mm=5.0, lr=0.01,
                  val_cases=[], tumors={"probability": 0.3})
    model_path = train(TrainConfig.from_dict(cfg))
    rows = (tmp_path / "run3d" / "log.csv").read_text().strip().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2])
    segmenter = Segmenter(model_path, "cpu")
    assert isinstance(segmenter.predictor, VolumePredictor)
    assert segmenter.model.card["preprocessing"]["patch_size"] == [8, 48, 48]
    vol, lab = synthetic_case(SHAPE, SPACING, seed=12, tumors=1)
    result = segmenter.segment(vol, phantom_ijk_to_ras(SPACING))
    assert result.labelmap.shape == vol.shape
    assert dice(result.labelmap >= 1, lab >= 1) > 0.5


def test_a_resumed_finetune_does_not_need_its_base_model_again(prepared, tmp_path, tiny_model_path):
    """The base weights only start a run; resuming continues from the checkpoint (the base file may be gone)."""
    import shutil

    from liverseg_train.cli import main as train_main

    base = tmp_path / "base.safetensors"
    shutil.copy(tiny_model_path, base)
    cfg_path = tmp_path / "cfg.json"
    for epochs in (1, 2):
        cfg_path.write_text(json.dumps(_config(prepared, tmp_path / "ft", architecture="unet", base_channels=4, depth=2,
                                               epochs=epochs, samples_per_epoch=16, val_cases=[], init_from=str(base))))
        assert train_main(["train", "--config", str(cfg_path)]) == 0
        base.unlink(missing_ok=True)
    assert len((tmp_path / "ft" / "log.csv").read_text().strip().splitlines()) == 3
