"""The composed model's own entry points against Meta's: preprocess, postprocess and the forward pass."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from reference import TOL, meta_sam_model, rel_err, samjax_from_meta
from samjax.model_spec import get_spec

SPEC = get_spec("vit_b").replace(image_size=128, encoder_depth=2, encoder_global_attn_indexes=(1,))


@pytest.fixture(scope="module")
def models():
    meta = meta_sam_model(SPEC, seed=3)
    return meta, samjax_from_meta(meta, SPEC)


def test_preprocess_matches_meta(models):
    meta, ours = models
    image = np.random.default_rng(0).integers(0, 256, (1, 96, 128, 3)).astype(np.float32)
    ref = meta.preprocess(torch.from_numpy(image).permute(0, 3, 1, 2)).numpy().transpose(0, 2, 3, 1)
    got = np.asarray(ours.preprocess(jnp.asarray(image)))
    assert got.shape == (1, 128, 128, 3)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    with pytest.raises(ValueError, match="larger than the model input"):
        ours.preprocess(jnp.zeros((1, 130, 100, 3)))


@pytest.mark.parametrize("original_size", [(100, 75), (300, 400), (128, 128)])
def test_postprocess_matches_meta(models, original_size):
    meta, ours = models
    low_res = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)
    scale = 128 / max(original_size)
    input_size = (int(original_size[0] * scale + 0.5), int(original_size[1] * scale + 0.5))
    ref = meta.postprocess_masks(torch.from_numpy(low_res), input_size, original_size).numpy()
    for dense in (False, True):  # the banded taps (predictor) and the two matrix products (AMG)
        got = np.asarray(ours.postprocess_masks(jnp.asarray(low_res), input_size, original_size, dense=dense))
        assert got.shape == (2, 3, *original_size)
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_forward_matches_meta(models):
    """``Sam.__call__`` on a batch of two images, each with its own box, equals Meta's batched forward."""
    meta, ours = models
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (2, 128, 128, 3)).astype(np.float32)
    boxes = np.array([[10.0, 20.0, 90.0, 100.0], [0.0, 0.0, 127.0, 60.0]], np.float32)
    with torch.no_grad():
        ref = meta(
            [{"image": torch.from_numpy(im).permute(2, 0, 1), "original_size": (128, 128),
              "boxes": torch.from_numpy(b)[None]} for im, b in zip(images, boxes)],
            multimask_output=True,
        )
    low_res, iou = ours(ours.preprocess(jnp.asarray(images)), boxes=jnp.asarray(boxes), multimask_output=True)
    assert low_res.shape == (2, 3, 32, 32) and iou.shape == (2, 3)
    for i in range(2):
        assert rel_err(low_res[i], ref[i]["low_res_logits"][0].numpy()) <= TOL
        assert rel_err(iou[i], ref[i]["iou_predictions"][0].numpy()) <= TOL


def test_forward_passes_the_drop_path_key_to_the_encoder(models):
    import jax

    from samjax.modeling import encoder_switches

    _, ours = models
    x = ours.preprocess(jnp.asarray(np.random.default_rng(4).integers(0, 256, (2, 128, 128, 3)), jnp.float32))
    boxes = jnp.asarray([[10.0, 20.0, 90.0, 100.0], [0.0, 0.0, 127.0, 60.0]])
    plain = np.asarray(ours(x, boxes=boxes)[0])
    encoder_switches.set_drop_path(ours, 0.5)
    try:
        same = np.asarray(ours(x, boxes=boxes)[0])  # no key: inference, drop path off
        a, b, c = (np.asarray(ours(x, boxes=boxes, key=jax.random.key(k))[0]) for k in (1, 1, 2))
    finally:
        encoder_switches.set_drop_path(ours, 0.0)
    np.testing.assert_array_equal(same, plain)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, plain) and not np.array_equal(a, c)


def test_bfloat16_compute_keeps_fp32_params_and_outputs(models):
    """``dtype=bfloat16`` computes in bf16 over fp32 parameters; the predictor still returns fp32."""

    import samjax
    from reference import sample_image
    from samjax.params import assign_params, flat_params

    _, ours = models
    bf16 = samjax.abstract_sam(SPEC, dtype=jnp.bfloat16)
    assign_params(bf16, flat_params(ours))
    assert all(v.dtype == jnp.float32 for v in flat_params(bf16).values())
    outputs = []
    for model in (ours, bf16):
        pred = samjax.SamPredictor(model)
        pred.set_image(sample_image())
        outputs.append(pred.predict(box=np.array([10.0, 10.0, 100.0, 100.0]), return_logits=True))
    assert pred.features.dtype == jnp.bfloat16
    (m32, iou32, lr32), (m16, iou16, lr16) = outputs
    assert m16.dtype == lr16.dtype == iou16.dtype == np.float32
    assert 1e-4 < rel_err(lr16, lr32) < 5e-2  # bf16 rounding, but the same prediction


def test_decoder_image_side_computed_once_equals_per_prompt(models):
    """The first block's image-side projections made once on the shared image (what the predictor keeps per
    image and AMG shares over a batch of points) give the same masks as the decoder computing them per prompt."""
    _, ours = models
    rng = np.random.default_rng(4)
    features = jnp.asarray(rng.normal(size=(1, 8, 8, 256)).astype(np.float32))
    boxes = jnp.asarray([[10.0, 20.0, 90.0, 100.0], [0.0, 0.0, 127.0, 60.0], [40.0, 40.0, 50.0, 70.0]])
    pe, decoder = ours.prompt_encoder, ours.mask_decoder
    sparse, sparse_mask, dense = pe(None, boxes, None, jnp.ones((3,), bool))
    ref_masks, ref_iou = decoder(features, pe.get_dense_pe(), sparse, dense, True, sparse_mask)
    side = decoder.image_side(features, pe.get_dense_pe(), dense[:1])
    assert [x.shape for x in side] == [(1, 64, 128)] * 3
    masks, iou = decoder(features, pe.get_dense_pe(), sparse, dense, True, sparse_mask, side)
    np.testing.assert_allclose(masks, ref_masks, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(iou, ref_iou, atol=1e-6, rtol=1e-5)
    assert float(jnp.abs(masks[0] - masks[1]).max()) > 1e-2  # the prompts differ: nothing is shared by mistake
    zeroed, _ = decoder(features, pe.get_dense_pe(), sparse, dense, True, sparse_mask,
                        side._replace(t2i_v=side.t2i_v * 0))
    assert float(jnp.abs(zeroed - masks).max()) > 1e-2  # and the given projections are the ones used
