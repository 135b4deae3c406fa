"""``samjax.utils.transforms`` against Meta's ``segment_anything.utils.transforms.ResizeLongestSide``, and
the image checks of ``as_rgb_uint8``."""

import numpy as np
import pytest
from segment_anything.utils.transforms import ResizeLongestSide as MetaResize

from reference import sample_image
from samjax.utils.transforms import ResizeLongestSide, as_rgb_uint8


def _noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


IMAGES = {
    "landscape": (lambda: sample_image(180, 240), 64),
    "portrait": (lambda: sample_image(240, 150, seed=1), 64),
    "square_down": (lambda: _noise(100, 100), 64),
    "odd_rounding": (lambda: _noise(333, 127, seed=2), 100),  # 127 * 100 / 333 = 38.1 -> 38
    "half_up": (lambda: _noise(200, 70, seed=3), 64),  # 70 * 64 / 200 = 22.4 -> 22
    "tie": (lambda: _noise(8, 3, seed=9), 4),  # 3 * 4 / 8 = 1.5 -> 2 (rounded half up)
    "tiny_1x5": (lambda: _noise(1, 5, seed=4), 64),
    "tiny_5x1": (lambda: _noise(5, 1, seed=5), 64),
    "upscale_small": (lambda: sample_image(20, 30, seed=6), 64),
    "upscale_to_1024": (lambda: _noise(37, 50, seed=7), 1024),
    "identity": (lambda: _noise(64, 40, seed=8), 64),
}


@pytest.mark.parametrize("case", sorted(IMAGES))
def test_apply_image_matches_meta_exactly(case):
    make, target = IMAGES[case]
    image = make()
    ours = ResizeLongestSide(target).apply_image(image)
    ref = MetaResize(target).apply_image(image)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    assert max(ours.shape[:2]) == target
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize(
    "h,w,target", [(180, 240, 64), (240, 180, 1024), (1, 5, 64), (5, 1, 64), (333, 127, 100), (3, 8, 4), (8, 3, 4), (7, 5, 3)]
)
def test_get_preprocess_shape_matches_meta(h, w, target):
    assert ResizeLongestSide.get_preprocess_shape(h, w, target) == MetaResize.get_preprocess_shape(h, w, target)


@pytest.mark.parametrize("original_size,target", [((180, 240), 64), ((240, 150), 1024), ((1, 5), 64), ((333, 127), 100)])
def test_apply_coords_and_boxes_match_meta(original_size, target):
    rng = np.random.default_rng(0)
    h, w = original_size
    coords = rng.uniform(0, 1, (5, 2)) * (w, h)
    coords_int = np.array([[0, 0], [w, h], [w // 2, h // 3]])  # integer input becomes float
    boxes = np.sort(rng.uniform(0, 1, (3, 2, 2)) * (w, h), axis=1).reshape(3, 4)
    ours, ref = ResizeLongestSide(target), MetaResize(target)
    for c in (coords, coords_int, coords[None]):
        got = ours.apply_coords(c, original_size)
        assert got.dtype == np.float64 and got.shape == c.shape
        np.testing.assert_allclose(got, ref.apply_coords(c, original_size), rtol=1e-12, atol=1e-12)
    got = ours.apply_boxes(boxes, original_size)
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, ref.apply_boxes(boxes, original_size), rtol=1e-12, atol=1e-12)
    one = ours.apply_boxes(boxes[0], original_size)  # a single (4,) box keeps its shape
    assert one.shape == (4,)
    np.testing.assert_allclose(one, ref.apply_boxes(boxes[0], original_size)[0], rtol=1e-12)
    # the far corner maps to the resized image's far corner
    nh, nw = ResizeLongestSide.get_preprocess_shape(h, w, target)
    np.testing.assert_allclose(ours.apply_coords(np.array([[w, h]]), original_size), [[nw, nh]], rtol=1e-12)


def test_apply_coords_does_not_modify_input():
    coords = np.array([[10.0, 20.0]])
    ResizeLongestSide(64).apply_coords(coords, (100, 200))
    np.testing.assert_array_equal(coords, [[10.0, 20.0]])


# --- as_rgb_uint8 ------------------------------------------------------------------------------
def test_as_rgb_uint8_accepts_gray_and_rgb():
    rgb = _noise(6, 7)
    gray = rgb[..., 0]
    out = as_rgb_uint8(rgb)
    assert out.dtype == np.uint8 and out.shape == (6, 7, 3)
    np.testing.assert_array_equal(out, rgb)
    for g in (gray, gray[..., None]):
        out = as_rgb_uint8(g)
        assert out.shape == (6, 7, 3) and out.dtype == np.uint8
        for c in range(3):
            np.testing.assert_array_equal(out[..., c], gray)
    assert as_rgb_uint8(rgb[:, ::-1]).flags.c_contiguous  # views come back contiguous


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint16, np.int8, bool])
def test_as_rgb_uint8_rejects_other_dtypes(dtype):
    image = np.zeros((4, 5, 3), dtype)
    with pytest.raises(TypeError) as info:
        as_rgb_uint8(image)
    assert "uint8" in str(info.value) and str(np.dtype(dtype)) in str(info.value)


def test_as_rgb_uint8_type_error_names_the_argument():
    with pytest.raises(TypeError, match="^mask must be uint8"):
        as_rgb_uint8(np.zeros((2, 2), np.float32), name="mask")


@pytest.mark.parametrize(
    "shape", [(4, 5, 4), (4, 5, 2), (4, 5, 3, 1), (1, 4, 5, 3), (5,), (), (0, 5, 3), (4, 0, 3), (0, 0), (0, 5, 1), (0, 5, 4)]
)
def test_as_rgb_uint8_rejects_shapes(shape):
    with pytest.raises(ValueError) as info:
        as_rgb_uint8(np.zeros(shape, np.uint8))
    msg = str(info.value)
    assert str(tuple(shape)) in msg or str(tuple(shape))[:-1] in msg
    if 0 in shape and len(shape) in (2, 3) and (len(shape) == 2 or shape[-1] in (1, 3)):
        assert "empty" in msg
    else:
        assert "(H, W)" in msg
