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
