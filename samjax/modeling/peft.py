"""Parameter-efficient fine-tuning of SAM: LoRA and adapters, plus the stochastic-depth and remat switches.

Each method adds parameters of its own type, so a training strategy picks what it trains with a filter:

* ``LoRAParam`` (flax's ``nnx.LoRAParam``, a subclass of ``nnx.Param``): ``lora_a`` / ``lora_b``.
* ``AdapterParam`` (a subclass of ``nnx.Param``): every adapter weight.

For example ``nnx.Optimizer(model, tx, wrt=nnx.Any(LoRAParam, AdapterParam))``; a filter on plain
``nnx.Param`` selects everything, these included. The base model's parameters keep their names,
shapes and values: PEFT only *adds* names, so Meta's checkpoints load into a model before or after
:func:`apply_lora` / :func:`apply_adapters` (the new parameters stay at their initial values), and
:func:`merge_lora` folds LoRA back into the base kernels for export.

Where the methods sit (``blocks`` are "encoder blocks": the ViT's ``image_encoder.blocks[i]``, or
MobileSAM's attention blocks numbered flat across stages 1-3, ``TinyViT.attention_blocks``, 10 of them):

* LoRA, encoder: the fused ``attn.qkv`` Linear of each chosen block becomes a :class:`LoRALinear`
  with one low-rank delta on the query columns and one on the value columns (keys untouched).
  New names: ``image_encoder.blocks.{i}.attn.qkv.lora_a`` ``(2, dim, r)`` and ``...qkv.lora_b``
  ``(2, r, dim)`` (index 0 = q, 1 = v); TinyViT's are under ``image_encoder.layers.{s}.{j}.attn.qkv``.
* LoRA, decoder: ``q_proj`` and ``v_proj`` of every attention of the two-way transformer (per
  block ``self_attn``, ``cross_attn_token_to_image``, ``cross_attn_image_to_token``, and
  ``final_attn_token_to_image``), on their whole output: ``...q_proj.lora_a`` ``(1, C, r)``,
  ``...q_proj.lora_b`` ``(1, r, C')``.
* Adapters (Medical SAM Adapter), encoder: ``blocks.{i}.adapter_attn`` on the attention output before
  the residual add, with its own skip (``x = x + (a + adapter(a))``, ``a = attn(norm1(x))``), and
  ``blocks.{i}.adapter_mlp`` in parallel with the MLP, scaled by ``mlp_scale`` and without skip
  (``x = x + mlp(norm2(x)) + mlp_scale * adapter(norm2(x))``; TinyViT feeds it its MLP's LayerNorm).
* Adapters, decoder: in each two-way block, ``adapter_self_attn`` on the token self-attention output
  and ``adapter_cross_attn`` on the token-to-image attention output, each with its own skip and
  before the block's residual add and LayerNorm (``queries = norm(queries + (a + adapter(a)))``).
  The image-to-token attention and the final attention get none.

Adapter parameters: ``{...}.adapter_attn.down.kernel`` ``(dim, int(dim * ratio))``, ``down.bias``,
``up.kernel`` ``(int(dim * ratio), dim)``, ``up.bias``. ``up`` starts at zero and LoRA's ``lora_b``
starts at zero, so right after :func:`apply_lora` / :func:`apply_adapters` the model computes
exactly (bit for bit) what it computed before.

The stochastic-depth and rematerialization switches (``samjax.modeling.encoder_switches``) of the
encoders live here too: they are training knobs set on a built model, like PEFT.
"""

from __future__ import annotations

from typing import Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from samjax.modeling import initializers
from samjax.modeling.common import gelu
from samjax.modeling.image_encoder import Block, ImageEncoderViT
from samjax.modeling.keys import KeyStream
from samjax.modeling.tiny_vit import TinyViT, TinyViTBlock
from samjax.modeling.transformer import Attention as DecoderAttention
from samjax.modeling.transformer import TwoWayAttentionBlock, TwoWayTransformer

LoRAParam = nnx.LoRAParam

BlockSelection = Literal["all"] | Sequence[int] | None
ColumnRanges = Sequence[tuple[int, int]]

# PyTorch's nn.Linear default (kaiming uniform with a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
# Shapes are (slices, in, out): the leading axis is a batch axis, not part of the fan.
_torch_linear_init = initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=-2, out_axis=-1,
                                                  batch_axis=(0,))


class AdapterParam(nnx.Param):
    """The type of every adapter parameter, so ``nnx.OfType(AdapterParam)`` selects exactly them."""


# --------------------------------------------------------------------------------------------------
# LoRA


def qkv_slices(dim: int, num_heads: int, targets: Sequence[str] = ("q", "v"), *, per_head: bool = False):
    """Column ranges of ``targets`` in a fused ``qkv`` Linear's output ``(3 * dim)``.

    Args:
      dim: width of q (and of k and v).
      num_heads: heads, for the ``per_head`` layout.
      targets: which of ``"q"``, ``"k"``, ``"v"``, one LoRA slice each.
      per_head: SAM's ViT lays the output out as ``[q | k | v]`` (``per_head=False``); TinyViT as
        ``[q_0 k_0 v_0 | q_1 k_1 v_1 | ...]``, one group per head (``per_head=True``).

    Returns:
      one tuple of ``(start, stop)`` column ranges per target, for :class:`LoRALinear`'s ``slices``.
    """
    which = {"q": 0, "k": 1, "v": 2}
    head_dim = dim // num_heads
    out = []
    for t in targets:
        j = which[t]
        if per_head:
            out.append(tuple((h * 3 * head_dim + j * head_dim, h * 3 * head_dim + (j + 1) * head_dim)
                             for h in range(num_heads)))
        else:
            out.append(((j * dim, (j + 1) * dim),))
    return tuple(out)


class LoRALinear(nnx.Linear):
    """An ``nnx.Linear`` plus low-rank deltas on chosen output columns (LoRA).

    Built from an existing Linear, whose ``kernel`` and ``bias`` variables it takes over unchanged
    (same objects, same attribute names), so the parameter paths of the base model do not move:
    replacing ``attn.qkv`` by ``LoRALinear(attn.qkv, ...)`` keeps ``attn.qkv.kernel`` and adds
    ``attn.qkv.lora_a`` and ``attn.qkv.lora_b``. The output is::

        y = base(x);  y[..., slice_s] += scale * (x @ lora_a[s]) @ lora_b[s]   for each slice s

    Args:
      base: the Linear to extend (its configuration is copied; it is not kept as a submodule).
      rank: LoRA rank ``r`` (default 4).
      alpha: LoRA alpha; ``scale = alpha / rank``. ``None`` means ``alpha = rank``, i.e. scale 1,
        so the effective step size of the delta does not depend on the rank through ``scale``.
      slices: the output columns of each delta, as a sequence of slices, each a sequence of
        ``(start, stop)`` column ranges (all slices equally wide, not overlapping; see
        :func:`qkv_slices`). ``None``: a single slice over the whole output.
      rngs: for ``lora_a``.

    ``lora_a`` ``(S, in, r)`` starts like PyTorch's Linear default, U(+-1/sqrt(in)); ``lora_b``
    ``(S, r, width)`` starts at zero, so the output first equals the base output exactly.
    """

    def __init__(
        self,
        base: nnx.Linear,
        *,
        rank: int = 4,
        alpha: float | None = None,
        slices: Sequence[ColumnRanges] | None = None,
        rngs: nnx.Rngs,
    ):
        if isinstance(base, LoRALinear):
            raise ValueError("this Linear already has LoRA")
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        for name, value in vars(base).items():
            if name.startswith("_"):
                continue
            setattr(self, name, nnx.data(None) if value is None and name == "bias" else value)
        out = self.out_features
        if slices is None:
            slices = (((0, out),),)
        slices = tuple(tuple((int(a), int(b)) for a, b in ranges) for ranges in slices)
        widths = {sum(b - a for a, b in ranges) for ranges in slices}
        if len(widths) != 1 or min(widths) < 1:
            raise ValueError(f"LoRA slices must be non-empty and equally wide, got {slices}")
        cols = sorted(r for ranges in slices for r in ranges)
        for (_, b0), (a1, _) in zip(cols, cols[1:]):
            if a1 < b0:
                raise ValueError(f"LoRA slices overlap: {slices}")
        if any(a < 0 or b > out or a >= b for a, b in cols):
            raise ValueError(f"LoRA slices {slices} do not fit an output of width {out}")
        self.lora_slices = slices
        self.rank = int(rank)
        self.alpha = float(rank if alpha is None else alpha)
        self.scale = self.alpha / self.rank
        kernel_axes = self.kernel.get_metadata().get("out_sharding")
        meta_a = meta_b = {}
        if kernel_axes is not None:
            meta_a = dict(out_sharding=(None, kernel_axes[0], None), eager_sharding=False)
            meta_b = dict(out_sharding=(None, None, None), eager_sharding=False)
        n, width = len(slices), widths.pop()
        self.lora_a = LoRAParam(_torch_linear_init(rngs.params(), (n, self.in_features, rank), self.param_dtype),
                                **meta_a)
        self.lora_b = LoRAParam(jnp.zeros((n, rank, width), self.param_dtype), **meta_b)

    def _place_columns(self, b: jax.Array) -> jax.Array:
        """``(S, r, width)`` -> ``(S * r, out)``: each slice's rows placed in its columns, zeros elsewhere."""
        n, r, width = b.shape
        if self.lora_slices == (((0, self.out_features),),):
            return b[0]
        # index[s, j]: where output column j sits in slice s, or ``width`` (a zero column) if not in it
        index = np.full((n, self.out_features), width, np.int32)
        for s, ranges in enumerate(self.lora_slices):
            cols = np.concatenate([np.arange(start, stop) for start, stop in ranges])
            index[s, cols] = np.arange(width)
        padded = jnp.concatenate([b, jnp.zeros((n, r, 1), b.dtype)], axis=2)
        return jnp.take_along_axis(padded, jnp.asarray(index)[:, None, :], axis=2).reshape(n * r, self.out_features)

    def delta_kernel(self) -> jax.Array:
        """The dense ``(in, out)`` update the deltas add to ``kernel``: ``scale * A @ B`` in its columns."""
        a, b = self.lora_a[...], self.lora_b[...]
        a = jnp.moveaxis(a, 0, 1).reshape(self.in_features, -1)
        return self.scale * jnp.matmul(a, self._place_columns(b), precision=jax.lax.Precision.HIGHEST)

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        y = super().__call__(inputs) if out_sharding is None else super().__call__(inputs, out_sharding)
        x, a, b = self.promote_dtype((inputs, self.lora_a[...], self.lora_b[...]), dtype=self.dtype)
        a = jnp.moveaxis(a, 0, 1).reshape(self.in_features, -1)  # (in, S * r)
        h = jnp.matmul(x, a, precision=self.precision)
        if self.scale != 1.0:
            h = h * jnp.asarray(self.scale, h.dtype)
        return y + jnp.matmul(h, self._place_columns(b), precision=self.precision).astype(y.dtype)


def _plain_linear(lora: LoRALinear) -> nnx.Linear:
    """An ``nnx.Linear`` sharing ``lora``'s configuration and kernel/bias variables (no LoRA)."""
    linear = nnx.eval_shape(lambda: nnx.Linear(
        lora.in_features, lora.out_features, use_bias=lora.use_bias, dtype=lora.dtype,
        param_dtype=lora.param_dtype, precision=lora.precision, dot_general=lora.dot_general,
        promote_dtype=lora.promote_dtype, preferred_element_type=lora.preferred_element_type,
        rngs=KeyStream(0),
    ))
    linear.kernel = lora.kernel
    linear.bias = lora.bias if lora.bias is not None else nnx.data(None)
    return linear


# --------------------------------------------------------------------------------------------------
# Adapters


class AdapterDense(nnx.Module):
    """``x @ kernel + bias`` with ``AdapterParam`` weights; ``axes`` names the kernel's logical axes."""

    def __init__(
        self, in_features: int, out_features: int, axes: tuple[str | None, str | None], *, zero: bool,
        rngs: nnx.Rngs, dtype=jnp.float32,
    ):
        if zero:
            kernel = jnp.zeros((in_features, out_features), jnp.float32)
        else:
            kernel = _torch_linear_init(rngs.params(), (1, in_features, out_features), jnp.float32)[0]
        self.kernel = AdapterParam(kernel, out_sharding=tuple(axes), eager_sharding=False)
        self.bias = AdapterParam(jnp.zeros((out_features,), jnp.float32), out_sharding=tuple(axes[1:]),
                                 eager_sharding=False)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or x.dtype
        return jnp.matmul(x.astype(dtype), self.kernel[...].astype(dtype)) + self.bias[...].astype(dtype)


class Adapter(nnx.Module):
    """A bottleneck MLP, Linear(dim -> int(dim * ratio)) -> exact GELU -> Linear(-> dim).

    Args:
      dim: input and output width.
      ratio: bottleneck width as a fraction of ``dim`` (0.25, Medical SAM Adapter's value).
      skip_connect: return ``x + scale * delta`` (True) or ``scale * delta`` (False).
      scale: multiplies the delta (``mlp_scale`` for the MLP adapters).
      dtype: compute dtype (``None``: the input's).

    ``up`` starts at zero: the adapter starts as the identity (with ``skip_connect``) or as zero.
    """

    def __init__(
        self,
        dim: int,
        *,
        ratio: float = 0.25,
        skip_connect: bool = True,
        scale: float = 1.0,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
    ):
        hidden = int(dim * ratio)
        if hidden < 1:
            raise ValueError(f"adapter width int({dim} * {ratio}) must be >= 1")
        self.down = AdapterDense(dim, hidden, ("embed", None), zero=False, rngs=rngs, dtype=dtype)
        self.up = AdapterDense(hidden, dim, (None, "embed"), zero=True, rngs=rngs, dtype=dtype)
        self.skip_connect = skip_connect
        self.scale = float(scale)

    def __call__(self, x: jax.Array) -> jax.Array:
        delta = self.up(gelu(self.down(x))).astype(x.dtype)
        if self.scale != 1.0:
            delta = delta * jnp.asarray(self.scale, delta.dtype)
        return x + delta if self.skip_connect else delta


# --------------------------------------------------------------------------------------------------
# Selecting blocks and applying


def list_encoder_blocks(model) -> list[Block] | list[TinyViTBlock]:
    """The "encoder blocks" of a Sam (or of its image encoder), in the order PEFT numbers them.

    ViT: ``image_encoder.blocks``. TinyViT: its attention blocks, flat across stages 1-3.
    """
    encoder = getattr(model, "image_encoder", model)
    if isinstance(encoder, ImageEncoderViT):
        return list(encoder.blocks)
    if isinstance(encoder, TinyViT):
        return encoder.attention_blocks
    raise TypeError(f"no PEFT support for image encoder {type(encoder).__name__}")


def _select(blocks: list, selection: BlockSelection) -> list:
    if selection is None:
        return []
    if isinstance(selection, str):
        if selection != "all":
            raise ValueError(f"encoder_blocks must be 'all', a list of indices or None, got {selection!r}")
        return blocks
    indices = [int(i) for i in selection]
    bad = [i for i in indices if not -len(blocks) <= i < len(blocks)]
    if bad:
        raise IndexError(f"encoder block indices {bad} out of range for {len(blocks)} blocks")
    return [blocks[i] for i in dict.fromkeys(i % len(blocks) for i in indices)]


def _decoder_attentions(model) -> list[DecoderAttention]:
    transformer: TwoWayTransformer = model.mask_decoder.transformer
    attns = []
    for layer in transformer.layers:
        attns += [layer.self_attn, layer.cross_attn_token_to_image, layer.cross_attn_image_to_token]
    return attns + [transformer.final_attn_token_to_image]


def _size(module: nnx.Module, filter=nnx.Param) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(module, filter)))


def apply_lora(
    model,
    rank: int = 4,
    alpha: float | None = None,
    encoder_blocks: BlockSelection = "all",
    decoder: bool = True,
    *,
    rngs: nnx.Rngs | None = None,
) -> int:
    """Adds LoRA to a built ``Sam`` in place (see the module docstring for where); returns the new scalars.

    Args:
      model: a ``samjax.modeling.sam.Sam`` with a ViT or TinyViT encoder.
      rank, alpha: LoRA rank and alpha (``scale = alpha / rank``; ``alpha=None`` gives scale 1).
      encoder_blocks: ``"all"``, a list of encoder-block indices, or ``None`` for no encoder LoRA.
      decoder: LoRA on the two-way transformer's q and v projections.
      rngs: for ``lora_a`` (default ``nnx.Rngs(0)``).
    """
    rngs = rngs if rngs is not None else nnx.Rngs(0)
    kw = dict(rank=rank, alpha=alpha, rngs=rngs)
    added = 0
    for block in _select(list_encoder_blocks(model), encoder_blocks):
        attn = block.attn
        dim = attn.qkv.in_features
        slices = qkv_slices(dim, attn.num_heads, ("q", "v"), per_head=isinstance(block, TinyViTBlock))
        attn.qkv = LoRALinear(attn.qkv, slices=slices, **kw)
        added += _size(attn.qkv, LoRAParam)
    if decoder:
        for attn in _decoder_attentions(model):
            attn.q_proj = LoRALinear(attn.q_proj, **kw)
            attn.v_proj = LoRALinear(attn.v_proj, **kw)
            added += _size(attn.q_proj, LoRAParam) + _size(attn.v_proj, LoRAParam)
    return added


def merge_lora(model) -> int:
    """Folds every :class:`LoRALinear` of ``model`` into its kernel and restores a plain ``nnx.Linear``.

    Afterwards the model has exactly its base parameter names again (for export to Meta's format);
    outputs equal the LoRA model's up to rounding. Returns the number of layers merged.
    """
    found = [(path, node) for path, node in nnx.iter_graph(model) if isinstance(node, LoRALinear)]
    for path, lora in found:
        parent = model
        for p in path[:-1]:
            parent = parent[p] if isinstance(p, int) else getattr(parent, p)
        lora.kernel.set_value(lora.kernel[...] + lora.delta_kernel().astype(lora.kernel.dtype))
        linear = _plain_linear(lora)
        if isinstance(path[-1], int):
            parent[path[-1]] = linear
        else:
            setattr(parent, path[-1], linear)
    return len(found)


def apply_adapters(
    model,
    encoder_blocks: BlockSelection = "all",
    decoder: bool = True,
    ratio: float = 0.25,
    mlp_scale: float = 0.5,
    *,
    rngs: nnx.Rngs | None = None,
) -> int:
    """Adds Medical-SAM-Adapter style adapters to a built ``Sam`` in place; returns the new scalars.

    Args:
      model: a ``samjax.modeling.sam.Sam`` with a ViT or TinyViT encoder.
      encoder_blocks: ``"all"``, a list of encoder-block indices, or ``None`` for no encoder adapters.
      decoder: adapters after the token self-attention and token-to-image attention of each
        two-way block.
      ratio: bottleneck width as a fraction of the width.
      mlp_scale: weight of the MLP-parallel adapter of the encoder blocks.
      rngs: for the down-projections (default ``nnx.Rngs(0)``).
    """
    rngs = rngs if rngs is not None else nnx.Rngs(0)
    added = 0
    for block in _select(list_encoder_blocks(model), encoder_blocks):
        if block.adapter_attn is not None or block.adapter_mlp is not None:
            raise ValueError("this encoder block already has adapters")
        dim, dtype = block.attn.qkv.in_features, block.attn.qkv.dtype
        block.adapter_attn = Adapter(dim, ratio=ratio, skip_connect=True, rngs=rngs, dtype=dtype)
        block.adapter_mlp = Adapter(dim, ratio=ratio, skip_connect=False, scale=mlp_scale, rngs=rngs, dtype=dtype)
        added += _size(block.adapter_attn) + _size(block.adapter_mlp)
    if decoder:
        layer: TwoWayAttentionBlock
        for layer in model.mask_decoder.transformer.layers:
            if layer.adapter_self_attn is not None or layer.adapter_cross_attn is not None:
                raise ValueError("this decoder block already has adapters")
            dim, dtype = layer.self_attn.q_proj.in_features, layer.self_attn.q_proj.dtype
            layer.adapter_self_attn = Adapter(dim, ratio=ratio, skip_connect=True, rngs=rngs, dtype=dtype)
            layer.adapter_cross_attn = Adapter(dim, ratio=ratio, skip_connect=True, rngs=rngs, dtype=dtype)
            added += _size(layer.adapter_self_attn) + _size(layer.adapter_cross_attn)
    return added


def count_params(model: nnx.Module, filter=nnx.Param) -> int:
    """Number of scalars in the variables of ``model`` that ``filter`` selects."""
    return _size(model, filter)


__all__ = [
    "LoRAParam", "AdapterParam", "LoRALinear", "Adapter", "AdapterDense", "qkv_slices", "list_encoder_blocks",
    "apply_lora", "merge_lora", "apply_adapters", "count_params",
]
