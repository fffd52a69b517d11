"""Each dataset adapter on a small fixture built in that dataset's real on-disk layout."""
import numpy as np
import pytest
import SimpleITK as sitk

from helpers import write_dicom_series
from liverseg.benchmark import synthetic_case
from liverseg_train.datasets import find_cases


@pytest.fixture(scope="module")
def case():
    vol, lab = synthetic_case((6, 32, 32), (5.0, 6.0, 6.0), seed=3, tumors=2)
    assert (lab == 2).any()
    return vol, lab


def _nifti(path, array, spacing=(6.0, 6.0, 5.0)):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def test_lits(tmp_path, case):
    vol, lab = case
    _nifti(tmp_path / "batch1" / "volume-7.nii", vol)
    _nifti(tmp_path / "batch1" / "segmentation-7.nii", lab)
    _nifti(tmp_path / "batch1" / "volume-12.nii", vol)
    _nifti(tmp_path / "batch1" / "segmentation-12.nii", lab)
    cases = find_cases("lits", tmp_path)
    assert [c.case_id for c in cases] == ["lits_7", "lits_12"]
    image, label = cases[0].load()
    np.testing.assert_array_equal(image.array, vol)
    np.testing.assert_array_equal(label, lab)


def test_msd(tmp_path, case):
    vol, lab = case
    _nifti(tmp_path / "imagesTr" / "liver_3.nii.gz", vol)
    _nifti(tmp_path / "labelsTr" / "liver_3.nii.gz", lab)
    _nifti(tmp_path / "imagesTs" / "liver_99.nii.gz", vol)  # test images have no labels: ignored
    cases = find_cases("msd", tmp_path)
    assert [c.case_id for c in cases] == ["msd_liver_3"]
    np.testing.assert_array_equal(cases[0].load()[1], lab)


@pytest.mark.parametrize("zipped", [False, True])
def test_ircadb_merges_every_tumor_mask_into_label_2(tmp_path, case, zipped):
    vol, lab = case
    top = tmp_path / "3Dircadb1"  # as 3Dircadb1.zip unpacks; the zip itself stays beside it
    root = top / "3Dircadb1.1"
    write_dicom_series(root / "PATIENT_DICOM", vol, spacing=(6.0, 6.0, 5.0))
    write_dicom_series(root / "MASKS_DICOM" / "liver", (lab >= 1).astype(np.int16) * 255, spacing=(6.0, 6.0, 5.0), series_uid="1.2.3.4.1")
    # Two tumor masks whose union is the tumor label (IRCADb stores one folder per lesion).
    halves = [(lab == 2) & (np.arange(lab.shape[2]) < 16), (lab == 2) & (np.arange(lab.shape[2]) >= 16)]
    for i, half in enumerate(halves, start=1):
        write_dicom_series(root / "MASKS_DICOM" / f"livertumor{i:02d}", half.astype(np.int16) * 255,
                           spacing=(6.0, 6.0, 5.0), series_uid=f"1.2.3.4.{i + 1}")
    write_dicom_series(root / "MASKS_DICOM" / "portalvein", np.zeros_like(vol), spacing=(6.0, 6.0, 5.0), series_uid="1.2.3.5")
    (tmp_path / "3Dircadb1.zip").write_bytes(b"PK")  # the top-level download is not a case
    if zipped:  # as downloaded: PATIENT_DICOM.zip and MASKS_DICOM.zip inside each patient folder
        import shutil

        for name in ("PATIENT_DICOM", "MASKS_DICOM"):
            shutil.make_archive(str(root / name), "zip", root, name)
            shutil.rmtree(root / name)
    cases = find_cases("ircadb", tmp_path)
    assert [c.case_id for c in cases] == ["ircadb_1"]
    image, label = cases[0].load()
    np.testing.assert_array_equal(image.array, vol)
    np.testing.assert_array_equal(label, lab)


def test_chaos_pairs_slices_by_file_name(tmp_path, case):
    vol, lab = case
    # CHAOS names files so that name order is the slice order; its zip unpacks to CHAOS_Train_Sets/Train_Sets/CT.
    ct = tmp_path / "CHAOS_Train_Sets" / "Train_Sets" / "CT"
    write_dicom_series(ct / "1" / "DICOM_anon", vol, spacing=(6.0, 6.0, 5.0))
    ground = ct / "1" / "Ground"
    ground.mkdir(parents=True)
    for k in range(vol.shape[0]):
        sitk.WriteImage(sitk.GetImageFromArray(((lab[k] >= 1) * 255).astype(np.uint8)), str(ground / f"liver_GT_{k:03d}.png"))
    cases = find_cases("chaos", tmp_path)
    assert [c.case_id for c in cases] == ["chaos_1"]
    image, label = cases[0].load()
    np.testing.assert_array_equal(image.array, vol)
    np.testing.assert_array_equal(label, (lab >= 1).astype(np.uint8))
    assert image.spacing[2] == pytest.approx(5.0)


def test_slices2d_maps_grey_values_and_warns(tmp_path, case, caplog):
    vol, lab = case
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    grey = np.clip((vol[3].astype(float) + 100) / 500 * 255, 0, 255).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(tmp_path / "images" / "p1_s3.png"))
    sitk.WriteImage(sitk.GetImageFromArray(((lab[3] >= 1) * 255).astype(np.uint8)), str(tmp_path / "masks" / "p1_s3.png"))
    with caplog.at_level("WARNING"):
        cases = find_cases("slices2d", tmp_path)
    assert "no Hounsfield" in caplog.text
    image, label = cases[0].load()
    assert image.array.shape == (1, 32, 32) and not cases[0].hu
    assert set(np.unique(label)) <= {0, 1, 2} and label.sum() > 0


def test_generic_with_label_map(tmp_path, case):
    vol, lab = case
    organs = np.where(lab >= 1, 6, 0).astype(np.uint8)
    organs[0, :3, :3] = 1  # spleen in the source labelling: must become background
    _nifti(tmp_path / "a_image.nii.gz", vol)
    _nifti(tmp_path / "a_label.nii.gz", organs)
    cases = find_cases("generic", tmp_path, label_map={6: 1})
    image, label = cases[0].load()
    np.testing.assert_array_equal(label, (lab >= 1).astype(np.uint8))


def test_unknown_kind_and_empty_folder(tmp_path):
    with pytest.raises(ValueError):
        find_cases("nope", tmp_path)
    with pytest.raises(FileNotFoundError, match="No lits cases"):
        find_cases("lits", tmp_path)
