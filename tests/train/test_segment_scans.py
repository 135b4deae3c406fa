"""``python -m samjax.segment --workdir RUN --input ...`` on a trained run: held-out phantom slices stacked into a
rotated, anisotropic NIfTI volume come back as a label map over the same voxels that scores exactly the Dice
``eval.py`` reported for those slices; a folder of inputs (NIfTI, PNG, a DICOM series, broken files) gives
one output per good input, a summary and a failure line per bad one; nothing is overwritten unasked."""

import csv
import json
import os
import shutil

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from samjax import segment
from samjax.data import pipeline
from samjax.data.readers import read_dicom_series
from samjax.scans.segmenter import Segmenter


def _rotated_affine():
    """Voxel -> mm: spacing (0.7, 0.9, 2.5), rotated 30 degrees about an oblique axis, translated."""
    axis = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(np.pi / 6) * k + (1 - np.cos(np.pi / 6)) * k @ k
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.9, 2.5])
    affine[:3, 3] = [-40.0, 12.5, 88.0]
    return affine


def _test_slices(data_dir):
    src = pipeline.open_source("phantoms/labeled_64", "test", data_dir)
    records = [src.records[i] for i in range(len(src.records))]
    seeds = [str(int(r["seed"])) for r in records]
    return np.stack([r["image"] for r in records], -1), np.stack([r["label"] for r in records], -1), seeds, src


def _dice(p, g):
    total = p.sum() + g.sum()
    return 2 * (p & g).sum() / total if total else float("nan")


def test_a_stacked_volume_scores_the_dice_of_eval(straight_run, data_dir, tmp_path, capsys):
    images, labels, seeds, src = _test_slices(data_dir)
    affine = _rotated_affine()
    volume = tmp_path / "phantoms.nii.gz"
    nib.save(nib.Nifti1Image(images, affine), volume)
    out = tmp_path / "out" / "phantoms_seg.nii.gz"
    args = ["--workdir", str(straight_run), "--input", str(volume), "--output", str(out)]
    assert segment.main([*args, "--stats", "--preview"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out

    written = nib.load(out)
    np.testing.assert_allclose(written.affine, affine, atol=1e-4)
    pred = np.asarray(written.dataobj)
    assert pred.shape == images.shape and pred.dtype == np.uint8
    evaluated = {(r["unit"], r["class"]): float(r["dice"]) for r in csv.DictReader(open(straight_run / "eval" / "scores.csv"))}
    compared = 0
    for k, seed in enumerate(seeds):
        for c, name in enumerate(src.class_names[1:], start=1):
            ours, theirs = _dice(pred[..., k] == c, labels[..., k] == c), evaluated[(f"{seed}/0", name)]
            if not np.isnan(theirs):
                assert ours == theirs, (k, name, ours, theirs)
                compared += 1
    assert compared >= 200 and any(v > 0.2 for v in evaluated.values())

    stats = json.load(open(tmp_path / "out" / "phantoms_seg.json"))
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000
    assert stats["class_names"] == list(src.class_names)
    assert stats["classes"]["body"]["voxels"] == int((pred == 1).sum())
    np.testing.assert_allclose(stats["classes"]["body"]["volume_ml"], (pred == 1).sum() * voxel_ml, rtol=1e-6)
    assert 0 < stats["mean_confidence"] <= 1
    assert (tmp_path / "out" / "phantoms_seg_preview.png").is_file()

    # The same from Python, and nothing overwritten unasked.
    np.testing.assert_array_equal(Segmenter.from_workdir(straight_run).segment_volume(images).labels, pred)
    before = os.path.getmtime(out)
    assert segment.main(args) == 0
    assert f"skipped 1 existing output(s) (use --overwrite to replace them): {out}" in capsys.readouterr().out
    assert os.path.getmtime(out) == before
    boxes = tmp_path / "boxes.json"
    boxes.write_text('{"objects": [{"box": [[0, 0, 0], [9, 9, 0]]}]}')
    assert segment.main([*args, "--overwrite", "--prompts", str(boxes)]) == 1
    assert "trained in auto mode" in capsys.readouterr().err
    assert segment.main(["--workdir", str(straight_run), "--input", str(volume), "--output", str(tmp_path), "--overwrite"]) == 1
    assert "the label map would replace the input itself" in capsys.readouterr().err


def _write_ct_series(folder, n=3):
    """pydicom's CT_small.dcm (128 x 128) as an n-slice series, 2.5 mm apart."""
    folder.mkdir()
    uid = generate_uid()
    for k in range(n):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 2.5 * k]
        ds.save_as(folder / f"slice{k}.dcm", enforce_file_format=True)


def test_a_folder_of_inputs_segments_each_and_reports_failures(straight_run, data_dir, tmp_path, capsys):
    images, _, _, _ = _test_slices(data_dir)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(images[..., :4], _rotated_affine()), inputs / "four.nii.gz")
    Image.fromarray(images[..., 2]).save(inputs / "slice2.png")
    Image.fromarray(images[..., 2]).save(inputs / "slice2.tif")  # its label map would be slice2.png too
    _write_ct_series(inputs / "ct_series")
    (inputs / "broken.nii.gz").write_bytes(b"not a nifti file")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 2), np.int16), np.eye(4)), inputs / "two_volumes.nii.gz")
    (inputs / "notes.txt").write_text("a note")
    out = inputs / "labels"  # inside the input folder: never read back as an input
    assert segment.main(["--workdir", str(straight_run), "--input", str(inputs), "--output", str(out)]) == 1
    printed = capsys.readouterr()
    assert "3 segmented, 0 skipped, 4 failed of 7 input(s)" in printed.out
    assert f"failed: {inputs / 'slice2.tif'}: its label map {out / 'slice2.png'} would replace that of" in printed.err
    assert f"failed: {inputs / 'broken.nii.gz'}: cannot read the NIfTI file" in printed.err
    assert f"failed: {inputs / 'two_volumes.nii.gz'}: a 4D NIfTI with 2 volumes" in printed.err
    assert f"failed: {inputs / 'notes.txt'}: not an input" in printed.err

    rows = {os.path.basename(r["input"]): r for r in csv.DictReader(open(out / "summary.csv"))}
    assert {k: r["status"] for k, r in rows.items()} == {
        "four.nii.gz": "ok", "slice2.png": "ok", "slice2.tif": "failed", "ct_series": "ok", "broken.nii.gz": "failed",
        "two_volumes.nii.gz": "failed", "notes.txt": "failed"}
    four = np.asarray(nib.load(out / "four.nii.gz").dataobj)
    assert float(rows["four.nii.gz"]["body_ml"]) > 0 and float(rows["slice2.png"]["body_px"]) > 0
    np.testing.assert_array_equal(np.asarray(Image.open(out / "slice2.png")), four[..., 2])  # same slice, same map
    series = nib.load(out / "ct_series.nii.gz")
    np.testing.assert_allclose(series.affine, read_dicom_series(inputs / "ct_series").affine, atol=1e-4)
    assert series.shape == (128, 128, 3)  # resized to the 64-pixel model and back to the scan's grid

    shutil.rmtree(inputs / "ct_series")
    assert segment.main(["--workdir", str(straight_run), "--input", str(inputs), "--output", str(out)]) == 1
    assert "skipped 2 existing output(s)" in capsys.readouterr().out
