"""Flat ``{dotted name: array}`` views of a model's parameters, and loading them with checks.

Names are the NNX attribute paths joined by dots (``image_encoder.blocks.0.attn.qkv.kernel``), the
names the weight converters and the Orbax checkpoints use.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from samjax.errors import CheckpointError


def _flat_variables(model: nnx.Module) -> dict[str, nnx.Variable]:
    state = nnx.state(model)
    return {".".join(str(p) for p in path): var for path, var in nnx.to_flat_state(state)}


def flat_params(model: nnx.Module) -> dict[str, jax.Array]:
    """All of the model's variables (parameters and buffers) by dotted name."""
    return {name: var[...] for name, var in _flat_variables(model).items()}


def param_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(var.shape) for name, var in _flat_variables(model).items()}


def check_params(
    params: Mapping[str, np.ndarray | jax.Array], expected: Mapping[str, tuple[int, ...]], source: str = "checkpoint"
) -> None:
    """Raises :class:`CheckpointError` unless ``params`` has exactly the names and shapes ``expected``.

    The message lists each missing, unexpected and wrongly shaped tensor with its shape.
    """
    problems = []
    for name in sorted(set(expected) - set(params)):
        problems.append(f"  missing:     {name} {tuple(expected[name])}")
    for name in sorted(set(params) - set(expected)):
        problems.append(f"  unexpected:  {name} {tuple(np.shape(params[name]))}")
    for name in sorted(set(params) & set(expected)):
        got, want = tuple(np.shape(params[name])), tuple(expected[name])
        if got != want:
            problems.append(f"  wrong shape: {name} is {got}, the model needs {want}")
    if problems:
        shown = problems[:30] + ([f"  ... and {len(problems) - 30} more"] if len(problems) > 30 else [])
        raise CheckpointError(f"{source} does not fit the model:\n" + "\n".join(shown))


def assign_params(
    model: nnx.Module, params: Mapping[str, np.ndarray | jax.Array], source: str = "checkpoint"
) -> None:
    """Loads ``params`` into ``model`` in place after :func:`check_params` (every variable, exact shapes)."""
    flat = nnx.to_flat_state(nnx.state(model))
    variables = {".".join(str(p) for p in path): var for path, var in flat}
    check_params(params, {k: tuple(v.shape) for k, v in variables.items()}, source)
    for name, var in variables.items():
        var.set_value(jnp.asarray(params[name], dtype=var.dtype))
    nnx.update(model, nnx.from_flat_state(flat))
