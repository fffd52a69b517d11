"""Failure-mode analysis on analytic cases whose answers are known by construction."""
import numpy as np
import pytest
from scipy import ndimage

from liverseg_train.analysis import analyse_case, detection_by_size, equivalent_diameter_mm

SPACING = (2.0, 1.0, 1.0)  # [k, j, i] mm; identity direction -> canonical is the array itself, k towards the head


def _ijk_to_ras():
    m = np.diag([-SPACING[2], -SPACING[1], SPACING[0], 1.0])  # i -> left, j -> posterior (LPS identity), k -> superior
    return m


def _ball(shape, centre, radius_mm):
    zz, yy, xx = np.ogrid[tuple(slice(0, n) for n in shape)]
    return ((zz - centre[0]) * SPACING[0]) ** 2 + ((yy - centre[1]) * SPACING[1]) ** 2 + \
        ((xx - centre[2]) * SPACING[2]) ** 2 <= radius_mm ** 2


def test_regions_lesion_sizes_and_false_positives():
    shape = (30, 80, 80)
    ref = np.zeros(shape, np.uint8)
    ref[3:27, 10:70, 10:70] = 1  # 24 liver slices: tip 3-10, middle 11-18, dome 19-26
    big, small = _ball(shape, (15, 40, 40), 12.5), _ball(shape, (8, 20, 60), 3.0)
    ref[big & (ref == 1)] = 2
    ref[small & (ref == 1)] = 2
    pred = ref.copy()
    pred[3:7] = 0  # the tip's lowest 4 slices are missed
    pred[28, 30:40, 30:40] = 1  # a heart-like false liver above the dome: 100 voxels of 2 mm^3
    pred[small] = 1  # the small lesion is missed (called liver)
    cyst = _ball(shape, (22, 60, 20), 4.0)
    pred[cyst] = 2  # a false lesion near the dome
    image = np.where(ref >= 1, 110, -100).astype(np.int16)
    image[ref == 2] = 60
    image[cyst] = 5  # water density
    a = analyse_case(image, _ijk_to_ras(), pred, ref)
    reg = a["craniocaudal"]["regions"]
    assert reg["dome"] == pytest.approx(1.0, abs=0.02) and reg["middle"] == pytest.approx(1.0)
    assert reg["tip"] == pytest.approx(2 * 4 / (8 + 4), abs=0.01)  # 4 of 8 tip slices found
    assert a["craniocaudal"]["per_slice"][4] == 0.0
    assert a["craniocaudal"]["above_dome_ml"] == pytest.approx(0.2) and a["craniocaudal"]["below_tip_ml"] == 0.0
    bins = {r["bin"]: (r["detected"], r["lesions"]) for r in a["detection_by_size"]}
    assert bins == {"<10 mm": (0, 1), "10-20 mm": (0, 0), ">20 mm": (1, 1)}
    assert [r["detected_iou50"] for r in a["detection_by_size"]] == [0, 0, 1]
    (fp,) = a["false_positive_lesions"]
    assert fp["region"] == "dome" and fp["kind"].startswith("water density") and fp["mean_hu"] == pytest.approx(5)
    assert fp["volume_ml"] == pytest.approx(cyst.sum() * 2 / 1000)


def test_equivalent_diameter_of_a_ball():
    ball = _ball((40, 60, 60), (20, 30, 30), 12.0)
    assert equivalent_diameter_mm(int(ball.sum()), float(np.prod(SPACING))) == pytest.approx(24.0, rel=0.05)
    rows = detection_by_size(np.zeros_like(ball), ball, SPACING)
    assert [r["lesions"] for r in rows] == [0, 0, 1] and rows[2]["recall"] == 0.0


def _write_phantom_case(folder, phantom):
    """The phantom as the generic case "p" (p_image / p_label NIfTI) in ``folder``."""
    import SimpleITK as sitk

    vol, lab, _ = phantom
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in (("p_image", vol), ("p_label", lab)):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((3.0, 3.0, 5.0))
        sitk.WriteImage(img, str(folder / f"{name}.nii.gz"))
    return folder


def test_evaluate_writes_the_failure_mode_report(tmp_path, tiny_model_path, phantom):
    from liverseg_train.datasets import find_cases
    from liverseg_train.evaluate import evaluate_cases

    _write_phantom_case(tmp_path, phantom)
    summary = evaluate_cases(tiny_model_path, find_cases("generic", tmp_path), tmp_path / "rep", device="cpu")
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "## Failure modes" in report and "| p |" in report and "Lesions found by size" in report
    assert "liver called above the dome / below the tip (mL)" in report
    assert (tmp_path / "rep" / "profile.png").exists()
    assert set(summary["cases"]["p"]["analysis"]["craniocaudal"]["regions"]) == {"dome", "middle", "tip"}


def test_evaluate_segments_with_the_lesion_margins_it_is_given(tmp_path, tiny_model_path, phantom,
                                                               postprocess_configs):
    """`liverseg-train evaluate --lesion-margins MM` measures the engine's option, not the default (0, off)."""
    from liverseg_train.cli import main

    data = _write_phantom_case(tmp_path / "data", phantom)
    for extra, expected in (([], 0.0), (["--lesion-margins", "10"], 10.0)):
        postprocess_configs.clear()
        assert main(["evaluate", "--model", str(tiny_model_path), "--source", f"generic:{data}", "--device", "cpu",
                     "--out", str(tmp_path / f"rep{expected:.0f}"), *extra]) == 0
        assert postprocess_configs and {c.lesion_growth_mm for c in postprocess_configs} == {expected}
        report = (tmp_path / f"rep{expected:.0f}" / "report.md").read_text()
        assert ("lesion margins 10 mm" in report) == bool(expected) and ("not the engine's default" in report) == bool(expected)


def test_evaluate_switches_off_the_density_rules_it_is_told(tmp_path, tiny_model_path, phantom, postprocess_configs):
    """`liverseg-train evaluate --without-rule water` measures the engine with that rule off, and says so; likewise
    `--review-beyond` with the opt-in check on."""
    import json

    from liverseg_train.cli import main

    data = _write_phantom_case(tmp_path / "data", phantom)
    assert main(["evaluate", "--model", str(tiny_model_path), "--source", f"generic:{data}", "--device", "cpu",
                 "--out", str(tmp_path / "rep"), "--without-rule", "water"]) == 0
    assert postprocess_configs and all(c.water_hu is None and c.fluid_hu is not None for c in postprocess_configs)
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["without_rules"] == ["water"]
    assert "Postprocessing not the engine's default: without the water rule." in (tmp_path / "rep" / "report.md").read_text()
    postprocess_configs.clear()
    assert main(["evaluate", "--model", str(tiny_model_path), "--source", f"generic:{data}", "--device", "cpu",
                 "--out", str(tmp_path / "beyond"), "--review-beyond"]) == 0
    assert postprocess_configs and all(c.beyond_review_mm is not None and c.water_hu is not None
                                       for c in postprocess_configs)
    assert "with the check for tissue beyond the liver" in (tmp_path / "beyond" / "report.md").read_text()


def test_evaluation_counts_the_regions_to_review_and_checks_margins_against_the_reference_tumor():
    """The report's "regions to review": per rule, regions and mL; for margins on a case with tumor labels, the share
    of the darker liver around the tumors that is reference tumor (all of it here: the lesion's outer shell); for
    tissue beyond the liver, likewise the share of it that is reference tumor (none found where fat lies beyond)."""
    from types import SimpleNamespace

    from liverseg.postprocess import BEYOND_REVIEW_MM, PostprocessConfig
    from liverseg_train.evaluate import _review_line, review_regions

    from helpers import liver_block

    liver, _, ball = liver_block()
    lesion, core = ball(20, 30, 30, 12), ball(20, 30, 30, 9.5)
    image = np.where(liver, 110.0, -100.0) + np.random.default_rng(0).normal(0, 8, liver.shape)
    image[lesion] -= 70
    labelmap = np.where(core, 2, np.where(liver, 1, 0)).astype(np.uint8)
    label = np.where(lesion, 2, np.where(liver, 1, 0)).astype(np.uint8)
    regions = [{"rule": "margin", "volume_ml": 3.7}, {"rule": "cyst", "volume_ml": 0.5}, {"rule": "cyst", "volume_ml": 0.25}]
    review = review_regions(SimpleNamespace(reclassified=regions, labelmap=labelmap), image, label, (1.0, 1.0, 1.0),
                            PostprocessConfig())
    assert review["cyst"] == {"regions": 2, "ml": 0.75} and review["margin"]["in_reference_tumor"] > 0.95
    assert _review_line("a", review).startswith("- a: margin 1 / 3.7 mL (100 % reference tumor); cyst 2 / 0.8 mL")
    assert review_regions(SimpleNamespace(reclassified=regions, labelmap=labelmap), image, labelmap.clip(0, 1),
                          (1.0, 1.0, 1.0), PostprocessConfig())["margin"] == {"regions": 1, "ml": 3.7}
    # A lesion that bulges out of the liver, called tumor inside it: the tissue beyond is reference tumor.
    liver, _, ball = liver_block(outside=20)
    lesion = ball(20, 45, 20, 12)
    image = np.where(liver | lesion, np.where(lesion, 50.0, 110.0), -100.0) + np.random.default_rng(0).normal(0, 8, liver.shape)
    labelmap = np.where(lesion & liver, 2, np.where(liver, 1, 0)).astype(np.uint8)
    label = np.where(lesion, 2, np.where(liver, 1, 0)).astype(np.uint8)
    beyond = review_regions(SimpleNamespace(reclassified=[{"rule": "beyond", "volume_ml": 2.0}], labelmap=labelmap),
                            image, label, (1.0, 1.0, 1.0), PostprocessConfig(beyond_review_mm=BEYOND_REVIEW_MM))
    assert beyond["beyond"]["in_reference_tumor"] == 1.0
    fat = np.where(lesion & ~liver, -100.0, image)  # nothing of the lesion's density beyond the liver
    assert review_regions(SimpleNamespace(reclassified=[{"rule": "beyond", "volume_ml": 2.0}], labelmap=labelmap),
                          fat, label, (1.0, 1.0, 1.0), PostprocessConfig(beyond_review_mm=BEYOND_REVIEW_MM)
                          )["beyond"]["in_reference_tumor"] is None


def test_drawn_lesion_has_its_size_density_and_stays_in_the_liver():
    from liverseg_train.lesion_probe import draw_lesion

    spacing = (2.0, 1.5, 1.5)
    image = np.full((60, 100, 100), 100.0, np.float32)
    liver = np.zeros(image.shape, bool)
    liver[5:55, 10:90, 10:90] = True
    out, lesion = draw_lesion(image, liver, spacing, 40.0, np.random.default_rng(0))
    sphere = 4 / 3 * np.pi * 20.0 ** 3 / np.prod(spacing)
    assert 0.85 ** 3 * 0.9 * sphere < lesion.sum() < 1.15 ** 3 * 1.1 * sphere  # axes 0.85-1.15 x the radius
    assert not (lesion & ~liver).any() and np.array_equal(out[~liver], image[~liver])
    core = ndimage.binary_erosion(lesion, iterations=2)  # inside the soft margin
    assert abs(float(np.mean(out[core])) - 55.0) < 3.0  # -45 HU
    big_out, big = draw_lesion(image, liver, spacing, 110.0, np.random.default_rng(0))
    assert big.sum() > 5 * lesion.sum() and not (big & ~liver).any()  # larger than the liver allows: clipped


def test_lesion_probe_scores_a_model_by_the_share_it_calls_tumor():
    from liverseg.labels import LIVER, TUMOR
    from liverseg_train.lesion_probe import probe_lesion_sizes, report_lines

    spacing = (2.0, 2.0, 2.0)
    image = np.full((70, 90, 90), 100.0, np.float32)
    liver = np.zeros(image.shape, bool)
    liver[5:65, 5:85, 5:85] = True

    def by_density(img):  # finds every lesion, whatever its size
        return np.where(liver, np.where(img < 80, TUMOR, LIVER), 0)

    def small_only(img):  # calls a dark region tumor only while it is small, as the bundled models tend to
        dark = liver & (img < 80)
        return np.where(liver, np.where(dark & (dark.sum() * 8 / 1000 < 50), TUMOR, LIVER), 0)

    sizes = (20.0, 60.0)
    perfect = probe_lesion_sizes(by_density, image, liver, spacing, sizes, places=2)
    assert all(v > 0.95 for v in perfect["share_called_tumor"].values()) and perfect["false_tumor_ml"] == 0
    blind = probe_lesion_sizes(small_only, image, liver, spacing, sizes, places=2)
    assert blind["share_called_tumor"]["20"] > 0.95 and blind["share_called_tumor"]["60"] == 0
    assert report_lines({"a": blind})[-1].startswith("| a | 1.00 | 0.00 |")


def test_lesion_study_scores_found_lesions_dice_and_false_tumor():
    from liverseg.labels import LIVER, TUMOR
    from liverseg_train.lesion_probe import draw_lesions, study_lesions, study_report_lines

    spacing = (2.0, 2.0, 2.0)
    image = np.full((60, 90, 90), 100.0, np.float32)
    liver = np.zeros(image.shape, bool)
    liver[5:55, 5:85, 5:85] = True
    drawn, lesions = draw_lesions(image, liver, spacing, np.random.default_rng(3))
    assert 1 <= ndimage.label(lesions)[1] <= 6 and not (lesions & ~liver).any()

    def by_density(img):
        return np.where(liver, np.where(img < 85, TUMOR, LIVER), 0)

    def with_false_tumor(img):  # finds them all, and calls an 8 mL block in a corner of the liver tumor too
        out = by_density(img)
        out[40:50, 70:80, 70:80] = TUMOR
        return out

    good = study_lesions(by_density, image, liver, spacing, draws=2)
    assert good["lesion_dice"] > 0.8 and good["found"] == good["lesions"] >= 8 and good["false_tumor_ml"] < 1.0
    blind = study_lesions(lambda img: np.where(liver, LIVER, 0), image, liver, spacing, draws=2)
    assert blind["lesion_dice"] == 0 and blind["found"] == 0 and blind["lesions"] == good["lesions"]
    noisy = study_lesions(with_false_tumor, image, liver, spacing, draws=2)
    assert noisy["false_tumor_ml"] > 0.5 and noisy["lesion_dice"] < good["lesion_dice"]
    assert study_report_lines({"a": blind})[-1].startswith("| a | 0.000 | 0 of ")


def test_edge_study_draws_lesions_that_bulge_out_of_the_liver_and_scores_what_the_result_keeps():
    from liverseg.labels import LIVER, TUMOR
    from liverseg_train.lesion_probe import draw_edge_lesions, edge_report_lines, study_edge_lesions

    spacing = (2.0, 2.0, 2.0)
    image = np.full((40, 90, 90), -1000.0, np.float32)  # air around a body of fat with a 100 HU liver in it
    image[:, 5:85, 5:85] = -100.0
    liver = np.zeros(image.shape, bool)
    liver[:, 25:65, 25:65] = True
    image[liver] = 100.0
    drawn, lesions = draw_edge_lesions(image, liver, spacing, np.random.default_rng(1))
    bulge = lesions & ~liver
    assert bulge.sum() > 0.2 * lesions.sum() and (lesions & liver).sum() > 0.2 * lesions.sum()  # across the capsule
    assert not (lesions[:, :5].any() or lesions[:, 85:].any())  # never outside the body
    core = ndimage.binary_erosion(bulge, iterations=2)
    assert 20.0 < float(np.mean(drawn[core])) < 85.0  # beyond the liver: liver density minus 25-70 HU, not fat
    away = ~ndimage.binary_dilation(lesions, iterations=6)  # beyond the soft margin: (almost) untouched
    assert np.abs(drawn[away] - image[away]).max() < 2.0

    def follows(img):  # a model whose liver and tumor follow the lesion out of the healthy outline
        dark = (img > 0) & (img < 90)
        return np.where(dark, TUMOR, np.where(liver, LIVER, 0))

    def clipped(img):  # one that finds the lesion but keeps the healthy outline
        return np.where(liver, np.where(img < 90, TUMOR, LIVER), 0)

    good = study_edge_lesions(follows, image, liver, spacing, draws=2)
    assert good["bulge_kept"] > 0.9 and good["bulge_tumor"] > 0.9 and good["liver_dice"] > 0.98
    assert good["found"] == good["lesions"] >= 2 and good["false_tumor_ml"] < 1.0
    cut = study_edge_lesions(clipped, image, liver, spacing, draws=2)
    assert cut["bulge_kept"] == 0 and cut["bulge_tumor"] == 0 and cut["lesions"] == good["lesions"]
    assert cut["liver_dice"] < good["liver_dice"] and cut["lesion_dice"] < good["lesion_dice"]
    assert edge_report_lines({"a": cut})[-1].startswith("| a | ")


def test_evaluate_refuses_lesion_measurements_that_would_average_nothing(tmp_path, tiny_model_path):
    from liverseg_train.evaluate import evaluate_cases

    for bad in ({"lesion_sizes_mm": (30.0,), "lesion_places": 0}, {"lesion_draws": -1}, {"lesion_sizes_mm": (0.0,)},
                {"edge_draws": -2}):
        with pytest.raises(ValueError, match="Lesion measurements"):
            evaluate_cases(tiny_model_path, [], tmp_path / "rep", device="cpu", **bad)
    assert not (tmp_path / "rep").exists()  # refused before any work
