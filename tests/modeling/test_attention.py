"""The encoder attention's three forms compute the same function at 1024-like token counts (64x64, a
global block's grid at 1024 px) on a tiny width, with the same gradients; the encoder switch sets them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from samjax.modeling import attention, encoder_switches
from samjax.modeling.image_encoder import Attention, get_rel_pos

GRID = (64, 64)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    b, n, d = 1, 2, 8
    length = GRID[0] * GRID[1]
    q, k, v = (jnp.asarray(rng.normal(size=(b, n, length, d)), jnp.float32) for _ in range(3))
    rh = get_rel_pos(64, 64, jnp.asarray(rng.normal(size=(127, d)), jnp.float32))
    rw = get_rel_pos(64, 64, jnp.asarray(rng.normal(size=(127, d)), jnp.float32))
    return q, k, v, rh, rw


def _run(form, q, k, v, rh, rw, with_rel=True):
    def f(q, k, v):
        rel_h, rel_w = attention.rel_pos_terms(q, rh, rw, GRID) if with_rel else (None, None)
        return attention.attention(q, k, v, rel_h, rel_w, 8**-0.5, GRID, impl=form)

    out, vjp = jax.vjp(jax.jit(f), q, k, v)
    cotangent = jnp.cos(jnp.arange(out.size, dtype=jnp.float32)).reshape(out.shape)
    return out, vjp(cotangent)


@pytest.mark.parametrize("with_rel", [True, False], ids=["rel_pos", "plain"])
def test_forms_agree_with_gradients(inputs, with_rel):
    reference = _run("reference", *inputs, with_rel=with_rel)
    scale = float(jnp.abs(reference[0]).max())
    for form in ("blocked", "fused"):
        out, grads = _run(form, *inputs, with_rel=with_rel)
        np.testing.assert_allclose(out, reference[0], atol=2e-6 * scale, err_msg=form)
        for g, r in zip(grads, reference[1]):
            np.testing.assert_allclose(g, r, atol=2e-5 * float(jnp.abs(r).max()), err_msg=form)


def test_blocked_handles_windows_and_lengths_without_a_round_chunk(inputs):
    q, k, v, _, _ = inputs
    rng = np.random.default_rng(1)
    grid = (14, 14)  # a window: all heads of one window at a time
    qw, kw, vw = (jnp.asarray(rng.normal(size=(3, 2, 196, 8)), jnp.float32) for _ in range(3))
    rh = get_rel_pos(14, 14, jnp.asarray(rng.normal(size=(27, 8)), jnp.float32))
    rel = attention.rel_pos_terms(qw, rh, rh, grid)
    np.testing.assert_allclose(attention.blocked(qw, kw, vw, *rel, 0.3, grid),
                               attention.reference(qw, kw, vw, *rel, 0.3, grid), rtol=1e-5, atol=1e-6)
    # 48 x 48 tokens (768 px): chunks of 384 queries, the largest divisor of 2304 not above 512.
    assert attention._chunk_size(48 * 48, 512) == 384
    grid = (48, 48)
    qg, kg, vg = (x[:, :, : 48 * 48] for x in (q, k, v))
    rh = get_rel_pos(48, 48, jnp.asarray(rng.normal(size=(95, 8)), jnp.float32))
    rel = attention.rel_pos_terms(qg, rh, rh, grid)
    np.testing.assert_allclose(attention.blocked(qg, kg, vg, *rel, 0.3, grid),
                               attention.reference(qg, kg, vg, *rel, 0.3, grid), rtol=1e-5, atol=1e-6)


def test_auto_choice_and_the_switch():
    assert attention.choose("auto", (1, 12, 4096, 64), jnp.float32, "cpu") == "blocked"
    assert attention.choose("auto", (2, 12, 256, 64), jnp.float32, "cpu") == "reference"
    assert attention.choose("auto", (1, 12, 4096, 64), jnp.bfloat16, "gpu") == "fused"
    assert attention.choose("auto", (1, 12, 4096, 64), jnp.float32, "gpu") == "reference"
    with pytest.raises(ValueError, match="must be one of"):
        attention.choose("flash", (1, 1, 1, 1), jnp.float32)
    module = Attention(16, 2, GRID, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 64, 64, 16)), jnp.float32)
    outputs = {}
    for form in ("reference", "blocked", "fused"):
        assert encoder_switches.set_attention(module, form) == 1 and module.impl == form
        outputs[form] = np.asarray(nnx.jit(lambda m, x: m(x))(module, x))
    for form in ("blocked", "fused"):
        np.testing.assert_allclose(outputs[form], outputs["reference"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="must be one of"):
        encoder_switches.set_attention(module, "flash")
