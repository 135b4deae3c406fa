"""Resampling with PyTorch's ``F.interpolate(..., align_corners=False)`` kernels.

``jax.image.resize`` antialiases when it shrinks and so differs from PyTorch; SAM's post-processing
and the position-embedding surgery of the medical fine-tuning papers use PyTorch's plain linear and
bicubic kernels. Each resize here is a dense ``(out, in)`` matrix per axis, built in float64 NumPy
once per shape, so it is shape-static under ``jit`` and runs as matmuls; SAM's mask post-processing,
whose composed matrix is banded, runs as its few taps a row instead (:func:`upscale_crop_resize_taps`).
The weights equal PyTorch's computed in float64; PyTorch's float32 kernels round the source index in float32, which moves
outputs by up to ~1e-5 relative for ratios such as 127 -> 31.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_CUBIC_A = -0.75  # PyTorch's bicubic coefficient


def _source_index(out_size: int, in_size: int) -> np.ndarray:
    """PyTorch's ``area_pixel_compute_source_index`` for ``align_corners=False``."""
    scale = in_size / out_size
    return (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5


@functools.lru_cache(maxsize=128)
def linear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``(out_size, in_size)`` weights of 1-D linear interpolation (PyTorch, ``align_corners=False``)."""
    return _linear_matrix64(in_size, out_size).astype(np.float32)


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution weights for the 4 taps at offsets -1, 0, 1, 2 from ``floor(x)``."""
    a = _CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


@functools.lru_cache(maxsize=128)
def cubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``(out_size, in_size)`` weights of 1-D bicubic interpolation (PyTorch, ``align_corners=False``).

    PyTorch does not clamp the bicubic source index at 0 and clamps the taps to the border.
    """
    src = _source_index(out_size, in_size)
    base = np.floor(src).astype(np.int64)
    w = _cubic_weights(src - base)
    m = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    for k in range(4):
        np.add.at(m, (rows, np.clip(base - 1 + k, 0, in_size - 1)), w[:, k])
    return m.astype(np.float32)


@functools.lru_cache(maxsize=64)
def upscale_crop_resize_matrix(low: int, padded: int, valid: int, out: int) -> np.ndarray:
    """``(out, low)`` weights of SAM's post-processing along one axis, as one matrix.

    Equals: linear resize ``low -> padded``, keep the first ``valid`` rows (the padding is cropped),
    linear resize ``valid -> out``; composed in float64, so two resizes cost one small matmul.
    """
    up = _linear_matrix64(low, padded)[:valid]
    return (_linear_matrix64(valid, out) @ up).astype(np.float32)


@functools.lru_cache(maxsize=64)
def upscale_crop_resize_taps(low: int, padded: int, valid: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`upscale_crop_resize_matrix` as taps: row ``r`` is ``weights[r, j]`` at column ``first[r] + j``.

    The matrix is banded (2-4 nonzeros a row: two linear resizes), so :func:`apply_taps` computes the same
    sums with ``out * k`` multiply-adds instead of the dense matmul's ``out * low`` (a 3-mask 768x1024
    post-processing: 8.4 ms -> 2.6 ms on 2 CPU cores). Returns ``first (out,)`` int32, ``weights (out, k)``.
    """
    m = upscale_crop_resize_matrix(low, padded, valid, out)
    nonzero = m != 0
    first = np.argmax(nonzero, axis=1)
    last = m.shape[1] - 1 - np.argmax(nonzero[:, ::-1], axis=1)
    cols = first[:, None] + np.arange(int((last - first).max()) + 1)
    weights = np.take_along_axis(m, np.minimum(cols, m.shape[1] - 1), axis=1)
    weights[cols >= m.shape[1]] = 0.0
    first = first.astype(np.int32)
    first.flags.writeable = weights.flags.writeable = False  # cached: shared by every caller
    return first, weights


def apply_taps(x: jax.Array, first: np.ndarray, weights: np.ndarray, axis: int) -> jax.Array:
    """``x`` resampled along ``axis`` by :func:`upscale_crop_resize_taps`'s ``(first, weights)``."""
    axis %= x.ndim
    shape = [1] * x.ndim
    shape[axis] = len(first)
    out = None
    for j in range(weights.shape[1]):
        term = jnp.take(x, np.minimum(first + j, x.shape[axis] - 1), axis=axis) * \
            jnp.asarray(weights[:, j].reshape(shape), x.dtype)
        out = term if out is None else out + term
    return out


def _linear_matrix64(in_size: int, out_size: int) -> np.ndarray:
    src = np.maximum(_source_index(out_size, in_size), 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam = src - i0
    m = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), 1.0 - lam)
    np.add.at(m, (rows, i1), lam)
    return m


def resize_2d(x, size: tuple[int, int], axes: tuple[int, int], mode: str = "bilinear"):
    """Resizes two axes of ``x`` (NumPy or JAX) to ``size`` like PyTorch's ``F.interpolate``.

    Args:
      x: array with spatial axes ``axes`` (e.g. ``(-2, -1)`` for ``(..., H, W)``).
      size: ``(out_h, out_w)``.
      mode: ``"bilinear"`` or ``"bicubic"``.
    """
    builder = {"bilinear": linear_matrix, "bicubic": cubic_matrix}[mode]
    xp = jnp if isinstance(x, jax.Array) else np
    ah, aw = (a % x.ndim for a in axes)
    mh = builder(x.shape[ah], size[0])
    mw = builder(x.shape[aw], size[1])
    x = xp.moveaxis(x, (ah, aw), (-2, -1))
    y = _matmul(_matmul(mh.astype(x.dtype), x), mw.T.astype(x.dtype))
    return xp.moveaxis(y, (-2, -1), (ah, aw))


def resize_1d(x, size: int, axis: int = 0):
    """Linear resize of one axis (PyTorch ``F.interpolate(mode="linear", align_corners=False)``)."""
    xp = jnp if isinstance(x, jax.Array) else np
    x = xp.moveaxis(x, axis, -1)
    y = _matmul(x, linear_matrix(x.shape[-1], size).T.astype(x.dtype))
    return xp.moveaxis(y, -1, axis)


def _matmul(a, b):
    """Full-precision matmul (accelerators may otherwise drop fp32 matmuls to bf16 passes)."""
    if isinstance(a, jax.Array) or isinstance(b, jax.Array):
        return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)
    return np.matmul(a, b)
