"""SAM's image encoder: a ViT with windowed and global attention, relative positions and a neck.

Follows ``ImageEncoderViT`` of Meta's ``segment_anything`` block for block, channels-last:
patch embedding (16x16 conv) -> absolute position embedding -> ``depth`` transformer blocks
(14x14 windowed attention except at ``global_attn_indexes``), each attention with decomposed
relative-position terms -> neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) to 256 channels.

Training switches, all off by default (then the encoder computes exactly Meta's forward pass):
stochastic depth (``Block.drop_path``, active only when the encoder is called with a ``key``),
rematerialization of each block (``ImageEncoderViT.remat``), and the optional adapters that
``samjax.modeling.peft`` attaches to the blocks (``Block.adapter_attn``, ``Block.adapter_mlp``).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from samjax.modeling import attention, block_scan
from samjax.modeling.windows import window_attention
from samjax.modeling.common import (
    Dtype,
    MLPBlock,
    default_kernel_init,
    dense,
    layer_norm,
    layer_norm_2d,
    with_axes,
    zeros_init,
)

ENCODER_NORM_EPS = 1e-6


def get_rel_pos(q_size: int, k_size: int, rel_pos: jax.Array) -> jax.Array:
    """Relative-position embeddings for every (query, key) pair along one axis.

    Args:
      q_size, k_size: number of query and key positions along the axis.
      rel_pos: ``(2 * max(q_size, k_size) - 1, head_dim)``; weights of another length must be
        resized before loading (``samjax.weights.resize``), so nothing is interpolated here.

    Returns:
      ``(q_size, k_size, head_dim)``.
    """
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        raise ValueError(
            f"relative position table has {rel_pos.shape[0]} rows, expected {max_rel_dist} for "
            f"{q_size}x{k_size} positions; resize the checkpoint to this image size first"
        )
    q_coords = jnp.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = jnp.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.astype(jnp.int32)]


class Attention(nnx.Module):
    """Multi-head self-attention over a 2D grid with decomposed relative positions.

    ``impl`` (default ``"auto"``) picks the form of ``samjax.modeling.attention`` that computes it
    (``encoder_switches.set_attention`` sets it on every block); all forms give the same result.

    Args:
      dim: channels.
      num_heads: attention heads.
      input_size: the ``(H, W)`` grid the attention sees (the window for windowed blocks); sizes the
        relative-position tables ``(2H-1, head_dim)`` and ``(2W-1, head_dim)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        input_size: tuple[int, int],
        *,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        rngs: nnx.Rngs,
        dtype: Dtype = jnp.float32,
    ):
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.dtype = dtype
        self.impl = "auto"  # samjax.modeling.attention's form: auto | reference | blocked | fused
        self.qkv = dense(dim, 3 * dim, ("embed", "heads"), rngs=rngs, dtype=dtype, use_bias=qkv_bias)
        self.proj = dense(dim, dim, ("heads", "embed"), rngs=rngs, dtype=dtype)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            init = with_axes(zeros_init, (None, None))
            self.rel_pos_h = nnx.Param(init(rngs.params(), (2 * input_size[0] - 1, self.head_dim)))
            self.rel_pos_w = nnx.Param(init(rngs.params(), (2 * input_size[1] - 1, self.head_dim)))

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(B, H, W, dim)`` -> ``(B, H, W, dim)``: ``proj(attend(qkv(x)))``."""
        return self.proj(self.attend(self.qkv(x)))

    def qkv_of_zero(self) -> jax.Array | None:
        """``qkv(0)``, the ``(3 * dim,)`` bias (None without one): what a zero-padded token projects to."""
        bias = getattr(self.qkv, "bias", None)
        return None if bias is None else bias[...]

    def attend(self, qkv: jax.Array, queries: tuple[int, int] | None = None) -> jax.Array:
        """Projected ``qkv (B, H, W, 3 * dim)`` -> the heads' outputs ``(B, qh, qw, dim)``, before ``proj``.

        ``queries = (qh, qw)`` (default ``(H, W)``): only the top-left ``qh x qw`` tokens' outputs,
        each attending to all ``H x W`` tokens (the edge windows of ``samjax.modeling.windows``).
        """
        b, h, w, _ = qkv.shape
        qh, qw = queries or (h, w)
        qkv = qkv.reshape(b, h, w, 3, self.num_heads, self.head_dim)
        q = qkv[:, :qh, :qw, 0].reshape(b, qh * qw, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
        k, v = qkv[..., 1:, :, :].reshape(b, h * w, 2, self.num_heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        rel_h = rel_w = None
        if self.use_rel_pos:
            rh = get_rel_pos(h, h, self.rel_pos_h[...])[:qh]
            rw = get_rel_pos(w, w, self.rel_pos_w[...])[:qw]
            rel_h, rel_w = attention.rel_pos_terms(q, rh, rw, (qh, qw))
        out = attention.attention(q, k, v, rel_h, rel_w, self.scale, (h, w), self.impl)
        return out.transpose(0, 2, 1, 3).reshape(b, qh, qw, -1)


def drop_path(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Stochastic depth on a residual branch ``x (B, ...)``, as timm's ``DropPath``.

    Each sample's branch is zeroed with probability ``rate`` and otherwise scaled by ``1 / (1 - rate)``,
    so its expectation is ``x``. With ``rate == 0`` or ``key is None`` (inference) it is the identity.
    """
    if key is None or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return x * (mask.astype(x.dtype) / jnp.asarray(keep, x.dtype))


def call_block(
    block: nnx.Module, x: jax.Array, key: jax.Array | None = None, *, remat: bool = False, policy=None
) -> jax.Array:
    """``block(x, key=key)`` (``block(x)`` when ``key is None``), optionally rematerialized.

    With ``remat`` the block runs as a pure function of its state under ``jax.checkpoint``: its
    activations are recomputed in the backward pass instead of stored. ``policy`` is ``None``, a
    ``jax.checkpoint_policies`` name, or a policy function. The result is the same computation.
    """
    if not remat:
        return block(x) if key is None else block(x, key=key)
    graphdef, state = nnx.split(block)

    def run(state, x, key):
        module = nnx.merge(graphdef, state)
        return module(x) if key is None else module(x, key=key)

    if isinstance(policy, str):
        policy = getattr(jax.checkpoint_policies, policy)
    return jax.checkpoint(run, policy=policy)(state, x, key)


class Block(nnx.Module):
    """A pre-norm transformer block with windowed (``window_size > 0``) or global attention.

    Optional, off by default: ``drop_path`` (stochastic-depth rate of both residual branches, used
    only when called with a ``key``); ``adapter_attn`` (applied to the attention output before the
    residual add, with its own skip: ``x = x + adapter_attn(attn(norm1(x)))``); ``adapter_mlp``
    (parallel to the MLP, its ``mlp_scale`` inside: ``x = x + mlp(norm2(x)) + adapter_mlp(norm2(x))``).
    See ``samjax.modeling.peft``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        input_size: tuple[int, int],
        *,
        window_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        rngs: nnx.Rngs,
        dtype: Dtype = jnp.float32,
    ):
        self.window_size = window_size
        self.norm1 = layer_norm(dim, ENCODER_NORM_EPS, rngs=rngs, dtype=dtype)
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(
            dim, num_heads, attn_size, qkv_bias=qkv_bias, use_rel_pos=use_rel_pos, rngs=rngs, dtype=dtype
        )
        self.norm2 = layer_norm(dim, ENCODER_NORM_EPS, rngs=rngs, dtype=dtype)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype)
        self.drop_path = 0.0
        self.adapter_attn = nnx.data(None)
        self.adapter_mlp = nnx.data(None)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        key_attn = key_mlp = None
        if key is not None and self.drop_path > 0.0:
            key_attn, key_mlp = jax.random.split(key)
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            # Meta's windows on the zero-padded grid, computing only the outputs it keeps (windows.py).
            x = window_attention(self.attn.attend, self.attn.qkv(x), self.window_size, self.attn.qkv_of_zero())
            x = self.attn.proj(x)
        else:
            x = self.attn(x)
        if self.adapter_attn is not None:
            x = self.adapter_attn(x)
        x = shortcut + drop_path(x, self.drop_path, key_attn)
        y = self.norm2(x)
        branch = self.mlp(y)
        if self.adapter_mlp is not None:
            branch = branch + self.adapter_mlp(y)
        return x + drop_path(branch, self.drop_path, key_mlp)


class ImageEncoderViT(nnx.Module):
    """SAM's ViT image encoder.

    Args:
      img_size: side of the square, padded input image (1024 for Meta's checkpoints).
      patch_size: patch side (16).
      embed_dim, depth, num_heads: ViT width, number of blocks and heads.
      out_chans: channels of the image embedding (256).
      window_size: side of the attention windows (14).
      global_attn_indexes: blocks with global attention.

    Input ``(B, img_size, img_size, 3)`` normalized pixels; output ``(B, img_size/16, img_size/16, out_chans)``.
    ``remat`` (default False) recomputes each block's activations in the backward pass
    (``remat_policy``: ``None`` or a ``jax.checkpoint_policies`` name); ``samjax.modeling.encoder_switches.set_remat``
    sets both.
    """

    def __init__(
        self,
        *,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (),
        rngs: nnx.Rngs,
        dtype: Dtype = jnp.float32,
    ):
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.stem_width = embed_dim  # width of the patch tokens (what a MAE mask token replaces)
        self.dtype = dtype
        grid = img_size // patch_size
        self.patch_embed = nnx.Conv(
            in_chans,
            embed_dim,
            kernel_size=(patch_size, patch_size),
            strides=(patch_size, patch_size),
            padding="VALID",
            dtype=dtype,
            kernel_init=with_axes(default_kernel_init, (None, None, None, "embed")),
            bias_init=with_axes(zeros_init, ("embed",)),
            rngs=rngs,
        )
        if use_abs_pos:
            init = with_axes(zeros_init, (None, None, None, "embed"))
            self.pos_embed = nnx.Param(init(rngs.params(), (1, grid, grid, embed_dim)))
        else:
            self.pos_embed = None
        self.blocks = nnx.List(
            [
                Block(
                    embed_dim,
                    num_heads,
                    (grid, grid),
                    window_size=0 if i in global_attn_indexes else window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    use_rel_pos=use_rel_pos,
                    rngs=rngs,
                    dtype=dtype,
                )
                for i in range(depth)
            ]
        )
        conv = dict(use_bias=False, dtype=dtype, rngs=rngs)
        self.neck_conv1 = nnx.Conv(
            embed_dim, out_chans, kernel_size=(1, 1),
            kernel_init=with_axes(default_kernel_init, (None, None, "embed", None)), **conv
        )
        self.neck_norm1 = layer_norm_2d(out_chans, rngs=rngs, dtype=dtype)
        self.neck_conv2 = nnx.Conv(
            out_chans, out_chans, kernel_size=(3, 3), padding=((1, 1), (1, 1)),
            kernel_init=with_axes(default_kernel_init, (None, None, None, None)), **conv
        )
        self.neck_norm2 = layer_norm_2d(out_chans, rngs=rngs, dtype=dtype)
        self.remat = False
        self.remat_policy = None

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None, hidden: jax.Array | None = None,
                 mask_token: jax.Array | None = None) -> jax.Array:
        """Embeds images; ``key`` (training only) drives the blocks' stochastic depth.

        ``hidden (B, h, w)`` bool with ``mask_token (stem_width,)`` (MAE pretraining,
        ``samjax.modeling.mae``): those patch embeddings are replaced by the mask token before the
        position embedding is added.
        """
        x = self.patch_embed(x.astype(self.dtype))
        if hidden is not None:
            x = jnp.where(hidden[..., None], mask_token.astype(x.dtype), x)
        if self.pos_embed is not None:
            x = x + self.pos_embed[...].astype(x.dtype)
        keys = [None] * len(self.blocks) if key is None else list(jax.random.split(key, len(self.blocks)))
        period = block_scan.group_period(list(self.blocks)) if self.remat else None
        if period is not None:  # remat: the repeating groups as one scan (block_scan.py)
            x = block_scan.scan_blocks(list(self.blocks), x, keys, period, self.remat_policy)
        else:
            for block, block_key in zip(self.blocks, keys):
                x = call_block(block, x, block_key, remat=self.remat, policy=self.remat_policy)
        x = self.neck_norm1(self.neck_conv1(x))
        return self.neck_norm2(self.neck_conv2(x))
