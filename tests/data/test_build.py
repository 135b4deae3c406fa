"""``python -m samjax.data.build``: PNG folders, nnU-Net NIfTI folders and DICOM series become
data sets a Grain pipeline reads, with counts printed and stored; bad input stops the build and
names the file."""

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from samjax.data import build, pipeline
from samjax.data.intensity import ct_window
from samjax.data.readers import read_dicom_series


def _png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def _nifti(path, array, dtype=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array, dtype or array.dtype), np.diag([0.8, 0.8, 2.5, 1.0])), path)


def _dataset_json(folder, labels):
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump({"name": "test", "labels": labels}, f)


def _png_folder(root, n=6, size=(40, 52), bits=8):
    rng = np.random.default_rng(0)
    for i in range(n):
        label = np.zeros(size, np.uint8)
        if i % 3:  # every third image has no foreground
            label[5 + i:20 + i, 10:30] = 1
            label[25:35, 30 + i:45] = 2
        noise = rng.integers(0, 30, size)
        if bits == 16:
            image = (1000 + 40 * label.astype(np.int64) + noise).astype(np.uint16)
        else:
            image = (40 + 60 * label + noise).astype(np.uint8)
        _png(os.path.join(root, "images", f"scan_{i:02d}.png"), image)
        _png(os.path.join(root, "masks", f"scan_{i:02d}.png"), label)
    _dataset_json(root, {"0": "background", "1": "organ", "2": "tumour"})
    return root


def _nnunet_folder(root, cases=3, shape=(20, 24, 8)):
    rng = np.random.default_rng(1)
    volumes = {}
    for c in range(cases):
        label = np.zeros(shape, np.uint8)
        label[4:14, 6:18, 2:6] = 1
        label[8:11, 9:12, 3:5] = 2
        hu = rng.normal(0, 20, shape) + np.where(label == 1, 60, -100) + np.where(label == 2, 90, 0)
        _nifti(os.path.join(root, "imagesTr", f"liver_{c:03d}_0000.nii.gz"), hu.astype(np.int16))
        _nifti(os.path.join(root, "labelsTr", f"liver_{c:03d}.nii.gz"), label)
        volumes[f"liver_{c:03d}"] = (hu.astype(np.int16), label)
    _dataset_json(root, {"background": 0, "liver": 1, "tumour": 2})  # nnU-Net v2 style
    return root, volumes


def _records(builder_dir, split="train"):
    src = pipeline.open_source(builder_dir, split)
    return src, [src.records[i] for i in range(len(src.records))]


def test_png_folder_builds_and_feeds_a_pipeline(tmp_path, capsys):
    src = _png_folder(str(tmp_path / "pngs"))
    out = str(tmp_path / "tfds")
    assert build.main(["--source", src, "--name", "pngs", "--data-dir", out, "--validation", "0.34"]) == 0
    printed = capsys.readouterr().out
    assert "train: 4 case(s), 4 slice(s)" in printed and "validation: 2 case(s)" in printed
    assert "organ" in printed and "tumour" in printed

    info = tfds.builder_from_directory(os.path.join(out, "medical_slices", "pngs", "1.0.0")).info
    assert info.metadata["class_names"] == ["background", "organ", "tumour"]
    counts = info.metadata["counts"]
    assert sum(c["slices"] for c in counts.values()) == 6
    assert sum(c["empty_slices"] for c in counts.values()) == 2
    assert sum(c["slices_per_class"].get("tumour", 0) for c in counts.values()) == 4
    assert sorted(info.metadata["cases"]["train"] + info.metadata["cases"]["validation"]) == [
        f"scan_{i:02d}" for i in range(6)]

    source = pipeline.open_source("pngs", "train", out)  # by name, as train configs do
    assert source.class_names == ("background", "organ", "tumour")
    for record in (source.records[i] for i in range(len(source.records))):
        name = record["case"].decode()
        np.testing.assert_array_equal(record["image"][..., 0], np.asarray(Image.open(f"{src}/images/{name}.png")))
        np.testing.assert_array_equal(record["label"], np.asarray(Image.open(f"{src}/masks/{name}.png")))
    batch = pipeline.train_dataset([source], global_batch=2, image_size=64, seed=0)[0]
    assert batch["image"].shape == (2, 64, 64, 3) and set(np.unique(batch["label"])) <= {0, 1, 2}


def test_16_bit_pngs_are_clipped_to_percentiles(tmp_path):
    src = _png_folder(str(tmp_path / "pngs16"), n=2, bits=16)
    builder = build_ok(src, tmp_path, "p16", percentiles=(1.0, 99.0), validation=0.0)
    record = builder.as_data_source("train")[0]
    original = np.asarray(Image.open(f"{src}/images/{record['case'].decode()}.png")).astype(np.float64)
    lo, hi = np.percentile(original, [1.0, 99.0])
    expected = np.clip(np.round((np.clip(original, lo, hi) - lo) / (hi - lo) * 255), 0, 255)
    assert np.abs(record["image"][..., 0].astype(np.float64) - expected).max() <= 1


def build_ok(source, tmp_path, name, **options):
    from samjax.data.builders import medical_slices

    options.setdefault("validation_fraction", options.pop("validation", 0.1))
    return medical_slices.build(source, name, str(tmp_path / "tfds"), **options)


def test_nnunet_volumes_slice_and_restack(tmp_path, capsys):
    root, volumes = _nnunet_folder(str(tmp_path / "Dataset001_Liver"))
    out = str(tmp_path / "tfds")
    argv = ["--source", root, "--name", "liver", "--data-dir", out, "--ct-window", "40,400", "--validation", "0"]
    assert build.main(argv) == 0
    assert "train: 3 case(s), 24 slice(s), 12 empty kept, 0 empty dropped" in capsys.readouterr().out
    src, records = _records(os.path.join(out, "medical_slices", "liver"))
    assert src.class_names == ("background", "liver", "tumour")
    assert src.preprocessing == {"axis": 2, "channel": 0, "ct_window": [40.0, 400.0], "percentiles": None}  # for inference
    assert sorted(set(src.case_ids)) == sorted(volumes)
    for case, (hu, label) in volumes.items():
        slices = sorted((int(r["slice"]), r) for r in records if r["case"].decode() == case)
        assert [s for s, _ in slices] == list(range(8))
        np.testing.assert_array_equal(np.stack([r["label"] for _, r in slices], axis=2), label)
        np.testing.assert_array_equal(np.stack([r["image"][..., 0] for _, r in slices], axis=2), ct_window(hu, 40, 400))
        np.testing.assert_allclose(slices[0][1]["spacing"], [0.8, 0.8])


@pytest.mark.parametrize("policy,every,kept,dropped", [("drop", 10, 0, 12), ("subsample", 3, 6, 6), ("keep", 10, 12, 0)])
def test_empty_slice_policies_are_counted(tmp_path, policy, every, kept, dropped):
    root, _ = _nnunet_folder(str(tmp_path / "src"))
    builder = build_ok(root, tmp_path, f"e_{policy}", empty=policy, empty_every=every, validation=0.0)
    counts = builder.info.metadata["counts"]["train"]
    assert (counts["empty_slices"], counts["empty_slices_dropped"]) == (kept, dropped)
    assert counts["slices"] == 12 + kept and counts["slices_per_class"] == {"liver": 12, "tumour": 6}
    assert len(builder.as_data_source("train")) == 12 + kept


def test_axis_option_slices_another_direction(tmp_path):
    root, _ = _nnunet_folder(str(tmp_path / "src"), cases=1)
    builder = build_ok(root, tmp_path, "axis0", axis=0, validation=0.0)
    ds = builder.as_data_source("train")
    assert len(ds) == 20 and ds[0]["image"].shape == (24, 8, 1)
    np.testing.assert_allclose(ds[0]["spacing"], [0.8, 2.5])


def test_shipped_files_nibabel_volume_and_skimage_phantom(tmp_path):
    anatomical = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "anatomical.nii")
    volume = np.asanyarray(nib.load(anatomical).dataobj)
    root = tmp_path / "anat"
    (root / "imagesTr").mkdir(parents=True)
    shutil.copy(anatomical, root / "imagesTr" / "brain.nii")
    _nifti(str(root / "labelsTr" / "brain.nii.gz"), (volume > np.percentile(volume, 70)).astype(np.uint8))
    _dataset_json(str(root), ["background", "brain"])
    builder = build_ok(str(root), tmp_path, "anat", percentiles=(0.5, 99.5))
    assert builder.info.metadata["counts"]["train"]["slices"] == volume.shape[2]

    import skimage

    phantom = os.path.join(os.path.dirname(skimage.__file__), "data", "phantom.png")
    folder = tmp_path / "phantom"
    (folder / "images").mkdir(parents=True)
    shutil.copy(phantom, folder / "images" / "shepp_logan.png")
    image = np.asarray(Image.open(phantom).convert("L"))
    _png(str(folder / "masks" / "shepp_logan.png"), np.where(image > 100, 255, 0).astype(np.uint8))  # 0/255, no json
    builder = build_ok(str(folder), tmp_path, "phantom")
    record = builder.as_data_source("train")[0]
    np.testing.assert_array_equal(record["label"], image > 100)  # 255 read as class 1
    assert builder.info.metadata["class_names"] == ["background", "foreground"]


def _dicom_series(folder, n=4):
    base = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    os.makedirs(folder)
    order = [2, 0, 3, 1]
    for k in order[:n]:
        ds = base.copy()
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.ImagePositionPatient = [float(v) for v in base.ImagePositionPatient[:2]] + [float(5 * k)]
        ds.InstanceNumber = k + 1
        ds.PixelData = (base.pixel_array + 100 * k).astype(base.pixel_array.dtype).tobytes()
        ds.save_as(os.path.join(folder, f"slice{k}"))
    return base


def test_dicom_series_case_in_an_nnunet_folder(tmp_path):
    root = tmp_path / "dicom"
    _dicom_series(str(root / "imagesTr" / "patient1"))
    volume = read_dicom_series(str(root / "imagesTr" / "patient1"))
    label = (volume.array > np.median(volume.array)).astype(np.uint8)
    _nifti(str(root / "labelsTr" / "patient1.nii.gz"), label)
    _dataset_json(str(root), {"0": "background", "1": "dense"})
    builder = build_ok(str(root), tmp_path, "dicom", ct_window=(40.0, 400.0))
    ds = builder.as_data_source("train")
    assert len(ds) == 4
    by_slice = {int(r["slice"]): r for r in (ds[i] for i in range(4))}
    for k in range(4):
        np.testing.assert_array_equal(by_slice[k]["image"][..., 0], ct_window(volume.array[..., k], 40, 400))
        np.testing.assert_array_equal(by_slice[k]["label"], label[..., k])


def _build_error(tmp_path, source, capsys, *extra):
    code = build.main(["--source", str(source), "--name", "bad", "--data-dir", str(tmp_path / "out"), *extra])
    assert code == 2
    return capsys.readouterr().err


def test_errors_name_the_file(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    assert "no images found" in _build_error(tmp_path, empty, capsys)
    assert "cannot tell the layout" in _build_error(tmp_path, tmp_path / "empty" / "images", capsys)

    src = _png_folder(str(tmp_path / "missing"), n=3)
    os.remove(f"{src}/masks/scan_01.png")
    err = _build_error(tmp_path, src, capsys)
    assert "have no mask" in err and "scan_01" in err

    src = _png_folder(str(tmp_path / "shape"), n=3)
    _png(f"{src}/masks/scan_02.png", np.zeros((10, 10), np.uint8))
    err = _build_error(tmp_path, src, capsys)
    assert "scan_02.png" in err and "does not match" in err

    src = _png_folder(str(tmp_path / "undeclared"), n=3)
    _png(f"{src}/masks/scan_01.png", np.full((40, 52), 7, np.uint8))
    err = _build_error(tmp_path, src, capsys)
    assert "scan_01.png" in err and "[7] are not declared" in err

    src = _png_folder(str(tmp_path / "truncated"), n=3)
    data = open(f"{src}/images/scan_02.png", "rb").read()
    open(f"{src}/images/scan_02.png", "wb").write(data[: len(data) // 2])
    assert "scan_02.png" in _build_error(tmp_path, src, capsys)

    src = _png_folder(str(tmp_path / "constant"), n=3)
    _png(f"{src}/images/scan_00.png", np.full((40, 52), 9, np.uint8))
    err = _build_error(tmp_path, src, capsys)
    assert "scan_00.png" in err and "every pixel equals 9" in err

    src = _png_folder(str(tmp_path / "nojson"), n=3)
    os.remove(f"{src}/dataset.json")
    assert "need declared classes" in _build_error(tmp_path, src, capsys)


def test_volume_errors(tmp_path, capsys):
    root, volumes = _nnunet_folder(str(tmp_path / "nan"), cases=2)
    hu = volumes["liver_001"][0].astype(np.float32)
    hu[3, 3, 3] = np.nan
    _nifti(f"{root}/imagesTr/liver_001_0000.nii.gz", hu)
    err = _build_error(tmp_path, root, capsys, "--ct-window", "40,400")
    assert "liver_001_0000.nii.gz" in err and "NaN" in err

    root, _ = _nnunet_folder(str(tmp_path / "channels"), cases=2)
    os.rename(f"{root}/imagesTr/liver_001_0000.nii.gz", f"{root}/imagesTr/liver_001_0001.nii.gz")
    assert "has channels [1]" in _build_error(tmp_path, root, capsys)

    root, _ = _nnunet_folder(str(tmp_path / "nojson"), cases=1)
    os.remove(f"{root}/dataset.json")
    assert "need a dataset.json" in _build_error(tmp_path, root, capsys)

    root, _ = _nnunet_folder(str(tmp_path / "stray"), cases=1)
    open(f"{root}/imagesTr/notes.txt", "w").write("x")
    assert "notes.txt: not a supported file" in _build_error(tmp_path, root, capsys)


def test_bad_command_lines(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build.parse_args(["--source", "x", "--name", "n", "--data-dir", "d", "--ct-window", "40"])
    assert "two numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build.parse_args(["--source", "x", "--name", "n", "--data-dir", "d", "--ct-window", "1,2", "--percentiles", "1,99"])
    assert "not allowed with" in capsys.readouterr().err


def test_decathlon_4d_images_and_mac_resource_forks(tmp_path):
    root = tmp_path / "Task01_BrainTumour"
    shape = (16, 12, 3)
    label = np.zeros(shape, np.uint8)
    label[4:9, 3:8, 1] = 1
    ramp = np.arange(np.prod(shape)).reshape(shape)
    channels = np.stack([ramp, ramp[::-1] * 3], -1)  # the channels differ after normalization too
    _nifti(str(root / "imagesTr" / "brain_001.nii.gz"), channels.astype(np.float32))
    _nifti(str(root / "labelsTr" / "brain_001.nii.gz"), label)
    (root / "imagesTr" / "._brain_001.nii.gz").write_bytes(b"\0\5\26\7")  # as Decathlon tarballs ship them
    _dataset_json(str(root), {"0": "background", "1": "tumour"})
    for channel in (0, 1):
        builder = build_ok(str(root), tmp_path, f"brain{channel}", channel=channel, validation=0.0)
        ds = builder.as_data_source("train")
        record = next(ds[i] for i in range(len(ds)) if int(ds[i]["slice"]) == 2)
        volume = channels[..., channel]
        lo, hi = np.percentile(volume, [0.5, 99.5])
        expected = np.floor((np.clip(volume[..., 2], lo, hi) - lo) / (hi - lo) * 255 + 0.5)
        np.testing.assert_array_equal(record["image"][..., 0], expected)
