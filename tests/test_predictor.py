"""``SamPredictor`` input checks, image formats, and the exactness of its prompt padding, on a tiny
SAM (64-pixel input, 2 encoder blocks) with every weight random."""

import jax.numpy as jnp
import numpy as np
import pytest

import samjax
from reference import meta_sam_model, rel_err, sample_image, samjax_from_meta
from samjax.model_spec import get_spec

TINY = get_spec("vit_b").replace(image_size=64, encoder_depth=2, encoder_global_attn_indexes=(1,))
H, W = 48, 60  # original image: resized to 51 x 64
LOW = TINY.low_res_size  # 16


@pytest.fixture(scope="module")
def model():
    # Meta's model with every tensor redrawn (samjax's own init leaves position tables at zero)
    return samjax_from_meta(meta_sam_model(TINY, seed=2), TINY)


@pytest.fixture(scope="module")
def image():
    return sample_image(H, W, seed=3)


@pytest.fixture(scope="module")
def shared(model):
    return samjax.SamPredictor(model)


@pytest.fixture()
def pred(shared, image):
    """The module's predictor, with the standard image set (tests may reset or replace it)."""
    shared.set_image(image)
    return shared


POINTS = np.array([[10.0, 12.0], [40.5, 30.25], [59.0, 2.0]])
LABELS = np.array([1, 0, 1])


# --- order of calls -----------------------------------------------------------------------------
def test_predict_before_set_image(model):
    fresh = samjax.SamPredictor(model)
    assert not fresh.is_image_set
    for call in (
        lambda: fresh.predict(POINTS, LABELS),
        lambda: fresh.predict(),
        lambda: fresh.predict_batch(POINTS[None], LABELS[None]),
        fresh.get_image_embedding,
    ):
        with pytest.raises(RuntimeError, match=r"set_image"):
            call()


def test_reset_image_makes_predict_fail_again(pred):
    masks, _, _ = pred.predict(POINTS, LABELS)
    assert masks.shape == (3, H, W)
    pred.reset_image()
    assert not pred.is_image_set and pred.features is None and pred.original_size is None
    with pytest.raises(RuntimeError, match=r"set_image"):
        pred.predict(POINTS, LABELS)
    with pytest.raises(RuntimeError, match=r"set_image"):
        pred.get_image_embedding()


# --- outputs ------------------------------------------------------------------------------------
def test_get_image_embedding(pred):
    emb = pred.get_image_embedding()
    g = TINY.grid_size
    assert emb.shape == (1, 256, g, g) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb, np.asarray(pred.features).transpose(0, 3, 1, 2))
    assert np.std(emb) > 0.1 and np.all(np.isfinite(emb))
    assert pred.original_size == (H, W) and pred.input_size == (51, 64)


@pytest.mark.parametrize("multimask", [True, False])
def test_predict_shapes_and_threshold(pred, multimask):
    m = 3 if multimask else 1
    masks, iou, low = pred.predict(POINTS, LABELS, multimask_output=multimask)
    logits, iou2, low2 = pred.predict(POINTS, LABELS, multimask_output=multimask, return_logits=True)
    assert masks.shape == (m, H, W) and masks.dtype == bool
    assert logits.shape == (m, H, W) and logits.dtype == np.float32
    assert iou.shape == (m,) and low.shape == (m, LOW, LOW)
    np.testing.assert_array_equal(masks, logits > 0.0)
    np.testing.assert_array_equal(iou, iou2)
    np.testing.assert_array_equal(low, low2)
    assert np.all(np.isfinite(logits)) and np.std(low) > 1e-3  # random weights: non-degenerate logits


# --- point validation ---------------------------------------------------------------------------
def test_points_without_labels_and_labels_without_points(pred):
    with pytest.raises(ValueError, match="point_coords and point_labels must be given together"):
        pred.predict(point_coords=POINTS)
    with pytest.raises(ValueError, match="point_coords and point_labels must be given together"):
        pred.predict(point_labels=LABELS)
    with pytest.raises(ValueError, match="given together"):
        pred.predict_batch(point_coords=POINTS[None])
    with pytest.raises(ValueError, match="given together"):
        pred.predict_batch(point_labels=LABELS[None])


@pytest.mark.parametrize("labels", [np.array([1, 0]), np.array([[1, 0, 1]]), np.array([[1], [0], [1]]), np.array(1), np.array([1, 0, 1, 1])])
def test_labels_of_the_wrong_shape(pred, labels):
    with pytest.raises(ValueError) as info:
        pred.predict(POINTS, labels)
    assert "point_labels must have shape (3,)" in str(info.value) and str(labels.shape) in str(info.value)


@pytest.mark.parametrize("coords", [np.zeros((3,)), np.zeros((3, 3)), np.zeros((1, 3, 2)), np.zeros((0, 2))])
def test_coords_of_the_wrong_shape(pred, coords):
    with pytest.raises(ValueError, match=r"point_coords must have shape \(N, 2\)"):
        pred.predict(coords, np.ones(coords.shape[:-1]))


@pytest.mark.parametrize("bad", [2, -2, 3, 0.5])
def test_label_values(pred, bad):
    """Only 1, 0 (and Meta's -1 "not a point") are labels; -2 is samjax's internal padding label."""
    labels = np.array([1, bad, 0])
    with pytest.raises(ValueError, match=r"point_labels must be 1 \(foreground\), 0 \(background\) or -1"):
        pred.predict(POINTS, labels)


@pytest.mark.parametrize(
    "point,what",
    [
        ((W + 0.5, 10.0), "outside"),
        ((10.0, -1.0), "outside"),
        ((-0.01, 10.0), "outside"),
        ((10.0, H + 1.0), "outside"),
        ((np.nan, 10.0), "NaN"),
        ((10.0, np.inf), "NaN or infinite"),
    ],
)
def test_points_outside_or_not_finite(pred, point, what):
    coords = np.array([[5.0, 5.0], point])
    with pytest.raises(ValueError) as info:
        pred.predict(coords, np.array([1, 1]))
    msg = str(info.value)
    assert what in msg
    if what == "outside":
        assert f"{W}x{H}" in msg and "(x, y)" in msg


def test_points_on_the_border_are_inside(pred):
    masks, _, _ = pred.predict(np.array([[0.0, 0.0], [W, H]]), np.array([1, 0]))
    assert masks.shape == (3, H, W)


# --- box validation -----------------------------------------------------------------------------
@pytest.mark.parametrize("box", [np.zeros((2, 2)), np.zeros(5), np.zeros((1, 5)), np.zeros((2, 4)), np.zeros(())])
def test_box_of_the_wrong_shape(pred, box):
    with pytest.raises(ValueError) as info:
        pred.predict(box=box)
    assert "box must have shape (4,)" in str(info.value) and str(box.shape) in str(info.value)


@pytest.mark.parametrize("box", [[30.0, 5.0, 10.0, 20.0], [5.0, 30.0, 20.0, 10.0]])
def test_box_with_swapped_corners(pred, box):
    with pytest.raises(ValueError, match=r"x0 <= x1 and y0 <= y1"):
        pred.predict(box=np.array(box))


@pytest.mark.parametrize("box,what", [([0.0, 0.0, W + 5.0, 10.0], "outside"), ([-3.0, 0.0, 5.0, 10.0], "outside"), ([0.0, np.nan, 5.0, 10.0], "NaN")])
def test_box_outside_or_not_finite(pred, box, what):
    with pytest.raises(ValueError, match=what) as info:
        pred.predict(box=np.array(box))
    assert "box corner" in str(info.value)


def test_box_shape_1x4_is_accepted(pred):
    a = pred.predict(box=np.array([5.0, 5.0, 40.0, 30.0]), multimask_output=False, return_logits=True)
    b = pred.predict(box=np.array([[5.0, 5.0, 40.0, 30.0]]), multimask_output=False, return_logits=True)
    np.testing.assert_array_equal(a[2], b[2])


# --- mask input validation ----------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 256, 256), (LOW, LOW), (1, 1, LOW, LOW), (1, LOW, LOW + 1), (2, LOW, LOW)])
def test_mask_input_of_the_wrong_shape(pred, shape):
    with pytest.raises(ValueError) as info:
        pred.predict(POINTS, LABELS, mask_input=np.zeros(shape, np.float32))
    assert f"mask_input must have shape (1, {LOW}, {LOW})" in str(info.value) and str(shape) in str(info.value)


def test_mask_input_not_finite(pred):
    mask = np.zeros((1, LOW, LOW), np.float32)
    mask[0, 3, 4] = np.nan
    with pytest.raises(ValueError, match="mask_input contains NaN"):
        pred.predict(POINTS, LABELS, mask_input=mask)


def test_batch_mask_input_of_the_wrong_shape(pred):
    with pytest.raises(ValueError, match=rf"mask_input must have shape \(B, 1, {LOW}, {LOW}\)"):
        pred.predict_batch(boxes=np.array([[0.0, 0.0, 5.0, 5.0]]), mask_input=np.zeros((1, LOW, LOW)))


# --- batches ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,sizes",
    [
        (dict(point_coords=np.ones((2, 1, 2)), point_labels=np.ones((2, 1)), boxes=np.array([[0.0, 0.0, 5.0, 5.0]] * 3)), "[2, 3]"),
        (dict(boxes=np.array([[0.0, 0.0, 5.0, 5.0]] * 2), mask_input=np.zeros((1, 1, LOW, LOW))), "[2, 1]"),
        (dict(point_coords=np.ones((1, 2, 2)), point_labels=np.ones((1, 2)), mask_input=np.zeros((3, 1, LOW, LOW))), "[1, 3]"),
    ],
)
def test_predict_batch_mismatched_batch_sizes(pred, kwargs, sizes):
    with pytest.raises(ValueError) as info:
        pred.predict_batch(**kwargs)
    assert "must share the batch size" in str(info.value) and sizes in str(info.value)


def test_predict_batch_shapes(pred):
    with pytest.raises(ValueError, match=r"point_coords must have shape \(B, N, 2\)"):
        pred.predict_batch(POINTS, LABELS)  # unbatched input to the batched call
    with pytest.raises(ValueError, match=r"boxes must have shape \(B, 4\)"):
        pred.predict_batch(boxes=np.array([0.0, 0.0, 5.0, 5.0]))
    with pytest.raises(ValueError, match=r"x0 <= x1"):
        pred.predict_batch(boxes=np.array([[0.0, 0.0, 5.0, 5.0], [9.0, 0.0, 5.0, 5.0]]))


def test_validation_errors_leave_the_image_set(pred):
    before = pred.predict(POINTS, LABELS, return_logits=True)
    with pytest.raises(ValueError):
        pred.predict(POINTS, np.array([1, 2, 0]))
    with pytest.raises(ValueError):
        pred.set_image(sample_image(H, W), image_format="RGBA")
    with pytest.raises(TypeError):
        pred.set_image(np.zeros((H, W, 3), np.float32))
    assert pred.is_image_set and pred.original_size == (H, W)
    after = pred.predict(POINTS, LABELS, return_logits=True)
    np.testing.assert_array_equal(before[2], after[2])


# --- images -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["RGBA", "rgb", "L", ""])
def test_image_format(pred, image, fmt):
    with pytest.raises(ValueError, match="image_format must be 'RGB' or 'BGR'"):
        pred.set_image(image, image_format=fmt)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int64])
def test_non_uint8_image(pred, image, dtype):
    with pytest.raises(TypeError, match="uint8"):
        pred.set_image(image.astype(dtype))


@pytest.mark.parametrize("shape", [(H, W, 4), (H, W, 3, 1), (0, W, 3), (H, 0), (1, H, W, 3)])
def test_bad_image_shapes(pred, shape):
    with pytest.raises(ValueError):
        pred.set_image(np.zeros(shape, np.uint8))


def test_grayscale_images_equal_replicated_rgb(pred, image):
    gray = image[..., 1].copy()
    pred.set_image(np.repeat(gray[..., None], 3, axis=-1))
    ref = pred.get_image_embedding()
    ref_pred = pred.predict(POINTS, LABELS, return_logits=True)
    for g in (gray, gray[..., None]):
        pred.set_image(g)
        assert pred.original_size == (H, W)
        np.testing.assert_array_equal(pred.get_image_embedding(), ref)
        out = pred.predict(POINTS, LABELS, return_logits=True)
        for a, b in zip(out, ref_pred):
            np.testing.assert_array_equal(a, b)
    pred.set_image(image)  # control: the colour image embeds differently
    assert rel_err(pred.get_image_embedding(), ref) > 1e-3


def test_bgr_equals_rgb_of_the_flipped_image(pred, image):
    pred.set_image(image)
    rgb = pred.get_image_embedding()
    pred.set_image(image[..., ::-1], image_format="BGR")
    np.testing.assert_array_equal(pred.get_image_embedding(), rgb)
    pred.set_image(image, image_format="BGR")
    bgr = pred.get_image_embedding()
    pred.set_image(np.ascontiguousarray(image[..., ::-1]))
    np.testing.assert_array_equal(pred.get_image_embedding(), bgr)
    assert rel_err(bgr, rgb) > 1e-3  # the channel order matters to the model


# --- padding is exact -----------------------------------------------------------------------------
def test_padding_invariance_single_vs_batch(pred):
    """3 points (padded to a bucket of 4) alone, and stacked with a second 3-point set, agree."""
    other = np.array([[30.0, 40.0], [5.0, 5.0], [20.0, 10.0]])
    for multimask in (True, False):
        single = pred.predict(POINTS, LABELS, multimask_output=multimask, return_logits=True)
        batch = pred.predict_batch(
            np.stack([POINTS, other]), np.stack([LABELS, np.array([0, 1, 1])]), multimask_output=multimask, return_logits=True
        )
        assert batch[2].shape == (2, 3 if multimask else 1, LOW, LOW)
        assert rel_err(single[2], batch[2][0]) <= 1e-5
        np.testing.assert_allclose(single[1], batch[1][0], rtol=1e-4, atol=1e-5)  # IoU scores are O(1)
        assert rel_err(single[0], batch[0][0]) <= 1e-5
        assert rel_err(batch[2][1], batch[2][0]) > 1e-2  # the two prompt sets differ


def test_padded_prediction_equals_unpadded_computation(pred):
    """The predictor's bucketed, masked call equals the model run on exactly Meta's tokens."""
    m = pred.model
    coords = jnp.asarray(pred.transform.apply_coords(POINTS, pred.original_size), jnp.float32)[None]
    labels = jnp.asarray(LABELS, jnp.int32)[None]
    sparse, sparse_mask, dense = m.prompt_encoder((coords, labels), None, None)
    assert sparse.shape == (1, 4, 256) and bool(jnp.all(sparse_mask))  # 3 points + Meta's pad point
    low_ref, iou_ref = m.mask_decoder(pred.features, m.prompt_encoder.get_dense_pe(), sparse, dense, True)
    masks_ref = m.postprocess_masks(low_ref, pred.input_size, pred.original_size)

    masks, iou, low = pred.predict(POINTS, LABELS, multimask_output=True, return_logits=True)
    assert rel_err(low, low_ref[0]) <= 1e-5
    np.testing.assert_allclose(iou, iou_ref[0], rtol=1e-4, atol=1e-5)
    assert rel_err(masks, masks_ref[0]) <= 1e-5

    # control: a fourth point (which fills the bucket) changes the answer, so the check has power
    four = pred.predict(np.concatenate([POINTS, [[30.0, 30.0]]]), np.array([1, 0, 1, 1]), return_logits=True)
    assert rel_err(four[2], low) > 1e-2


def test_padded_box_batch_equals_unpadded_computation(pred):
    """3 boxes + 1 point each (batch bucket 4, point bucket 1) against the unpadded model call."""
    m = pred.model
    boxes = np.array([[5.0, 5.0, 40.0, 30.0], [0.0, 0.0, W, H], [20.0, 10.0, 50.0, 45.0]])
    coords = np.array([[[20.0, 15.0]], [[30.0, 30.0]], [[35.0, 20.0]]])
    labels = np.array([[1], [0], [1]])
    masks, iou, low = pred.predict_batch(coords, labels, boxes, multimask_output=False, return_logits=True)
    c = jnp.asarray(pred.transform.apply_coords(coords, pred.original_size), jnp.float32)
    b = jnp.asarray(pred.transform.apply_boxes(boxes, pred.original_size), jnp.float32)
    sparse, _, dense = m.prompt_encoder((c, jnp.asarray(labels, jnp.int32)), b, None)
    assert sparse.shape == (3, 3, 256)
    low_ref, iou_ref = m.mask_decoder(pred.features, m.prompt_encoder.get_dense_pe(), sparse, dense, False)
    assert low.shape == (3, 1, LOW, LOW) and masks.shape == (3, 1, H, W)
    assert rel_err(low, low_ref) <= 1e-5
    np.testing.assert_allclose(iou, iou_ref, rtol=1e-4, atol=1e-5)


def test_prompt_counts_share_compiled_programs(model, image):
    """Batches of 5..8 prompts and of 5..8 points each reuse one program (bucket 8): no recompiles."""
    from samjax import predictor as predictor_module

    pred = samjax.SamPredictor(model)
    pred.set_image(image)
    rng = np.random.default_rng(0)

    def boxes(n):
        x0 = rng.uniform(0, W / 2, n)
        y0 = rng.uniform(0, H / 2, n)
        return np.stack([x0, y0, x0 + 10, y0 + 10], axis=1)

    pred.predict_batch(boxes=boxes(5))
    before = predictor_module._predict._cache_size()
    for n in (6, 7, 8):
        masks, iou, low_res = pred.predict_batch(boxes=boxes(n))
        assert masks.shape[0] == iou.shape[0] == low_res.shape[0] == n
    for n in (5, 6, 8):
        pred.predict_batch(point_coords=np.full((8, n, 2), 10.0), point_labels=np.ones((8, n)))
    assert predictor_module._predict._cache_size() == before + 1  # only the points variant was new

    again = samjax.SamPredictor(model)  # another predictor over the same architecture: no new programs
    again.set_image(image)
    again.predict_batch(boxes=boxes(7))
    assert predictor_module._predict._cache_size() == before + 1
