"""``samjax.utils.resize`` and the position-embedding surgery against ``torch.nn.functional.interpolate``
(``align_corners=False``): max abs difference <= 1e-5.

The reference runs PyTorch in float64. PyTorch's float32 kernels compute the source index
``(i + 0.5) * in / out - 0.5`` in float32, so for ratios that are not exact in binary (127 -> 31)
their weights are off by up to ~1e-5 from the exact ones, which samjax builds in float64: against
float32 PyTorch the outputs agree to ~2e-5 on unit-variance data (``TOL_TORCH_F32``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samjax.utils.resize import (apply_taps, cubic_matrix, linear_matrix, resize_1d, resize_2d,
                                 upscale_crop_resize_matrix, upscale_crop_resize_taps)
from samjax.weights.resize_pos import resize_position_embeddings

TOL = 1e-5
TOL_TORCH_F32 = 1e-4
SIZES_1D = [(1, 4), (4, 1), (5, 5), (7, 3), (3, 7), (16, 64), (64, 16), (127, 31), (31, 127), (10, 25)]
SIZES_2D = [((8, 8), (16, 16)), ((16, 16), (8, 8)), ((7, 11), (13, 5)), ((12, 9), (4, 27)), ((5, 6), (5, 6)), ((3, 20), (40, 2))]


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _torch(x, size, mode, dtype=torch.float64):
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(x)).to(dtype)
        return F.interpolate(t, size=size, mode=mode, align_corners=False).numpy()


def _maxdiff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)))


@pytest.mark.parametrize("n_in,n_out", SIZES_1D)
def test_linear_matrix(n_in, n_out):
    m = linear_matrix(n_in, n_out)
    assert m.shape == (n_out, n_in) and m.dtype == np.float32
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)  # partition of unity
    eye = np.eye(n_in, dtype=np.float32)[None]  # (1, C=n_in, L=n_in): channel c is basis vector c
    ref = _torch(eye, n_out, "linear")[0]  # (n_in, n_out): ref[c, j] = weight of input c at output j
    assert _maxdiff(m, ref.T) <= TOL


@pytest.mark.parametrize("n_in,n_out", SIZES_1D)
def test_cubic_matrix(n_in, n_out):
    m = cubic_matrix(n_in, n_out)
    assert m.shape == (n_out, n_in) and m.dtype == np.float32
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-5)
    # torch has no 1-D bicubic: resize a (n_in, 1) image to (n_out, 1) with basis-vector channels
    eye = np.eye(n_in, dtype=np.float32)[None, :, :, None]
    ref = _torch(eye, (n_out, 1), "bicubic")[0, :, :, 0]
    assert _maxdiff(m, ref.T) <= TOL


def test_matrices_are_not_trivial():
    """Guards against a comparison that would pass for identity-like matrices."""
    assert np.count_nonzero(cubic_matrix(8, 16)[5]) == 4
    assert np.count_nonzero(linear_matrix(8, 16)[5]) == 2
    assert np.any(cubic_matrix(8, 16) < 0)  # the bicubic kernel's negative lobes


@pytest.mark.parametrize("low,padded,valid,out", [(16, 64, 64, 64), (16, 64, 47, 30), (16, 64, 40, 123), (8, 32, 1, 5)])
def test_post_processing_taps_are_the_banded_matrix(low, padded, valid, out):
    """SAM's upscale-crop-resize applied as taps (2-4 a row) gives the dense matrix's product."""
    first, weights = upscale_crop_resize_taps(low, padded, valid, out)
    dense = np.zeros((out, low), np.float32)
    for j in range(weights.shape[1]):
        np.add.at(dense, (np.arange(out), np.minimum(first + j, low - 1)), weights[:, j])
    m = upscale_crop_resize_matrix(low, padded, valid, out)
    np.testing.assert_array_equal(dense, m)
    assert np.count_nonzero(m, axis=1).max() == weights.shape[1] <= 4  # as many taps as the band needs
    x = jnp.asarray(_x((2, 3, low, low)))
    got = apply_taps(apply_taps(x, first, weights, -2), first, weights, -1)
    assert _maxdiff(got, np.einsum("oh,bchw,pw->bcop", m, np.asarray(x), m)) <= 1e-6


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("src,dst", SIZES_2D)
def test_resize_2d_numpy_nchw(mode, src, dst):
    x = _x((2, 3, *src))
    y = resize_2d(x, dst, axes=(-2, -1), mode=mode)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    assert _maxdiff(y, _torch(x, dst, mode)) <= TOL
    assert _maxdiff(y, _torch(x, dst, mode, torch.float32)) <= TOL_TORCH_F32


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("src,dst", [((8, 8), (16, 16)), ((16, 16), (8, 8)), ((7, 11), (13, 5))])
def test_resize_2d_jax_nhwc(mode, src, dst):
    """JAX input, spatial axes in the middle (channels last), also under jit."""
    x = _x((2, *src, 3), seed=1)
    ref = _torch(x.transpose(0, 3, 1, 2), dst, mode).transpose(0, 2, 3, 1)
    y = resize_2d(jnp.asarray(x), dst, axes=(1, 2), mode=mode)
    assert isinstance(y, jax.Array) and y.shape == (2, *dst, 3)
    assert _maxdiff(y, ref) <= TOL
    y_jit = jax.jit(lambda a: resize_2d(a, dst, axes=(1, 2), mode=mode))(jnp.asarray(x))
    assert _maxdiff(y_jit, ref) <= TOL


def test_resize_2d_default_is_bilinear_and_keeps_constants():
    x = _x((1, 1, 6, 9), seed=2)
    np.testing.assert_array_equal(resize_2d(x, (11, 4), axes=(-2, -1)), resize_2d(x, (11, 4), axes=(-2, -1), mode="bilinear"))
    const = np.full((1, 1, 5, 7), 3.5, np.float32)
    for mode in ("bilinear", "bicubic"):
        np.testing.assert_allclose(resize_2d(const, (13, 3), axes=(-2, -1), mode=mode), 3.5, atol=1e-5)


def test_resize_2d_rejects_unknown_mode():
    with pytest.raises(KeyError):
        resize_2d(_x((1, 1, 4, 4)), (8, 8), axes=(-2, -1), mode="nearest")


@pytest.mark.parametrize("n_in,n_out", [(7, 3), (3, 7), (127, 31), (31, 127), (64, 64)])
def test_resize_1d_numpy_and_jax(n_in, n_out):
    x = _x((2, 5, n_in), seed=3)
    ref = _torch(x, n_out, "linear")
    y = resize_1d(x, n_out, axis=-1)
    assert isinstance(y, np.ndarray) and _maxdiff(y, ref) <= TOL
    assert _maxdiff(y, _torch(x, n_out, "linear", torch.float32)) <= TOL_TORCH_F32
    # another axis, JAX input
    yj = resize_1d(jnp.asarray(x.transpose(2, 0, 1)), n_out, axis=0)
    assert isinstance(yj, jax.Array)
    assert _maxdiff(np.asarray(yj).transpose(1, 2, 0), ref) <= TOL


def test_resize_position_embeddings_matches_torch():
    rng = np.random.default_rng(4)
    c = 32
    pos = rng.standard_normal((1, 64, 64, c)).astype(np.float32)
    rel_h = rng.standard_normal((127, 64)).astype(np.float32)
    rel_w = rng.standard_normal((127, 64)).astype(np.float32)
    window_rel = rng.standard_normal((27, 64)).astype(np.float32)
    other = rng.standard_normal((5, 3)).astype(np.float32)
    params = {
        "image_encoder.pos_embed": pos,
        "image_encoder.blocks.2.attn.rel_pos_h": rel_h,
        "image_encoder.blocks.2.attn.rel_pos_w": rel_w,
        "image_encoder.blocks.0.attn.rel_pos_h": window_rel,  # windowed: already the right shape
        "mask_decoder.other": other,
        "not.in.target": other,
    }
    targets = {
        "image_encoder.pos_embed": (1, 16, 16, c),
        "image_encoder.blocks.2.attn.rel_pos_h": (31, 64),
        "image_encoder.blocks.2.attn.rel_pos_w": (31, 64),
        "image_encoder.blocks.0.attn.rel_pos_h": (27, 64),
        "mask_decoder.other": (5, 3),
    }
    out = resize_position_embeddings(params, targets)
    assert set(out) == set(params)
    assert out["image_encoder.pos_embed"].shape == (1, 16, 16, c)
    ref_pos = _torch(pos.transpose(0, 3, 1, 2), (16, 16), "bicubic").transpose(0, 2, 3, 1)
    assert _maxdiff(out["image_encoder.pos_embed"], ref_pos) <= TOL
    assert _maxdiff(out["image_encoder.pos_embed"], _torch(pos.transpose(0, 3, 1, 2), (16, 16), "bicubic", torch.float32).transpose(0, 2, 3, 1)) <= TOL
    for name, rel in (("rel_pos_h", rel_h), ("rel_pos_w", rel_w)):
        got = out[f"image_encoder.blocks.2.attn.{name}"]
        assert got.shape == (31, 64)
        for dtype, tol in ((torch.float64, TOL), (torch.float32, TOL_TORCH_F32)):
            with torch.no_grad():  # the recipe of the SAMed / SAM-Med2D weight surgery
                t = torch.from_numpy(rel).to(dtype)
                ref = F.interpolate(t.reshape(1, 127, -1).permute(0, 2, 1), size=31, mode="linear")
            ref = ref.reshape(-1, 31).permute(1, 0).numpy()
            assert _maxdiff(got, ref) <= tol, dtype
    assert out["image_encoder.blocks.0.attn.rel_pos_h"] is window_rel
    assert out["mask_decoder.other"] is other and out["not.in.target"] is other
    assert params["image_encoder.pos_embed"] is pos  # the input dict is not modified


def test_resize_position_embeddings_upscale():
    """256 -> 1024-style upscaling (16x16 -> 64x64 grid, rel_pos 31 -> 127)."""
    rng = np.random.default_rng(5)
    pos = rng.standard_normal((1, 16, 16, 8)).astype(np.float32)
    rel = rng.standard_normal((31, 64)).astype(np.float32)
    out = resize_position_embeddings(
        {"image_encoder.pos_embed": pos, "image_encoder.blocks.5.attn.rel_pos_w": rel},
        {"image_encoder.pos_embed": (1, 64, 64, 8), "image_encoder.blocks.5.attn.rel_pos_w": (127, 64)},
    )
    ref_pos = _torch(pos.transpose(0, 3, 1, 2), (64, 64), "bicubic").transpose(0, 2, 3, 1)
    assert _maxdiff(out["image_encoder.pos_embed"], ref_pos) <= TOL
    ref_rel = _torch(rel.T[None], 127, "linear")[0].T
    assert _maxdiff(out["image_encoder.blocks.5.attn.rel_pos_w"], ref_rel) <= TOL
