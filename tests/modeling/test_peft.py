"""PEFT (LoRA, adapters) on tiny SAMs (ViT and MobileSAM's TinyViT encoders)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from samjax.modeling import peft
from samjax.params import flat_params
from tiny_sams import BOXES, forward, images, make, set_random

# Independently of the model code: (width, heads) of every "encoder block" of each spec.
ENCODER_BLOCKS = {
    "vit": [(32, 2)] * 2,
    "tiny_vit": [(16, 2), (24, 2), (24, 2), (32, 2)],  # stages 1-3 of TINY, flat
}
C, DS, DECODER_DEPTH = 32, 2, 2  # decoder width, attention downsample rate, two-way blocks


def lora_count(kind, rank, blocks=None, decoder=True):
    widths = [w for i, (w, _) in enumerate(ENCODER_BLOCKS[kind]) if blocks is None or i in blocks]
    enc = sum(2 * rank * (w + w) for w in widths)  # q and v of the fused qkv: A (w, r), B (r, w) each
    per_attn = {"self": 2 * rank * (C + C), "cross": 2 * rank * (C + C // DS)}
    dec = DECODER_DEPTH * (per_attn["self"] + 2 * per_attn["cross"]) + per_attn["cross"]
    return enc + (dec if decoder else 0)


def adapter_count(kind, blocks=None, decoder=True, ratio=0.25):
    def one(d):
        h = int(d * ratio)
        return d * h + h + h * d + d

    enc = sum(2 * one(w) for i, (w, _) in enumerate(ENCODER_BLOCKS[kind]) if blocks is None or i in blocks)
    return enc + (DECODER_DEPTH * 2 * one(C) if decoder else 0)


# --- identity at init, names, counts, filters -------------------------------------------------------


@pytest.mark.parametrize("kind", ["vit", "tiny_vit"])
def test_peft_at_init_leaves_blocks_bit_identical(kind):
    """Zero B / zero up-projections: each block computes exactly what it did (eager, op by op)."""
    model = make(kind)
    enc_block = peft.list_encoder_blocks(model)[-1]
    dec_block = model.mask_decoder.transformer.layers[0]
    width = enc_block.attn.qkv.in_features
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, width) if kind == "vit" else (2, 4, 4, width))
    tokens = jax.random.normal(jax.random.key(1), (2, 5, C))
    image = jax.random.normal(jax.random.key(2), (2, 16, C))
    dec_args = (tokens, image, tokens * 0.5, image * 0.5, jnp.array([[1, 1, 1, 1, 0]] * 2, bool))
    before = enc_block(x), dec_block(*dec_args)
    peft.apply_lora(model, rank=4, rngs=nnx.Rngs(7))
    peft.apply_adapters(model, rngs=nnx.Rngs(8))
    assert enc_block.adapter_attn is not None and isinstance(enc_block.attn.qkv, peft.LoRALinear)
    assert dec_block.adapter_self_attn is not None and isinstance(dec_block.self_attn.q_proj, peft.LoRALinear)
    after = enc_block(x), dec_block(*dec_args)
    for got, want in zip(jax.tree.leaves(after), jax.tree.leaves(before)):
        assert np.array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("kind", ["vit", "tiny_vit"])
@pytest.mark.parametrize("method", ["lora", "adapters", "both"])
def test_peft_only_adds_names(kind, method):
    model = make(kind)
    before = flat_params(model)
    if method in ("lora", "both"):
        peft.apply_lora(model, rank=4, rngs=nnx.Rngs(7))
    if method in ("adapters", "both"):
        peft.apply_adapters(model, rngs=nnx.Rngs(8))
    after = flat_params(model)
    assert set(before) <= set(after)
    for name, value in before.items():
        assert after[name].shape == value.shape and np.array_equal(after[name], value), name
    new = set(after) - set(before)
    assert new and all(".lora_" in n or ".adapter_" in n for n in new)
    if method == "lora":
        assert all(n.rsplit(".", 1)[-1] in ("lora_a", "lora_b") for n in new)
    hash(nnx.graphdef(model))  # predictor programs take the graph definition as a static argument


@pytest.mark.parametrize("kind", ["vit", "tiny_vit"])
def test_peft_at_init_model_output_unchanged(kind):
    """End to end under jit: the same numbers (the compiler may fuse the larger program differently)."""
    model = make(kind)
    x = images()
    before = forward(model, x)
    peft.apply_lora(model, rank=4, rngs=nnx.Rngs(7))
    peft.apply_adapters(model, rngs=nnx.Rngs(8))
    for got, want in zip(forward(model, x), before):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_param_paths_keep_checkpoint_names():
    model = make("vit")
    peft.apply_lora(model)
    names = set(flat_params(model))
    assert {"image_encoder.blocks.0.attn.qkv.kernel", "image_encoder.blocks.0.attn.qkv.bias",
            "image_encoder.blocks.0.attn.qkv.lora_a", "image_encoder.blocks.0.attn.qkv.lora_b",
            "mask_decoder.transformer.layers.0.self_attn.q_proj.kernel",
            "mask_decoder.transformer.final_attn_token_to_image.v_proj.lora_b"} <= names
    assert isinstance(model.image_encoder.blocks[0].attn.qkv, nnx.Linear)
    assert model.image_encoder.blocks[0].attn.qkv.lora_a.shape == (2, 32, 4)
    assert model.image_encoder.blocks[0].attn.qkv.lora_b.shape == (2, 4, 32)
    tiny = make("tiny_vit")
    peft.apply_adapters(tiny)
    assert "image_encoder.layers.2.1.adapter_mlp.up.kernel" in flat_params(tiny)


@pytest.mark.parametrize("kind", ["vit", "tiny_vit"])
@pytest.mark.parametrize("blocks,decoder", [("all", True), ([1], True), (None, True), ("all", False)])
def test_lora_count_and_filter(kind, blocks, decoder):
    model = make(kind)
    base_names, base_count = set(flat_params(model)), peft.count_params(model)
    added = peft.apply_lora(model, rank=3, encoder_blocks=blocks, decoder=decoder)
    expected = lora_count(kind, 3, None if blocks == "all" else (blocks or []), decoder)
    assert added == expected
    assert peft.count_params(model, nnx.LoRAParam) == expected
    assert peft.count_params(model, nnx.All(nnx.Param, nnx.OfType(peft.LoRAParam))) == expected
    assert peft.count_params(model, peft.AdapterParam) == 0
    assert peft.count_params(model) == base_count + expected  # LoRAParam is an nnx.Param
    selected = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam))}
    assert selected == set(flat_params(model)) - base_names


@pytest.mark.parametrize("kind", ["vit", "tiny_vit"])
@pytest.mark.parametrize("blocks,decoder", [("all", True), ([0, 1], False), (None, True)])
def test_adapter_count_and_filter(kind, blocks, decoder):
    model = make(kind)
    base_names, base_count = set(flat_params(model)), peft.count_params(model)
    added = peft.apply_adapters(model, encoder_blocks=blocks, decoder=decoder)
    expected = adapter_count(kind, None if blocks == "all" else (blocks or []), decoder)
    assert added == expected == peft.count_params(model, nnx.OfType(peft.AdapterParam))
    assert peft.count_params(model, nnx.LoRAParam) == 0
    assert peft.count_params(model) == base_count + expected
    selected = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, peft.AdapterParam))}
    assert selected == set(flat_params(model)) - base_names


def test_apply_twice_and_bad_selection_raise():
    model = make("vit")
    peft.apply_lora(model)
    with pytest.raises(ValueError, match="already"):
        peft.apply_lora(model)
    peft.apply_adapters(model)
    with pytest.raises(ValueError, match="already"):
        peft.apply_adapters(model)
    with pytest.raises(IndexError):
        peft.apply_adapters(make("vit"), encoder_blocks=[5])
    with pytest.raises(ValueError):
        peft.apply_lora(make("vit"), encoder_blocks="some")


# --- LoRA against a hand computation ---------------------------------------------------------------


def _np(x):
    return np.asarray(x, np.float64)


def test_lora_vit_qkv_matches_hand_computation():
    model = make("vit")
    attn = model.image_encoder.blocks[0].attn
    base_kernel, base_bias = _np(attn.qkv.kernel[...]), _np(attn.qkv.bias[...])
    peft.apply_lora(model, rank=4, alpha=8.0)  # scale 2
    qkv = attn.qkv
    assert qkv.scale == 2.0
    set_random(qkv, nnx.LoRAParam, seed=3)
    a, b = _np(qkv.lora_a[...]), _np(qkv.lora_b[...])
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 32)).astype(np.float32)
    want = x @ base_kernel + base_bias
    want[..., 0:32] += 2.0 * (x @ a[0]) @ b[0]  # q
    want[..., 64:96] += 2.0 * (x @ a[1]) @ b[1]  # v
    got = np.asarray(qkv(jnp.asarray(x)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[..., 32:64], (x @ base_kernel + base_bias)[..., 32:64], rtol=1e-6, atol=1e-6)
    delta = np.concatenate([2 * a[0] @ b[0], np.zeros((32, 32)), 2 * a[1] @ b[1]], axis=1)
    np.testing.assert_allclose(_np(qkv.delta_kernel()), delta, rtol=1e-5, atol=1e-6)


def test_lora_tiny_vit_targets_per_head_q_and_v():
    """TinyViT's qkv is laid out per head ([q_h k_h v_h] per head): LoRA must still hit only q and v."""
    model = make("tiny_vit")
    attn = model.image_encoder.attention_blocks[1].attn  # width 24, 2 heads of 12
    peft.apply_lora(model, rank=2)
    set_random(attn.qkv, nnx.LoRAParam, seed=4)
    a, b = _np(attn.qkv.lora_a[...]), _np(attn.qkv.lora_b[...])
    x = np.random.default_rng(1).normal(size=(3, 4, 24)).astype(np.float32)
    base = _np(x) @ _np(attn.qkv.kernel[...]) + _np(attn.qkv.bias[...])
    got = _np(attn.qkv(jnp.asarray(x)))
    # split as TinyViT's Attention does: (B, N, heads, 3 * head_dim) -> q, k, v per head
    split = lambda y: np.split(y.reshape(3, 4, 2, 36), 3, axis=-1)  # noqa: E731
    (q0, k0, v0), (q1, k1, v1) = split(base), split(got)
    dq = ((_np(x) @ a[0]) @ b[0]).reshape(3, 4, 2, 12)
    dv = ((_np(x) @ a[1]) @ b[1]).reshape(3, 4, 2, 12)
    np.testing.assert_allclose(q1, q0 + dq, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(k1, k0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(v1, v0 + dv, rtol=1e-5, atol=1e-5)


def test_lora_decoder_projection_and_model_output_change():
    model = make("vit")
    x = images()
    before = forward(model, x)
    peft.apply_lora(model, rank=4)
    proj = model.mask_decoder.transformer.layers[1].cross_attn_token_to_image.q_proj  # 32 -> 16
    assert proj.lora_a.shape == (1, 32, 4) and proj.lora_b.shape == (1, 4, 16)
    set_random(model, nnx.LoRAParam, seed=5)
    t = np.random.default_rng(2).normal(size=(2, 5, 32)).astype(np.float32)
    want = _np(t) @ _np(proj.kernel[...]) + _np(proj.bias[...]) + (_np(t) @ _np(proj.lora_a[0])) @ _np(proj.lora_b[0])
    np.testing.assert_allclose(_np(proj(jnp.asarray(t))), want, rtol=1e-5, atol=1e-5)
    after = forward(model, x)
    assert not np.allclose(after[0], before[0], atol=1e-3)


@pytest.mark.parametrize("kind", ["vit", "tiny_vit"])
def test_merge_lora_restores_names_and_output(kind):
    model = make(kind)
    x = images()
    names = set(flat_params(model))
    peft.apply_lora(model, rank=4, alpha=2.0)
    set_random(model, nnx.LoRAParam, seed=6, std=0.1)
    with_lora = forward(model, x)
    n = peft.merge_lora(model)
    assert n == len(ENCODER_BLOCKS[kind]) + 2 * (3 * DECODER_DEPTH + 1)
    assert set(flat_params(model)) == names
    assert peft.count_params(model, nnx.LoRAParam) == 0
    merged = forward(model, x)
    for got, want in zip(merged, with_lora):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


# --- gradients --------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0)
def _loss_grads(graphdef, trainable, rest, x):
    def loss(trainable):
        model = nnx.merge(graphdef, trainable, rest)
        low_res, iou = model(x, boxes=BOXES[: x.shape[0]], multimask_output=True)
        return jnp.mean(low_res**2) + jnp.mean(iou**2)

    return jax.grad(loss)(trainable)


def _grads(model, filter, x):
    graphdef, trainable, rest = nnx.split(model, filter, ...)
    return trainable, _loss_grads(graphdef, trainable, rest, x)


def _nonzero(grads, suffix):
    flat = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(grads)}
    chosen = {k: v for k, v in flat.items() if k.endswith(suffix)}
    assert chosen
    return {k: bool(jnp.any(v[...] != 0)) for k, v in chosen.items()}


@pytest.mark.parametrize("kind", ["vit", "tiny_vit"])
def test_lora_and_adapter_gradients(kind):
    model = make(kind)
    peft.apply_lora(model)
    peft.apply_adapters(model)
    x = images()
    filt = nnx.Any(nnx.LoRAParam, peft.AdapterParam)
    trainable, grads = _grads(model, filt, x)
    # B and the up-projections start at zero: they get gradients, A and the down-projections not yet
    assert all(_nonzero(grads, "lora_b").values())
    assert not any(_nonzero(grads, "lora_a").values())
    assert all(_nonzero(grads, "up.kernel").values())
    assert not any(_nonzero(grads, "down.kernel").values())
    stepped = jax.tree.map(lambda p, g: p - 1.0 * g, trainable, grads)
    nnx.update(model, stepped)
    _, grads = _grads(model, filt, x)
    for suffix in ("lora_a", "lora_b", "down.kernel", "up.kernel"):
        assert all(_nonzero(grads, suffix).values()), suffix
