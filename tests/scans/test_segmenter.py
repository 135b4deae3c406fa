"""``Segmenter`` in prompt mode on a tiny random SAM: boxes and points from a JSON spec, in voxel or world
coordinates, land on the slices they name with the masks the predictor gives for the same 2D prompts; bad
prompts and the wrong mode are refused with a line that names them."""

import numpy as np
import pytest

from modeling.tiny_sams import make
from samjax.data.slicing import as_uint8
from samjax.errors import ConfigError, DataError
from samjax.predictor import SamPredictor
from samjax.scans.prompts import parse_prompts
from samjax.scans.segmenter import Segmenter
from samjax.modeling.forward import auto_class_logits

NAMES = ("background", "organ", "cyst")
PERCENTILES = {"axis": 1, "percentiles": [1.0, 99.0]}


@pytest.fixture(scope="module")
def model():
    return make("vit", seed=3)


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(0)
    vol = rng.normal(100.0, 20.0, (50, 6, 40)).astype(np.float32)  # slices along axis 1: (50, 40) each
    vol[10:35, :, 8:30] += 150.0
    affine = np.array([[0.0, 0.0, 1.2, -30.0], [0.8, 0.0, 0.0, 5.0], [0.0, -3.0, 0.0, 40.0], [0, 0, 0, 1]])
    return vol, affine


def _reference(model, image, **prompt):
    predictor = SamPredictor(model)
    predictor.set_image(image)
    masks, iou, _ = predictor.predict(**prompt)
    return masks[int(np.argmax(iou))]


def test_voxel_and_world_prompts_give_the_predictors_masks(model, volume):
    vol, affine = volume
    spec = {"objects": [{"label": "organ", "box": [[8, 1, 6], [36, 3, 31]]},
                        {"label": 2, "points": [[20, 4, 15, 1], [30, 4, 20, 0]]}]}
    seg = Segmenter(model, NAMES, 64, preprocessing=PERCENTILES)
    result = seg.segment_volume(vol, prompts=spec)
    assert result.labels.shape == vol.shape and result.labels.dtype == np.uint8
    slices = as_uint8(vol, "v", percentiles=(1.0, 99.0))
    for k in (1, 2, 3):  # one box propagated over the slices between its corners; voxels 8..36 are edges 8..37
        box = _reference(model, slices[:, k], box=np.array([6.0, 8.0, 32.0, 37.0]), multimask_output=False)
        np.testing.assert_array_equal(result.labels[:, k] == 1, box)
    point = _reference(model, slices[:, 4], point_coords=np.array([[15.5, 20.5], [20.5, 30.5]]),  # voxel centres
                       point_labels=np.array([1, 0]), multimask_output=False)
    np.testing.assert_array_equal(result.labels[:, 4], point.astype(np.uint8) * 2)
    assert not result.labels[:, [0, 5]].any() and box.any() and point.any()
    assert np.all(result.confidence[result.labels > 0] > 0.5) and np.all(result.confidence[result.labels == 0] == 0)

    def world(*voxel):
        return (affine @ [*voxel, 1.0])[:3].tolist()

    world_spec = {"coordinates": "world", "objects": [  # the box as a region of space: voxels 8..36 span 7.5..36.5
        {"label": "organ", "box": [world(7.5, 0.5, 5.5), world(36.5, 3.4, 31.5)]},
        {"label": 2, "points": [[*world(20, 4, 15), 1], [*world(30, 4, 20), 0]]}]}
    np.testing.assert_array_equal(seg.segment_volume(vol, affine, prompts=world_spec).labels, result.labels)


def test_a_2d_image_takes_pixel_prompts(model):
    image = np.zeros((48, 60), np.uint16)
    image[10:30, 20:50] = 3000
    seg = Segmenter(model, ("background",), 64)
    result = seg.segment_image(image, prompts=parse_prompts({"objects": [{"box": [18, 8, 52, 32]}]}, image.shape))
    expected = _reference(model, as_uint8(image, "i"), box=np.array([18.0, 8.0, 52.0, 32.0]), multimask_output=False)
    np.testing.assert_array_equal(result.labels, expected.astype(np.uint8))
    whole = parse_prompts({"objects": [{"box": [0, 0, 60, 48]}]}, image.shape)  # SAM's whole-image box is inside
    np.testing.assert_array_equal(whole[0].box, [0, 0, 60, 48])


def test_bad_prompts_and_wrong_modes_are_named(model, volume):
    vol, affine = volume
    shape = vol.shape
    cases = [({"objects": [{"box": [[0, 0, 0], [60, 1, 1]]}]}, "object 0 box: [60.0, 1.0, 1.0] (voxel) lies "
              "outside the scan of shape (50, 6, 40)"),
             ({"objects": [{"points": 5}]}, "\"points\" is a list of points, got 5"),
             ({"objects": [{"points": [[1, 1, 1, 0.5]]}]}, "the label 0.5 must be 1 (foreground) or 0"),
             ({"objects": [{"label": "liver", "box": [[0, 0, 0], [5, 1, 1]]}]}, "label 'liver' is not a class"),
             ({"objects": [{"points": [[1, 1, 1, 3]]}]}, "must be 1 (foreground) or 0 (background)"),
             ({"objects": [{"box": [1, 2, 3, 4]}]}, "a volume's box is two 3D corners"),
             ({"objects": []}, "expected {\"objects\""),
             ({"coordinates": "ras", "objects": [{"box": [[0, 0, 0], [1, 1, 1]]}]}, "coordinates 'ras'")]
    for spec, message in cases:
        with pytest.raises(DataError) as e:
            parse_prompts(spec, shape, affine, axis=1, class_names=NAMES, source="p.json")
        assert message in str(e.value) and str(e.value).startswith("p.json: ")
    with pytest.raises(ConfigError, match="give --prompts"):
        Segmenter(model, NAMES, 64, preprocessing=PERCENTILES).segment_volume(vol)
    auto = Segmenter(model, NAMES, 64, class_logits=auto_class_logits)
    with pytest.raises(ConfigError, match="trained in auto mode"):
        auto.segment_volume(vol, prompts={"objects": [{"box": [[0, 0, 0], [5, 1, 5]]}]})


def test_the_command_segments_a_nifti_from_a_prompt_file(model, volume, tmp_path, monkeypatch, capsys):
    """``--sam FILE --prompts``: the converted-SAM path of the command (the tiny SAM stands in for the
    registry's full-size one) writes what ``segment_volume`` gives, over the input's voxels."""
    import json

    import nibabel as nib

    from samjax import segment

    vol, affine = volume
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "scan.nii.gz")
    spec = {"coordinates": "world", "objects": [{"box": [(affine @ [8, 1, 6, 1])[:3].tolist(),
                                                         (affine @ [36, 2, 31, 1])[:3].tolist()]}]}
    (tmp_path / "boxes.json").write_text(json.dumps(spec))
    built = []

    def from_checkpoint(checkpoint, model_type, image_size, preprocessing, batch_size):
        built.append((checkpoint, model_type, preprocessing))
        return Segmenter(model, ("background",), 64, preprocessing={**preprocessing, "percentiles": [1.0, 99.0]})

    monkeypatch.setattr(Segmenter, "from_checkpoint", staticmethod(from_checkpoint))
    args = ["--sam", "sam_vit_t", "--model-type", "vit_t", "--input", str(tmp_path / "scan.nii.gz"),
            "--axis", "1", "--output", str(tmp_path / "seg.nii.gz")]
    assert segment.main([*args, "--prompts", str(tmp_path / "boxes.json")]) == 0
    assert built == [("sam_vit_t", "vit_t", {"ct_window": None, "axis": 1})]
    written = nib.load(tmp_path / "seg.nii.gz")
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    expected = Segmenter(model, ("background",), 64, preprocessing={"axis": 1, "percentiles": [1.0, 99.0]})
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected.segment_volume(vol, affine, prompts=spec).labels)
    with pytest.raises(SystemExit):
        segment.main([*args, "--overwrite"])
    assert "a converted SAM segments from prompts: give --prompts FILE.json" in capsys.readouterr().err
