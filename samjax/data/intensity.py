"""Intensity handling before SAM: medical intensities (HU, MR units, 16-bit) to uint8.

SAM was trained on 8-bit RGB photos, so every image is mapped to uint8 0..255 first: CT through a
window (level, width) in HU, MR through percentile clipping (MR units are arbitrary per scan),
anything else by its min..max. All mappings are linear and round half up
(``floor(v + 0.5)``); NaN maps to 0 (run :func:`check_intensities` first to refuse such files).
Shapes are kept: (H, W), (H, W, C) or volumes alike.
"""

from __future__ import annotations

import numpy as np

from samjax.errors import DataError


def _scale(x, lo: float, hi: float) -> np.ndarray:
    """Linear map of [lo, hi] to 0..255 (values outside clipped), rounded half up, as uint8."""
    x = np.asarray(x, dtype=np.float64)
    if not hi > lo:
        return np.where(x > lo, 255, 0).astype(np.uint8)  # degenerate range: a threshold
    y = (np.clip(x, lo, hi) - lo) * 255.0 / (hi - lo)
    y = np.floor(y + 0.5)
    return np.nan_to_num(y, nan=0.0).astype(np.uint8)


def ct_window(x, level: float, width: float) -> np.ndarray:
    """CT window: clip to [level - width/2, level + width/2] and scale to 0..255 (uint8).

    The lower bound gives 0, the upper 255, ``level`` gives 128 (127.5 rounded half up).
    E.g. soft tissue (40, 400), lung (-600, 1500), bone (400, 1800)."""
    return _window(x, level, width)


def _window(x, level: float, width: float) -> np.ndarray:
    if not width > 0:
        raise ValueError(f"CT window width must be positive, got {width}")
    return _scale(x, level - width / 2.0, level + width / 2.0)


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    return values[np.isfinite(values)] if values.dtype.kind == "f" else values


def percentile_clip(x, lo: float = 0.5, hi: float = 99.5, mask=None) -> np.ndarray:
    """MR-style normalisation: clip to the ``lo``/``hi`` percentiles and scale to 0..255 (uint8).

    Percentiles (numpy's default linear interpolation) are taken over the finite pixels, only
    where ``mask`` is true if given (e.g. the nonzero foreground, so a large black background
    does not pull the lower bound to 0); ``mask`` has x's shape or its leading (H, W). If the two
    percentiles coincide, the finite min..max is used instead."""
    if not 0 <= lo < hi <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= lo < hi <= 100, got ({lo}, {hi})")
    x = np.asarray(x)
    values = x
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != x.shape[: mask.ndim]:
            raise ValueError(f"mask shape {mask.shape} does not match image shape {x.shape}")
        values = x[mask]
    values = _finite(values)
    if values.size == 0:
        raise ValueError("percentile_clip: no finite pixels to compute percentiles over (empty mask?)")
    p_lo, p_hi = np.percentile(values, [lo, hi])
    if not p_hi > p_lo:
        p_lo, p_hi = values.min(), values.max()
    return _scale(x, float(p_lo), float(p_hi))


def minmax_uint8(x) -> np.ndarray:
    """Scale the finite min..max to 0..255 (uint8); uint8 input is returned unchanged.

    For 16-bit or float images with no known window. Bool gives 0/255; a constant image gives 0."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    if x.dtype == bool:
        return x.astype(np.uint8) * np.uint8(255)
    values = _finite(x)
    if values.size == 0:
        return np.zeros(x.shape, np.uint8)
    return _scale(x, float(values.min()), float(values.max()))


def to_uint8(x, ct_window: tuple[float, float] | None = None,
             percentiles: tuple[float, float] | None = None) -> np.ndarray:
    """The one entry point for the data set builder: uint8 of x's shape.

    ``ct_window=(level, width)`` -> CT window; ``percentiles=(lo, hi)`` -> percentile clip over
    all pixels; neither -> uint8 passes through, other dtypes are min-max scaled."""
    if ct_window is not None and percentiles is not None:
        raise ValueError("to_uint8: give ct_window or percentiles, not both")
    if ct_window is not None:
        level, width = ct_window
        return _window(x, level, width)
    if percentiles is not None:
        lo, hi = percentiles
        return percentile_clip(x, lo, hi)
    return minmax_uint8(x)


def check_intensities(x, name: str) -> None:
    """Raise DataError naming ``name`` if x has NaN or infinite values, is empty, or is constant."""
    x = np.asarray(x)
    if x.size == 0:
        raise DataError(f"{name}: the image is empty (shape {x.shape})")
    if x.dtype.kind in "fc":
        n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
        if n_nan or n_inf:
            what = " and ".join(s for s in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} infinite" if n_inf else "") if s)
            raise DataError(f"{name}: {what} values of {x.size} pixels; the file is corrupt or has undefined "
                            "voxels (e.g. outside a reconstruction); fix them (np.nan_to_num) or leave the file out")
    first = x.flat[0].item()
    if np.all(x == first):
        raise DataError(f"{name}: every pixel equals {first!r}; a constant image has nothing to segment - check "
                        "that it is not a blank or failed export (or a wrong rescale/window), or leave it out")


def gray_to_rgb(x) -> np.ndarray:
    """(H, W) or (H, W, 1) -> (H, W, 3) by repeating the channel; (H, W, 3) is returned as is."""
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[-1] == 3:
        return x
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 2:
        raise ValueError(f"gray_to_rgb expects (H, W) or (H, W, 1), got shape {x.shape}")
    return np.repeat(x[..., None], 3, axis=-1)
