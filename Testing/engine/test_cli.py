"""The CLI as a user runs it: bad input gets one clear line and a non-zero exit code, and no output file."""
import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from liverseg.cli import main
from liverseg.io import ImageData, read_image, write_image


def _write(path, array, spacing=(3.0, 3.0, 5.0)):
    return write_image(path, ImageData(array, spacing, (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))


@pytest.fixture()
def ct_file(tmp_path, phantom):
    vol, lab, _ = phantom
    _write(tmp_path / "lab.nii.gz", lab)
    return _write(tmp_path / "ct.nii.gz", vol)


def run(capsys, *args):
    code = main(list(map(str, args)))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_segment_writes_the_input_geometry_and_summary(tmp_path, ct_file, tiny_model_path, capsys):
    out = tmp_path / "seg.nrrd"
    code, stdout, err = run(capsys, "segment", ct_file, "-o", out, "--model", tiny_model_path, "--json", "-q")
    assert code == 0, err
    summary = json.loads(stdout[stdout.index("{"):])
    assert {"liver_volume_ml", "tumor_count", "tumor_volume_ml", "seconds"} <= set(summary)
    a, b = sitk.ReadImage(str(ct_file)), sitk.ReadImage(str(out))
    assert a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing()
    assert a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection()
    # A second run refuses to overwrite, then --overwrite replaces it.
    code, _, err = run(capsys, "segment", ct_file, "-o", out, "--model", tiny_model_path, "-q")
    assert code != 0 and "--overwrite" in err
    assert run(capsys, "segment", ct_file, "-o", out, "--model", tiny_model_path, "-q", "--overwrite")[0] == 0


def test_lesion_margins_are_off_by_default_and_reach_the_postprocessing(tmp_path, ct_file, tiny_model_path, capsys,
                                                                       postprocess_configs):
    for extra, expected in (((), 0.0), (("--lesion-margins", "10"), 10.0)):
        out = tmp_path / f"seg_{expected:.0f}.nii.gz"
        code, _, err = run(capsys, "segment", ct_file, "-o", out, "--model", tiny_model_path, "-q", *extra)
        assert code == 0, err
        assert postprocess_configs[-1].lesion_growth_mm == expected
    for bad in ("-1", "ten"):
        with pytest.raises(SystemExit) as exc:
            main(["segment", str(ct_file), "-o", str(tmp_path / "bad.nii.gz"), "--lesion-margins", bad])
        assert exc.value.code == 2 and ">= 0" in capsys.readouterr().err
    assert not (tmp_path / "bad.nii.gz").exists()


def test_density_rules_can_be_switched_off_one_by_one(tmp_path, ct_file, tiny_model_path, capsys, postprocess_configs):
    """`--without-rule water` (non-contrast CT: lesions at water density) switches off that rule and no other;
    an unknown rule and the combination with --no-postprocessing are refused before any work."""
    out = tmp_path / "seg.nii.gz"
    code, _, err = run(capsys, "segment", ct_file, "-o", out, "--model", tiny_model_path, "-q", "--without-rule", "water")
    assert code == 0, err
    config = postprocess_configs[-1]
    assert config.water_hu is None and config.fluid_hu is not None and config.parenchyma_max_delta_hu is not None
    with pytest.raises(SystemExit) as exc:
        main(["segment", str(ct_file), "-o", str(tmp_path / "bad.nii.gz"), "--without-rule", "cysts"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
    postprocess_configs.clear()
    code, _, err = run(capsys, "segment", ct_file, "-o", tmp_path / "bad.nii.gz", "--model", tiny_model_path, "-q",
                       "--no-postprocessing", "--without-rule", "fluid")
    assert code != 0 and "Drop one of the two" in err and not postprocess_configs
    code, _, err = run(capsys, "segment", ct_file, "-o", tmp_path / "bad.nii.gz", "--model", tiny_model_path, "-q",
                       "--no-tumor", "--without-rule", "water")
    assert code != 0 and "--no-tumor" in err and not postprocess_configs
    assert not (tmp_path / "bad.nii.gz").exists()


@pytest.mark.parametrize("switch, says", [("--no-postprocessing", "postprocessing switched off"),
                                          ("--no-tumor", "--no-tumor")])
@pytest.mark.parametrize("option", [["--lesion-margins", "10"], ["--review-beyond"]])
def test_tumor_postprocessing_options_are_refused_where_they_would_be_ignored(tmp_path, ct_file, tiny_model_path, capsys,
                                                                              postprocess_configs, switch, says, option):
    """Postprocessing off skips every step and no tumor leaves nothing to grow or to check: lesion margins and the
    check for tissue beyond the liver are refused before any work, not silently dropped."""
    out = tmp_path / "seg.nii.gz"
    code, _, err = run(capsys, "segment", ct_file, "-o", out, "--model", tiny_model_path, "-q", switch, *option)
    assert code != 0 and says in err and "Drop one of the two" in err
    assert not out.exists() and not postprocess_configs


def test_the_check_for_tissue_beyond_the_liver_is_opt_in(tmp_path, ct_file, tiny_model_path, capsys,
                                                         postprocess_configs):
    """Off by default (it failed its held-out check, README); `--review-beyond` switches it on at its distance."""
    from liverseg.postprocess import BEYOND_REVIEW_MM

    for extra, expected in (([], None), (["--review-beyond"], BEYOND_REVIEW_MM)):
        code, _, err = run(capsys, "segment", ct_file, "-o", tmp_path / "seg.nii.gz", "--model", tiny_model_path,
                           "-q", "--overwrite", *extra)
        assert code == 0, err
        assert postprocess_configs[-1].beyond_review_mm == expected


def test_many_inputs_go_to_a_folder(tmp_path, ct_file, tiny_model_path, capsys):
    other = _write(tmp_path / "ct2.nrrd", read_image(ct_file).array)
    code, stdout, err = run(capsys, "segment", ct_file, other, "-o", tmp_path / "out", "--model", tiny_model_path, "-q")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ct2_liverseg.nii.gz", "ct_liverseg.nii.gz"]


def _bad_inputs(tmp_path, phantom):
    vol = phantom[0]
    cases = {}
    (tmp_path / "notes.txt").write_text("not an image")
    cases["not an image"] = (tmp_path / "notes.txt", "Could not read")
    cases["missing"] = (tmp_path / "missing.nii.gz", "does not exist")
    img2d = sitk.GetImageFromArray(vol[5].astype(np.int16))
    sitk.WriteImage(img2d, str(tmp_path / "slice.nii.gz"))
    cases["2D"] = (tmp_path / "slice.nii.gz", "2D")
    vec = sitk.GetImageFromArray(np.stack([vol, vol, vol], -1).astype(np.int16), isVector=True)
    sitk.WriteImage(vec, str(tmp_path / "vector.nrrd"))
    cases["vector/RGB"] = (tmp_path / "vector.nrrd", "components")
    rgb = sitk.GetImageFromArray(np.zeros((4, 8, 8, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.mha"))
    cases["rgb"] = (tmp_path / "rgb.mha", "components")
    cases["labelmap"] = (_write(tmp_path / "lab_as_input.nii.gz", phantom[1]), "labelmap")
    cases["constant"] = (_write(tmp_path / "constant.nii.gz", np.full((8, 8, 8), -1000, np.int16)), "constant")
    nan = vol.astype(np.float32)
    nan[3, 3, 3] = np.nan
    cases["nan"] = (_write(tmp_path / "nan.mha", nan), "NaN")  # ITK NIfTI reading zeroes NaN; MHA keeps it
    png_like = ((vol.astype(np.float32) + 1000) / 3000 * 255).clip(0, 255).astype(np.uint8)
    cases["0..255"] = (_write(tmp_path / "png_like.nii.gz", png_like.astype(np.float32)), "Hounsfield")
    mr = np.random.default_rng(0).uniform(0, 1500, vol.shape).astype(np.float32)
    cases["MR-like"] = (_write(tmp_path / "mr.nii.gz", mr), "Hounsfield")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 4, 4, 4), np.int16)), str(tmp_path / "t4d.nii.gz"))
    cases["4D"] = (tmp_path / "t4d.nii.gz", "")
    return cases


def test_every_bad_input_gets_a_clear_error_and_no_output(tmp_path, phantom, tiny_model_path, capsys):
    for name, (path, expected) in _bad_inputs(tmp_path, phantom).items():
        out = tmp_path / f"out_{name.replace('/', '_')}.nii.gz"
        code, _, err = run(capsys, "segment", path, "-o", out, "--model", tiny_model_path, "-q")
        assert code != 0, name
        lines = err.strip().splitlines()
        assert lines[-1].startswith("liverseg: error:") and "Traceback" not in err, (name, err)
        assert expected in lines[-1], (name, lines[-1])
        assert not out.exists(), name
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".liverseg-")]
    assert not leftovers


def test_evaluate_prints_table_and_json(tmp_path, phantom, capsys):
    lab = phantom[1]
    ref = _write(tmp_path / "ref.nii.gz", lab)
    pred = _write(tmp_path / "pred.nii.gz", lab)
    code, stdout, _ = run(capsys, "evaluate", pred, ref, "--json-out", tmp_path / "m.json")
    assert code == 0 and "dice" in stdout
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["liver"]["dice"] == 1.0 and m["tumor"]["dice"] == 1.0 and m["liver"]["hd95_mm"] == 0.0


def test_dicom_folder_input(tmp_path, phantom, tiny_model_path, capsys):
    from helpers import write_dicom_series

    vol = phantom[0]
    folder = write_dicom_series(tmp_path / "dicom", vol)
    data = read_image(folder)
    assert data.array.shape == vol.shape
    np.testing.assert_array_equal(data.array, vol)
    assert data.spacing == pytest.approx((3.0, 3.0, 5.0))
    code, _, err = run(capsys, "segment", folder, "-o", tmp_path / "d.nii.gz", "--model", tiny_model_path, "-q")
    assert code == 0, err


def test_info_and_help_run_as_console_scripts():
    out = subprocess.run([sys.executable, "-m", "liverseg", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "segment" in out.stdout and "benchmark" in out.stdout
    out = subprocess.run([sys.executable, "-m", "liverseg", "info"], capture_output=True, text=True)
    assert out.returncode == 0 and "devices:" in out.stdout


def test_benchmark_reports_every_stage(tiny_model_path, capsys):
    code, stdout, err = run(capsys, "benchmark", "--shape", "64x64x12", "--model", tiny_model_path, "--device", "cpu")
    assert code == 0, err
    out = json.loads(stdout)
    assert {"inference", "postprocessing", "total"} <= set(out["stages_s"])
    assert out["shape_kji"] == [12, 64, 64] and out["peak_rss_mb"] > 0 and out["network_gflops_total"] > 0


def test_overlay_png(tmp_path, ct_file, capsys):
    lab = tmp_path / "lab.nii.gz"
    code, stdout, err = run(capsys, "overlay", ct_file, lab, tmp_path / "o.png", "--reference", lab)
    assert code == 0, err
    from skimage.io import imread

    img = imread(tmp_path / "o.png")
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] >= 384


def test_seg_nrrd_output_carries_segments_and_reads_back_as_the_labelmap(tmp_path, ct_file, tiny_model_path, capsys):
    """-o x.seg.nrrd: one layer per label with Slicer's segment fields; evaluate and overlay read it back."""
    nii, seg = tmp_path / "s.nii.gz", tmp_path / "s.seg.nrrd"
    for out in (nii, seg):
        code, _, err = run(capsys, "segment", ct_file, "-o", out, "--model", tiny_model_path, "-q")
        assert code == 0, err
    image = sitk.ReadImage(str(seg))
    assert image.GetNumberOfComponentsPerPixel() == 2
    assert image.GetMetaData("Segment0_Name") == "Liver" and image.GetMetaData("Segment1_Name") == "Liver tumor"
    assert image.GetMetaData("Segment1_Tags").startswith("TerminologyEntry:Segmentation category and type")
    code, out, err = run(capsys, "evaluate", seg, nii)
    assert code == 0, err
    assert json.loads(out[out.index("{"):])["liver"]["dice"] == 1.0  # the same labelmap, read from both formats
    from liverseg.io import read_labelmap

    np.testing.assert_array_equal(read_labelmap(seg).array, read_image(nii).array)
