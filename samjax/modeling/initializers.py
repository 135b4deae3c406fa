"""SAM's initializers, each drawable two ways: by JAX from a key, or by NumPy on the host.

Every initializer here is an ``nnx``-style callable ``init(key, shape, dtype)``. Given a JAX key it is
exactly the ``nnx.initializers`` function it names (same values as before this module existed). Given a
:class:`HostKey` (from :class:`samjax.modeling.keys.HostKeys`) it draws the same distribution with NumPy:
no XLA program is compiled, which is what made a random ViT-B take ~9 s to build (one compilation per
initializer and shape) against PyTorch's fraction of a second. Values drawn on the host differ from the
JAX ones; the distributions are the same.
"""

from __future__ import annotations

import dataclasses
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

Shape = Sequence[int]
_CHUNK = 1 << 20  # host draws are made in chunks of this many values, each from its own seed
_POOL = ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)))
_TRUNCATED_STD = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]


@dataclasses.dataclass(frozen=True)
class HostKey:
    """A NumPy seed standing in for a JAX key: initializers given one draw on the host."""

    seed: np.random.SeedSequence

    def fill(self, sample: Callable[[np.random.Generator, np.ndarray], None], shape: Shape,
             scale: float = 1.0) -> np.ndarray:
        """A float32 array of ``shape`` that ``sample(rng, out)`` fills in place, times ``scale``.

        Filled in chunks of ``_CHUNK`` values, each with its own child seed, on a thread pool (NumPy's
        generators release the GIL); the values do not depend on the number of threads.
        """
        out = _aligned_empty(math.prod(shape))
        starts = range(0, out.size, _CHUNK)
        seeds = self.seed.spawn(len(starts))

        def chunk(start, seed):
            part = out[start:start + _CHUNK]
            sample(np.random.default_rng(seed), part)
            if scale != 1.0:
                part *= np.float32(scale)

        list(_POOL.map(chunk, starts, seeds))
        return out.reshape(tuple(shape))


def _aligned_empty(size: int) -> np.ndarray:
    """A float32 buffer on a 64-byte boundary: ``jax.device_put(x, may_alias=True)`` then uses it without a copy."""
    buf = np.empty(size + 16, np.float32)
    start = (-buf.ctypes.data % 64) // 4
    return buf[start:start + size]


def _truncated_normal(rng: np.random.Generator, out: np.ndarray) -> None:
    """Standard normal values truncated to [-2, 2] (redrawn outside it)."""
    rng.standard_normal(dtype=np.float32, out=out)
    bad = np.flatnonzero(np.abs(out) > 2)
    while bad.size:
        out[bad] = rng.standard_normal(bad.size, dtype=np.float32)
        bad = bad[np.abs(out[bad]) > 2]


def _normal(rng: np.random.Generator, out: np.ndarray) -> None:
    rng.standard_normal(dtype=np.float32, out=out)


def _uniform(rng: np.random.Generator, out: np.ndarray) -> None:
    """Uniform on [-1, 1)."""
    rng.random(dtype=np.float32, out=out)
    out *= 2
    out -= 1


@dataclasses.dataclass(frozen=True)
class Initializer:
    """``init(key, shape, dtype)``: ``jax_init`` for JAX keys, ``host(key, shape)`` for :class:`HostKey`."""

    jax_init: Callable
    host: Callable[[HostKey, tuple[int, ...]], np.ndarray]

    def __call__(self, key, shape: Shape, dtype=jnp.float32):
        if isinstance(key, HostKey):
            return self.host(key, tuple(shape)).astype(dtype, copy=False)
        return self.jax_init(key, shape, dtype)


def constant(value: float) -> Initializer:
    jax_init = nnx.initializers.zeros_init() if value == 0 else (
        nnx.initializers.ones_init() if value == 1 else nnx.initializers.constant(value))
    return Initializer(jax_init, lambda key, shape: np.full(shape, value, np.float32))


def normal(stddev: float) -> Initializer:
    return Initializer(nnx.initializers.normal(stddev), lambda key, shape: key.fill(_normal, shape, stddev))


def truncated_normal(stddev: float) -> Initializer:
    """Normal of ``stddev`` before truncation to [-2, 2] standard deviations (``nnx``'s convention)."""
    return Initializer(nnx.initializers.truncated_normal(stddev),
                       lambda key, shape: key.fill(_truncated_normal, shape, stddev))


def fans(shape: Shape, in_axis: int = -2, out_axis: int = -1, batch_axis: Sequence[int] = ()) -> tuple[float, float]:
    """(fan_in, fan_out) as ``jax.nn.initializers.variance_scaling`` counts them."""
    shape = tuple(shape)
    axes = [a % len(shape) for a in (in_axis, out_axis, *batch_axis)]
    receptive = math.prod(d for i, d in enumerate(shape) if i not in axes)
    return shape[axes[0]] * receptive, shape[axes[1]] * receptive


def variance_scaling(scale: float, mode: str, distribution: str, in_axis: int = -2, out_axis: int = -1,
                     batch_axis: Sequence[int] = ()) -> Initializer:
    """``nnx.initializers.variance_scaling`` (modes fan_in / fan_out / fan_avg; truncated_normal / normal / uniform)."""
    jax_init = nnx.initializers.variance_scaling(scale, mode, distribution, in_axis=in_axis, out_axis=out_axis,
                                                 batch_axis=tuple(batch_axis))

    def host(key: HostKey, shape: tuple[int, ...]) -> np.ndarray:
        fan_in, fan_out = fans(shape, in_axis, out_axis, batch_axis)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = scale / fan if fan else 0.0
        if distribution == "truncated_normal":
            return key.fill(_truncated_normal, shape, math.sqrt(variance) / _TRUNCATED_STD)
        if distribution == "normal":
            return key.fill(_normal, shape, math.sqrt(variance))
        return key.fill(_uniform, shape, math.sqrt(3 * variance))

    return Initializer(jax_init, host)


def lecun_normal(in_axis: int = -2, out_axis: int = -1) -> Initializer:
    return variance_scaling(1.0, "fan_in", "truncated_normal", in_axis, out_axis)


# ViT-style defaults; Meta's checkpoints overwrite them, training from scratch uses them.
default_kernel_init = truncated_normal(0.02)
zeros_init = constant(0.0)
ones_init = constant(1.0)
