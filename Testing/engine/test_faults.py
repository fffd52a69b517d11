"""Faults and hostile input (issue: never a silent wrong result). Each test reproduces a row of the fault table:
the outcome is a correct result with one warning line, or one line of reason and a non-zero exit; nothing partial
is left behind and no existing file is damaged."""
import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import write_dicom_series
from liverseg.cli import main

LEFTOVER = ".liverseg-"


def _write(path, array, spacing=(3.0, 3.0, 5.0), compress=True):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=compress)
    return Path(path)


@pytest.fixture()
def ct(tmp_path, phantom):
    return _write(tmp_path / "ct.nii.gz", phantom[0])


def run(capsys, *args):
    code = main(list(map(str, args)))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(code, err, pattern):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code != 0 and len(lines) >= 1 and pattern in lines[-1], err
    assert "Traceback" not in err


def no_leftovers(*folders):
    for folder in folders:
        assert not [p for p in Path(folder).rglob("*") if p.name.startswith(LEFTOVER)], list(Path(folder).rglob("*"))


@pytest.fixture()
def no_inference(monkeypatch):
    """Fail the test if a Segmenter is built: the fault must be found before any inference starts."""
    import liverseg.pipeline

    def refuse(*a, **k):
        raise AssertionError("inference started although the problem was detectable before")

    monkeypatch.setattr(liverseg.pipeline.Segmenter, "__init__", refuse)


# ---- outputs -----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def full_disk(tmp_path, size="1m"):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()


def test_disk_full_fails_loudly_and_keeps_the_previous_result(tmp_path, ct, tiny_model_path, capsys):
    with full_disk(tmp_path) as mnt:
        good = mnt / "seg.nii.gz"
        assert run(capsys, "segment", ct, "-o", good, "--model", tiny_model_path, "-q")[0] == 0
        before = good.read_bytes()
        _fill(mnt)
        code, out, err = run(capsys, "segment", ct, "-o", mnt / "new.nii.gz", "--model", tiny_model_path, "-q")
        one_error_line(code, err, "nothing was written")
        assert "disk" in err or "space" in err
        assert not (mnt / "new.nii.gz").exists() and "->" not in out
        code, out, err = run(capsys, "segment", ct, "-o", good, "--overwrite", "--model", tiny_model_path, "-q")
        one_error_line(code, err, "nothing was written")
        assert good.read_bytes() == before  # the good result is untouched
        no_leftovers(mnt)


def test_outputs_have_normal_permissions(tmp_path, ct, tiny_model_path, capsys):
    old = os.umask(0o022)
    try:
        assert run(capsys, "segment", ct, "-o", tmp_path / "seg.nii.gz", "--model", tiny_model_path, "-q")[0] == 0
    finally:
        os.umask(old)
    assert (tmp_path / "seg.nii.gz").stat().st_mode & 0o777 == 0o644


def test_output_path_problems_are_found_before_inference(tmp_path, ct, capsys, no_inference):
    (tmp_path / "afile").write_text("x")
    code, _, err = run(capsys, "segment", ct, "-o", tmp_path / "afile" / "seg.nii.gz")
    one_error_line(code, err, "is a file")
    code, _, err = run(capsys, "segment", ct, "-o", ct, "--overwrite")
    one_error_line(code, err, "is the input")
    assert ct.stat().st_size > 1000  # the CT is still there
    (tmp_path / "exists.nii.gz").write_text("keep")
    code, _, err = run(capsys, "segment", ct, "-o", tmp_path / "exists.nii.gz")
    one_error_line(code, err, "exists")
    code, _, err = run(capsys, "segment", ct, "-o", tmp_path / "seg.png")
    one_error_line(code, err, "must end in")


def test_read_only_folder_is_found_before_inference(tmp_path, ct, capsys, no_inference):
    if os.geteuid() != 0:
        pytest.skip("a read-only mount needs root (as root, chmod does not stop writes)")
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        code, _, err = run(capsys, "segment", ct, "-o", ro / "seg.nii.gz")
        one_error_line(code, err, "Cannot write into")
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)


def test_sigterm_while_writing_leaves_nothing_behind(tmp_path):
    from liverseg.console import EXIT_CANCELLED, run_cli
    from liverseg.outputs import write_atomic

    def write(tmp):
        tmp.write_bytes(b"partial")
        os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the write

    code = run_cli(lambda args: write_atomic(tmp_path / "x.nii.gz", write), type("A", (), {"debug": False})(), "t")
    assert code == EXIT_CANCELLED
    assert list(tmp_path.iterdir()) == []


def test_evaluate_and_overlay_do_not_overwrite_without_asking(tmp_path, ct, capsys):
    lab = _write(tmp_path / "lab.nii.gz", (sitk.GetArrayFromImage(sitk.ReadImage(str(ct))) > 100).astype(np.uint8))
    (tmp_path / "m.json").write_text("keep")
    code, _, err = run(capsys, "evaluate", lab, lab, "--json-out", tmp_path / "m.json")
    one_error_line(code, err, "exists")
    assert (tmp_path / "m.json").read_text() == "keep"
    assert run(capsys, "evaluate", lab, lab, "--json-out", tmp_path / "m.json", "--overwrite")[0] == 0
    assert json.loads((tmp_path / "m.json").read_text())["liver"]["dice"] == 1.0
    (tmp_path / "o.png").write_text("keep")
    code, _, err = run(capsys, "overlay", ct, lab, tmp_path / "o.png")
    one_error_line(code, err, "exists")
    code, _, err = run(capsys, "overlay", ct, lab, tmp_path / "figure.txt")
    one_error_line(code, err, "must end in one of .png")
    assert not (tmp_path / "figure.txt").exists()
    assert run(capsys, "overlay", ct, lab, tmp_path / "o.png", "--overwrite")[0] == 0
    assert (tmp_path / "o.png").read_bytes().startswith(b"\x89PNG")


# ---- inputs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [True, False])
def test_truncated_nifti_is_refused(tmp_path, phantom, capsys, compress, no_inference):
    path = _write(tmp_path / ("ct.nii.gz" if compress else "ct.nii"), phantom[0], compress=compress)
    data = path.read_bytes()
    cut = tmp_path / ("t" + path.name)
    cut.write_bytes(data[: len(data) // 2])
    code, _, err = run(capsys, "segment", cut, "-o", tmp_path / "seg.nii.gz")
    one_error_line(code, err, "truncated")
    assert not (tmp_path / "seg.nii.gz").exists()


def test_nifti_with_nan_or_inf_is_refused(tmp_path, phantom, capsys, no_inference):
    vol = phantom[0].astype(np.float32)
    vol[3, 10, 10], vol[4, 5, 5] = np.nan, np.inf
    path = _write(tmp_path / "nan.nii.gz", vol)
    code, _, err = run(capsys, "segment", path, "-o", tmp_path / "seg.nii.gz")
    one_error_line(code, err, "2 NaN or infinite")


@pytest.mark.parametrize("dims, pattern", [((32000, 32000, 32000), "GiB of memory"),  # more than any machine has
                                            ((1200, 1200, 1100), "")])  # fits or not, depending on free memory
def test_header_that_declares_a_huge_volume_is_refused_before_reading(tmp_path, capsys, no_inference, dims, pattern):
    """A 3 KB file whose header declares gigabytes: refused from the header (too large for free memory) or by the
    streamed size check (truncated), never by reading gigabytes into memory first."""
    import resource

    path = _write(tmp_path / "small.nii", np.zeros((4, 4, 4), np.int16), compress=False)
    header = bytearray(path.read_bytes())
    header[42:48] = np.array(dims, "<i2").tobytes()  # dim[1..3]
    huge = tmp_path / "huge.nii.gz"
    huge.write_bytes(gzip.compress(bytes(header)))
    assert huge.stat().st_size < 4096
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, _, err = run(capsys, "segment", huge, "-o", tmp_path / "seg.nii.gz")
    one_error_line(code, err, "huge.nii.gz")
    assert (pattern or "truncated") in err or "GiB of memory" in err, err
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KB: nothing big was allocated


def test_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "ct.nii.gz"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "liverseg", "segment", str(fifo), "-o", str(tmp_path / "s.nii.gz")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "not a regular file" in proc.stderr


@pytest.mark.parametrize("slices", [1, 2])
def test_one_and_two_slice_volumes_are_refused(tmp_path, phantom, capsys, tiny_model_path, slices):
    path = _write(tmp_path / "thin.nii.gz", phantom[0][:slices])
    code, _, err = run(capsys, "segment", path, "-o", tmp_path / "seg.nii.gz", "--model", tiny_model_path)
    one_error_line(code, err, "at least 3 slices")


@pytest.mark.parametrize("matrix, pattern", [
    (np.full((4, 4), np.nan), "NaN"),
    (np.diag([1.0, 1.0, 0.0, 1.0]), "outside"),
    (np.array([[1.0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "degenerate"),
    (np.diag([1000.0, 1000.0, 1000.0, 1.0]), "outside"),
    (np.diag([1e-6, 1e-6, 1e-6, 1.0]), "outside"),
])
def test_api_refuses_unusable_geometry(phantom, tiny_model_path, matrix, pattern):
    from liverseg import InputError, Segmenter

    with pytest.raises(InputError, match=pattern):
        Segmenter(tiny_model_path, "cpu").segment(phantom[0], matrix)


# ---- DICOM -------------------------------------------------------------------------------------------------
def _series(tmp_path, phantom, name="d", uid="1.2.826.0.1.3680043.2.1125.9.1"):
    return write_dicom_series(tmp_path / name, phantom[0][:10], series_uid=uid)


def _set_position(path: Path, position: str) -> None:
    img = sitk.ReadImage(str(path))
    for key in img.GetMetaDataKeys():
        img.SetMetaData(key, img.GetMetaData(key))
    img.SetMetaData("0020|0032", position)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(path))
    writer.Execute(img)


def test_dicom_with_a_missing_slice_is_refused(tmp_path, phantom, capsys, no_inference):
    folder = _series(tmp_path, phantom)
    sorted(folder.iterdir())[5].unlink()
    code, _, err = run(capsys, "segment", folder, "-o", tmp_path / "seg.nii.gz")
    one_error_line(code, err, "1 missing slice(s)")


def test_dicom_with_uneven_spacing_or_gantry_tilt_is_refused(tmp_path, phantom, capsys, no_inference):
    folder = _series(tmp_path, phantom)
    files = sorted(folder.iterdir())
    _set_position(files[-1], f"0\\0\\{5.0 * 9 + 2.0}")
    code, _, err = run(capsys, "segment", folder, "-o", tmp_path / "seg.nii.gz")
    one_error_line(code, err, "uneven slice spacing")
    tilted = _series(tmp_path, phantom, "tilt")
    for k, f in enumerate(sorted(tilted.iterdir())):  # each slice shifted 1 mm in y per 5 mm in z: 11 degrees
        _set_position(f, f"0\\{1.0 * k}\\{5.0 * k}")
    code, _, err = run(capsys, "segment", tilted, "-o", tmp_path / "seg.nii.gz")
    one_error_line(code, err, "gantry tilt of 11.3 degrees")


def test_dicom_folder_with_two_series_warns_once_and_series_chooses(tmp_path, phantom, constant_model):
    folder = _series(tmp_path, phantom, "two", uid="1.2.3.4.1")
    write_dicom_series(tmp_path / "small", phantom[0][:6] // 2, series_uid="1.2.3.4.2")
    for f in (tmp_path / "small").iterdir():
        f.rename(folder / ("b_" + f.name))

    def seg(*extra):
        return subprocess.run([sys.executable, "-m", "liverseg", "segment", str(folder), "-o", str(tmp_path / "s.nii.gz"),
                               "--overwrite", "--model", str(constant_model(20.0)), "-q", *extra], capture_output=True, text=True)

    proc = seg()
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if "series" in ln]
    assert len(lines) == 1 and "2 DICOM series" in lines[0] and "1.2.3.4.2" in lines[0], proc.stderr
    assert sitk.ReadImage(str(tmp_path / "s.nii.gz")).GetSize()[2] == 10
    proc = seg("--series", "1.2.3.4.2")
    assert proc.returncode == 0 and sitk.ReadImage(str(tmp_path / "s.nii.gz")).GetSize()[2] == 6
    proc = seg("--series", "9.9")
    assert proc.returncode == 1 and "1.2.3.4.1 (10 files)" in proc.stderr


# ---- batch -------------------------------------------------------------------------------------------------
def test_batch_outputs_are_unique_and_a_failing_case_does_not_stop_the_others(tmp_path, phantom, tiny_model_path, capsys):
    a = _write(tmp_path / "A" / "ct.nii.gz", phantom[0])
    b = _write(tmp_path / "B" / "ct.nii.gz", phantom[0][::-1].copy())
    bad = _write(tmp_path / "C" / "ct.nii.gz", phantom[0][:2])  # a 2-slice volume: refused
    out = tmp_path / "res"
    code, stdout, err = run(capsys, "segment", a, bad, b, "-o", out, "--model", tiny_model_path, "-q", "--json")
    assert code == 1 and "1 of 3 cases failed" in err
    summary = json.loads(stdout[stdout.index("[\n"):])  # the JSON list after the per-case lines
    assert [s["ok"] for s in summary] == [True, False, True]
    assert summary[0]["output"] != summary[2]["output"]
    assert (out / "A" / "ct_liverseg.nii.gz").exists() and (out / "B" / "ct_liverseg.nii.gz").exists()
    assert not (out / "C").exists() or not list((out / "C").iterdir())
    # Without --overwrite, a clash with an existing output is found before the first case runs.
    (out / "B" / "ct_liverseg.nii.gz").write_text("old")
    (out / "A" / "ct_liverseg.nii.gz").unlink()
    code, _, err = run(capsys, "segment", a, b, "-o", out, "--model", tiny_model_path, "-q")
    one_error_line(code, err, "exists")
    assert not (out / "A" / "ct_liverseg.nii.gz").exists()


def test_batch_stop_on_error(tmp_path, phantom, tiny_model_path, capsys):
    bad = _write(tmp_path / "bad.nii.gz", phantom[0][:1])
    good = _write(tmp_path / "good.nii.gz", phantom[0])
    code, _, err = run(capsys, "segment", bad, good, "-o", tmp_path / "res", "--model", tiny_model_path, "-q",
                       "--stop-on-error")
    one_error_line(code, err, "at least 3 slices")
    assert not (tmp_path / "res" / "good_liverseg.nii.gz").exists()


# ---- model files -------------------------------------------------------------------------------------------
def _card_variant(tmp_path, tiny_model_path, edit, name="m.safetensors", weights_dtype=None):
    from safetensors.torch import load_file, save_file

    from liverseg.modelfile import CARD_KEY, read_card

    card = read_card(tiny_model_path)
    edit(card)
    state = load_file(str(tiny_model_path))
    if weights_dtype is not None:
        state = {k: v.to(weights_dtype) for k, v in state.items()}
    path = tmp_path / name
    save_file(state, str(path), metadata={CARD_KEY: json.dumps(card)})
    return path


@pytest.mark.parametrize("edit, pattern", [
    (lambda c: c["preprocessing"].update(window=[float("nan"), 400]), "window"),
    (lambda c: c["preprocessing"].update(window=[-1e38, 1e38]), "window"),
    (lambda c: c["preprocessing"].update(window=[400, -100]), "ordered"),
    (lambda c: c.update(thresholds={"liver": -0.5, "tumor": 0.5}), "thresholds.liver"),
    (lambda c: c.update(thresholds={"liver": 0.5, "tumor": 1.5}), "thresholds.tumor"),
    (lambda c: c["network"].update(depth=40), "network.depth"),
    (lambda c: c["network"].update(base_channels=4096), "network.base_channels"),
    (lambda c: c["preprocessing"].update(spacing_mm=0.01), "preprocessing.spacing_mm"),
    (lambda c: c["preprocessing"].update(size_multiple=0), "preprocessing.size_multiple"),
    (lambda c: c["preprocessing"].update(spacing_mm="2"), "must be a number"),
    (lambda c: c["network"].update(depth="four"), "must be an integer"),
])
def test_model_cards_out_of_range_are_refused_with_the_field(tmp_path, tiny_model_path, edit, pattern, capsys):
    path = _card_variant(tmp_path, tiny_model_path, edit)
    code, _, err = run(capsys, "info", "--model", path)
    assert code == 1 and pattern in err
    from liverseg.modelfile import ModelFileError, load_model

    with pytest.raises(ModelFileError, match=pattern.replace(".", r"\.")):
        load_model(path)


def test_model_weights_of_the_wrong_dtype_are_refused(tmp_path, tiny_model_path):
    import torch

    from liverseg.modelfile import ModelFileError, load_model

    path = _card_variant(tmp_path, tiny_model_path, lambda c: None, weights_dtype=torch.int8)
    with pytest.raises(ModelFileError, match="F32, F16"):
        load_model(path)
    ok = _card_variant(tmp_path, tiny_model_path, lambda c: None, name="half.safetensors", weights_dtype=torch.float16)
    assert load_model(ok).network is not None


def test_folder_named_like_a_model_is_refused_clearly(tmp_path, ct, capsys, no_inference):
    (tmp_path / "x.safetensors").mkdir()
    from liverseg.modelfile import ModelFileError, load_model

    with pytest.raises(ModelFileError, match="is a folder"):
        load_model(tmp_path / "x.safetensors")


def test_pickled_weights_message_never_suggests_unsafe_loading(tmp_path, tiny_model_path):
    import pickle

    from liverseg.modelfile import ModelFileError, load_model

    path = tmp_path / "m.pt"
    path.write_bytes(pickle.dumps({"x": object()}))
    (tmp_path / "m.json").write_text(json.dumps(__import__("liverseg.modelfile", fromlist=["read_card"]).read_card(tiny_model_path)))
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert "weights_only" not in str(info.value) and "pickled" in str(info.value)


# ---- other commands ----------------------------------------------------------------------------------------
def test_benchmark_refuses_a_shape_that_does_not_fit_in_memory(capsys):
    code, _, err = run(capsys, "benchmark", "--shape", "4000x4000x2000")
    one_error_line(code, err, "GiB of memory")


def test_worker_reports_bad_jobs_in_one_line(tmp_path):
    from liverseg.worker import run as worker_run

    assert worker_run(tmp_path / "missing") == 2
    (tmp_path / "job.json").write_text("{not json")
    assert worker_run(tmp_path) == 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert not result["ok"] and "not valid JSON" in result["error"]
    (tmp_path / "job.json").write_text(json.dumps({"ijk_to_ras": np.eye(4).tolist(), "tumor": "yes"}))
    assert worker_run(tmp_path) == 1
    assert "'tumor' must be true or false" in json.loads((tmp_path / "result.json").read_text())["error"]
    (tmp_path / "job.json").unlink()
    assert worker_run(tmp_path) == 1
    assert "no job.json" in json.loads((tmp_path / "result.json").read_text())["error"]


def test_public_sample_with_a_wrong_checksum_is_refused(tmp_path, monkeypatch):
    """A corrupted or changed download is never converted into a 'sample'."""
    import zipfile

    import liverseg.sample as sample

    def fake_pip(cmd, **kwargs):
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "liver_ct_segmentation_package-1.6.0-py3-none-any.whl", "w") as z:
            for member in sample.MEMBERS.values():
                z.writestr(member, b"\0" * 2048)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(sample.subprocess, "run", fake_pip)
    with pytest.raises(RuntimeError, match="expected checksum"):
        sample.fetch_sample(tmp_path / "s")
    assert not list((tmp_path / "s").glob("*.nii.gz"))


def test_input_dir_batch_with_a_broken_case_writes_every_good_result_and_a_stats_table(tmp_path, phantom,
                                                                                       tiny_model_path, capsys):
    """A folder with NIfTI and DICOM cases and one broken file: every good case is segmented into the same layout,
    the broken one is reported, the CSV has a row per case and the exit code says something failed."""
    import csv

    data = tmp_path / "study"
    _write(data / "p1" / "ct.nii.gz", phantom[0])
    write_dicom_series(data / "p2" / "dicom", phantom[0][:12])
    (data / "p3").mkdir()
    (data / "p3" / "ct.nii.gz").write_bytes(gzip.compress(b"not an image"))
    (data / "notes.txt").write_text("ignored")
    out = data / "results"  # inside the input folder: never taken as input
    code, stdout, err = run(capsys, "segment", "--input-dir", data, "-o", out, "--model", tiny_model_path, "-q",
                            "--stats", tmp_path / "stats.csv")
    assert code == 1 and "1 of 3 cases failed" in err and "3 cases: 2 ok, 1 failed" in err
    assert (out / "p1" / "ct_liverseg.nii.gz").exists() and (out / "p2" / "dicom_liverseg.nii.gz").exists()
    rows = list(csv.DictReader((tmp_path / "stats.csv").open()))
    assert [r["ok"] for r in rows] == ["True", "True", "False"] and rows[2]["error"]
    assert float(rows[0]["liver_volume_ml"]) >= 0 and rows[0]["model"] == "tiny-test" and rows[0]["device"] == "cpu"
    assert set(rows[0]) == {"input", "output", "ok", "error", "liver_volume_ml", "tumor_count", "tumor_volume_ml",
                            "tumor_burden_percent", "largest_tumor_diameter_mm", "model", "model_version", "device",
                            "seconds", "warnings"}
    code, _, err = run(capsys, "segment", "--input-dir", data, "-o", out, "--model", tiny_model_path, "-q",
                       "--stats", tmp_path / "stats.csv")
    one_error_line(code, err, "exists")  # neither results nor the table are replaced without --overwrite
