"""Scans in and label maps out for inference: what a path holds, and label maps in the input's geometry.

An input is a 2D image (PNG, JPEG, TIFF, a DICOM file), a NIfTI volume, a folder holding one DICOM
series, or a folder of any of these (``list_inputs``). Volumes come back in stored voxel order with the
affine from voxel indices to RAS+ mm (``samjax.data.readers``, the readers of the data build). A label
map is written over the same voxel grid: NIfTI with the input's affine (and, for NIfTI inputs, its
header: qform/sform codes, units), so a viewer lays it over the scan; PNG for 2D inputs.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from samjax.data import readers
from samjax.errors import DataError

VOLUME_SUFFIXES = (".nii.gz", ".nii")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")


@dataclasses.dataclass(eq=False)
class Scan:
    """One input: ``array`` (a volume's 3 spatial axes in stored order, or a 2D ``(H, W[, 3])`` image) in its
    native intensities; ``affine`` (4, 4) voxel -> RAS+ mm for volumes (None for 2D); ``spacing`` mm per
    axis (None for images that record none: PNG, JPEG, TIFF); ``header``: a NIfTI input's header."""

    array: np.ndarray
    path: str
    volume: bool
    affine: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None
    header: object = None

    @property
    def name(self) -> str:
        """The input's name without its suffix (a DICOM series: its folder's name)."""
        base = os.path.basename(os.path.normpath(self.path))
        low = base.lower()
        for suffix in VOLUME_SUFFIXES + IMAGE_SUFFIXES:
            if low.endswith(suffix):
                return base[: -len(suffix)]
        return base


def _kind(path: str) -> str | None:
    low = path.lower()
    if low.endswith(VOLUME_SUFFIXES):
        return "nifti"
    if low.endswith(IMAGE_SUFFIXES):
        return "image"
    return None


def _dicom_uid(path: str) -> str | None:
    """The SeriesInstanceUID of a DICOM file (read without pixels), None when it is not DICOM."""
    import pydicom

    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True).get("SeriesInstanceUID", ""))
    except Exception:
        return None


def _visible(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith(".") and n not in readers.IGNORED_FILES)


def is_dicom_series(folder: str) -> bool:
    """Whether ``--input folder`` is one DICOM series rather than a folder of inputs: files only, none a
    NIfTI or a non-DICOM image, at least two, all readable with one SeriesInstanceUID (2D DICOM files of
    several series are a folder of images)."""
    names = _visible(folder)
    paths = [os.path.join(folder, n) for n in names]
    if len(paths) < 2 or any(os.path.isdir(p) for p in paths):
        return False
    if any(_kind(p) == "nifti" or (_kind(p) == "image" and not p.lower().endswith(".dcm")) for p in paths):
        return False
    uids = {_dicom_uid(p) for p in paths}
    return len(uids) == 1 and None not in uids


def list_inputs(folder: str) -> list[str]:
    """The inputs of a folder of inputs, sorted: every visible file and subfolder (a subfolder is read as a
    DICOM series; anything unreadable fails on its own, with its reason)."""
    return [os.path.join(folder, name) for name in _visible(folder)]


def read_scan(path: str, channel: int | None = None) -> Scan:
    """The scan at ``path`` (see the module docstring); a ``DataError`` naming the file says why it cannot be."""
    path = os.fspath(path)
    if os.path.isdir(path):
        vol = readers.read_dicom_series(path)
        return Scan(vol.array, path, True, vol.affine, tuple(vol.spacing))
    kind = _kind(path)
    if kind is None:
        raise DataError(f"{path}: not an input samjax reads (expected {', '.join(VOLUME_SUFFIXES + IMAGE_SUFFIXES)}, "
                        "or a DICOM series folder)")
    if kind == "nifti":
        vol = readers.read_volume(path, channel=channel)
        return Scan(vol.array, path, True, vol.affine, tuple(vol.spacing), vol.header)
    if path.lower().endswith(".dcm"):
        array = readers.read_dicom_file(path)
        return Scan(array, path, False, spacing=_pixel_spacing(path))
    return Scan(readers.read_image(path), path, False)


def _pixel_spacing(path: str) -> tuple[float, float] | None:
    """A 2D DICOM's PixelSpacing (rows, columns) in mm, None when it has no usable one."""
    import pydicom

    try:
        values = [float(v) for v in np.atleast_1d(pydicom.dcmread(path, stop_before_pixels=True).PixelSpacing)]
    except Exception:  # no PixelSpacing, or one that does not parse
        return None
    return (values[0], values[-1]) if values and all(v > 0 for v in values) else None


def label_map_name(scan: Scan) -> str:
    """The file name of a scan's label map: ``NAME.nii.gz`` for volumes (a ``.nii`` input keeps ``.nii``),
    ``NAME.png`` for 2D inputs."""
    if not scan.volume:
        return scan.name + ".png"
    return scan.name + (".nii" if scan.path.lower().endswith(".nii") else ".nii.gz")


def write_label_map(scan: Scan, labels: np.ndarray, path: str) -> None:
    """Writes ``labels`` (the scan's spatial shape, class indices 0..255) in the scan's geometry (see the
    module docstring); written to a temporary name first, so a crash never leaves half a file."""
    import nibabel as nib

    spatial = scan.array.shape if scan.volume else scan.array.shape[:2]
    if labels.shape != spatial:
        raise ValueError(f"label map shape {labels.shape} differs from the scan's {spatial}")
    if labels.size and int(labels.max()) > 255:
        raise ValueError("label values must fit uint8 (0..255)")
    labels = labels.astype(np.uint8)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{base}")
    try:
        if scan.volume:
            if not path.lower().endswith(VOLUME_SUFFIXES):
                raise ValueError(f"{path}: a volume's label map is a NIfTI file (.nii.gz or .nii)")
            header = scan.header.copy() if scan.header is not None else None
            kind = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
            image = kind(labels, scan.affine, header=header)
            image.set_data_dtype(np.uint8)
            image.header.set_slope_inter(1.0, 0.0)
            image.header["cal_min"], image.header["cal_max"] = 0, int(labels.max(initial=0))
            if header is None:  # a DICOM series: the affine is the scanner's frame
                image.set_qform(scan.affine, code=1)
                image.set_sform(scan.affine, code=1)
                image.header.set_xyzt_units("mm")
            tmp += ".nii.gz" if path.lower().endswith(".gz") else ".nii"
            nib.save(image, tmp)
        else:
            from PIL import Image

            if not path.lower().endswith(".png"):
                raise ValueError(f"{path}: a 2D input's label map is a PNG file (.png)")
            tmp += ".png"
            Image.fromarray(labels).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def voxel_volume(scan: Scan) -> float:
    """mm^3 of one voxel (a volume) or mm^2 of one pixel (a 2D image; 1, a pixel, when its spacing is unknown)."""
    if scan.volume:
        return float(abs(np.linalg.det(np.asarray(scan.affine, np.float64)[:3, :3])))
    return 1.0 if scan.spacing is None else float(np.prod(scan.spacing[:2]))
