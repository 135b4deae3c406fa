"""Scans in, label maps out: a label map written for a NIfTI keeps its affine, header codes and voxel order;
a DICOM series folder is told apart from a folder of inputs; 2D inputs give PNG label maps."""

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from samjax.errors import DataError
from samjax.scans.io import is_dicom_series, label_map_name, list_inputs, read_scan, voxel_volume, write_label_map


def _nifti(path, qform_code=1, sform_code=2):
    affine = np.array([[0.0, -0.9, 0.1, 20.0], [0.0, 0.05, 3.0, -8.0], [1.25, 0.0, 0.0, 4.5], [0, 0, 0, 1]])
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 60
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=qform_code)
    image.set_sform(affine, code=sform_code)
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_slope_inter(2.0, -10.0)
    nib.save(image, path)
    return affine, data


@pytest.mark.parametrize("name", ["scan.nii.gz", "scan.nii"])
def test_a_label_map_keeps_the_niftis_geometry(tmp_path, name):
    affine, data = _nifti(tmp_path / name)
    scan = read_scan(str(tmp_path / name))
    assert scan.volume and scan.array.shape == (4, 5, 6) and scan.name == "scan"
    np.testing.assert_allclose(scan.array, data * 2.0 - 10.0)
    labels = (scan.array > 0).astype(np.uint8) + (scan.array > 50)
    out = tmp_path / "out" / label_map_name(scan)
    assert out.name == name
    write_label_map(scan, labels, str(out))
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    assert back.get_data_dtype() == np.uint8
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 2
    assert back.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), labels)  # no scaling: the class indices
    assert voxel_volume(scan) == pytest.approx(1.25 * (0.9 * 3.0 + 0.05 * 0.1))  # |det| of the 3x3, by hand
    with pytest.raises(ValueError, match="label map shape"):
        write_label_map(scan, labels[:, :, :2], str(out))
    assert sorted(p.name for p in out.parent.iterdir()) == [name]  # no temporary file left behind


def _dicom(folder, name, series_uid, z):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.save_as(folder / name, enforce_file_format=True)


def test_a_series_folder_is_one_input_and_other_folders_hold_inputs(tmp_path):
    series, mixed = tmp_path / "series", tmp_path / "mixed"
    series.mkdir()
    mixed.mkdir()
    uid = generate_uid()
    for k in range(3):
        _dicom(series, f"IM{k}", uid, 2.0 * k)  # DICOM files without an extension
        _dicom(mixed, f"x{k}.dcm", generate_uid(), 0.0)  # three 2D images of three series
    assert is_dicom_series(str(series)) and not is_dicom_series(str(mixed)) and not is_dicom_series(str(tmp_path))
    assert [p.rsplit("/", 1)[-1] for p in list_inputs(str(tmp_path))] == ["mixed", "series"]
    scan = read_scan(str(series))
    assert scan.volume and scan.array.shape == (128, 128, 3) and scan.name == "series"
    write_label_map(scan, np.ones(scan.array.shape, np.uint8), str(tmp_path / "series.nii.gz"))
    back = nib.load(tmp_path / "series.nii.gz")
    np.testing.assert_allclose(back.affine, scan.affine, atol=1e-5)
    assert int(back.header["sform_code"]) == 1
    one = read_scan(str(mixed / "x0.dcm"))
    assert not one.volume and label_map_name(one) == "x0.png" and one.spacing != (1.0, 1.0)
    with pytest.raises(DataError, match="mixes 3 DICOM series"):
        read_scan(str(mixed))


def test_2d_inputs_give_png_label_maps(tmp_path):
    Image.fromarray(np.arange(30 * 40, dtype=np.uint16).reshape(30, 40)).save(tmp_path / "xray.png")
    scan = read_scan(str(tmp_path / "xray.png"))
    assert not scan.volume and scan.array.dtype == np.uint16 and voxel_volume(scan) == 1.0
    labels = np.zeros((30, 40), np.uint8)
    labels[5:9, 10:20] = 3
    write_label_map(scan, labels, str(tmp_path / "xray_seg.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "xray_seg.png")), labels)
    with pytest.raises(DataError, match="not an input samjax reads"):
        read_scan(str(tmp_path / "notes.txt"))
