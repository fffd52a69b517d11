"""Checks on the real development CT in ../shared/data (skipped where that folder is absent, e.g. for users)."""
import numpy as np
import pytest

from helpers import SHARED_DATA, shared_case
from liverseg.io import read_image
from liverseg.orientation import canonical_transform, to_canonical


@pytest.mark.parametrize("dicom, nifti", [("chaos_eval_ct", "chaos_eval_ct"), ("ts_example_20sl", "ts_example_dicom_20sl")])
def test_dicom_series_reads_like_the_nifti_of_the_same_scan(dicom, nifti):
    folder = SHARED_DATA / "dicom" / dicom
    if not folder.exists():
        pytest.skip(f"{folder} not present (development data only)")
    a = read_image(folder)
    b = read_image(shared_case(nifti)[0])
    ca = to_canonical(a.array, canonical_transform(a.array.shape, a.ijk_to_ras))
    cb = to_canonical(b.array, canonical_transform(b.array.shape, b.ijk_to_ras))
    np.testing.assert_array_equal(ca, cb)
    assert a.spacing == pytest.approx(b.spacing, abs=1e-3)


@pytest.mark.slow
def test_default_model_finds_the_liver_on_real_ct_in_every_stored_orientation():
    """The four development cases are stored RAS, LPS, LPI and LAI: the liver must come out where the label is.
    (These cases were used for training, so this checks orientation handling, not accuracy.)"""
    from liverseg import Segmenter
    from liverseg.metrics import dice

    seg = Segmenter(None, "cpu")
    for name in ("ts_example_ct_3mm", "chaos_eval_ct", "amos_0001_slab", "ts_example_dicom_20sl"):
        img_path, lab_path = shared_case(name)
        image, label = read_image(img_path), read_image(lab_path).array
        result = seg.segment(image.array, image.ijk_to_ras)
        assert dice(result.labelmap >= 1, label >= 1) > 0.8, name
        assert not any("mirrored" in w for w in result.warnings), (name, result.warnings)


@pytest.mark.slow
@pytest.mark.parametrize("bile_hu", [8, 30])
def test_default_model_does_not_call_a_gallbladder_or_a_cyst_tumor(bile_hu):
    """Real CT (CHAOS) with a water-density cyst inserted inside the liver and a gallbladder-like pouch at its
    inferior edge, of clear bile (8 HU) or of the denser bile real scans show (30 HU: about 27 and 34 HU in two
    unseen scans on which models called the gallbladder's edge tumor): neither may come out as tumor, and the cyst
    must stay liver."""
    from scipy import ndimage

    from liverseg import Segmenter
    from liverseg.orientation import canonical_transform, from_canonical, to_canonical

    img_path, lab_path = shared_case("chaos_eval_ct")
    image, label = read_image(img_path), read_image(lab_path).array
    t = canonical_transform(image.array.shape, image.ijk_to_ras)
    ct, liver = to_canonical(image.array, t).copy(), to_canonical(label, t) >= 1
    dz, dy, dx = t.spacing
    zz, yy, xx = np.ogrid[tuple(slice(0, n) for n in ct.shape)]
    rng = np.random.default_rng(0)
    inner = ndimage.binary_erosion(liver, iterations=12)
    cz, cy, cx = np.argwhere(inner)[len(np.argwhere(inner)) // 2]
    cyst = ((zz - cz) * dz) ** 2 + ((yy - cy) * dy) ** 2 + ((xx - cx) * dx) ** 2 <= 12.0 ** 2
    zs = np.nonzero(liver.any(axis=(1, 2)))[0]
    gz = int(zs[len(zs) // 4])  # lower quarter of the liver
    edge = liver[gz] & ~ndimage.binary_erosion(liver[gz], iterations=2)
    gy, gx = np.argwhere(edge)[np.argmax(np.argwhere(edge)[:, 0])]  # the liver's most posterior edge point
    gall = ((zz - gz) * dz / 2.5) ** 2 + ((yy - gy) * dy) ** 2 + ((xx - gx) * dx) ** 2 <= 14.0 ** 2
    for mask, hu in ((cyst, 8), (gall, bile_hu)):
        ct[mask] = (hu + rng.normal(0, 10, mask.sum())).astype(ct.dtype)
    result = Segmenter(None, "cpu").segment(from_canonical(ct, t), image.ijk_to_ras)
    out = to_canonical(result.labelmap, t)
    assert (out[cyst] == 2).mean() < 0.02 and (out[gall] == 2).mean() < 0.02, \
        ((out[cyst] == 2).mean(), (out[gall] == 2).mean())
    assert (out[cyst] >= 1).mean() > 0.9  # the cyst is liver


@pytest.mark.slow
def test_a_large_lesion_is_segmented_or_its_margin_reported_never_silently_measured_small():
    """Real CT (CHAOS) with a 90 mm lesion 45 HU darker than the liver drawn deep into it. The default model
    segments large lesions too small (README, "Large lesions"); the result must then name the darker liver around
    the tumor for review (a "margin" region near the lesion, and a warning), so that a tumor volume of half the
    lesion never passes as a plain result. A model that segments three quarters of it needs no review."""
    from scipy import ndimage

    from liverseg import Segmenter
    from liverseg.orientation import canonical_transform, from_canonical, to_canonical

    img_path, lab_path = shared_case("chaos_eval_ct")
    image, label = read_image(img_path), read_image(lab_path).array
    t = canonical_transform(image.array.shape, image.ijk_to_ras)
    ct, liver = to_canonical(image.array, t).astype(np.float32), to_canonical(label, t) >= 1
    depth = ndimage.distance_transform_edt(liver, sampling=t.spacing)
    centre = np.unravel_index(np.argmax(depth), depth.shape)  # the liver's deepest point
    zz, yy, xx = np.ogrid[tuple(slice(0, n) for n in ct.shape)]
    lesion = liver & (sum(((g - c) * s) ** 2 for g, c, s in zip((zz, yy, xx), centre, t.spacing)) <= 45.0 ** 2)
    rng = np.random.default_rng(0)
    ct[lesion] += -45 + ndimage.gaussian_filter(rng.normal(0, 10, ct.shape), 1.5)[lesion]
    result = Segmenter(None, "cpu").segment(from_canonical(ct.astype(np.int16), t), image.ijk_to_ras)
    share = (to_canonical(result.labelmap, t)[lesion] == 2).mean()
    margins = [r for r in result.reclassified if r["rule"] == "margin"]
    if share >= 0.75:
        return
    lesion_ras = image.ijk_to_ras @ np.r_[np.argwhere(from_canonical(lesion, t)).mean(axis=0)[::-1], 1]
    assert any(np.linalg.norm(np.subtract(r["centre_ras"], lesion_ras[:3])) < 30 for r in margins), (share, margins)
    assert any("may be larger than segmented" in w for w in result.warnings)


@pytest.mark.slow
def test_liver_finding_shortcut_agrees_with_the_full_pass():
    """The coarse-then-fine shortcut runs the network on fewer slices (each over the whole field of view); on real
    CT it must give the same liver as running every slice."""
    from liverseg import Segmenter
    from liverseg.inference import InferenceOptions
    from liverseg.metrics import dice

    image = read_image(shared_case("ts_example_ct_3mm")[0])  # liver on 42 of 112 slices
    fast = Segmenter(None, "cpu").segment(image.array, image.ijk_to_ras)
    full = Segmenter(None, "cpu", InferenceOptions(roi=False)).segment(image.array, image.ijk_to_ras)
    assert full.slices_run == image.array.shape[0] and fast.roi_slices != (0, 0)
    # Each slice sees the same neighbours either way; only float rounding differs (other batch compositions),
    # flipping a few voxels at the threshold (measured: Dice 0.99999 on this case).
    assert dice(fast.labelmap >= 1, full.labelmap >= 1) > 0.999
    assert abs(fast.statistics["liver_volume_ml"] - full.statistics["liver_volume_ml"]) < 0.002 * full.statistics["liver_volume_ml"]


@pytest.mark.slow
def test_default_model_never_reports_a_partial_or_mirrored_scan_as_plain_success():
    """A slab that cuts through the liver is reported as partial; the same CT with its left-right axis mirrored in
    the header (the anatomy now appears on the wrong side) gives a warning or an error, never a plain result
    (measured: the model then labels a 173 mL organ on the true left, 124 HU, outside the liver: the spleen; the volume
    rule flags it)."""
    from liverseg import NoLiverFound, Segmenter

    img_path, _ = shared_case("amos_0001_slab")
    seg = Segmenter(None, "cpu")
    image = read_image(img_path)
    result = seg.segment(image.array, image.ijk_to_ras)
    assert any("partial" in w for w in result.warnings), result.warnings
    image = read_image(shared_case("chaos_eval_ct")[0])
    mirrored = np.diag([-1.0, 1.0, 1.0, 1.0]) @ image.ijk_to_ras
    try:
        result = seg.segment(image.array, mirrored)
    except NoLiverFound:
        return
    assert any("mirrored left-right" in w for w in result.warnings), result.warnings
    assert any("unusual" in w for w in result.warnings), result.warnings


def _slab(case: str, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """Slices k0..k1-1 of a shared case as a partial scan: its array and its own voxel-to-RAS matrix."""
    image = read_image(shared_case(case)[0])
    shift = np.eye(4)
    shift[2, 3] = k0  # voxel (i, j, 0) of the slab is voxel (i, j, k0) of the scan
    return np.ascontiguousarray(image.array[k0:k1]), image.ijk_to_ras @ shift


@pytest.mark.slow
def test_a_thin_slice_partial_scan_keeps_the_liver_on_its_first_and_last_slice():
    """16 slices of 2 mm cut from the middle of the CHAOS liver (a partial scan whose first and last slices go
    through the liver): those slices must be segmented like their neighbours (the postprocessing's closing used to
    erode the liver away from a scan's edge slices), and the result is reported as partial."""
    from liverseg import Segmenter
    from liverseg.metrics import dice

    k0, k1 = 30, 46
    result = Segmenter(None, "cpu").segment(*_slab("chaos_eval_ct", k0, k1))
    ref = read_image(shared_case("chaos_eval_ct")[1]).array[k0:k1] >= 1
    per_slice = [dice(result.labelmap[k] >= 1, ref[k]) for k in range(k1 - k0)]
    assert min(per_slice[0], per_slice[-1]) > 0.8 and min(per_slice[0], per_slice[-1]) > min(per_slice[1:-1]) - 0.1, per_slice
    assert any("partial" in w for w in result.warnings), result.warnings


@pytest.mark.slow
def test_a_scan_that_misses_the_liver_is_refused_and_one_that_ends_in_its_dome_is_kept():
    """Partial scans: slabs of the lower abdomen and pelvis below the liver (the network left 0.03 and 0.35 mL of
    scattered "liver" there, written as a result before) and a chest slab above the dome are refused with
    NoLiverFound; the 12 highest CHAOS slices (chest and the top of the dome, about 25 mL of reference liver) are
    segmented and reported as partial, without calling their (correct) header wrong."""
    from liverseg import NoLiverFound, Segmenter

    seg = Segmenter(None, "cpu")
    for k0, k1 in ((0, 30), (40, 68)):  # the liver starts at slice 70 of this scan
        with pytest.raises(NoLiverFound):
            seg.segment(*_slab("ts_example_ct_3mm", k0, k1))
    with pytest.raises(NoLiverFound):  # 4 slices of chest above the dome: a 0.9 mL sliver at the slab's edge
        seg.segment(*_slab("chaos_eval_ct", 0, 4))
    result = seg.segment(*_slab("chaos_eval_ct", 0, 12))  # slice 0 is the scan's top
    assert result.statistics["liver_volume_ml"] > 10, result.statistics
    assert any("partial" in w for w in result.warnings), result.warnings
    # Its header is right: the mirrored-image check (the mirrored heart looks like liver) must not call it wrong.
    assert not any("probably wrong" in w for w in result.warnings), result.warnings
    # Nor on 5 slices from the dome's first slice down (the liver touches both ends of the scan; about 25 mL).
    result = seg.segment(*_slab("chaos_eval_ct", 7, 12))
    assert 10 < result.statistics["liver_volume_ml"] < 40 and any("partial" in w for w in result.warnings)
    assert not any("probably wrong" in w for w in result.warnings), result.warnings
