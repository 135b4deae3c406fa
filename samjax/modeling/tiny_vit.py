"""MobileSAM's image encoder (ViT-T): TinyViT-5M distilled from SAM's ViT-H.

Follows ``TinyViT`` of MobileSAM block for block, channels-last: a two-conv stem (4x down), a stage of
MBConv blocks, then three stages of windowed attention blocks (attention with a learned bias per
head and relative offset, a depthwise 3x3 "local" conv, an MLP), patch merging between stages, and
SAM's neck to a ``(B, S/16, S/16, 256)`` image embedding.

Batch norm is *not* folded into the convolutions: each ``Conv2d_BN`` keeps its scale, shift and
running statistics, and always normalizes with the running statistics (frozen batch norm, as in
inference and as usual when fine-tuning), so checkpoints map one tensor to one tensor both ways.

Training switches, all off by default: stochastic depth on the attention blocks (``TinyViTBlock.drop_path``,
active only when the encoder is called with a ``key``), rematerialization of every block
(``TinyViT.remat``), and the adapters of ``samjax.modeling.peft``. The "encoder blocks" PEFT and
stochastic depth count are the attention blocks (``TinyViT.attention_blocks``), numbered flat across
stages 1-3 (10 for MobileSAM); the convolutional stage 0 has none of these options.
"""

from __future__ import annotations

import functools
import itertools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from samjax.modeling import initializers
from samjax.modeling.common import Dtype, default_kernel_init, dense, gelu, layer_norm, layer_norm_2d, with_axes
from samjax.modeling.image_encoder import call_block, drop_path
from samjax.modeling.windows import window_partition, window_unpartition

TINY_NORM_EPS = 1e-5  # TinyViT's nn.LayerNorm default (the neck's LayerNorm2d keeps 1e-6)
BN_EPS = 1e-5


# Fan-in scaled, so a randomly initialized ViT-T (training from scratch) keeps its signal through the
# convolutions: the batch norms are frozen (running statistics), so nothing renormalizes between them.
CONV_INIT = initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


DEPTHWISE_SUM_FLOPS = 1e6  # MobileSAM at 1024: 3e8 (first stage), 1.2e7 (stage 2); tiny test models: 1e5


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
    """Depthwise convolution of ``x (B, H, W, C)`` by ``kernel (k, k, 1, C)``: the k*k shifted products summed.

    The same function as ``lax.conv`` with ``feature_group_count=C``, which XLA:CPU runs as C separate
    tiny convolutions (0.43 s for MobileSAM's first 3x3 at 1024 px); this form is one fused pass. It
    compiles to more code, so ``Conv2dBN`` takes it from ``DEPTHWISE_SUM_FLOPS`` up (not for tiny models).
    """
    k = kernel.shape[0]
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = None
    for dy in range(k):
        for dx in range(k):
            patch = x[:, dy: dy + stride * (ho - 1) + 1: stride, dx: dx + stride * (wo - 1) + 1: stride, :]
            term = patch * kernel[dy, dx, 0]
            out = term if out is None else out + term
    return out


class Conv2dBN(nnx.Module):
    """Convolution without bias followed by frozen batch norm (MobileSAM's ``Conv2d_BN``)."""

    def __init__(
        self, cin: int, cout: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1,
        *, rngs: nnx.Rngs, dtype: Dtype = jnp.float32,
    ):
        self.c = nnx.Conv(
            cin, cout, kernel_size=(ks, ks), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
            feature_group_count=groups, use_bias=False, dtype=dtype, kernel_init=CONV_INIT, rngs=rngs,
        )
        self.bn_scale = nnx.Param(jnp.ones((cout,), jnp.float32))
        self.bn_bias = nnx.Param(jnp.zeros((cout,), jnp.float32))
        self.bn_mean = nnx.BatchStat(jnp.zeros((cout,), jnp.float32))
        self.bn_var = nnx.BatchStat(jnp.ones((cout,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        conv = self.c
        dtype = conv.dtype or x.dtype
        depthwise = conv.feature_group_count > 1 and conv.feature_group_count == conv.in_features == conv.out_features
        if depthwise and 2 * x.size * conv.kernel_size[0] * conv.kernel_size[1] >= DEPTHWISE_SUM_FLOPS:
            x = depthwise_conv(x.astype(dtype), conv.kernel[...].astype(dtype), conv.strides[0], conv.padding[0][0])
        elif conv.kernel_size == (1, 1) and conv.feature_group_count == 1 and conv.strides == (1, 1) and \
                conv.padding == ((0, 0), (0, 0)):
            x = x.astype(dtype) @ conv.kernel[...][0, 0].astype(dtype)  # a matmul: XLA:CPU's conv is ~2x slower
        else:
            x = conv(x)
        inv = self.bn_scale[...] / jnp.sqrt(self.bn_var[...] + BN_EPS)
        return ((x - self.bn_mean[...]) * inv + self.bn_bias[...]).astype(x.dtype)


class MBConv(nnx.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU."""

    def __init__(self, dim: int, expand_ratio: float, *, rngs: nnx.Rngs, dtype: Dtype = jnp.float32):
        hidden = int(dim * expand_ratio)
        kw = dict(rngs=rngs, dtype=dtype)
        self.conv1 = Conv2dBN(dim, hidden, **kw)
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden, **kw)
        self.conv3 = Conv2dBN(hidden, dim, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = gelu(self.conv1(x))
        y = gelu(self.conv2(y))
        return gelu(self.conv3(y) + x)


class PatchMerging(nnx.Module):
    """1x1 conv, 3x3 depthwise conv (stride 2, or 1 into MobileSAM's last stage), 1x1 conv."""

    def __init__(self, dim: int, out_dim: int, stride: int, *, rngs: nnx.Rngs, dtype: Dtype = jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype)
        self.conv1 = Conv2dBN(dim, out_dim, **kw)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim, **kw)
        self.conv3 = Conv2dBN(out_dim, out_dim, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv3(gelu(self.conv2(gelu(self.conv1(x)))))


@functools.lru_cache(maxsize=None)
def attention_bias_index(window: int) -> np.ndarray:
    """``(window^2, window^2)`` index of each (query, key) pair's |dy|, |dx| offset, in first-seen order."""
    points = list(itertools.product(range(window), range(window)))
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(offsets.setdefault(offset, len(offsets)))
    return np.asarray(idxs, np.int32).reshape(len(points), len(points))


class Attention(nnx.Module):
    """LayerNorm + multi-head attention over one window, with a learned bias per offset and head."""

    def __init__(self, dim: int, num_heads: int, window: int, *, rngs: nnx.Rngs, dtype: Dtype = jnp.float32):
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.scale = self.key_dim**-0.5
        self.norm = layer_norm(dim, TINY_NORM_EPS, rngs=rngs, dtype=dtype)
        self.qkv = dense(dim, 3 * dim, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.proj = dense(dim, dim, ("heads", "embed"), rngs=rngs, dtype=dtype)
        self.window = window
        n_offsets = int(attention_bias_index(window).max()) + 1
        self.attention_biases = nnx.Param(with_axes(initializers.zeros_init, (None, None))(
            rngs.params(), (num_heads, n_offsets)))

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(B, N, dim)`` -> ``(B, N, dim)``; N is the window's area."""
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, n, self.num_heads, 3 * self.key_dim)
        q, k, v = jnp.split(qkv.transpose(0, 2, 1, 3), 3, axis=-1)  # per head: [q | k | v]
        bias = self.attention_biases[...][:, attention_bias_index(self.window)]  # (heads, N, N)
        logits = jnp.einsum("bhqd,bhkd->bhqk", q, k) * self.scale + bias.astype(q.dtype)
        attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bhkd->bqhd", attn, v).reshape(b, n, -1)
        return self.proj(out)


class Mlp(nnx.Module):
    """LayerNorm, Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, dtype: Dtype = jnp.float32):
        self.norm = layer_norm(dim, TINY_NORM_EPS, rngs=rngs, dtype=dtype)
        self.fc1 = dense(dim, hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.fc2 = dense(hidden, dim, ("mlp", "embed"), rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nnx.Module):
    """Windowed attention (zero-padded windows), residual; depthwise 3x3 conv; MLP, residual.

    Optional, off by default: ``drop_path`` (stochastic depth of both residual branches, used only
    when called with a ``key``); ``adapter_attn`` (on the attention output, before the residual add);
    ``adapter_mlp`` (parallel to the MLP, fed the MLP's own LayerNorm of its input:
    ``x = x + mlp(x) + adapter_mlp(mlp.norm(x))``).
    """

    def __init__(
        self, dim: int, num_heads: int, window_size: int, mlp_ratio: float = 4.0,
        *, rngs: nnx.Rngs, dtype: Dtype = jnp.float32,
    ):
        kw = dict(rngs=rngs, dtype=dtype)
        self.window_size = window_size
        self.attn = Attention(dim, num_heads, window_size, **kw)
        self.local_conv = Conv2dBN(dim, dim, 3, 1, 1, groups=dim, **kw)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), **kw)
        self.drop_path = 0.0
        self.adapter_attn = nnx.data(None)
        self.adapter_mlp = nnx.data(None)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``(B, H, W, C)`` -> ``(B, H, W, C)``; ``key`` drives stochastic depth (training only)."""
        key_attn = key_mlp = None
        if key is not None and self.drop_path > 0.0:
            key_attn, key_mlp = jax.random.split(key)
        b, h, w, c = x.shape
        ws = self.window_size
        windows, pad_hw = window_partition(x, ws)
        windows = self.attn(windows.reshape(-1, ws * ws, c)).reshape(-1, ws, ws, c)
        attn = window_unpartition(windows, ws, pad_hw, (h, w))
        if self.adapter_attn is not None:
            attn = self.adapter_attn(attn)
        x = x + drop_path(attn, self.drop_path, key_attn)
        x = self.local_conv(x)
        branch = self.mlp(x)
        if self.adapter_mlp is not None:
            branch = branch + self.adapter_mlp(self.mlp.norm(x))
        return x + drop_path(branch, self.drop_path, key_mlp)


class TinyViT(nnx.Module):
    """MobileSAM's ViT-T encoder.

    Args:
      img_size: side of the square input.
      embed_dims, depths, num_heads, window_sizes: per stage (stage 0 is convolutional).
      out_chans: channels of the image embedding (256).

    Input ``(B, img_size, img_size, 3)`` normalized pixels; output ``(B, img_size/16, img_size/16, out_chans)``.
    ``remat`` (default False) recomputes each block's activations in the backward pass
    (``remat_policy``: ``None`` or a ``jax.checkpoint_policies`` name).
    """

    def __init__(
        self,
        *,
        img_size: int = 1024,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        out_chans: int = 256,
        rngs: nnx.Rngs,
        dtype: Dtype = jnp.float32,
    ):
        if img_size % 64:
            raise ValueError(f"ViT-T needs an image size that is a multiple of 64, got {img_size}")
        kw = dict(rngs=rngs, dtype=dtype)
        self.img_size = img_size
        self.stem_width = embed_dims[0]  # width of the stem's tokens (what a MAE mask token replaces)
        self.dtype = dtype
        self.patch_embed_conv1 = Conv2dBN(in_chans, embed_dims[0] // 2, 3, 2, 1, **kw)
        self.patch_embed_conv2 = Conv2dBN(embed_dims[0] // 2, embed_dims[0], 3, 2, 1, **kw)
        stages = []
        for i, depth in enumerate(depths):
            if i == 0:
                blocks = [MBConv(embed_dims[0], mbconv_expand_ratio, **kw) for _ in range(depth)]
            else:
                blocks = [TinyViTBlock(embed_dims[i], num_heads[i], window_sizes[i], mlp_ratio, **kw) for _ in range(depth)]
            stages.append(nnx.List(blocks))
        self.layers = nnx.List(stages)
        # Patch merging after every stage but the last; MobileSAM keeps the resolution into the last
        # stage (stride 1) so the embedding is 1/16 of the input.
        self.downsamples = nnx.List([
            PatchMerging(embed_dims[i], embed_dims[i + 1], 2 if i < len(depths) - 2 else 1, **kw)
            for i in range(len(depths) - 1)
        ])
        conv = dict(use_bias=False, dtype=dtype, rngs=rngs)
        self.neck_conv1 = nnx.Conv(embed_dims[-1], out_chans, kernel_size=(1, 1),
                                   kernel_init=default_kernel_init, **conv)
        self.neck_norm1 = layer_norm_2d(out_chans, **kw)
        self.neck_conv2 = nnx.Conv(out_chans, out_chans, kernel_size=(3, 3), padding=((1, 1), (1, 1)),
                                   kernel_init=default_kernel_init, **conv)
        self.neck_norm2 = layer_norm_2d(out_chans, **kw)
        self.remat = False
        self.remat_policy = None

    @property
    def attention_blocks(self) -> list[TinyViTBlock]:
        """The attention blocks of stages 1-3 in order: the flat "encoder block" numbering of PEFT."""
        return [block for blocks in self.layers for block in blocks if isinstance(block, TinyViTBlock)]

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None, hidden: jax.Array | None = None,
                 mask_token: jax.Array | None = None) -> jax.Array:
        """Embeds images; ``key`` (training only) drives the attention blocks' stochastic depth.

        ``hidden (B, h, w)`` bool on the output grid with ``mask_token (stem_width,)`` (MAE
        pretraining): the stem's tokens under each hidden cell (4x4 of them) become the mask token.
        """
        n_attn = len(self.attention_blocks)
        keys = iter([None] * n_attn if key is None else list(jax.random.split(key, n_attn)))
        x = x.astype(self.dtype)
        x = self.patch_embed_conv2(gelu(self.patch_embed_conv1(x)))
        if hidden is not None:
            f = x.shape[1] // hidden.shape[1]
            cells = jnp.repeat(jnp.repeat(hidden, f, axis=1), f, axis=2)
            x = jnp.where(cells[..., None], mask_token.astype(x.dtype), x)
        for i, blocks in enumerate(self.layers):
            for block in blocks:
                block_key = next(keys) if isinstance(block, TinyViTBlock) else None
                x = call_block(block, x, block_key, remat=self.remat, policy=self.remat_policy)
            if i < len(self.downsamples):
                x = self.downsamples[i](x)
        x = self.neck_norm1(self.neck_conv1(x))
        return self.neck_norm2(self.neck_conv2(x))
