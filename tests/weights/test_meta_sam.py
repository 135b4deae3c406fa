"""The Meta <-> samjax name table, the conversions both ways, and every way a checkpoint can fail
to fit (through ``build_sam`` on real ``torch.save`` files), plus converted samjax folders."""

import copy
import functools
import json
import os

import numpy as np
import pytest
import segment_anything
import torch

import samjax
from reference import meta_sam_model, state_dict_numpy
from samjax import checkpoint as ckpt
from samjax.build_sam import abstract_sam
from samjax.model_spec import get_spec
from samjax.params import flat_params, param_shapes
from samjax.weights import meta_sam
from samjax.weights.torch_pickle import CheckpointError

SMALL = get_spec("vit_b").replace(image_size=64, encoder_depth=2, encoder_global_attn_indexes=(1,))


# --- name table -----------------------------------------------------------------------------
def _meta_device_model(model_type):
    with torch.device("meta"):
        return segment_anything.sam_model_registry[model_type]()


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
def test_name_table_matches_meta_state_dict(model_type):
    meta_keys = set(_meta_device_model(model_type).state_dict().keys())
    rows = meta_sam.name_table(get_spec(model_type))
    meta_names = [r.meta for r in rows]
    samjax_names = [r.samjax for r in rows]
    assert len(meta_names) == len(set(meta_names)) and len(samjax_names) == len(set(samjax_names))
    assert set(meta_names) == meta_keys, (sorted(set(meta_names) - meta_keys), sorted(meta_keys - set(meta_names)))
    assert {r.layout for r in rows} == {"copy", "linear", "conv", "conv_transpose"}


def test_name_table_matches_samjax_model_and_shapes():
    """vit_b at full size: every Meta tensor, converted by its layout, has the samjax shape."""
    spec = get_spec("vit_b")
    meta_shapes = {k: tuple(v.shape) for k, v in _meta_device_model("vit_b").state_dict().items()}
    ours = param_shapes(abstract_sam(spec))
    assert {r.samjax for r in meta_sam.name_table(spec)} == set(ours)
    # zero-stride stand-ins: the conversion moves axes without allocating the real tensors
    fake = {k: np.broadcast_to(np.float32(0), s) for k, s in meta_shapes.items()}
    converted = meta_sam.from_meta(fake, spec)
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    back = meta_sam.to_meta({k: np.broadcast_to(np.float32(0), s) for k, s in ours.items()}, spec)
    assert {k: tuple(v.shape) for k, v in back.items()} == meta_shapes


# --- conversions ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_meta():
    model = meta_sam_model(SMALL, seed=3)
    return model, state_dict_numpy(model)


def test_from_meta_to_meta_round_trip_is_bitwise(small_meta):
    _, sd = small_meta
    params = meta_sam.from_meta(sd, SMALL)
    assert all(v.dtype == np.float32 for v in params.values())
    back = meta_sam.to_meta(params, SMALL)
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert back[k].shape == v.shape and back[k].dtype == v.dtype, k
        assert back[k].tobytes() == v.tobytes(), k
        assert back[k].flags.c_contiguous, k
    again = meta_sam.from_meta(back, SMALL)
    for k, v in params.items():
        assert again[k].tobytes() == v.tobytes(), k


def test_from_meta_layouts_on_known_tensors(small_meta):
    """Spot checks of each layout against the definition (not through the table's own functions)."""
    _, sd = small_meta
    p = meta_sam.from_meta(sd, SMALL)
    np.testing.assert_array_equal(p["image_encoder.blocks.0.attn.qkv.kernel"], sd["image_encoder.blocks.0.attn.qkv.weight"].T)
    np.testing.assert_array_equal(
        p["image_encoder.patch_embed.kernel"], sd["image_encoder.patch_embed.proj.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        p["mask_decoder.upscale_conv1.kernel"], sd["mask_decoder.output_upscaling.0.weight"].transpose(2, 3, 0, 1)
    )
    np.testing.assert_array_equal(p["prompt_encoder.point_embeddings.2"], sd["prompt_encoder.point_embeddings.2.weight"])
    np.testing.assert_array_equal(p["image_encoder.blocks.1.norm2.scale"], sd["image_encoder.blocks.1.norm2.weight"])


@functools.lru_cache(maxsize=None)
def _shapes(spec):
    return param_shapes(abstract_sam(spec))


def _random_params(spec, seed=0):
    rng = np.random.default_rng(seed)
    shapes = _shapes(spec)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def test_samjax_params_load_strictly_into_meta_model(small_meta):
    """samjax params -> Meta names -> a Meta model's load_state_dict(strict) -> back: unchanged."""
    meta_model, _ = small_meta
    ours = _random_params(SMALL)
    sd = meta_sam.to_meta(ours, SMALL)
    other = copy.deepcopy(meta_model)
    other.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, strict=True)
    back = meta_sam.from_meta(state_dict_numpy(other), SMALL)
    assert set(back) == set(ours)
    for k, v in ours.items():
        assert back[k].tobytes() == v.tobytes(), k


def test_from_meta_reports_missing_and_unexpected(small_meta):
    _, sd = small_meta
    bad = dict(sd)
    del bad["mask_decoder.iou_token.weight"]
    bad["image_encoder.extra.weight"] = np.zeros((3, 5), np.float32)
    with pytest.raises(CheckpointError) as info:
        meta_sam.from_meta(bad, SMALL)
    msg = str(info.value)
    assert "missing:     mask_decoder.iou_token.weight" in msg
    assert "unexpected:  image_encoder.extra.weight (3, 5)" in msg


def test_from_meta_reports_wrong_number_of_dimensions(small_meta):
    _, sd = small_meta
    name = "mask_decoder.transformer.layers.0.mlp.lin1.weight"
    bad = {**sd, name: sd[name][None]}
    with pytest.raises(CheckpointError) as info:
        meta_sam.from_meta(bad, SMALL)
    msg = str(info.value)
    assert name in msg and str(bad[name].shape) in msg and "2 dimensions" in msg


def test_to_meta_reports_missing(small_meta):
    _, sd = small_meta
    params = meta_sam.from_meta(sd, SMALL)
    del params["mask_decoder.mask_tokens"]
    with pytest.raises(CheckpointError, match="missing: +mask_decoder.mask_tokens"):
        meta_sam.to_meta(params, SMALL)


# --- real-depth vit_b .pth files through build_sam --------------------------------------------
VIT_B_64 = get_spec("vit_b").replace(image_size=64)


@pytest.fixture(scope="module")
def vit_b_64(tmp_path_factory):
    """A real-depth vit_b at image size 64, random weights, saved with torch.save."""
    model = meta_sam_model(VIT_B_64, seed=5)
    sd = model.state_dict()
    path = tmp_path_factory.mktemp("vit_b") / "sam_vit_b_64.pth"
    torch.save(sd, path)
    return path, sd


def _save_variant(tmp_path, sd, name, **wrap):
    path = tmp_path / name
    torch.save(sd if not wrap else {**wrap, "model": sd}, path)
    return path


def test_vit_b_checkpoint_loads_exactly(vit_b_64):
    path, sd = vit_b_64
    model = samjax.sam_model_registry["vit_b"](checkpoint=path)
    assert model.img_size == 64
    got = {k: np.asarray(v) for k, v in flat_params(model).items()}
    want = meta_sam.from_meta({k: v.numpy() for k, v in sd.items()}, VIT_B_64)
    assert set(got) == set(want)
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_missing_key(vit_b_64, tmp_path):
    _, sd = vit_b_64
    bad = {k: v for k, v in sd.items() if k != "mask_decoder.iou_prediction_head.layers.1.bias"}
    path = _save_variant(tmp_path, bad, "missing.pth")
    with pytest.raises(CheckpointError) as info:
        samjax.sam_model_registry["vit_b"](checkpoint=path)
    msg = str(info.value)
    assert "missing" in msg and "mask_decoder.iou_prediction_head.layers.1.bias" in msg
    assert "unexpected" not in msg


def test_unexpected_key(vit_b_64, tmp_path):
    _, sd = vit_b_64
    bad = {**sd, "mask_decoder.adapter.weight": torch.zeros(4, 256)}
    path = _save_variant(tmp_path, bad, "unexpected.pth", epoch=3)  # also wrapped under "model"
    with pytest.raises(CheckpointError) as info:
        samjax.sam_model_registry["vit_b"](checkpoint=path)
    msg = str(info.value)
    assert "unexpected" in msg and "mask_decoder.adapter.weight" in msg and "(4, 256)" in msg
    assert "missing" not in msg


WRONG_BIAS = "image_encoder.blocks.3.mlp.lin1.bias"
WRONG_WEIGHT = "image_encoder.blocks.7.attn.proj.weight"
WRONG_WINDOW_REL_POS = "image_encoder.blocks.0.attn.rel_pos_h"  # windowed block: always 2 * 14 - 1 rows


@pytest.fixture(scope="module")
def wrong_shape_error(vit_b_64, tmp_path_factory):
    """One checkpoint with three wrongly shaped tensors (one build): a bias, a linear weight and the
    relative-position table of a windowed block."""
    _, sd = vit_b_64
    assert tuple(sd[WRONG_BIAS].shape) == (3072,) and tuple(sd[WRONG_WEIGHT].shape) == (768, 768)
    assert tuple(sd[WRONG_WINDOW_REL_POS].shape) == (27, 64)
    bad = {
        **sd,
        WRONG_BIAS: torch.zeros(3000),
        WRONG_WEIGHT: torch.zeros(700, 768),
        WRONG_WINDOW_REL_POS: torch.zeros(20, 64),
    }
    path = _save_variant(tmp_path_factory.mktemp("shape"), bad, "wrong_shape.pth")
    with pytest.raises(CheckpointError) as info:
        samjax.build_sam("vit_b", checkpoint=path)
    return path, str(info.value)


def test_wrong_shape_bias(wrong_shape_error):
    path, msg = wrong_shape_error
    assert str(path) in msg and "does not fit the model" in msg
    line = next(l for l in msg.splitlines() if WRONG_BIAS in l)
    assert "wrong shape" in line and "(3000,)" in line and "(3072,)" in line
    assert "missing" not in msg and "unexpected" not in msg


def test_wrong_shape_weight_reports_checkpoint_shapes(wrong_shape_error):
    """The error names the checkpoint's tensor (Meta's name), so it should give that tensor's shape
    as the file holds it, Meta's (out, in) = (700, 768), and the (768, 768) it must have there;
    not the transposed samjax kernel shapes, which the user's file never contains."""
    _, msg = wrong_shape_error
    line = next(l for l in msg.splitlines() if WRONG_WEIGHT in l)
    assert "wrong shape" in line
    assert "(700, 768)" in line, line


def test_wrong_shape_windowed_rel_pos(wrong_shape_error):
    """A windowed block's table does not depend on the image size (resize_pos: "windows do not
    change"), so a (20, 64) table where the model needs (27, 64) is a broken checkpoint and must be
    reported, not silently interpolated to 27 rows."""
    _, msg = wrong_shape_error
    assert WRONG_WINDOW_REL_POS in msg, msg
    line = next(l for l in msg.splitlines() if WRONG_WINDOW_REL_POS in l)
    assert "(20, 64)" in line and "(27, 64)" in line


def test_vit_b_checkpoint_with_vit_l_registry(vit_b_64):
    path, sd = vit_b_64
    for model_type in ("vit_l", "vit_h", "default"):
        with pytest.raises(CheckpointError) as info:
            samjax.sam_model_registry[model_type](checkpoint=path)
        msg = str(info.value)
        assert "vit_b" in msg and "sam_model_registry['vit_b']" in msg
    with pytest.raises(CheckpointError, match="SAM vit_b .*not vit_l.*'vit_b'"):
        meta_sam.from_meta({k: v.numpy() for k, v in sd.items()}, get_spec("vit_l").replace(image_size=64))


def test_not_a_sam_checkpoint(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a SAM"):
        samjax.sam_model_registry["vit_b"](checkpoint=tmp_path / "other.pth")


def test_unknown_depth_is_reported(small_meta, tmp_path):
    _, sd = small_meta
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "depth2.pth")
    with pytest.raises(CheckpointError, match="768 wide and 2 blocks deep"):
        samjax.sam_model_registry["vit_b"](checkpoint=tmp_path / "depth2.pth")


# --- converted samjax folders ---------------------------------------------------------------
def test_save_load_sam_round_trip(tmp_path):
    params = _random_params(SMALL, seed=4)
    folder = tmp_path / "converted"
    ckpt.save_sam(folder, params, "vit_b", 64, source="unit-test")
    assert ckpt.is_checkpoint_dir(folder)
    meta, loaded = ckpt.load_sam(folder)
    assert meta["model_type"] == "vit_b" and meta["image_size"] == 64 and meta["source"] == "unit-test"
    assert meta["format"] == ckpt.FORMAT and meta["version"] == ckpt.VERSION
    assert set(loaded) == set(params)
    for k, v in params.items():
        assert loaded[k].dtype == np.float32 and loaded[k].tobytes() == v.astype(np.float32).tobytes(), k
    with pytest.raises(FileExistsError):
        ckpt.save_sam(folder, params, "vit_b", 64)


def test_folder_without_samjax_json_is_interrupted_conversion(tmp_path):
    folder = tmp_path / "interrupted"
    ckpt.save_sam(folder, {"a.b": np.ones((2, 3), np.float32)}, "vit_b", 64)
    os.remove(folder / ckpt.META_FILE)
    assert not ckpt.is_checkpoint_dir(folder)
    for call in (lambda: ckpt.load_sam(folder), lambda: samjax.sam_model_registry["vit_b"](checkpoint=folder)):
        with pytest.raises(CheckpointError) as info:
            call()
        msg = str(info.value)
        assert "interrupted conversion" in msg and ckpt.META_FILE in msg


def test_folder_with_bad_samjax_json(tmp_path):
    folder = tmp_path / "bad"
    ckpt.save_sam(folder, {"a.b": np.ones((2, 3), np.float32)}, "vit_b", 64)
    (folder / ckpt.META_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        ckpt.load_sam(folder)
    (folder / ckpt.META_FILE).write_text(json.dumps({"format": "other", "model_type": "vit_b"}))
    with pytest.raises(CheckpointError, match="does not describe a samjax SAM"):
        ckpt.load_sam(folder)
    (folder / ckpt.META_FILE).write_text(json.dumps({"format": ckpt.FORMAT, "model_type": "vit_b", "version": 99}))
    with pytest.raises(CheckpointError, match="newer samjax"):
        ckpt.load_sam(folder)
