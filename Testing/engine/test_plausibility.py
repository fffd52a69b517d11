"""A finished segmentation is checked before it is reported (issue: never a silent wrong result): an empty result
is an error, a liver cut by the scan's edge or on the patient's left is reported, an unusual volume is flagged."""
import numpy as np
import pytest

from liverseg.plausibility import MIRROR_RATIO, NoLiverFound, check_result, mirror_warning

SPACING = (2.0, 1.0, 1.0)  # canonical: slices inferior->superior, rows anterior->posterior, columns right->left


def _body(shape=(100, 200, 200)):
    hu = np.full(shape, -1000, np.int16)
    hu[:, 20:180, 20:180] = 40
    return hu


def _liver(shape=(100, 200, 200), z=slice(30, 70), cols=slice(30, 100)):
    liver = np.zeros(shape, bool)
    liver[z, 60:140, cols] = True  # 80 slices-mm x 80 mm x 70 mm = 40 x 80 x 70 voxels of 2 mm^3 = 896 mL
    return liver


def test_empty_result_is_an_error():
    with pytest.raises(NoLiverFound, match="No liver"):
        check_result(np.zeros((10, 20, 20), bool), _body((10, 20, 20)), SPACING)


def test_a_complete_liver_on_the_right_gives_no_warning():
    assert check_result(_liver(), _body(), SPACING) == []


@pytest.mark.parametrize("z, edge", [(slice(0, 40), "lowest (inferior) slice"), (slice(60, 100), "highest (superior) slice")])
def test_a_liver_cut_by_the_scan_end_is_reported_as_partial(z, edge):
    (warning,) = check_result(_liver(z=z), _body(), SPACING)
    assert edge in warning and "partial" in warning


def test_one_voxel_row_on_the_edge_is_not_called_partial():
    liver = _liver()
    liver[0, 100, 50:55] = True  # 5 mm^2 on the lowest slice: below the 1 cm^2 rule
    assert check_result(liver, _body(), SPACING) == []


def test_a_liver_on_the_patients_left_is_reported():
    (warning,) = check_result(_liver(cols=slice(110, 180)), _body(), SPACING)
    assert "left side" in warning and "orientation" in warning


def test_unusual_volume_of_a_complete_liver_is_flagged():
    small = np.zeros((100, 200, 200), bool)
    small[40:65, 80:120, 40:80] = True  # 25 x 40 x 40 voxels x 2 mm^3 = 80 mL
    (warning,) = check_result(small, _body(), SPACING)
    assert "80 mL" in warning and "unusual" in warning


def test_a_complete_liver_smaller_than_any_liver_is_no_liver():
    """Scattered voxels on a scan that misses the liver are not a result; a small volume where the scan ends inside
    the liver (its dome on the last slice) is a partial liver and is kept, with the warning, unless it is a sliver
    under 5 mL."""
    stray = np.zeros((100, 200, 200), bool)
    stray[40:45, 80:100, 40:60] = True  # 5 x 20 x 20 voxels x 2 mm^3 = 4 mL
    with pytest.raises(NoLiverFound, match="4.0 mL"):
        check_result(stray, _body(), SPACING)
    dome = np.zeros((100, 200, 200), bool)
    dome[95:, 70:110, 30:70] = True  # 5 x 40 x 40 voxels x 2 mm^3 = 16 mL
    (warning,) = check_result(dome, _body(), SPACING)
    assert "highest (superior) slice" in warning and "partial" in warning
    with pytest.raises(NoLiverFound, match="4.0 mL of liver-like tissue at the edge"):  # a sliver is not a result
        check_result(np.roll(stray, 55, axis=0), _body(), SPACING)


def test_cli_reports_an_empty_result_as_an_error_and_writes_nothing(tmp_path, phantom, constant_model, capsys):
    import SimpleITK as sitk

    from liverseg.cli import main

    ct = tmp_path / "ct.nii.gz"
    img = sitk.GetImageFromArray(phantom[0])
    img.SetSpacing((3.0, 3.0, 5.0))
    sitk.WriteImage(img, str(ct))
    code = main(["segment", str(ct), "-o", str(tmp_path / "seg.nii.gz"), "--model", str(constant_model(-20.0)), "-q"])
    assert code == 1 and "No liver was found" in capsys.readouterr().err
    assert not (tmp_path / "seg.nii.gz").exists()


def test_mirror_warning_needs_clearly_more_liver_in_the_mirrored_image():
    assert mirror_warning(10000.0, 3000.0) is None
    assert mirror_warning(10000.0, 10000.0 * MIRROR_RATIO * 0.99) is None
    assert "left-right" in mirror_warning(3000.0, 10000.0)
    assert mirror_warning(0.0, 500.0) is not None  # nothing as given, liver when mirrored
    # A scan of the top of the liver: the mirrored heart can fire the check with a correct header; the warning says
    # so instead of calling the header wrong.
    top = mirror_warning(3000.0, 10000.0, cut_below=True)
    assert "heart" in top and "probably wrong" not in top
    assert mirror_warning(10000.0, 3000.0, cut_below=True) is None
