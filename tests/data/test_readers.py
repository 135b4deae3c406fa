"""File readers: 2D images and masks, NIfTI and DICOM, on files written here and on the test files
that pydicom, nibabel and scikit-image ship."""

import gzip
import os
import random

import nibabel as nib
import numpy as np
import pydicom
import pytest
import skimage
import tifffile
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from samjax.data.readers import Volume, read_dicom_file, read_dicom_series, read_image, read_mask, read_volume
from samjax.errors import DataError

SKIMAGE_DATA = skimage.data.data_dir
NIBABEL_DATA = os.path.join(os.path.dirname(nib.__file__), "tests", "data")


def _noise(shape, dtype, hi, seed=0):
    return np.random.default_rng(seed).integers(0, hi, size=shape).astype(dtype)


# ---- 2D images -------------------------------------------------------------------------------

def test_png_8bit_gray_and_rgb(tmp_path):
    gray, rgb = _noise((20, 30), np.uint8, 256), _noise((20, 30, 3), np.uint8, 256, seed=1)
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(rgb).save(tmp_path / "c.png")
    out = read_image(tmp_path / "g.png")
    assert out.dtype == np.uint8 and out.shape == (20, 30)
    np.testing.assert_array_equal(out, gray)
    np.testing.assert_array_equal(read_image(str(tmp_path / "c.png")), rgb)


def test_png_rgba_drops_alpha(tmp_path):
    rgba = _noise((8, 9, 4), np.uint8, 256)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])


def test_png_16bit_is_uint16_not_truncated(tmp_path):
    a = _noise((17, 23), np.uint16, 65536)
    a[0, 0] = 60000
    Image.fromarray(a).save(tmp_path / "x16.png")
    out = read_image(tmp_path / "x16.png")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, a)
    np.testing.assert_array_equal(read_mask(tmp_path / "x16.png"), a)


def test_jpeg_approximately(tmp_path):
    yy, xx = np.mgrid[0:64, 0:64]
    a = (yy * 2 + xx).astype(np.uint8)  # smooth, so JPEG error stays small
    Image.fromarray(a).save(tmp_path / "x.jpg", quality=95)
    out = read_image(tmp_path / "x.jpg")
    assert out.dtype == np.uint8 and out.shape == (64, 64)
    assert np.abs(out.astype(int) - a).max() <= 4
    Image.fromarray(a).save(tmp_path / "x.JPEG", quality=95)
    assert read_image(tmp_path / "x.JPEG").shape == (64, 64)


@pytest.mark.parametrize("dtype,hi", [(np.uint8, 256), (np.uint16, 65536), (np.int16, 3000), (np.float32, 1)])
def test_tiff_native_dtypes(tmp_path, dtype, hi):
    a = _noise((11, 13), dtype, hi) if hi > 1 else np.random.default_rng(0).random((11, 13)).astype(dtype)
    if dtype == np.int16:
        a -= 1000
    tifffile.imwrite(tmp_path / "x.tif", a)
    out = read_image(tmp_path / "x.tif")
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, a)


def test_tiff_big_endian_and_rgb(tmp_path):
    a = _noise((5, 6), np.uint16, 65536)
    tifffile.imwrite(tmp_path / "be.tiff", a, byteorder=">")
    out = read_image(tmp_path / "be.tiff")
    assert out.dtype == np.uint16 and out.dtype.isnative
    np.testing.assert_array_equal(out, a)
    rgb = _noise((5, 6, 3), np.uint8, 256)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.tif"), rgb)


def test_palette_tiff_and_empty_tiff(tmp_path):
    idx = _noise((6, 7), np.uint8, 3)
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, 1] = [65535, 0, 0]
    cmap[:, 2] = [0, 0, 257 * 10]
    tifffile.imwrite(tmp_path / "p.tif", idx, photometric="palette", colormap=cmap)
    np.testing.assert_array_equal(read_mask(tmp_path / "p.tif"), idx)
    rgb = read_image(tmp_path / "p.tif")
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 7, 3)
    np.testing.assert_array_equal(rgb[idx == 2], np.tile([0, 0, 10], ((idx == 2).sum(), 1)))
    with pytest.warns(UserWarning):
        tifffile.imwrite(tmp_path / "empty.tif", np.zeros((0, 5), np.uint8))
    with pytest.raises(DataError, match=r"empty\.tif: the image is empty"):
        read_image(tmp_path / "empty.tif")


def test_skimage_files():
    phantom = read_image(os.path.join(SKIMAGE_DATA, "phantom.png"))
    assert phantom.shape == (400, 400, 3) and phantom.dtype == np.uint8
    camera = read_image(os.path.join(SKIMAGE_DATA, "camera.png"))
    np.testing.assert_array_equal(camera, skimage.data.camera())
    with pytest.raises(DataError, match=r"multipage\.tif.*2 pages"):
        read_image(os.path.join(SKIMAGE_DATA, "multipage.tif"))


def test_truncated_png(tmp_path):
    Image.fromarray(_noise((64, 64), np.uint8, 256)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png.*truncated"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(DataError, match=r"cut\.png"):
        read_mask(tmp_path / "cut.png")


def test_truncated_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "whole.tif", _noise((64, 64), np.uint16, 65536))
    data = (tmp_path / "whole.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[:100])
    with pytest.raises(DataError, match=r"cut\.tif"):
        read_image(tmp_path / "cut.tif")


def test_missing_and_unsupported(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.png: file not found"):
        read_image(tmp_path / "nothere.png")
    (tmp_path / "x.bmp").write_bytes(b"BM")
    with pytest.raises(DataError, match=r"x\.bmp: unsupported file type '\.bmp'"):
        read_image(tmp_path / "x.bmp")
    with pytest.raises(DataError, match=r"x\.jpg: JPEG masks"):
        read_mask(tmp_path / "x.jpg")


# ---- masks -----------------------------------------------------------------------------------

def test_palette_png_mask_gives_indices(tmp_path):
    idx = _noise((10, 12), np.uint8, 4)
    img = Image.fromarray(idx, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12))
    img.save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "P"
    out = read_mask(tmp_path / "m.png")
    assert out.dtype == np.uint8 and out.shape == (10, 12)
    np.testing.assert_array_equal(out, idx)
    # as an image the same file gives its colours
    colours = read_image(tmp_path / "m.png")
    np.testing.assert_array_equal(colours[idx == 1], np.tile([255, 0, 0], ((idx == 1).sum(), 1)))


def test_binary_0_255_mask_kept(tmp_path):
    m = (_noise((9, 9), np.uint8, 2) * 255).astype(np.uint8)
    Image.fromarray(m).save(tmp_path / "b.png")
    out = read_mask(tmp_path / "b.png")
    assert set(np.unique(out)) == {0, 255}
    np.testing.assert_array_equal(out, m)


def test_rgb_mask_equal_channels_reduced(tmp_path):
    m = _noise((7, 8), np.uint8, 5)
    Image.fromarray(np.stack([m, m, m], -1)).save(tmp_path / "rgb.png")
    out = read_mask(tmp_path / "rgb.png")
    assert out.shape == (7, 8)
    np.testing.assert_array_equal(out, m)


def test_rgb_mask_different_channels_rejected(tmp_path):
    m = np.zeros((7, 8, 3), np.uint8)
    m[2:4, 2:4] = [255, 0, 0]
    Image.fromarray(m).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match=r"colour\.png.*class-index"):
        read_mask(tmp_path / "colour.png")


def test_float_masks(tmp_path):
    ok = np.array([[0.0, 1.0], [2.0, 300.0]], np.float32)
    tifffile.imwrite(tmp_path / "ok.tif", ok)
    out = read_mask(tmp_path / "ok.tif")
    assert out.dtype.kind == "u"
    np.testing.assert_array_equal(out, [[0, 1], [2, 300]])
    tifffile.imwrite(tmp_path / "prob.tif", np.array([[0.0, 0.5], [1.0, 1.0]], np.float32))
    with pytest.raises(DataError, match=r"prob\.tif.*non-integer.*0\.5"):
        read_mask(tmp_path / "prob.tif")


# ---- NIfTI -----------------------------------------------------------------------------------

def test_nibabel_anatomical():
    path = os.path.join(NIBABEL_DATA, "anatomical.nii")
    ref = nib.load(path)
    vol = read_volume(path)
    assert isinstance(vol, Volume) and vol.path == path
    assert vol.array.shape == ref.shape == (33, 41, 25)
    assert vol.spacing == tuple(float(z) for z in ref.header.get_zooms())
    np.testing.assert_array_equal(vol.array, np.asanyarray(ref.dataobj))
    np.testing.assert_allclose(vol.affine, ref.affine)
    assert vol.array.dtype.isnative


def test_nifti_scl_slope_applied(tmp_path):
    raw = _noise((6, 7, 5), np.int16, 1000)
    img = nib.Nifti1Image(raw, np.diag([0.8, 0.9, 2.5, 1.0]))
    img.header.set_slope_inter(2.0, -1024.0)
    path = tmp_path / "ct.nii.gz"
    nib.save(img, path)
    vol = read_volume(path)
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, raw * 2.0 - 1024.0)
    np.testing.assert_allclose(vol.spacing, (0.8, 0.9, 2.5))


def test_nifti_4d(tmp_path):
    path = os.path.join(NIBABEL_DATA, "example4d.nii.gz")
    with pytest.raises(DataError, match=r"example4d\.nii\.gz.*2 volumes"):
        read_volume(path)
    ref = np.asanyarray(nib.load(path).dataobj)
    np.testing.assert_array_equal(read_volume(path, channel=1).array, ref[..., 1])
    single = tmp_path / "one.nii"
    nib.save(nib.Nifti1Image(_noise((4, 5, 6, 1), np.uint8, 9), np.eye(4)), single)
    assert read_volume(single).array.shape == (4, 5, 6)


def test_truncated_nifti(tmp_path):
    nib.save(nib.Nifti1Image(_noise((40, 40, 40), np.int16, 30000), np.eye(4)), tmp_path / "whole.nii.gz")
    data = (tmp_path / "whole.nii.gz").read_bytes()
    assert gzip.decompress(data)  # the whole file is a valid gzip
    (tmp_path / "half.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"half\.nii\.gz"):
        read_volume(tmp_path / "half.nii.gz")
    with pytest.raises(DataError, match=r"unsupported"):
        read_volume(tmp_path / "x.mha")


# ---- DICOM -----------------------------------------------------------------------------------

def test_ct_small_in_hu():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    out = read_dicom_file(path)
    assert out.dtype == np.float32 and out.shape == (128, 128)
    np.testing.assert_array_equal(out, expected.astype(np.float32))
    assert float(ds.RescaleIntercept) == -1024 and out.min() < 0  # really rescaled to HU
    np.testing.assert_array_equal(read_image(path), out)  # read_image hands .dcm to the DICOM reader


def test_mr_truncated():
    with pytest.raises(DataError, match=r"MR_truncated\.dcm"):
        read_dicom_file(get_testdata_file("MR_truncated.dcm"))


def _write_series(folder, n=4, seed=0, series_uid=None):
    """Copies of CT_small.dcm as slices k = 0..n-1 at z0 + 2.5 k, pixel data + 100 k, written in a
    random file order with shuffled InstanceNumbers; returns the expected (rows, cols, n) HU stack."""
    folder.mkdir(exist_ok=True)
    rng = random.Random(seed)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid = series_uid or generate_uid()
    numbers = list(range(1, n + 1))
    rng.shuffle(numbers)
    order = list(range(n))
    rng.shuffle(order)
    expected = []
    for k in range(n):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        pix = (base.pixel_array.astype(np.int32) + 100 * k).astype(base.pixel_array.dtype)
        ds.PixelData = pix.tobytes()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        x, y, z = (float(v) for v in base.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 2.5 * k]
        ds.InstanceNumber = numbers[k]
        ds.save_as(folder / f"file{order[k]:02d}", enforce_file_format=True)  # no .dcm extension
        expected.append(pix * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    return np.stack(expected, axis=-1).astype(np.float32)


def test_dicom_series_sorted_by_position(tmp_path):
    expected = _write_series(tmp_path / "s", n=4, seed=3)
    vol = read_dicom_series(tmp_path / "s")
    assert vol.array.shape == (128, 128, 4) and vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, expected)
    np.testing.assert_allclose(vol.spacing, (0.661468, 0.661468, 2.5), rtol=1e-6)
    # affine: RAS+ (x, y flipped from DICOM's LPS); voxel (0, 0, k) -> first position + 2.5 k in z
    ipp = np.array([-158.135803, -179.035797, -75.699997])
    np.testing.assert_allclose(vol.affine @ [0, 0, 3, 1], [158.135803, 179.035797, -75.699997 + 7.5, 1], atol=1e-5)
    np.testing.assert_allclose(vol.affine @ [1, 2, 0, 1], [-ipp[0] - 2 * 0.661468, -ipp[1] - 0.661468, ipp[2], 1],
                               atol=1e-5)
    (tmp_path / "s" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden files are skipped
    np.testing.assert_array_equal(read_dicom_series(tmp_path / "s").array, expected)


def test_dicom_series_instance_number_fallback(tmp_path):
    _write_series(tmp_path / "s", n=3, seed=5)
    want = []
    for name in sorted(os.listdir(tmp_path / "s")):
        ds = pydicom.dcmread(tmp_path / "s" / name)
        del ds.ImagePositionPatient
        ds.save_as(tmp_path / "s" / name)
        want.append((int(ds.InstanceNumber), ds.pixel_array.astype(np.float32) - 1024))
    vol = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, np.stack([a for _, a in sorted(want, key=lambda t: t[0])], -1))


def test_dicom_series_two_series(tmp_path):
    _write_series(tmp_path / "s", n=2, seed=1, series_uid="1.2.3.4")
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SeriesInstanceUID = "1.2.3.5"
    ds.save_as(tmp_path / "s" / "other.dcm")
    with pytest.raises(DataError, match=r"2 DICOM series.*1\.2\.3\.4: 2 files.*1\.2\.3\.5: 1 files"):
        read_dicom_series(tmp_path / "s")


def test_dicom_series_non_dicom_file(tmp_path):
    _write_series(tmp_path / "s", n=2)
    (tmp_path / "s" / "notes.txt").write_text("scan notes")
    with pytest.raises(DataError, match=r"notes\.txt: not a readable DICOM"):
        read_dicom_series(tmp_path / "s")


def test_dicom_series_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_dicom_series(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no DICOM files"):
        read_dicom_series(tmp_path / "empty")
    _write_series(tmp_path / "dup", n=2)
    first = sorted(os.listdir(tmp_path / "dup"))[0]
    ds = pydicom.dcmread(tmp_path / "dup" / first)
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "dup" / "copy")
    with pytest.raises(DataError, match="same slice position"):
        read_dicom_series(tmp_path / "dup")
