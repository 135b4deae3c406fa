"""Gradient accumulation: the mean gradient of a batch computed one micro-batch at a time."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


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
