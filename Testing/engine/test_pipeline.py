"""End-to-end engine behaviour with a small random-weight model: geometry, orientation, progress, cancel."""
import threading

import numpy as np
import pytest

from liverseg import Cancelled, PostprocessConfig, Segmenter
from liverseg.inference import InferenceOptions

from helpers import random_rotation_matrix


@pytest.fixture(scope="module")
def segmenter(tiny_model_path):
    return Segmenter(tiny_model_path, "cpu", InferenceOptions(batch_size=4))


def _raw(segmenter, vol, m):
    # No postprocessing: compare the network's own decisions voxel for voxel.
    return segmenter.segment(vol, m, postprocessing=PostprocessConfig(enabled=False)).labelmap


def test_output_is_on_the_input_grid(segmenter, phantom):
    vol, _, m = phantom
    res = segmenter.segment(vol, m)
    assert res.labelmap.shape == vol.shape and res.labelmap.dtype == np.uint8
    assert set(np.unique(res.labelmap)) <= {0, 1, 2}
    np.testing.assert_array_equal(res.ijk_to_ras, m)
    assert {"inference", "postprocessing", "total"} <= set(res.timings)


def test_same_ct_in_ras_lps_permuted_and_oblique_gives_the_same_segmentation(segmenter, phantom):
    vol, _, m = phantom
    ref = _raw(segmenter, vol, m)
    # RAS-ordered storage: i and j reversed, directions negated.
    ras = vol[:, ::-1, ::-1]
    m_ras = m.copy()
    m_ras[:3, 0] *= -1
    m_ras[:3, 1] *= -1
    np.testing.assert_array_equal(_raw(segmenter, ras, m_ras)[:, ::-1, ::-1], ref)
    # Axes permuted (stored sagittally: numpy [i, k, j]).
    perm = np.transpose(vol, (2, 0, 1))
    m_perm = np.eye(4)
    m_perm[:3, 0], m_perm[:3, 1], m_perm[:3, 2] = m[:3, 1], m[:3, 2], m[:3, 0]  # voxel axes (j, k, i)
    np.testing.assert_array_equal(np.transpose(_raw(segmenter, perm, m_perm), (1, 2, 0)), ref)
    # Oblique direction (rotated 15-25 degrees): same voxels, closest canonical axes.
    m_obl = m.copy()
    m_obl[:3, :3] = random_rotation_matrix(7, 20) @ m[:3, :3]
    np.testing.assert_array_equal(_raw(segmenter, vol, m_obl), ref)


def test_progress_is_monotonic_and_reaches_one(segmenter, phantom):
    vol, _, m = phantom
    seen = []
    segmenter.segment(vol, m, progress=lambda f, msg: seen.append(f))
    assert seen[-1] == 1.0 and all(b >= a for a, b in zip(seen, seen[1:])) and len(seen) > 3


def test_cancel_stops_the_run(segmenter, phantom):
    vol, _, m = phantom
    event = threading.Event()
    calls = []

    def progress(f, msg):
        calls.append(f)
        if f > 0.1:
            event.set()

    with pytest.raises(Cancelled):
        segmenter.segment(vol, m, progress=progress, cancel=event)
    assert calls[-1] < 1.0


def test_in_memory_segment_refuses_an_existing_output_before_inference(tiny_model_path, phantom, tmp_path, monkeypatch):
    import liverseg
    from liverseg import InputError
    from liverseg.pipeline import Segmenter as S

    vol, _, m = phantom
    out = tmp_path / "exists.nii.gz"
    out.write_bytes(b"keep me")
    monkeypatch.setattr(S, "segment", lambda *a, **k: pytest.fail("inference ran before the output check"))
    with pytest.raises(InputError, match="overwrite"):
        liverseg.segment(vol, m, model=tiny_model_path, device="cpu", output=out)
    assert out.read_bytes() == b"keep me"


def test_thin_slice_scans_feed_neighbours_at_the_cards_context_spacing(tiny_model_path):
    """A card with context_spacing_mm=2 on a 0.5 mm scan: the network's neighbour channels are 4 slices away."""
    import dataclasses

    import torch

    from liverseg.inference import make_predictor
    from liverseg.modelfile import load_model

    model = load_model(tiny_model_path)
    model.card["preprocessing"]["context_spacing_mm"] = 2.0
    predictor = make_predictor(model, torch.device("cpu"), InferenceOptions(roi=False))
    seen = []
    forward = predictor._forward_batched
    predictor._forward_batched = lambda x: (seen.append(x.clone()), forward(x))[1]
    pre = torch.arange(30, dtype=torch.float32)[:, None, None].expand(30, 16, 16) / 30  # slice value = index / 30
    predictor.predict_preprocessed(pre.contiguous(), dz=0.5)
    x = torch.cat(seen)
    centre = torch.round(x[:, 1, 0, 0] * 30)
    assert torch.equal(torch.round(x[10, :, 0, 0] * 30), torch.tensor([6.0, 10.0, 14.0])) and centre[10] == 10
    assert dataclasses.replace(model.preprocessing).context_stride(0.5) == 4


def test_test_time_augmentation_averages_scales(tiny_model_path, phantom):
    vol, _, m = phantom
    plain = Segmenter(tiny_model_path, "cpu").segment(vol, m, postprocessing=PostprocessConfig(enabled=False))
    same = Segmenter(tiny_model_path, "cpu", InferenceOptions(tta_scales=(1.0,))).segment(
        vol, m, postprocessing=PostprocessConfig(enabled=False))
    np.testing.assert_array_equal(same.labelmap, plain.labelmap)  # the mean of two identical runs
    assert same.slices_run == 2 * plain.slices_run
    tta = Segmenter(tiny_model_path, "cpu", InferenceOptions(tta_scales=(0.8, 1.25))).segment(
        vol, m, postprocessing=PostprocessConfig(enabled=False))
    assert tta.labelmap.shape == vol.shape and tta.slices_run > plain.slices_run


def test_an_ensemble_averages_its_members_probabilities(tiny_model_path, constant_model, phantom):
    """Two members: a model that says "liver" everywhere (logit +20 -> p = 255/255) and one that says "nothing"
    (-20 -> 0): the mean, 128/255, is above the 0.5 threshold (128 >= round(0.5 * 255) = 128), so every voxel is
    liver; and an ensemble of a model with itself equals the model alone."""
    from liverseg.inference import EnsemblePredictor

    vol, _, m = phantom
    raw = PostprocessConfig(enabled=False)
    both = Segmenter(f"{constant_model(20.0)},{constant_model(-20.0)}", "cpu", InferenceOptions(roi=False))
    assert isinstance(both.predictor, EnsemblePredictor) and both.name == "constant+20+constant-20"
    result = both.segment(vol, m, postprocessing=raw, tumor=False)
    assert (result.labelmap == 1).all() and result.model == "constant+20+constant-20"
    alone = Segmenter(tiny_model_path, "cpu").segment(vol, m, postprocessing=raw)
    twice = Segmenter([tiny_model_path, tiny_model_path], "cpu").segment(vol, m, postprocessing=raw)
    np.testing.assert_array_equal(twice.labelmap, alone.labelmap)
    assert twice.slices_run == 2 * alone.slices_run


def test_the_coarse_pass_reports_the_same_probe_count_as_a_separate_probe(phantom, tiny_model_path):
    """The mirrored-header check reuses the coarse pass's liver count for the image as given and probes only the
    mirrored image; both must count the same way (same slices, same neighbours, same threshold)."""
    from liverseg.orientation import canonical_transform, to_canonical

    vol, _, m = phantom
    seg = Segmenter(tiny_model_path, "cpu")
    t = canonical_transform(vol.shape, m)
    canonical = np.ascontiguousarray(to_canonical(vol, t))
    probs = seg.predictor.predict(canonical, t.spacing)
    separate = seg.predictor.probe_liver_pixels(canonical, t.spacing)
    assert probs.probe_liver_pixels is not None and separate > 0
    assert abs(probs.probe_liver_pixels - separate) <= 2 + 0.005 * separate  # batching may move a pixel at the edge
    no_roi = Segmenter(tiny_model_path, "cpu", InferenceOptions(roi=False)).predictor.predict(canonical, t.spacing)
    assert no_roi.probe_liver_pixels is None  # no coarse pass: the check probes the image itself


def test_tumor_the_density_rules_overrode_is_named_with_its_ras_position(segmenter, phantom, monkeypatch):
    """The network's finding that a density rule reported otherwise comes back as a warning with where it is (RAS,
    as Slicer's data probe shows it) and as structured data, on the input's own geometry (here stored sagittally)."""
    from liverseg import pipeline
    from liverseg.postprocess import Postprocessed, Reclassified

    vol, _, m = phantom
    perm = np.ascontiguousarray(np.transpose(vol, (2, 0, 1)))
    m_perm = np.eye(4)
    m_perm[:3, 0], m_perm[:3, 1], m_perm[:3, 2] = m[:3, 1], m[:3, 2], m[:3, 0]  # voxel axes (j, k, i)
    m_perm[:3, 3] = m[:3, 3]
    real = pipeline.postprocess

    def with_a_reclassified_region(liver, tumor, spacing, config=None, image_hu=None):
        out = real(liver, tumor, spacing, config, image_hu=image_hu)
        return Postprocessed(out.liver, out.tumor, [Reclassified("cyst", 4.25, 7.0, (10.0, 40.0, 50.0))])

    monkeypatch.setattr(pipeline, "postprocess", with_a_reclassified_region)
    res = segmenter.segment(perm, m_perm, require_liver=False)
    # canonical (slice 10, row 40, column 50) is the input voxel i=40 (row), j=10 (slice), k=50 (column) here
    expected = tuple((m_perm @ np.array([40.0, 10.0, 50.0, 1.0]))[:3])
    (region,) = res.reclassified
    assert region["rule"] == "cyst" and region["centre_ras"] == pytest.approx(expected)
    (w,) = [w for w in res.warnings if "density rules" in w]
    assert "4.2 mL at R {:.0f}, A {:.0f}, S {:.0f} (mean 7 HU)".format(*expected) in w and "a cyst?" in w


def test_regions_to_review_are_worded_in_one_line_per_kind():
    """Density-rule regions, possible lesion margins and tissue beyond the liver are different findings: one line
    each, largest first, none when there is nothing to review."""
    from liverseg.pipeline import review_warnings

    def region(rule, ml):
        return {"rule": rule, "volume_ml": ml, "mean_hu": 60.0, "centre_ras": (1.0, 2.0, 3.0)}
    assert review_warnings([]) == []
    rules, margins = review_warnings([region("margin", 27.0), region("cyst", 3.0), region("margin", 2.4)])
    assert rules.startswith("The network called 1 region(s) tumor") and "3.0 mL at R 1, A 2, S 3" in rules
    assert margins.startswith("2 tumor(s) may be larger than segmented: 29.4 mL of darker liver") and "margin" not in rules
    assert margins.index("27.0 mL at R 1, A 2, S 3 (mean 60 HU)") < margins.index("2.4 mL")
    (only,) = review_warnings([region("margin", 5.0)])
    assert only.startswith("1 tumor(s) may be larger")
    rules, beyond = review_warnings([region("beyond", 4.0), region("cyst", 1.0)])
    assert beyond.startswith("1 tumor(s) may extend beyond the liver: 4.0 mL of tissue") and "4.0 mL" not in rules


def test_the_fine_pass_takes_the_liver_from_the_whole_slice_and_the_tumor_from_the_crop(tiny_model_path):
    """A stand-in network that tells the two views apart (its logits say whether it saw the whole 64-pixel slice):
    the liver probabilities must come from the whole-slice pass everywhere, the tumor's from the crop around the
    coarse liver, zero outside it; with ``roi=False`` both come from the whole slice."""
    import torch

    from liverseg.inference import make_predictor
    from liverseg.modelfile import load_model

    class ViewSensitive(torch.nn.Module):
        def forward(self, x):  # liver "found" in the coarse pass only in a 16 x 16 square
            whole = x.shape[-1] == 64
            out = torch.full((x.shape[0], 2, *x.shape[2:]), -10.0)
            if whole:
                out[:, 0] = 10.0 if x[0, 1, 0, 0] > 0.5 else -10.0  # fine slices (value 1) everywhere liver
                out[:, 0, 24:40, 24:40] = 10.0
                out[:, 1] = -3.0  # the whole-slice view's tumor logit
            else:
                out[:, 1] = 3.0  # the crop's tumor logit
            return out

    model = load_model(tiny_model_path)
    pre = torch.zeros(12, 64, 64)
    pre[:, 24:40, 24:40] = 1.0
    for roi in (True, False):
        predictor = make_predictor(model, torch.device("cpu"), InferenceOptions(roi=roi, margin_xy_mm=8.0))
        predictor.network = ViewSensitive()
        probs = predictor.predict_preprocessed(pre, dz=4.0)
        liver = probs.liver.astype(float) / 255
        tumor = probs.tumor.astype(float) / 255
        z0, z1 = probs.roi_slices
        assert np.allclose(liver[z0:z1, 24:40, 24:40], torch.sigmoid(torch.tensor(10.0)).item(), atol=0.01)
        if roi:  # the crop: the coarse liver's box (24..39) plus 8 mm = 2 pixels of 4 mm
            inside = np.zeros((64, 64), bool)
            inside[22:42, 22:42] = True
            assert np.allclose(tumor[z0:z1][:, inside], torch.sigmoid(torch.tensor(3.0)).item(), atol=0.01)
            assert (tumor[z0:z1][:, ~inside] == 0).all()
        else:
            assert np.allclose(tumor, torch.sigmoid(torch.tensor(-3.0)).item(), atol=0.01)
