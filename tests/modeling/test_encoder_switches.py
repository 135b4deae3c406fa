"""The encoder switches on tiny SAMs: stochastic depth and remat (``samjax.modeling.encoder_switches``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from samjax.modeling import encoder_switches, peft
from samjax.modeling.image_encoder import Block, drop_path
from samjax.build_sam import abstract_sam
from tiny_sams import VIT, encode, forward, images, make, set_random


# --- stochastic depth -------------------------------------------------------------------------------


def test_drop_path_function():
    x = jax.random.normal(jax.random.key(0), (4096, 3, 5)) + 2.0
    assert drop_path(x, 0.3, None) is x and drop_path(x, 0.0, jax.random.key(1)) is x
    y = np.asarray(drop_path(x, 0.25, jax.random.key(1)))
    dropped = np.all(y == 0, axis=(1, 2))
    kept = np.all(np.isclose(y, np.asarray(x) / 0.75, rtol=1e-6), axis=(1, 2))
    assert np.all(dropped ^ kept)
    assert abs(dropped.mean() - 0.25) < 0.03
    ones = jnp.ones((20000, 1))
    assert abs(float(drop_path(ones, 0.4, jax.random.key(2)).mean()) - 1.0) < 0.03


def test_drop_path_schedule():
    model = make("vit")
    np.testing.assert_allclose(encoder_switches.set_drop_path(model, 0.2), [0.0, 0.2])
    deep = abstract_sam(VIT.replace(encoder_depth=4, encoder_global_attn_indexes=(3,)))
    rates = encoder_switches.set_drop_path(deep, 0.3)
    np.testing.assert_allclose(rates, [0.0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose([b.drop_path for b in deep.image_encoder.blocks], [0.0, 0.1, 0.2, 0.3])
    tiny = make("tiny_vit")
    np.testing.assert_allclose(encoder_switches.set_drop_path(tiny, 0.3), [0.0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose([b.drop_path for b in tiny.image_encoder.attention_blocks], [0.0, 0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        encoder_switches.set_drop_path(model, 1.0)


@pytest.mark.parametrize("kind", ["vit", "tiny_vit"])
def test_drop_path_in_encoder(kind):
    model = make(kind)
    x = images()
    ref = np.asarray(encode(model, x))
    assert np.array_equal(encode(model, x, jax.random.key(0)), ref)  # rate 0 with a key: no-op
    encoder_switches.set_drop_path(model, 0.5)
    assert np.array_equal(encode(model, x), ref)  # no key (inference): off
    a, b = encode(model, x, jax.random.key(1)), encode(model, x, jax.random.key(2))
    assert not np.allclose(a, b)
    assert np.array_equal(encode(model, x, jax.random.key(1)), a)
    forward(model, x)  # Sam's own call site needs no key


@pytest.mark.parametrize("kind", ["vit", "tiny_vit"])
def test_drop_path_expectation_is_close_to_no_drop(kind):
    """Each sample of a batch draws its own mask: the batch mean of a block ~ its no-drop output (loose)."""
    model = make(kind)
    block = peft.list_encoder_blocks(model)[-1]
    if isinstance(block, Block):
        x = jax.random.normal(jax.random.key(3), (1, 8, 8, 32))
    else:
        x = jax.random.normal(jax.random.key(3), (1, 4, 4, 32))
    ref = block(x)
    block.drop_path = 0.2
    out = block(jnp.broadcast_to(x, (4096,) + x.shape[1:]), key=jax.random.key(4))
    mean = out.mean(0, keepdims=True)
    assert float(jnp.linalg.norm(mean - ref) / jnp.linalg.norm(ref - x)) < 0.2


# --- remat ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,policy", [("vit", None), ("vit", "dots_with_no_batch_dims_saveable"), ("tiny_vit", None)]
)
def test_remat_same_outputs_and_gradients(kind, policy):
    model = make(kind)
    peft.apply_lora(model)
    peft.apply_adapters(model)
    set_random(model, nnx.Any(nnx.LoRAParam, peft.AdapterParam), seed=9, std=0.05)
    encoder_switches.set_drop_path(model, 0.3)
    x = images()
    key = jax.random.key(11)

    def run():
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(params):
            out = nnx.merge(graphdef, params, rest).image_encoder(x, key=key)
            return jnp.mean(out**2), out

        return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

    (l0, out0), g0 = run()
    encoder_switches.set_remat(model, True, policy=policy)
    assert model.image_encoder.remat
    (l1, out1), g1 = run()
    # The same operations; XLA may fuse them differently inside a checkpoint (TinyViT's depthwise
    # convolutions are sums of products), so the last bit may differ.
    np.testing.assert_allclose(out1, out0, rtol=1e-6, atol=2e-6)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    encoder_switches.set_remat(model, False)
    assert not model.image_encoder.remat


def test_remat_scans_repeating_groups_same_results_less_memory():
    """Blocks [w, w, g] x 2 with LoRA and adapters everywhere: remat runs them as a 2-group scan, the two
    windowed blocks an inner scan (block_scan.py), with the unrolled results; the compiled backward
    keeps less than without remat."""
    from samjax.modeling import block_scan

    model = make("vit_groups")
    peft.apply_lora(model)
    peft.apply_adapters(model)
    set_random(model, nnx.Any(nnx.LoRAParam, peft.AdapterParam), seed=9, std=0.05)
    assert block_scan.group_period(list(model.image_encoder.blocks)) == 3
    x = images(batch=4)

    def compiled(remat):
        encoder_switches.set_remat(model, remat)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(params):
            out = nnx.merge(graphdef, params, rest).image_encoder(x)
            return jnp.mean(out**2)

        fn = jax.jit(jax.value_and_grad(loss))
        return fn.lower(params).compile(), params

    (plain, params), (scanned, _) = compiled(False), compiled(True)
    (l0, g0), (l1, g1) = plain(params), scanned(params)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert scanned.memory_analysis().temp_size_in_bytes < plain.memory_analysis().temp_size_in_bytes
    encoder_switches.set_drop_path(model, 0.3)  # per-block rates differ: the blocks run unrolled
    assert block_scan.group_period(list(model.image_encoder.blocks)) is None
