"""The masked autoencoder around SAM's encoders: hidden patches cannot leak into the prediction,
visible ones do reach it, and the model is SAM plus MAE's parts under their own names."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from samjax.build_sam import build_sam_from_spec
from samjax.model_spec import get_spec
from samjax.modeling import mae
from samjax.params import flat_params

TINY = {
    "vit": dict(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
                patch_size=8, window_size=2, prompt_embed_dim=32, decoder_mlp_dim=32, decoder_num_heads=2,
                iou_head_hidden_dim=16, mask_in_chans=4, image_size=32),
    "tiny_vit": dict(tiny_embed_dims=(8, 16, 16, 16), tiny_depths=(1, 1, 1, 1), tiny_num_heads=(1, 1, 1, 1),
                     tiny_window_sizes=(2, 2, 2, 2), prompt_embed_dim=32, decoder_mlp_dim=32, decoder_num_heads=2,
                     iou_head_hidden_dim=16, mask_in_chans=4, image_size=64),
}


def _model(kind):
    spec = get_spec("vit_t" if kind == "tiny_vit" else "vit_b").replace(**TINY[kind])
    sam = build_sam_from_spec(spec, rngs=nnx.Rngs(0))
    return mae.MaskedAutoencoder(sam, decoder_dim=16, decoder_depth=1, decoder_heads=2, rngs=nnx.Rngs(1))


@pytest.mark.parametrize("kind", ["vit", "tiny_vit"])
def test_hidden_pixels_cannot_reach_the_prediction(kind):
    model = _model(kind)
    s, (gh, gw), p = model.img_size, model.grid, model.patch_size
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, s, s, 3)), jnp.float32)
    hidden = jnp.asarray(mae.random_masking(jnp.asarray(rng.uniform(size=(2, gh * gw))), 0.75).reshape(2, gh, gw))
    pixels = np.repeat(np.repeat(np.asarray(hidden), p, 1), p, 2)[..., None]
    run = nnx.jit(lambda m, x: m(x, hidden))
    out = np.asarray(run(model, x))
    assert out.shape == (2, gh * gw, p * p * 3)
    changed_hidden = np.asarray(run(model, jnp.where(pixels, x + 5.0, x)))
    np.testing.assert_array_equal(changed_hidden, out)  # nothing of a hidden patch gets through
    changed_visible = np.asarray(run(model, jnp.where(pixels, x, x + 5.0)))
    assert np.abs(changed_visible - out).max() > 1e-3


def test_names_are_sam_plus_mae_parts():
    model = _model("vit")
    names = set(flat_params(model))
    sam_names = set(flat_params(build_sam_from_spec(get_spec("vit_b").replace(**TINY["vit"]), rngs=nnx.Rngs(0))))
    extra = names - sam_names
    assert sam_names <= names
    assert extra and all(n == "mask_token" or n.startswith("mae_decoder.") for n in extra)


def test_sincos_positions_are_distinct_and_bounded():
    emb = mae.sincos_2d((4, 6), 16)
    assert emb.shape == (4, 6, 16) and np.abs(emb).max() <= 1.0
    flat = emb.reshape(-1, 16)
    distances = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    assert (distances + np.eye(24) > 1e-3).all()
    with pytest.raises(ValueError, match="multiple of 4"):
        mae.sincos_2d((2, 2), 6)


def test_encoder_without_hidden_is_unchanged():
    model = _model("vit")
    x = jnp.asarray(np.random.default_rng(3).normal(size=(1, 32, 32, 3)), jnp.float32)
    none_hidden = jnp.zeros((1, 4, 4), bool)
    a = model.image_encoder(x)
    b = model.image_encoder(x, hidden=none_hidden, mask_token=model.mask_token[...])
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
