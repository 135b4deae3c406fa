"""Readers for users' medical files: 2D images and masks, NIfTI volumes and DICOM series.

Every problem with a file raises :class:`samjax.errors.DataError` whose message starts with the
path and says what is wrong, so a data set build can point the user at the bad file. Conventions:
  * 2D images come back as (H, W) or (H, W, 3) in their native dtype (uint8, uint16, int16,
    float32, ...). An alpha channel is dropped (SAM has no use for it); 1-bit images become uint8.
  * Masks come back as (H, W) integer label maps, values untouched (a 0/255 binary mask stays
    0/255; the caller maps values to classes from the declared labels).
  * Volumes are :class:`Volume` with the array in voxel index order: NIfTI (X, Y, Z) as stored,
    DICOM (rows, cols, slices). ``affine`` maps voxel indices to RAS+ millimetres in both cases.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from samjax.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")
MASK_EXTENSIONS = (".png", ".tif", ".tiff")
VOLUME_EXTENSIONS = (".nii", ".nii.gz")
# Files a DICOM folder may hold besides the slices, skipped: OS clutter and the DICOMDIR index
# (also any name starting with ".", e.g. .DS_Store).
IGNORED_FILES = frozenset({"Thumbs.db", "desktop.ini", "DICOMDIR"})


@dataclass(eq=False)
class Volume:
    """A 3D scan: ``array`` (3 spatial axes), ``spacing`` in mm per axis, ``affine`` (4, 4)
    from voxel indices to RAS+ mm, the ``path`` it was read from, and (NIfTI) its ``header``, so a
    label map written for it keeps its qform/sform codes and units."""

    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray
    path: str
    header: object = None


def _ext(path: str) -> str:
    name = os.path.basename(str(path)).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]


def _check_file(path, allowed) -> str:
    path = os.fspath(path)
    ext = _ext(path)
    if ext not in allowed:
        raise DataError(f"{path}: unsupported file type {ext or '(no extension)'!r}; "
                        f"expected one of {', '.join(allowed)}")
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    return path


def _native(arr: np.ndarray) -> np.ndarray:  # NIfTI and TIFF may be big-endian; JAX and TF want native
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def _to_channels_last(arr: np.ndarray, path: str) -> np.ndarray:
    """(H, W), (H, W, 1|2|3|4) -> (H, W) or (H, W, 3): alpha dropped, gray+alpha -> gray."""
    if arr.size == 0:
        raise DataError(f"{path}: the image is empty (shape {arr.shape})")
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 4):
        arr = arr[..., :3] if arr.shape[-1] == 4 else arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise DataError(f"{path}: expected a 2D grayscale or RGB image, got an array of shape {arr.shape}")
    return np.ascontiguousarray(_native(arr))


def _read_pil(path: str, indices: bool) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()  # decode everything now so a truncated file fails here
            mode = img.mode
            if mode in ("P", "PA"):
                arr = np.asarray(img) if indices else np.asarray(img.convert("RGB"))
                return arr[..., 0] if arr.ndim == 3 and mode == "PA" else arr
            if mode == "1":
                return np.asarray(img).astype(np.uint8) if indices else np.asarray(img.convert("L"))
            if mode.startswith("I;16"):
                return np.asarray(img).astype(np.uint16)  # native byte order, never truncated to 8 bits
            if mode == "I":
                arr = np.asarray(img)
                return arr.astype(np.uint16) if arr.size and arr.min() >= 0 and arr.max() <= 65535 else arr
            if mode in ("L", "LA", "RGB", "RGBA", "RGBX", "F", "I;16S"):
                return np.asarray(img)
            return np.asarray(img.convert("RGB"))  # CMYK, YCbCr, LAB, ...
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
        raise DataError(f"{path}: cannot decode the image ({type(e).__name__}: {e})") from e


def _read_tiff(path: str, indices: bool) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            n = len(tif.pages)
            if n != 1:
                raise DataError(
                    f"{path}: the TIFF has {n} pages; only single-page 2D TIFFs are supported "
                    "(save each slice as its own file, or a 3D scan as NIfTI)")
            page = tif.pages[0]
            arr = page.asarray()
            if arr.ndim == 3 and page.samplesperpixel > 1 and int(page.planarconfig) == 2:
                arr = np.moveaxis(arr, 0, -1)  # planar (S, H, W) -> (H, W, S)
            if not indices and int(page.photometric) == 3 and page.colormap is not None:
                arr = np.moveaxis(page.colormap[:, arr], 0, -1)  # palette -> uint16 RGB
                arr = (arr // 257).astype(np.uint8) if np.all(arr % 257 == 0) else arr
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read the TIFF ({type(e).__name__}: {e})") from e
    return arr


def _read_2d(path, allowed, indices: bool) -> tuple[np.ndarray, str]:
    path = _check_file(path, allowed)
    ext = _ext(path)
    if ext == ".dcm":
        return read_dicom_file(path), path
    arr = _read_tiff(path, indices) if ext in (".tif", ".tiff") else _read_pil(path, indices)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) if indices else arr.astype(np.uint8) * np.uint8(255)
    if np.iscomplexobj(arr):
        raise DataError(f"{path}: complex-valued images are not supported")
    return _to_channels_last(arr, path), path


def read_image(path) -> np.ndarray:
    """A 2D image (PNG, JPEG, TIFF, or a single DICOM) as (H, W) or (H, W, 3) in its native dtype.

    16-bit PNG/TIFF give uint16; alpha is dropped; palette images give their RGB colours;
    1-bit images give uint8 0/255; DICOM goes through :func:`read_dicom_file` (float32)."""
    return _read_2d(path, IMAGE_EXTENSIONS, indices=False)[0]


def read_mask(path) -> np.ndarray:
    """A label map (H, W) of integers from a PNG or TIFF, values as stored.

    Palette PNGs give their palette indices (not colours); RGB masks whose channels are equal are
    reduced to one channel; 1-bit masks give 0/1; integer-valued float masks become integers.
    JPEG is refused: lossy compression changes label values at every edge."""
    if _ext(path) in (".jpg", ".jpeg"):
        raise DataError(f"{os.fspath(path)}: JPEG masks are not supported: lossy compression corrupts label "
                        "values at edges; save masks as PNG or TIFF")
    arr, path = _read_2d(path, MASK_EXTENSIONS, indices=True)
    if arr.ndim == 3:
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise DataError(
                f"{path}: an RGB mask with differing channels (a colour-coded mask?); masks must be "
                "class-index images: one channel whose pixel value is the class label (0 = background), "
                "e.g. a grayscale or palette PNG")
        arr = np.ascontiguousarray(arr[..., 0])
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{path}: the mask has NaN or infinite values; masks must hold integer class labels")
        bad = arr != np.round(arr)
        if bad.any():
            raise DataError(f"{path}: the mask has non-integer values (e.g. {arr[bad].flat[0]!r}); masks must "
                            "hold integer class labels, not probabilities or interpolated values")
        arr = arr.astype(np.result_type(np.min_scalar_type(int(arr.min())), np.min_scalar_type(int(arr.max()))))
    elif arr.dtype.kind not in "iu":
        raise DataError(f"{path}: unsupported mask dtype {arr.dtype}")
    return arr


def read_volume(path, channel: int | None = None) -> Volume:
    """A NIfTI volume (.nii, .nii.gz) as a :class:`Volume` with the array in stored (X, Y, Z) order.

    scl_slope/scl_inter are applied (scaled data become float32, otherwise the native dtype is
    kept). Trailing singleton dimensions are squeezed; a 4D file with several volumes needs
    ``channel`` (nnU-Net keeps channels in separate 3D files). A 2D file gives (X, Y, 1)."""
    import nibabel as nib

    path = _check_file(path, VOLUME_EXTENSIONS)
    try:
        img = nib.load(path, mmap=False)
        arr = np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms())
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as e:  # EOFError, OSError, zlib.error, ValueError, nibabel's own errors
        raise DataError(f"{path}: cannot read the NIfTI file ({type(e).__name__}: {e}); is it complete?") from e
    stored = img.get_data_dtype()
    if arr.dtype == np.float64 and not (stored.kind == "f" and stored.itemsize == 8):
        arr = arr.astype(np.float32)  # scaling made float64; float32 keeps the precision that matters
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim == 4:
        if channel is None:
            raise DataError(f"{path}: a 4D NIfTI with {arr.shape[3]} volumes (shape {arr.shape}); pass channel= "
                            "to pick one, or store each channel as its own 3D file")
        if not 0 <= channel < arr.shape[3]:
            raise DataError(f"{path}: channel {channel} is out of range for {arr.shape[3]} volumes")
        arr = arr[..., channel]
    elif channel not in (None, 0):
        raise DataError(f"{path}: channel {channel} asked for, but the file holds a single 3D volume")
    if arr.ndim != 3 or arr.size == 0:
        raise DataError(f"{path}: expected a non-empty 3D volume, got shape {arr.shape}")
    spacing = tuple((zooms + (1.0,) * 3)[:3])
    return Volume(np.ascontiguousarray(_native(arr)), spacing, affine, path, img.header.copy())


def _dicom_pixels(ds, path: str) -> np.ndarray:
    """Pixel data with the modality LUT (RescaleSlope/Intercept) applied, as float32 (H, W)."""
    from pydicom.pixels import apply_modality_lut

    if "PixelData" not in ds:
        raise DataError(f"{path}: the DICOM file has no pixel data (not an image)")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise DataError(f"{path}: a multi-frame DICOM ({ds.NumberOfFrames} frames) is not supported; "
                        "convert it to NIfTI (e.g. with dcm2niix)")
    try:
        arr = apply_modality_lut(ds.pixel_array, ds)
    except Exception as e:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", ts)
        raise DataError(f"{path}: cannot decode the DICOM pixel data ({type(e).__name__}: {e}; transfer syntax "
                        f"{name}); the file may be truncated, or compressed with a codec that needs an extra "
                        "package (pylibjpeg, gdcm) - or decompress it first (e.g. gdcmconv --raw)") from e
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2D grayscale DICOM image, got pixel array shape {arr.shape}")
    return arr.astype(np.float32)


def _dcmread(path: str):
    import pydicom

    try:
        return pydicom.dcmread(path)
    except Exception as e:  # InvalidDicomError, EOFError, ...
        raise DataError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e})") from e


def read_dicom_file(path) -> np.ndarray:
    """One 2D DICOM image as float32 (rows, cols), rescale applied (CT in HU).

    MONOCHROME1 images (bright = low value) are inverted to min + max - x so bright is high."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    ds = _dcmread(path)
    arr = _dicom_pixels(ds, path)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        arr = arr.min() + arr.max() - arr
    return arr


def _slice_order(folder: str, slices: list) -> tuple[list, np.ndarray, np.ndarray | None]:
    """Sort (path, dataset) pairs along the slice normal (or by InstanceNumber): (sorted slices,
    sorted positions, the 6 ImageOrientationPatient cosines or None when positions are not used)."""
    iops = {tuple(round(float(v), 4) for v in ds.ImageOrientationPatient)
            for _, ds in slices if "ImageOrientationPatient" in ds}
    if len(iops) > 1:
        raise DataError(f"{folder}: slices have {len(iops)} different ImageOrientationPatient values "
                        "(a localizer or reformat mixed in?); a series must share one orientation")
    iop = np.array(next(iter(iops))) if iops and all("ImagePositionPatient" in ds for _, ds in slices) else None
    if iop is not None:
        normal = np.cross(iop[:3], iop[3:])
        keys = [float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=np.float64), normal)) for _, ds in slices]
    elif all("InstanceNumber" in ds for _, ds in slices):
        keys = [float(ds.InstanceNumber) for _, ds in slices]
    else:
        raise DataError(f"{folder}: slices lack both ImagePositionPatient and InstanceNumber; cannot order them")
    order = np.argsort(keys, kind="stable")
    keys = np.asarray(keys)[order]
    dup = np.flatnonzero(np.diff(keys) < 1e-4)
    if dup.size:
        a, b = (os.path.basename(slices[order[i]][0]) for i in (dup[0], dup[0] + 1))
        raise DataError(f"{folder}: {a} and {b} are at the same slice position (or InstanceNumber); "
                        "a series must have one slice per position")
    return [slices[i] for i in order], keys, iop


def read_dicom_series(folder) -> Volume:
    """All slices of one DICOM series in ``folder`` as a float32 :class:`Volume` (rows, cols, slices).

    Every file in the folder must be a DICOM image of the same series (hidden files and
    ``IGNORED_FILES`` are skipped; anything else is an error naming it). Slices are sorted by
    ImagePositionPatient projected on the slice normal (from ImageOrientationPatient), or by
    InstanceNumber when positions are missing. Spacing: (PixelSpacing[0] (between rows),
    PixelSpacing[1] (between columns), median distance between slice positions)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: DICOM folder not found")
    names = sorted(n for n in os.listdir(folder) if not n.startswith(".") and n not in IGNORED_FILES)
    if not names:
        raise DataError(f"{folder}: the folder holds no DICOM files")
    slices = []
    for path in (os.path.join(folder, n) for n in names):
        if os.path.isdir(path):
            raise DataError(f"{path}: a subfolder inside a DICOM series folder; a series folder holds files only")
        slices.append((path, _dcmread(path)))
    by_series: dict[str, list[str]] = {}
    for path, ds in slices:
        by_series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(os.path.basename(path))
    if len(by_series) > 1:
        listing = "; ".join(f"{uid or '(none)'}: {len(f)} files (e.g. {f[0]})" for uid, f in by_series.items())
        raise DataError(f"{folder}: the folder mixes {len(by_series)} DICOM series ({listing}); "
                        "put each series in its own folder")
    slices, positions, iop = _slice_order(folder, slices)

    arrays = [_dicom_pixels(ds, path) for path, ds in slices]
    for (path, _), arr in zip(slices, arrays):
        if arr.shape != arrays[0].shape:
            raise DataError(f"{path}: slice shape {arr.shape} differs from {arrays[0].shape} of the other slices")
    volume = np.stack(arrays, axis=-1)
    ds0 = slices[0][1]
    if ds0.get("PhotometricInterpretation") == "MONOCHROME1":
        volume = volume.min() + volume.max() - volume
    ps = [float(v) for v in ds0.get("PixelSpacing", [1.0, 1.0])]
    if iop is not None and len(positions) > 1:
        dz = float(np.median(np.diff(positions)))
    else:
        dz = float(ds0.get("SpacingBetweenSlices", ds0.get("SliceThickness", 1.0)) or 1.0)
    affine = np.diag([ps[0], ps[1], dz, 1.0])
    if iop is not None:  # LPS: voxel (r, c, k) -> IPP + r*dr*col_dir + c*dc*row_dir + k*dz*normal
        affine[:3, :3] = np.stack([iop[3:] * ps[0], iop[:3] * ps[1], np.cross(iop[:3], iop[3:]) * dz], axis=1)
        affine[:3, 3] = np.asarray(ds0.ImagePositionPatient, dtype=np.float64)
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS+ like NIfTI
    return Volume(np.ascontiguousarray(volume, dtype=np.float32), (ps[0], ps[1], dz), affine, folder)
