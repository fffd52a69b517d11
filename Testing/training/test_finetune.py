"""Learning from the user's corrections (issue 12): collect cases (never overwriting), fine-tune from a base model
with replay, compare on held-out cases and refuse to call the result better when it is not; resume."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from liverseg.benchmark import phantom_ijk_to_ras, synthetic_case
from liverseg.cases import add_case, describe_finetune, list_cases
from liverseg.checks import InputError
from liverseg.io import ImageData, read_image
from liverseg.modelfile import read_card
from liverseg_train.finetune import MAX_LOSS, MIN_GAIN, comparison_plan, verdict

SPACING = (5.0, 3.0, 3.0)


def _case(seed):
    vol, lab = synthetic_case((24, 96, 96), SPACING, seed=seed, tumors=1)
    return ImageData.from_array(vol, phantom_ijk_to_ras(SPACING)), lab.astype(np.uint8)


@pytest.fixture(scope="module")
def cases_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cases")
    for seed in range(4):
        image, lab = _case(seed)
        add_case(image, lab, folder, f"patient {seed}", {"source": "phantom", "model": "tiny-test"})
    return folder


def test_comparison_plan_and_verdict_follow_the_documented_rules():
    assert comparison_plan(["a"]) == [] and comparison_plan(["a", "b"]) == [["a"], ["b"]]
    assert comparison_plan(list("abcdefgh")) == [["d", "h"]]  # every 4th case held out
    row = lambda base, tuned: {"base_liver_dice": base, "finetuned_liver_dice": tuned}  # noqa: E731
    assert verdict([]) == "not compared"
    assert verdict([row(0.80, 0.80 + MIN_GAIN)]) == "better"
    assert verdict([row(0.80, 0.80 + MIN_GAIN / 2)]) == "not better"  # too small a gain
    assert verdict([row(0.80, 0.90), row(0.90, 0.90 - 2 * MAX_LOSS)]) == "not better"  # one case got worse


def test_add_case_never_overwrites_and_records_provenance(tmp_path):
    image, lab = _case(0)
    first = add_case(image, lab, tmp_path, "CT 1 (venous)", {"model": "liver-unet", "note": "fixed the dome"})
    second = add_case(image, lab, tmp_path, "CT 1 (venous)", {"model": "liver-unet"})
    assert first.name == "CT_1_venous_image.nii.gz" and second.name == "CT_1_venous_2_image.nii.gz"
    assert list_cases(tmp_path) == ["CT_1_venous", "CT_1_venous_2"]
    np.testing.assert_array_equal(read_image(tmp_path / "CT_1_venous_label.nii.gz").array, lab)
    meta = json.loads((tmp_path / "CT_1_venous_meta.json").read_text())
    assert meta["model"] == "liver-unet" and meta["note"] == "fixed the dome" and meta["label_made_by"].startswith("user")
    with pytest.raises(InputError, match="no liver"):
        add_case(image, np.zeros_like(lab), tmp_path, "empty", {})
    with pytest.raises(InputError, match="label values"):
        add_case(image, lab * 3, tmp_path, "odd", {})
    with pytest.raises(InputError, match="grid"):
        add_case(image, lab[:-1], tmp_path, "short", {})
    assert list_cases(tmp_path) == ["CT_1_venous", "CT_1_venous_2"]  # refused cases leave nothing behind


def test_add_case_cli_refuses_a_segmentation_on_another_grid(tmp_path, capsys):
    from liverseg.io import write_image, write_labelmap
    from liverseg_train.cli import main

    image, lab = _case(1)
    write_image(tmp_path / "ct.nii.gz", image)
    write_labelmap(tmp_path / "seg.nii.gz", lab, image)
    other = ImageData.from_array(image.array[:-2], phantom_ijk_to_ras(SPACING))
    write_labelmap(tmp_path / "small.nii.gz", lab[:-2], other)
    assert main(["add-case", str(tmp_path / "ct.nii.gz"), str(tmp_path / "small.nii.gz"), "--to", str(tmp_path / "c")]) == 1
    assert "not on the grid" in capsys.readouterr().err
    assert main(["add-case", str(tmp_path / "ct.nii.gz"), str(tmp_path / "seg.nii.gz"), "--to", str(tmp_path / "c"),
                 "--note", "checked", "--edited", "Liver"]) == 0
    assert list_cases(tmp_path / "c") == ["ct"]
    assert json.loads((tmp_path / "c" / "ct_meta.json").read_text())["edited_segments"] == ["Liver"]


def _finetune(tiny_model_path, cases_folder, output, *extra):
    return subprocess.run([sys.executable, "-m", "liverseg_train", "finetune", "--base", str(tiny_model_path),
                           "--data", str(cases_folder), "--output", str(output), "--epochs", "2", "--samples", "16",
                           "--device", "cpu", *extra], capture_output=True, text=True, timeout=600)


def test_finetune_compares_with_the_base_on_held_out_cases_and_records_it(tiny_model_path, cases_folder, tmp_path):
    replay = tmp_path / "replay"
    image, lab = _case(9)
    add_case(image, lab, replay, "public", {"source": "phantom"})
    out = tmp_path / "mine.safetensors"
    proc = _finetune(tiny_model_path, cases_folder, out, "--replay", str(replay))
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = read_card(out)
    report = card["finetune"]
    assert report["base_model"] == "tiny-test" and report["runs"] == 2 and len(report["cases"]) == 4
    (row,) = report["comparison"]["cases"]  # 4 cases: the 4th is held out
    assert row["case"] == report["cases"][3]
    assert report["comparison"]["verdict"] == verdict([row])
    assert describe_finetune(report).splitlines()[-1] in proc.stdout
    if report["comparison"]["verdict"] != "better":
        assert "NOT better" in proc.stdout and "keep tiny-test" in proc.stdout
    trained_on = [c["id"] for c in card["training"]["cases"]]
    assert "replay:public" in trained_on and set(report["cases"]) <= set(trained_on)
    assert card["training"]["samples_seen"] == 2 * 16 and card["version"].startswith("0+ft")
    assert card["training"]["initialised_from"]["model"] == "tiny-test"
    # resume: the runs are complete in the work folder, so the same command only re-exports
    out.unlink()
    t0 = time.perf_counter()
    again = _finetune(tiny_model_path, cases_folder, out, "--replay", str(replay))
    assert again.returncode == 0 and "Resumed" in again.stderr, again.stderr[-2000:]
    assert read_card(out)["finetune"]["comparison"]["cases"] == report["comparison"]["cases"]
    assert time.perf_counter() - t0 < 120


def test_replay_cases_get_their_share_of_the_samples():
    from liverseg.preprocessing import PreprocessingSpec
    from liverseg_train.train import REPLAY_PREFIX, SliceSampler, TrainConfig

    arrays = {c: {"image": np.zeros((n, 8, 8), np.float16), "label": np.ones((n, 8, 8), np.uint8)}
              for c, n in (("mine", 10), ("mine2", 40), (REPLAY_PREFIX + "a", 90), (REPLAY_PREFIX + "b", 10))}
    sampler = SliceSampler(arrays, list(arrays), PreprocessingSpec(), TrainConfig(replay_fraction=0.3), seed=0)
    replay = [p for c, p in zip(sampler.cases, sampler.case_p) if c.startswith(REPLAY_PREFIX)]
    assert sum(replay) == pytest.approx(0.3) and sum(sampler.case_p) == pytest.approx(1.0)
