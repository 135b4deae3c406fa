"""The trainer's optimizer: learning-rate schedules, AdamW with a weight-decay mask and layer-wise lr
decay, and gradient accumulation.

Everything is built from the ``optim`` block of a config (an ``ml_collections.ConfigDict`` or any
mapping), see ``configs/finetune.py``:

=================  ============================================================================
field              meaning (default)
=================  ============================================================================
optimizer          ``"adamw"`` or ``"sgd"`` (``"adamw"``)
learning_rate      peak learning rate (required)
b1, b2, eps        Adam moments (0.9, 0.999, 1e-8); ``momentum`` (0.9) and ``nesterov`` for SGD
weight_decay       AdamW's decoupled decay, applied where :func:`weight_decay_mask` is True (0.0)
grad_clip_norm     clip the gradients' global L2 norm to this; 0 or None disables (None)
schedule           ``"cosine"`` | ``"poly"`` | ``"constant"`` (``"cosine"``)
warmup_steps       linear warm-up from 0 to the peak (0)
total_steps        where the decay ends; may also come from the argument or the parent config
min_lr_ratio       the decay ends at ``min_lr_ratio * learning_rate`` (0.0)
poly_power         exponent of the poly decay (0.9, as in nnU-Net)
layer_decay        layer-wise lr decay of the image encoder, BEiT/MAE style; 1.0 disables (1.0)
num_layers         encoder depth for ``layer_decay``; inferred from the parameters when absent
stage_depths       TinyViT's blocks per stage for ``layer_decay``; inferred when absent
=================  ============================================================================

``cfg`` may also be the whole training config: when it has an ``optim`` block and no
``learning_rate``, the block is used and ``total_steps`` is read from the top level.

The AdamW chain, in order (:func:`make_optimizer`)::

    clip_by_global_norm -> scale_by_adam -> add_decayed_weights(mask) -> scale_by_layer_decay -> -lr(step)

Weight decay and the layer scale are both multiplied by the scheduled learning rate, and the layer
scale multiplies the decay term too (a parameter group's lr in BEiT scales both).

**Parameter names.** Every rule here keys on a leaf's dotted path, the names of
:func:`samjax.params.flat_params` (``image_encoder.blocks.0.attn.qkv.kernel``). :func:`param_path`
makes it from a JAX tree path: dict keys, attribute names, sequence indices and flattened indices
are joined with ``"."``, and a trailing ``.value`` / ``.raw_value`` attribute (a ``nnx.Variable``
leaf) is dropped, so a nested dict, an ``nnx.State`` of Variables and the pure-array ``nnx.State``
that ``nnx.Optimizer.update`` passes all give the same names.

**Weight-decay rule** (:func:`no_decay`). A leaf is decayed iff ``ndim >= 2`` and its name is none
of the excluded names below. Its name is the last path segment that is not an integer
(``prompt_encoder.point_embeddings.0`` is named ``point_embeddings``). Excluded:

- ``bias``, ``scale``, ``embedding``, names ending in ``_bias``, ``_biases`` or ``_scale``
  (biases, LayerNorm and batch-norm scales, TinyViT's ``attention_biases`` table);
- names containing ``pos_embed`` or starting with ``rel_pos`` or ``positional``
  (``pos_embed``, ``rel_pos_h/w``, the prompt encoder's ``positional_encoding_gaussian_matrix``);
- names ending in ``_embed``, ``_embeds``, ``embedding``, ``embeddings``, ``token`` or ``tokens``
  (``no_mask_embed``, ``not_a_point_embed``, ``point_embeddings``, ``iou_token``, ``mask_tokens``).

Kernels are named ``kernel`` (the patch embedding's too, so it is decayed), LoRA matrices and
adapter kernels have ``ndim >= 2``: all decayed. Every 1-D leaf is not.

**Layer ids** (:func:`layer_id`), for ``num_layers`` encoder blocks. Only the path after an
``image_encoder`` segment counts (any prefix before it is allowed); a path without one gets
``num_layers + 1``.

- SAM's ViT: ``patch_embed.*`` and ``pos_embed`` -> 0; ``blocks.{i}.*`` -> ``i + 1`` (LoRA and adapter
  parameters inside a block included); the neck and everything else -> ``num_layers + 1``.
- MobileSAM's TinyViT (``samjax/modeling/tiny_vit.py``): the stem ``patch_embed_conv{1,2}.*`` -> 0; the
  block ``layers.{s}.{j}.*`` (``layers.{s}.blocks.{j}`` is accepted too) has the flat index
  ``k = sum(stage_depths[:s]) + j`` and id ``k + 1`` (stage 0's MBConv blocks count as blocks);
  ``downsamples.{s}.*``, the patch merging after stage ``s``, shares the id of that stage's last block,
  ``sum(stage_depths[:s + 1])``; the neck -> ``num_layers + 1``. ``num_layers = sum(stage_depths)``.
- The prompt encoder, the mask decoder and anything outside the encoder -> ``num_layers + 1``.

A parameter's lr is multiplied by ``layer_decay ** (num_layers + 1 - layer_id)``: 1 for the decoder,
``layer_decay`` for the last block, ``layer_decay ** (num_layers + 1)`` for the patch embedding.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

KeyPath = tuple[Any, ...]
PathFn = Callable[[KeyPath], str]
LayerIdFn = Callable[..., int]

SCHEDULES = ("cosine", "poly", "constant")
OPTIMIZERS = ("adamw", "sgd")
MOBILE_SAM_STAGE_DEPTHS = (2, 2, 6, 2)

_VARIABLE_ATTRS = ("value", "raw_value")


# ----------------------------------------------------------------------------------------------
# Config access


_MISSING = object()


def _field(cfg: Any, name: str, default: Any = _MISSING) -> Any:
    """``cfg.name`` / ``cfg[name]`` for a ConfigDict, a mapping or an object; ``default`` if absent."""
    if isinstance(cfg, Mapping) or hasattr(cfg, "keys") and hasattr(cfg, "__getitem__"):
        try:
            if name in cfg:
                return cfg[name]
        except TypeError:
            pass
    elif hasattr(cfg, name):
        return getattr(cfg, name)
    if default is _MISSING:
        raise ValueError(f"the optimizer config has no {name!r} field")
    return default


def _optim_config(cfg: Any, total_steps: int | None) -> tuple[Any, int | None]:
    """The optimizer block and the total step count (argument > block > parent config)."""
    parent = None
    if _field(cfg, "learning_rate", None) is None and _field(cfg, "optim", None) is not None:
        parent, cfg = cfg, _field(cfg, "optim")
    if total_steps is None:
        total_steps = _field(cfg, "total_steps", None)
    if total_steps is None and parent is not None:
        total_steps = _field(parent, "total_steps", None)
    return cfg, (None if total_steps is None else int(total_steps))


# ----------------------------------------------------------------------------------------------
# Schedules


def make_schedule(cfg: Any, *, total_steps: int | None = None) -> optax.Schedule:
    """The learning rate as a function of the (0-based) update count.

    Linear warm-up ``peak * step / warmup_steps`` for ``step < warmup_steps``; then, with
    ``t = (step - warmup_steps) / (total_steps - warmup_steps)`` clipped to [0, 1] and
    ``floor = min_lr_ratio * peak``:

    - ``cosine``: ``floor + (peak - floor) * (1 + cos(pi * t)) / 2``;
    - ``poly``: ``floor + (peak - floor) * (1 - t) ** poly_power``;
    - ``constant``: ``peak``.

    After ``total_steps`` the rate stays at the floor. ``total_steps`` (argument, else the config)
    is required by ``cosine`` and ``poly``.

    Raises:
      ValueError: an unknown schedule name, a negative or non-finite learning rate, negative warm-up,
        ``warmup_steps >= total_steps``, ``min_lr_ratio`` outside [0, 1] or ``poly_power <= 0``.
    """
    cfg, total = _optim_config(cfg, total_steps)
    name = str(_field(cfg, "schedule", "cosine")).lower()
    if name not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {name!r}; known: {', '.join(SCHEDULES)}")
    peak = float(_field(cfg, "learning_rate"))
    if not math.isfinite(peak) or peak < 0:
        raise ValueError(f"learning_rate must be a finite number >= 0, got {peak}")
    warmup = int(_field(cfg, "warmup_steps", 0) or 0)
    if warmup < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup}")
    ratio = float(_field(cfg, "min_lr_ratio", 0.0) or 0.0)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {ratio}")
    power = float(_field(cfg, "poly_power", 0.9))
    if name == "poly" and power <= 0:
        raise ValueError(f"poly_power must be > 0, got {power}")
    if name != "constant" and total is None:
        raise ValueError(f"the {name!r} schedule needs total_steps (in the config or as an argument)")
    if total is not None and (name != "constant" or total > 0) and warmup >= total:
        raise ValueError(f"warmup_steps ({warmup}) must be smaller than total_steps ({total})")

    floor = ratio * peak
    decay_steps = float(total - warmup) if total is not None else 1.0

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        if name == "constant":
            after = jnp.full_like(step, peak)
        else:
            t = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
            if name == "cosine":
                after = floor + (peak - floor) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
            else:
                after = floor + (peak - floor) * (1.0 - t) ** power
        if warmup == 0:
            return after
        return jnp.where(step < warmup, peak * step / warmup, after)

    return schedule


def lr_at(cfg: Any, step: int, *, total_steps: int | None = None) -> float:
    """The scheduled learning rate at ``step`` as a Python float (for logging)."""
    return float(make_schedule(cfg, total_steps=total_steps)(step))


# ----------------------------------------------------------------------------------------------
# Parameter names


def param_path(path: KeyPath) -> str:
    """A JAX tree path as a dotted name; a trailing Variable ``.value`` is dropped (see module doc)."""
    parts = list(path)
    if parts and isinstance(parts[-1], jax.tree_util.GetAttrKey) and parts[-1].name in _VARIABLE_ATTRS:
        parts = parts[:-1]
    names = []
    for key in parts:
        if isinstance(key, jax.tree_util.DictKey):
            names.append(str(key.key))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            names.append(str(key.name))
        elif isinstance(key, jax.tree_util.SequenceKey):
            names.append(str(key.idx))
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            names.append(str(key.key))
        else:  # a custom key: its own str, without brackets and leading dots
            names.append(str(key).strip(".[]'\""))
    return ".".join(names)


def named_leaves(tree: Any, path_fn: PathFn = param_path) -> list[tuple[str, Any]]:
    """``[(dotted name, leaf)]`` of a pytree, in flattening order."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(path_fn(p), leaf) for p, leaf in leaves]


def _segments(path: str) -> list[str]:
    return [s for s in path.split(".") if s]


def _leaf_name(path: str) -> str:
    """The last path segment that is not an integer index."""
    for seg in reversed(_segments(path)):
        if not seg.isdigit():
            return seg
    return ""


# ----------------------------------------------------------------------------------------------
# Weight-decay mask

_NO_DECAY_NAMES = {"bias", "scale", "embedding"}
_NO_DECAY_SUFFIXES = ("_bias", "_biases", "_scale", "_embed", "_embeds", "embedding", "embeddings", "token", "tokens")
_NO_DECAY_PREFIXES = ("rel_pos", "positional")


def no_decay(path: str) -> bool:
    """True for the names that are never decayed whatever their rank (see the module docstring)."""
    name = _leaf_name(path)
    return (
        name in _NO_DECAY_NAMES
        or name.endswith(_NO_DECAY_SUFFIXES)
        or name.startswith(_NO_DECAY_PREFIXES)
        or "pos_embed" in name
    )


def decays(path: str, ndim: int) -> bool:
    """Whether AdamW decays the leaf named ``path`` of rank ``ndim``: ``ndim >= 2 and not no_decay``."""
    return ndim >= 2 and not no_decay(path)


def weight_decay_mask(params_tree: Any, *, path_fn: PathFn = param_path) -> Any:
    """A tree of the same structure as ``params_tree`` with a Python bool per leaf (True: decay)."""
    return jax.tree_util.tree_map_with_path(lambda p, x: decays(path_fn(p), _ndim(x)), params_tree)


def _ndim(x: Any) -> int:
    """Rank of an array, a ``jax.ShapeDtypeStruct`` or anything ``np.ndim`` understands."""
    ndim = getattr(x, "ndim", None)
    return int(ndim) if ndim is not None else int(np.ndim(x))


# ----------------------------------------------------------------------------------------------
# Layer-wise lr decay

_INT = re.compile(r"^\d+$")


def _encoder_rest(path: str) -> list[str] | None:
    segs = _segments(path)
    if "image_encoder" not in segs:
        return None
    return segs[segs.index("image_encoder") + 1:]


def _tiny_block(rest: list[str]) -> tuple[int, int] | None:
    """``(stage, j)`` of ``layers.{s}.{j}`` / ``layers.{s}.blocks.{j}``, else None."""
    if len(rest) >= 3 and rest[0] == "layers" and _INT.match(rest[1]):
        if _INT.match(rest[2]):
            return int(rest[1]), int(rest[2])
        if rest[2] == "blocks" and len(rest) >= 4 and _INT.match(rest[3]):
            return int(rest[1]), int(rest[3])
    return None


def layer_id(path: str, num_layers: int, stage_depths: Sequence[int] | None = None) -> int:
    """The layer index of the parameter ``path`` for layer-wise lr decay (rules in the module doc).

    Args:
      path: dotted parameter name, e.g. ``image_encoder.blocks.3.mlp.lin1.kernel``.
      num_layers: the encoder's number of blocks.
      stage_depths: TinyViT's blocks per stage (needed only for TinyViT paths; MobileSAM's
        ``(2, 2, 6, 2)`` when None). Their sum must be ``num_layers``.

    Raises:
      ValueError: a block index beyond ``num_layers``, or stage depths that do not fit.
    """
    top = num_layers + 1
    rest = _encoder_rest(path)
    if not rest:
        return top
    head = rest[0]
    if head.startswith("patch_embed") or head.startswith("pos_embed"):
        return 0
    if head == "blocks" and len(rest) > 1 and _INT.match(rest[1]):
        i = int(rest[1])
        if i >= num_layers:
            raise ValueError(f"{path}: block {i} is beyond num_layers={num_layers}")
        return i + 1
    tiny = _tiny_block(rest)
    is_down = head == "downsamples" and len(rest) > 1 and _INT.match(rest[1])
    if tiny is None and not is_down:
        return top
    depths = tuple(MOBILE_SAM_STAGE_DEPTHS if stage_depths is None else stage_depths)
    if sum(depths) != num_layers:
        raise ValueError(f"{path}: TinyViT stage depths {depths} do not add up to num_layers={num_layers}")
    if tiny is not None:
        stage, j = tiny
        if stage >= len(depths) or j >= depths[stage]:
            raise ValueError(f"{path}: block {j} of stage {stage} is not in stage depths {depths}")
        return sum(depths[:stage]) + j + 1
    stage = int(rest[1])
    if stage >= len(depths):
        raise ValueError(f"{path}: downsample {stage} is not in stage depths {depths}")
    return sum(depths[: stage + 1])


def encoder_layout(paths: Sequence[str]) -> tuple[int, tuple[int, ...] | None]:
    """``(num_layers, stage_depths)`` inferred from parameter names (``stage_depths`` None for a ViT).

    ViT: the largest ``image_encoder.blocks.{i}`` plus one. TinyViT: per stage the largest block index
    plus one. Both assume the last block (of every stage) is among ``paths``; when only part of the
    encoder is trained, give ``num_layers`` / ``stage_depths`` in the config instead.
    """
    vit_max = -1
    tiny: dict[int, int] = {}
    for path in paths:
        rest = _encoder_rest(path)
        if not rest:
            continue
        if rest[0] == "blocks" and len(rest) > 1 and _INT.match(rest[1]):
            vit_max = max(vit_max, int(rest[1]))
        block = _tiny_block(rest)
        if block is not None:
            tiny[block[0]] = max(tiny.get(block[0], -1), block[1] + 1)
    if tiny:
        if vit_max >= 0:
            raise ValueError("the parameters hold both ViT blocks and TinyViT stages")
        if sorted(tiny) != list(range(len(tiny))):
            raise ValueError(
                f"TinyViT stages {sorted(tiny)} are not contiguous from 0; set optim.stage_depths in the config"
            )
        depths = tuple(tiny[s] for s in range(len(tiny)))
        return sum(depths), depths
    return vit_max + 1, None


def layer_scale(path: str, layer_decay: float, num_layers: int, stage_depths: Sequence[int] | None = None,
                *, layer_id_fn: LayerIdFn = layer_id) -> float:
    """``layer_decay ** (num_layers + 1 - layer_id(path))``."""
    if layer_decay == 1.0:
        return 1.0
    return float(layer_decay) ** (num_layers + 1 - layer_id_fn(path, num_layers, stage_depths))


def layer_decay_scales(
    params_tree: Any,
    layer_decay: float,
    num_layers: int | None = None,
    stage_depths: Sequence[int] | None = None,
    *,
    path_fn: PathFn = param_path,
    layer_id_fn: LayerIdFn = layer_id,
) -> Any:
    """A tree like ``params_tree`` holding each leaf's lr multiplier (layout inferred when not given)."""
    num_layers, stage_depths = _layout(params_tree, path_fn, num_layers, stage_depths)
    return jax.tree_util.tree_map_with_path(
        lambda p, _: layer_scale(path_fn(p), layer_decay, num_layers, stage_depths, layer_id_fn=layer_id_fn),
        params_tree,
    )


def _layout(tree: Any, path_fn: PathFn, num_layers: int | None, stage_depths: Sequence[int] | None
            ) -> tuple[int, tuple[int, ...] | None]:
    """The given ``num_layers`` / ``stage_depths``, each inferred from ``tree``'s names when None."""
    if num_layers is None or stage_depths is None:
        n, d = encoder_layout([name for name, _ in named_leaves(tree, path_fn)])
        num_layers = n if num_layers is None else num_layers
        stage_depths = d if stage_depths is None else stage_depths
    return int(num_layers), (None if stage_depths is None else tuple(int(x) for x in stage_depths))


def scale_by_layer_decay(scale_fn: Callable[[str], float], *, path_fn: PathFn = param_path
                         ) -> optax.GradientTransformation:
    """Multiplies each update leaf by ``scale_fn(its dotted name)``; stateless.

    The scales are Python floats computed from the names while tracing (constants in the compiled
    step). They are looked up by name rather than held as a tree because ``nnx.Optimizer`` calls
    ``init`` with a tree of Variables and ``update`` with a tree of plain arrays.
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params

        def scale(path, u):
            s = scale_fn(path_fn(path))
            return u if s == 1.0 or u is None else u * jnp.asarray(s, u.dtype)

        return jax.tree_util.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------------------
# The optimizer


def make_optimizer(
    cfg: Any,
    params_tree: Any,
    *,
    total_steps: int | None = None,
    path_fn: PathFn = param_path,
    layer_id_fn: LayerIdFn = layer_id,
) -> optax.GradientTransformation:
    """The trainer's optimizer for the trainable parameters ``params_tree`` (see the module doc).

    Args:
      cfg: the ``optim`` config block (or the whole config, see the module doc).
      params_tree: the trainable parameters: an ``nnx.State`` (of Variables or of arrays), a nested
        dict, any pytree. Only its leaf names are read: to infer the encoder's layout for
        ``layer_decay`` (unless ``num_layers`` / ``stage_depths`` are in the config) and to check
        that every name has a layer id.
      total_steps: the schedule's end when it is not in ``cfg``.
      path_fn: JAX tree path -> dotted name.
      layer_id_fn: ``(name, num_layers, stage_depths) -> int``, :func:`layer_id` by default.

    ``adamw``: clip, ``scale_by_adam(b1, b2, eps)``, decoupled ``weight_decay`` on
    :func:`weight_decay_mask`, layer-decay scale, ``-lr(step)``. ``sgd``: clip, L2 ``weight_decay``
    added to the gradient on the same mask (PyTorch's SGD), ``trace(momentum, nesterov)``, layer-decay
    scale, ``-lr(step)``.
    """
    cfg, total = _optim_config(cfg, total_steps)
    schedule = make_schedule(cfg, total_steps=total)
    name = str(_field(cfg, "optimizer", "adamw")).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    weight_decay = float(_field(cfg, "weight_decay", 0.0) or 0.0)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    clip = _field(cfg, "grad_clip_norm", None)
    clip = float(clip) if clip else 0.0
    if clip < 0:
        raise ValueError(f"grad_clip_norm must be >= 0 (0 disables), got {clip}")
    layer_decay = _field(cfg, "layer_decay", None)
    layer_decay = 1.0 if layer_decay is None else float(layer_decay)
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")

    mask = None
    if weight_decay > 0:
        mask = lambda tree: weight_decay_mask(tree, path_fn=path_fn)  # noqa: E731  (per call: nnx's trees differ)

    parts = []
    if clip > 0:
        parts.append(optax.clip_by_global_norm(clip))
    if name == "adamw":
        parts.append(optax.scale_by_adam(
            b1=float(_field(cfg, "b1", 0.9)), b2=float(_field(cfg, "b2", 0.999)), eps=float(_field(cfg, "eps", 1e-8))
        ))
        if weight_decay > 0:
            parts.append(optax.add_decayed_weights(weight_decay, mask))
    else:
        if weight_decay > 0:
            parts.append(optax.add_decayed_weights(weight_decay, mask))
        momentum = float(_field(cfg, "momentum", 0.9) or 0.0)
        if momentum > 0:
            parts.append(optax.trace(decay=momentum, nesterov=bool(_field(cfg, "nesterov", False))))
    if layer_decay != 1.0:
        num_layers, stage_depths = _layout(
            params_tree, path_fn, _field(cfg, "num_layers", None), _field(cfg, "stage_depths", None))
        for n, _ in named_leaves(params_tree, path_fn):  # fail now, not inside the first jitted step
            layer_id_fn(n, num_layers, stage_depths)
        parts.append(scale_by_layer_decay(
            lambda n: layer_scale(n, layer_decay, num_layers, stage_depths, layer_id_fn=layer_id_fn),
            path_fn=path_fn,
        ))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts)


# ----------------------------------------------------------------------------------------------
# Gradient accumulation


def _split_micro(batch: Any, steps: int) -> Any:
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree_util.tree_leaves(batch)}
    if None in sizes:
        raise ValueError("every leaf of the batch needs a leading batch axis to accumulate gradients")
    if len(sizes) != 1:
        raise ValueError(f"the batch's leaves have different leading sizes {sorted(sizes)}")
    (size,) = sizes
    if size % steps:
        raise ValueError(f"the batch of {size} does not split into {steps} equal micro-batches")

    def split(x):
        # Micro-batch i holds rows i, i + steps, ...: on a batch sharded along axis 0 each shard gives
        # the same number of rows to every micro-batch and the reshape moves no data.
        x = jnp.reshape(x, (size // steps, steps) + tuple(np.shape(x)[1:]))
        return jnp.moveaxis(x, 1, 0)

    return jax.tree_util.tree_map(split, batch)


def _acc_dtype(dtype) -> jnp.dtype:
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize >= 4:
        return dtype
    return jnp.dtype(jnp.float32)


def accumulate_gradients(
    loss_and_grad_fn: Callable[[Any, Any], tuple[tuple[jax.Array, Any], Any]],
    params: Any,
    batch: Any,
    steps: int,
) -> tuple[jax.Array, Any, Any]:
    """Mean loss, aux and gradients over ``steps`` micro-batches of ``batch``, one in memory at a time.

    Args:
      loss_and_grad_fn: ``(params, micro_batch) -> ((loss, aux), grads)``, e.g.
        ``jax.value_and_grad(loss_fn, has_aux=True)``; ``aux`` is any pytree of arrays (or None).
      params: passed through unchanged.
      batch: a pytree whose every leaf has the same leading size, a multiple of ``steps``.
      steps: the number of micro-batches; 1 calls ``loss_and_grad_fn`` once on the whole batch.

    Micro-batch ``i`` takes rows ``i, i + steps, i + 2 * steps, ...``. A ``jax.lax.scan`` sums the
    losses, the aux leaves and the gradients (in float32 for lower-precision leaves) and divides by
    ``steps``; gradients come back in their own dtype, aux leaves as float32 or wider. When the loss
    is a mean over the batch the result equals the full-batch gradient.

    Returns:
      ``(loss, aux, grads)``.
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if steps == 1:
        (loss, aux), grads = loss_and_grad_fn(params, batch)
        return loss, aux, grads

    micro = _split_micro(batch, steps)
    first = jax.tree_util.tree_map(lambda x: x[0], micro)
    (loss_shape, aux_shape), grad_shape = jax.eval_shape(loss_and_grad_fn, params, first)

    def zeros(s):
        return jnp.zeros(s.shape, _acc_dtype(s.dtype))

    carry0 = (zeros(loss_shape), jax.tree_util.tree_map(zeros, aux_shape), jax.tree_util.tree_map(zeros, grad_shape))

    def body(carry, mb):
        (loss, aux), grads = loss_and_grad_fn(params, mb)
        add = lambda a, b: a + b.astype(a.dtype)  # noqa: E731
        return (add(carry[0], loss), jax.tree_util.tree_map(add, carry[1], aux),
                jax.tree_util.tree_map(add, carry[2], grads)), None

    (loss, aux, grads), _ = jax.lax.scan(body, carry0, micro)
    loss = loss / steps
    aux = jax.tree_util.tree_map(lambda a: a / steps, aux)
    grads = jax.tree_util.tree_map(lambda g, s: (g / steps).astype(s.dtype), grads, grad_shape)
    return loss, aux, grads
