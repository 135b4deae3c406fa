"""Windowed attention computes what Meta's does (zero-pad, attend in every window, crop), skipping only
the padding's projections and the padded queries' outputs; every attention form, with LoRA's qkv."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from samjax.modeling import peft
from samjax.modeling.image_encoder import Attention
from samjax.modeling.windows import GROUP_EDGES_FLOPS, _spans, edge_work, window_attention, window_partition, \
    window_unpartition


def _meta_windowed(attn: Attention, x, ws: int):
    """Meta's ``Block`` attention branch: zero-padded windows through the whole attention, cropped."""
    windows, pad_hw = window_partition(x, ws)
    return window_unpartition(attn(windows), ws, pad_hw, x.shape[1:3])


def test_spans_group_windows_by_their_real_size():
    # ViT-B at 256 px, batch 2: 528 padded queries x 196 keys x 768 channels x 4 FLOPs each group their edges
    assert edge_work((2, 16, 16, 3 * 768), 14) == 4.0 * 2 * 528 * 196 * 768 >= GROUP_EDGES_FLOPS
    assert edge_work((2, 8, 8, 3 * 32), 3) < GROUP_EDGES_FLOPS and edge_work((1, 28, 28, 96), 14) == 0
    assert _spans(16, 14) == [(0, 1, 14), (1, 2, 2)]
    assert _spans(64, 14) == [(0, 4, 14), (4, 5, 8)]
    assert _spans(28, 14) == [(0, 2, 14)]
    assert _spans(5, 7) == [(0, 1, 5)]


@pytest.mark.parametrize("form,lora", [("reference", False), ("reference", True), ("blocked", True),
                                       ("fused", True)])
def test_window_attention_equals_padding_then_cropping(form, lora):
    ws, dim = 7, 16
    attn = Attention(dim, 2, (ws, ws), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    for name in ("rel_pos_h", "rel_pos_w"):
        getattr(attn, name)[...] = jnp.asarray(rng.normal(size=(2 * ws - 1, dim // 2)), jnp.float32)
    attn.qkv.bias[...] = jnp.asarray(rng.normal(size=(3 * dim,)), jnp.float32)
    if lora:
        attn.qkv = peft.LoRALinear(attn.qkv, rank=2, slices=peft.qkv_slices(dim, 2), rngs=nnx.Rngs(1))
        attn.qkv.lora_b[...] = jnp.asarray(rng.normal(size=attn.qkv.lora_b.shape), jnp.float32)
    attn.impl = form
    # 17 x 20 tokens in 7 x 7 windows: full, right-edge, bottom-edge and corner windows all occur.
    x = jnp.asarray(rng.normal(size=(2, 17, 20, dim)), jnp.float32)
    meta = _meta_windowed(attn, x, ws)
    for group_edges in (True, False):
        ours = attn.proj(window_attention(attn.attend, attn.qkv(x), ws, attn.qkv_of_zero(), group_edges))
        np.testing.assert_allclose(ours, meta, rtol=1e-5, atol=1e-5, err_msg=f"group_edges={group_edges}")
