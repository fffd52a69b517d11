"""File input/output through SimpleITK: NIfTI, NRRD, MHA and DICOM series folders.

Inputs are verified before anything is segmented: only regular files and folders are opened (a FIFO would hang),
the size a header declares is checked against free memory before the data is read, and NIfTI files, which
SimpleITK reads silently when truncated (missing data becomes zeros) and whose NaN/inf it turns into zeros, are
checked byte for byte here. Outputs go through :func:`liverseg.outputs.write_atomic`: complete and read back, or
nothing.
"""
from __future__ import annotations

import gzip
import logging
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checks import InputError, check_memory
from .dicom import list_series, read_dicom_series
from .dicomseg import SUFFIX as SEG_SUFFIX
from .dicomseg import Algorithm, load_sources, write_dicom_seg
from .labels import LABELS, segment_mask, terminology_entry
from .orientation import ijk_to_ras_from_geometry, lps_to_ras
from .outputs import check_output_path, compound_suffix, write_atomic

log = logging.getLogger("liverseg")
READ_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
LABELMAP_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd")
RESULT_SUFFIXES = LABELMAP_SUFFIXES + (".dcm",)  # .dcm: DICOM SEG, for DICOM inputs (liverseg.dicomseg)


@dataclass
class ImageData:
    """A [k, j, i] array plus geometry; ``spacing``/``origin``/``direction`` are ITK (LPS) style."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    path: Path | None = None
    source_files: tuple[str, ...] = ()  # a DICOM input's files, file n = slice k = n (for DICOM SEG references)

    @property
    def ijk_to_ras(self) -> np.ndarray:
        return ijk_to_ras_from_geometry(self.spacing, self.origin, self.direction, lps=True)

    @classmethod
    def from_array(cls, array: np.ndarray, ijk_to_ras: np.ndarray) -> "ImageData":
        lps = lps_to_ras(ijk_to_ras)
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        direction = (lps[:3, :3] / spacing).ravel()
        return cls(array, tuple(spacing), tuple(lps[:3, 3]), tuple(direction))


_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 32: "c8", 64: "f8", 256: "i1", 512: "u2", 768: "u4",
                 1024: "i8", 1280: "u8", 128: "u1", 2304: "u1"}  # 128/2304: RGB(A) bytes, refused later anyway


def _open_regular(path: Path) -> None:
    """Refuse anything but a regular file or a folder before opening it (reading a FIFO or a device blocks)."""
    mode = path.stat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(f"{path} is not a regular file or folder (a pipe, socket or device); give an image file.")


def verify_nifti(path: Path) -> None:
    """Check a NIfTI-1/2 file against its own header: the declared voxels fit in memory, the file holds all the
    data it declares (no truncation) and float data has no NaN/inf. Streams the data; nothing is kept."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(540)
            if len(head) < 348:
                raise InputError(f"{path} is too short to be a NIfTI file (truncated?).")
            for order in "<>":
                size = int(np.frombuffer(head[:4], order + "i4")[0])
                if size in (348, 540):
                    break
            else:
                raise InputError(f"{path} does not start with a NIfTI header.")
            if size == 348:
                dims = np.frombuffer(head[40:56], order + "i2").astype(np.int64)
                datatype = int(np.frombuffer(head[70:72], order + "i2")[0])
                offset = int(np.frombuffer(head[108:112], order + "f4")[0])
            else:
                dims = np.frombuffer(head[16:80], order + "i8")
                datatype = int(np.frombuffer(head[12:14], order + "i2")[0])
                offset = int(np.frombuffer(head[168:176], order + "i8")[0])
            n_dims = int(dims[0])
            if not 1 <= n_dims <= 7 or (dims[1:n_dims + 1] < 1).any() or datatype not in _NIFTI_DTYPES:
                raise InputError(f"{path} has an invalid NIfTI header (dimensions {dims[:n_dims + 1].tolist()}, "
                                 f"data type code {datatype}).")
            shape = tuple(int(d) for d in dims[1:n_dims + 1])
            voxels = int(np.prod(shape))
            check_memory(voxels, f"{path} declares {'x'.join(map(str, shape))} voxels, which")
            dtype = np.dtype(order + _NIFTI_DTYPES[datatype])
            expected = voxels * dtype.itemsize * (3 if datatype == 128 else 4 if datatype == 2304 else 1)
            f.seek(max(offset, size))  # vox_offset (0 in header-only files: data follows the header)
            got, bad, carry = 0, 0, b""
            while got < expected:
                chunk = f.read(min(1 << 24, expected - got))
                if not chunk:
                    break
                got += len(chunk)
                if dtype.kind == "f":
                    data = carry + chunk
                    usable = len(data) - len(data) % dtype.itemsize
                    bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(data[:usable], dtype))))
                    carry = data[usable:]
    except (OSError, EOFError) as exc:  # gzip: "Compressed file ended before the end-of-stream marker was reached"
        raise InputError(f"{path} is damaged or truncated ({exc}); re-export or re-copy it.") from exc
    if got < expected:
        raise InputError(f"{path} is truncated: it holds {got:,} of the {expected:,} bytes of image data its header "
                         "declares; re-export or re-copy it.")
    if bad:
        raise InputError(f"{path} contains {bad} NaN or infinite voxels; fix or mask them before segmenting.")


def _declared_voxels(path: Path) -> None:
    """Header-only check of a non-NIfTI file's declared size against free memory (before reading the data)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = reader.GetSize()
    check_memory(int(np.prod(size)), f"{path} declares {'x'.join(map(str, size))} voxels, which")


def inspect_input(path: str | Path) -> Path:
    """The cheap checks of an input, from its header only: it exists, is a regular file or a folder with a DICOM
    series, and its declared size fits in memory. Batch runs do this for every input before the first case."""
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ITK's multi-line C++ warnings; we raise or warn ourselves
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path} does not exist.")
    _open_regular(path)
    if path.is_dir():
        list_series(path)
        return path
    try:
        _declared_voxels(path)
    except RuntimeError as exc:
        raise InputError(f"Could not read {path} as an image ({_itk_reason(exc)}).") from exc
    return path


def _is_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def find_inputs(root: Path, exclude: Path | None = None) -> list[Path]:
    """Cases below ``root``: image files (NIfTI/NRRD/MHA) and folders that hold DICOM files (DICM marker), in a
    stable order; nothing inside ``exclude`` (the output folder) and no hidden files."""
    import os

    skip = exclude.expanduser().resolve() if exclude is not None else None
    cases = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (skip is None or (here / d).resolve() != skip))
        dicom = False
        for name in sorted(f for f in files if not f.startswith(".")):
            path = here / name
            if compound_suffix(path) in READ_SUFFIXES:  # (.seg.nrrd, a result, is not among them)
                cases.append(path)
            elif not dicom and _is_dicom(path):
                dicom = True
        if dicom:
            cases.append(here)
    return cases


def read_image(path: str | Path, series: str | None = None) -> ImageData:
    """Read a volume file or a DICOM series folder (see :func:`liverseg.dicom.read_dicom_series` for the rules
    on several series, missing slices, uneven spacing and gantry tilt)."""
    import SimpleITK as sitk

    path = Path(path).expanduser()
    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ITK's multi-line C++ warnings; we raise or warn ourselves
    files: tuple[str, ...] = ()
    try:
        if path.is_dir():
            image, files = read_dicom_series(path, series)  # lists and checks the series itself
        else:
            inspect_input(path)
            if compound_suffix(path) in (".nii", ".nii.gz"):
                verify_nifti(path)
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"Could not read {path} as an image ({_itk_reason(exc)}).") from exc
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path} has {image.GetNumberOfComponentsPerPixel()} components per voxel (RGB/vector); "
                         "a scalar CT volume is needed.")
    if image.GetDimension() != 3:
        raise InputError(f"{path} is a {image.GetDimension()}D image; a 3D CT volume is needed.")
    return ImageData(array=sitk.GetArrayFromImage(image), spacing=image.GetSpacing(), origin=image.GetOrigin(),
                     direction=image.GetDirection(), path=path, source_files=files)


def read_labelmap(path: str | Path) -> ImageData:
    """A labelmap file, or a segmentation file this engine wrote (``.seg.nrrd``, one layer per label), as a
    [k, j, i] labelmap with the values of the label table."""
    import SimpleITK as sitk

    path = Path(path).expanduser()
    if compound_suffix(path) != ".seg.nrrd":
        return read_image(path)
    inspect_input(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"Could not read {path} as a segmentation ({_itk_reason(exc)}).") from exc
    layers = sitk.GetArrayFromImage(image)
    if layers.ndim == 3:  # a single layer: label values as stored
        layers = layers[..., None]
    names = [image.GetMetaData(f"Segment{n}_Name") if image.HasMetaDataKey(f"Segment{n}_Name") else ""
             for n in range(layers.shape[-1])]
    if names != [spec.name for spec in LABELS.values()]:
        raise InputError(f"{path} is not a liverseg segmentation (segments {names}); export it as a labelmap.")
    labelmap = np.zeros(layers.shape[:3], np.uint8)
    for n, spec in enumerate(LABELS.values()):  # in table order: tumor is written over liver
        labelmap[layers[..., n] > 0] = spec.value
    return ImageData(array=labelmap, spacing=image.GetSpacing(), origin=image.GetOrigin(),
                     direction=image.GetDirection(), path=path)


def _itk_reason(exc: Exception) -> str:
    """The informative line of an ITK exception (they span several lines of C++ context)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("Description:", "Reason:")) or "ERROR" in ln:
            return ln.split(":", 1)[-1].strip()[:200]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def _to_itk(array: np.ndarray, reference: ImageData):
    """An ITK image of ``array`` with exactly the reference's spacing, origin and direction."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=array.ndim == 4)
    image.SetSpacing(tuple(float(s) for s in reference.spacing))
    image.SetOrigin(tuple(float(o) for o in reference.origin))
    image.SetDirection(tuple(float(d) for d in reference.direction))
    return image


def _write_verified(path: Path, array: np.ndarray, reference: ImageData, overwrite: bool,
                    metadata: dict[str, str] | None = None) -> Path:
    """Write ``array`` ([k, j, i] or [k, j, i, layer]) with the reference's geometry and optional header fields
    through :func:`write_atomic`, reading it back voxel for voxel (SimpleITK reports success on a full disk, so only
    a read-back tells a complete file from a short one)."""
    import SimpleITK as sitk

    array = np.ascontiguousarray(array)
    image = _to_itk(array, reference)
    for key, value in (metadata or {}).items():
        image.SetMetaData(key, value)

    def verify(tmp: Path) -> None:
        back = sitk.ReadImage(str(tmp))
        if back.GetSize() != image.GetSize() or not np.array_equal(sitk.GetArrayViewFromImage(back), array,
                                                                    equal_nan=array.dtype.kind == "f"):
            raise ValueError("content differs")
        if not np.allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4) or not np.allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-6):
            raise ValueError("geometry differs")

    return write_atomic(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=True), verify,
                        overwrite=overwrite, checked=True)


def write_labelmap(path: str | Path, labelmap: np.ndarray, reference: ImageData, overwrite: bool = False,
                   checked: bool = False, algorithm: "Algorithm | None" = None, dicom_sources: list | None = None) -> Path:
    """Write a uint8 labelmap with exactly the reference's origin, spacing and direction, completely or not at all;
    ``checked=True``: the caller already ran ``check_output_path``. A ``.dcm`` path writes a DICOM SEG that
    references the reference's DICOM files (``dicom_sources``: their headers, if the caller already loaded them with
    :func:`liverseg.dicomseg.load_sources`), identifying ``algorithm`` (model name and version)."""
    path = Path(path).expanduser()
    if not checked:
        check_output_path(path, overwrite, suffixes=RESULT_SUFFIXES, inputs=[reference.path] if reference.path else [])
    if labelmap.shape != reference.array.shape[:3]:
        raise ValueError(f"Labelmap shape {labelmap.shape} differs from the reference {reference.array.shape}.")
    if compound_suffix(path) == SEG_SUFFIX:
        return write_dicom_seg(path, labelmap, dicom_sources or load_sources(reference.source_files),
                               algorithm or Algorithm("unknown", ""), overwrite)
    if compound_suffix(path) == ".seg.nrrd":
        layers, metadata = segmentation_layers(labelmap)
        return _write_verified(path, layers, reference, overwrite, metadata)
    return _write_verified(path, labelmap.astype(np.uint8), reference, overwrite)


def segmentation_layers(labelmap: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    """A labelmap as Slicer's segmentation file holds it: one binary layer per segment (so "Liver" includes the
    tumors, as in the Slicer module and as LiTS scores it, while "Liver tumor" overlaps it), plus the
    ``Segment<N>_*`` header fields (name, colour, label value, layer, extent, terminology) from the label table."""
    masks, metadata = [], {"Segmentation_MasterRepresentation": "Binary labelmap",
                           "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
                           "Segmentation_ReferenceImageExtentOffset": "0 0 0"}
    for n, spec in enumerate(LABELS.values()):
        mask = segment_mask(labelmap, spec)
        masks.append(mask)
        idx = [np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0] for ax in (2, 1, 0)]  # i, j, k
        extent = " ".join(f"{i.min()} {i.max()}" if len(i) else "0 -1" for i in idx)
        metadata.update({
            f"Segment{n}_ID": spec.name.replace(" ", "_"), f"Segment{n}_Name": spec.name,
            f"Segment{n}_NameAutoGenerated": "0", f"Segment{n}_Color": " ".join(f"{c:.6f}" for c in spec.color_float),
            f"Segment{n}_ColorAutoGenerated": "0", f"Segment{n}_LabelValue": "1", f"Segment{n}_Layer": str(n),
            f"Segment{n}_Extent": extent, f"Segment{n}_Tags": f"TerminologyEntry:{terminology_entry(spec)}|",
        })
    return np.stack(masks, axis=-1).astype(np.uint8), metadata


def write_image(path: str | Path, data: ImageData, overwrite: bool = True) -> Path:
    """Write a volume completely or not at all (the sample converter and tests)."""
    path = check_output_path(path, overwrite, suffixes=READ_SUFFIXES)
    return _write_verified(path, data.array, data, overwrite)
