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

The naming, weight-decay and layer-id rules are in :mod:`samjax.train.param_rules`; gradient
accumulation is in :mod:`samjax.train.accumulate`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax.numpy as jnp
import optax

from samjax.train.param_rules import (
    LayerIdFn, PathFn, layer_id, layer_layout, layer_scale, named_leaves, param_path, scale_by_layer_decay,
    weight_decay_mask,
)

SCHEDULES = ("cosine", "poly", "constant")
OPTIMIZERS = ("adamw", "sgd")


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
        num_layers, stage_depths = layer_layout(
            params_tree, path_fn, _field(cfg, "num_layers", None), _field(cfg, "stage_depths", None))
        for n, _ in named_leaves(params_tree, path_fn):  # fail now, not inside the first jitted step
            layer_id_fn(n, num_layers, stage_depths)
        parts.append(scale_by_layer_decay(
            lambda n: layer_scale(n, layer_decay, num_layers, stage_depths, layer_id_fn=layer_id_fn),
            path_fn=path_fn,
        ))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts)
