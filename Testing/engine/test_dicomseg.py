"""DICOM SEG output (issue 10): references to the source series, one segment per label with the label table's
codes, frames only where a segment is, masks equal to the labelmap voxel for voxel; refused (before inference)
where there is nothing to reference."""
import shutil

import numpy as np
import pytest

from helpers import SHARED_DATA, write_dicom_series
from liverseg.cli import main
from liverseg.dicomseg import Algorithm, load_sources, read_dicom_seg_masks, segment_masks, write_dicom_seg
from liverseg.io import read_image
from liverseg.labels import LABELS

hd = pytest.importorskip("highdicom", reason="DICOM SEG needs the dicom extra (highdicom)")
pydicom = pytest.importorskip("pydicom")


@pytest.fixture()
def series(tmp_path, phantom):
    return write_dicom_series(tmp_path / "ct", phantom[0][:10])


def _labelmap(shape):
    lab = np.zeros(shape, np.uint8)
    lab[2:7, 20:60, 20:70] = 1
    lab[4:6, 30:40, 30:40] = 2
    return lab


def test_dicom_seg_references_the_source_and_holds_the_labelmap(series, tmp_path):
    image = read_image(series)
    lab = _labelmap(image.array.shape)
    sources = load_sources(image.source_files)
    path = write_dicom_seg(tmp_path / "seg.dcm", lab, sources, Algorithm("liver-unet", "2.0.0"))

    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert ds.SeriesInstanceUID != sources[0].SeriesInstanceUID
    ref = ds.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in ref.ReferencedInstanceSequence} <= {s.SOPInstanceUID for s in sources}
    # frames: exactly the slices where each segment is (liver on 5 slices, tumor on 2)
    per_slice = [int(m.any(axis=(1, 2)).sum()) for m in np.moveaxis(segment_masks(lab), -1, 0)]
    assert int(ds.NumberOfFrames) == sum(per_slice) == 7
    for n, (item, spec) in enumerate(zip(ds.SegmentSequence, LABELS.values()), start=1):
        assert item.SegmentNumber == n and item.SegmentLabel == spec.name
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == spec.type.code
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == spec.category.code
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algo = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algo.AlgorithmName == "liver-unet" and algo.AlgorithmVersion == "2.0.0"
    back = read_dicom_seg_masks(path, [s.SOPInstanceUID for s in sources])
    np.testing.assert_array_equal(back, segment_masks(lab))
    # the frames sit where the source slices are (highdicom's own geometry check)
    seg = hd.seg.segread(str(path))
    assert set(seg.get_source_image_uids()[0][:2]) == {sources[0].StudyInstanceUID, sources[0].SeriesInstanceUID}


def test_dicom_seg_is_refused_for_nifti_or_uid_less_input_before_inference(tmp_path, series, capsys, monkeypatch):
    import liverseg.pipeline

    def refuse(*a, **k):
        raise AssertionError("inference started although the problem was detectable before")

    monkeypatch.setattr(liverseg.pipeline.Segmenter, "__init__", refuse)
    import SimpleITK as sitk

    nifti = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(next(series.iterdir()))), str(nifti))
    assert main(["segment", str(nifti), "-o", str(tmp_path / "s.dcm")]) == 1
    assert "needs a DICOM series" in capsys.readouterr().err
    # a series whose UIDs a de-identifier blanked: nothing to reference
    blank = tmp_path / "blank"
    shutil.copytree(series, blank)
    for f in blank.iterdir():
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID = ""
        ds.save_as(f)
    assert main(["segment", str(blank), "-o", str(tmp_path / "s.dcm")]) == 1
    assert "no StudyInstanceUID" in capsys.readouterr().err
    from liverseg import segment  # the Python API refuses it before inference too
    from liverseg.checks import InputError

    with pytest.raises(InputError, match="no StudyInstanceUID"):
        segment(str(blank), output=tmp_path / "s.dcm")
    assert not (tmp_path / "s.dcm").exists()


def test_empty_segmentation_is_not_written_as_dicom_seg(series, tmp_path):
    from liverseg.outputs import OutputError

    image = read_image(series)
    with pytest.raises(OutputError, match="empty"):
        write_dicom_seg(tmp_path / "seg.dcm", np.zeros(image.array.shape, np.uint8), load_sources(image.source_files),
                        Algorithm("m", "1"))
    assert not list(tmp_path.glob("*.dcm"))


@pytest.mark.slow
def test_bundled_model_writes_a_voxel_exact_dicom_seg_of_the_shared_series(tmp_path):
    """The real CHAOS series (development data): the SEG read back equals the labelmap the same call returned."""
    folder = SHARED_DATA / "dicom" / "chaos_eval_ct"
    if not folder.exists():
        pytest.skip(f"{folder} not present (development data only)")
    from liverseg import segment

    result = segment(folder, output=tmp_path / "chaos.dcm", device="cpu")
    image = read_image(folder)
    uids = [s.SOPInstanceUID for s in load_sources(image.source_files)]
    back = read_dicom_seg_masks(tmp_path / "chaos.dcm", uids)
    np.testing.assert_array_equal(back, segment_masks(result.labelmap))
    ds = pydicom.dcmread(tmp_path / "chaos.dcm")
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == pydicom.dcmread(image.source_files[0]).SeriesInstanceUID
    assert int(ds.NumberOfFrames) == int(sum(m.any(axis=(1, 2)).sum() for m in np.moveaxis(back, -1, 0)))


def test_folder_batch_with_format_dcm_writes_seg_for_dicom_and_reports_nifti(tmp_path, phantom, constant_model, capsys):
    import csv

    import SimpleITK as sitk

    study = tmp_path / "study"
    write_dicom_series(study / "patient1" / "ct", phantom[0][:10])
    img = sitk.GetImageFromArray(phantom[0])
    img.SetSpacing((3.0, 3.0, 5.0))
    sitk.WriteImage(img, str(study / "patient2.nii.gz"))
    code = main(["segment", "--input-dir", str(study), "-o", str(tmp_path / "out"), "--format", "dcm", "-q",
                 "--model", str(constant_model(20.0)), "--stats", str(tmp_path / "stats.csv")])
    err = capsys.readouterr().err
    assert code == 1 and "patient2.nii.gz" in err and "needs a DICOM series" in err
    seg = tmp_path / "out" / "patient1" / "ct_liverseg.dcm"
    assert pydicom.dcmread(seg).Modality == "SEG"
    rows = list(csv.DictReader((tmp_path / "stats.csv").open()))
    assert {r["input"].split("/")[-1]: r["ok"] for r in rows} == {"ct": "True", "patient2.nii.gz": "False"}
