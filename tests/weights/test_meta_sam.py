"""The Meta <-> samjax name table, the conversions both ways, and every way a checkpoint can fail
to fit (through ``build_sam`` on real ``torch.save`` files), plus converted samjax folders."""

import json
import os

import numpy as np
import pytest
import segment_anything
import torch
from flax import nnx

import samjax
from reference import meta_sam_model, state_dict_numpy
from samjax import checkpoint as ckpt
from samjax.build_sam import build_sam_from_spec
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
    ours = param_shapes(nnx.eval_shape(lambda: build_sam_from_spec(spec)))
    assert {r.samjax for r in meta_sam.name_table(spec)} == set(ours)
    # zero-stride stand-ins: the conversion moves axes without allocating the real tensors
    fake = {k: np.broadcast_to(np.float32(0), s) for k, s in meta_shapes.items()}
    converted = meta_sam.from_meta(fake, spec)
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    back = meta_sam.to_meta({k: np.broadcast_to(np.float32(0), s) for k, s in ours.items()}, spec)
    assert {k: tuple(v.shape) for k, v in back.items()} == meta_shapes


def test_name_table_small_spec_matches_samjax_model():
    ours = param_shapes(nnx.eval_shape(lambda: build_sam_from_spec(SMALL)))
    assert {r.samjax for r in meta_sam.name_table(SMALL)} == set(ours)


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


def test_samjax_model_round_trip_through_meta_names(small_meta):
    """samjax params -> Meta names -> a Meta model's load_state_dict(strict) -> back: unchanged."""
    meta_model, _ = small_meta
    ours = {k: np.asarray(v) for k, v in flat_params(build_sam_from_spec(SMALL)).items()}
    sd = meta_sam.to_meta(ours, SMALL)
    other = meta_sam_model(SMALL, seed=9)
    other.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    back = meta_sam.from_meta(state_dict_numpy(other), SMALL)
    for k, v in ours.items():
        assert back[k].tobytes() == v.astype(np.float32).tobytes(), k


def test_from_meta_reports_missing_and_unexpected(small_meta):
    _, sd = small_meta
    bad = dict(sd)
    del bad["mask_decoder.iou_token.weight"]
    bad["image_encoder.extra.weight"] = np.zeros((3, 5), np.float32)
    with pytest.raises(CheckpointError) as info:
        meta_sam.from_meta(bad, SMALL)
    msg = str(info.value)
    assert "missing:    mask_decoder.iou_token.weight" in msg
    assert "unexpected: image_encoder.extra.weight (3, 5)" in msg


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


def test_wrong_shape_bias(vit_b_64, tmp_path):
    _, sd = vit_b_64
    name = "image_encoder.blocks.3.mlp.lin1.bias"
    bad = {**sd, name: torch.zeros(3000)}
    path = _save_variant(tmp_path, bad, "shape_bias.pth")
    with pytest.raises(CheckpointError) as info:
        samjax.build_sam("vit_b", checkpoint=path)
    msg = str(info.value)
    assert "wrong shape" in msg and name in msg and "(3000,)" in msg and "(3072,)" in msg
    assert str(path) in msg


def test_wrong_shape_weight_reports_checkpoint_shapes(vit_b_64, tmp_path):
    """The error names the checkpoint's tensor, so it should give that tensor's shape as the file
    holds it (Meta's (out, in)), and the shape the checkpoint format needs there."""
    _, sd = vit_b_64
    name = "image_encoder.blocks.3.mlp.lin1.weight"
    assert tuple(sd[name].shape) == (3072, 768)
    bad = {**sd, name: torch.zeros(3000, 768)}
    path = _save_variant(tmp_path, bad, "shape_weight.pth")
    with pytest.raises(CheckpointError) as info:
        samjax.build_sam("vit_b", checkpoint=path)
    msg = str(info.value)
    assert "wrong shape" in msg and name in msg
    assert "(3000, 768)" in msg and "(3072, 768)" in msg, msg


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
def _small_params():
    return {k: np.asarray(v) for k, v in flat_params(build_sam_from_spec(SMALL, rngs=nnx.Rngs(4))).items()}


def test_save_load_sam_round_trip(tmp_path):
    params = _small_params()
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
