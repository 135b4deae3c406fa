"""Intensity mapping to SAM's uint8: CT windows, percentile clipping, min-max, and the checks."""

import numpy as np
import pytest

from samjax.data.intensity import (check_intensities, ct_window, gray_to_rgb, minmax_uint8, percentile_clip,
                                   to_uint8)
from samjax.errors import DataError


def test_ct_window_boundaries():
    level, width = 40.0, 400.0
    x = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0, -160.0 + 400.0 / 255.0 * 10])
    out = ct_window(x, level, width)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [0, 0, 128, 255, 255, 10])
    # width 510 -> one output step per 2 HU: halves round up (2.5 -> 3, not to even 2)
    np.testing.assert_array_equal(ct_window(np.array([-254.0, -254.02, -250.0, 255.0]), 0, 510), [1, 0, 3, 255])
    assert ct_window(np.int16(40), 40, 400) == 128  # integer input, 0-d
    with pytest.raises(ValueError, match="width"):
        ct_window(x, 40, 0)


def test_ct_window_keeps_shape_and_is_monotonic():
    x = np.linspace(-1200, 1200, 2 * 3 * 50).reshape(2, 3, 50)
    out = ct_window(x, 0, 2000)
    assert out.shape == x.shape
    flat = out.ravel()
    assert np.all(np.diff(flat.astype(int)) >= 0) and flat[0] == 0 and flat[-1] == 255


def test_percentile_clip_matches_numpy():
    x = np.random.default_rng(0).gamma(2.0, 300.0, size=(64, 64)).astype(np.float32)
    out = percentile_clip(x, 1.0, 99.0)
    lo, hi = np.percentile(x, [1.0, 99.0])
    expected = np.floor((np.clip(x.astype(np.float64), lo, hi) - lo) * 255.0 / (hi - lo) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert (out == 0).mean() == pytest.approx(0.01, abs=0.002)
    assert (out == 255).mean() == pytest.approx(0.01, abs=0.002)


def test_percentile_clip_mask_restricted():
    rng = np.random.default_rng(1)
    x = np.zeros((50, 50), np.int16)
    fg = np.zeros_like(x, dtype=bool)
    fg[10:40, 10:40] = True
    x[fg] = rng.integers(500, 1500, fg.sum())
    # without the mask most pixels are 0, so the low percentile is 0 and the tissue is compressed
    assert percentile_clip(x)[fg].min() > 60
    out = percentile_clip(x, 0.5, 99.5, mask=x > 0)
    lo, hi = np.percentile(x[fg], [0.5, 99.5])
    assert lo > 500
    assert out[fg].min() == 0 and out[fg].max() == 255
    assert np.all(out[~fg] == 0)
    v = x[fg][x[fg] > lo][0]
    assert out[fg][x[fg] > lo][0] == int(np.floor((v - lo) * 255 / (hi - lo) + 0.5))
    with pytest.raises(ValueError, match="mask shape"):
        percentile_clip(x, mask=np.ones((5, 5), bool))
    with pytest.raises(ValueError, match="no finite pixels"):
        percentile_clip(x, mask=np.zeros_like(fg))


def test_percentile_clip_rgb_with_hw_mask_and_ignores_nan():
    x = np.random.default_rng(2).random((10, 10, 3))
    m = np.zeros((10, 10), bool)
    m[:5] = True
    lo, hi = np.percentile(x[:5], [5, 95])
    out = percentile_clip(x, 5, 95, mask=m)
    assert out.shape == (10, 10, 3)
    assert out[x <= lo].max() == 0 and out[x >= hi].min() == 255
    y = x[..., 0].copy()
    y[0, 0] = np.nan
    lo, hi = np.percentile(y[np.isfinite(y)], [5, 95])
    out = percentile_clip(y, 5, 95)
    assert out[0, 0] == 0 and out[y >= hi].min() == 255 and out[y <= lo].max() == 0


def test_minmax_uint16():
    x = np.array([[1000, 1500], [2000, 3000]], np.uint16)
    out = minmax_uint8(x)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 64], [128, 255]])  # 63.75 -> 64, 127.5 -> 128
    u8 = np.array([[3, 200]], np.uint8)
    assert minmax_uint8(u8) is u8
    np.testing.assert_array_equal(minmax_uint8(np.full((2, 2), 7.0)), np.zeros((2, 2)))
    np.testing.assert_array_equal(minmax_uint8(np.array([True, False])), [255, 0])


def test_to_uint8_dispatch():
    x = np.array([-1000.0, 40.0, 240.0, 2000.0])
    np.testing.assert_array_equal(to_uint8(x, ct_window=(40, 400)), ct_window(x, 40, 400))
    np.testing.assert_array_equal(to_uint8(x, percentiles=(0, 100)), [0, 88, 105, 255])
    np.testing.assert_array_equal(to_uint8(x), minmax_uint8(x))
    u8 = np.array([1, 2, 3], np.uint8)
    np.testing.assert_array_equal(to_uint8(u8), u8)
    with pytest.raises(ValueError, match="not both"):
        to_uint8(x, ct_window=(40, 400), percentiles=(1, 99))


def test_check_intensities():
    check_intensities(np.array([[0, 1]], np.uint8), "fine.png")  # no error
    x = np.ones((4, 4), np.float32)
    x[0, 0] = 2
    x[1, 1] = np.nan
    with pytest.raises(DataError, match=r"scan\.nii: 1 NaN values of 16 pixels.*nan_to_num"):
        check_intensities(x, "scan.nii")
    x[1, 1] = np.inf
    x[2, 2] = -np.inf
    with pytest.raises(DataError, match=r"scan\.nii: 2 infinite values"):
        check_intensities(x, "scan.nii")
    with pytest.raises(DataError, match=r"blank\.png: every pixel equals 0.*constant"):
        check_intensities(np.zeros((3, 3), np.uint16), "blank.png")
    with pytest.raises(DataError, match="empty"):
        check_intensities(np.zeros((0, 3)), "e.png")


def test_gray_to_rgb():
    g = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = gray_to_rgb(g)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)
    np.testing.assert_array_equal(gray_to_rgb(g[..., None]), out)
    rgb = np.zeros((2, 3, 3), np.uint8)
    assert gray_to_rgb(rgb) is rgb
    with pytest.raises(ValueError, match="gray_to_rgb"):
        gray_to_rgb(np.zeros((2, 3, 2)))
