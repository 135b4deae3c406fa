"""Prompt simulation: first prompts from masks (host, grain) and corrective clicks (device, JAX)."""

import pickle

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from samjax.data.prompts import (SimulatePrompts, box_from_mask, euclidean_depth, innermost_point, next_click,
                                 point_from_mask)

S = 64


def make_element(label, valid=None):
    label = np.asarray(label, np.uint8)
    size = label.shape[0]
    return {
        "image": np.zeros((size, size, 3), np.uint8),
        "label": label,
        "valid": np.ones((size, size), bool) if valid is None else valid,
        "low_res_label": label[::4, ::4].copy(),
        "id": np.int64(7),
    }


def three_class_label():
    label = np.zeros((S, S), np.uint8)
    label[5:20, 8:30] = 1
    label[30:50, 30:40] = 2
    label[52:60, 4:12] = 3
    return label


def run(transform, element, seed=0):
    return transform.random_map(element, np.random.default_rng(seed))


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_box_from_mask_uses_pixel_edges():
    mask = np.zeros((10, 10), bool)
    mask[2:4, 3:6] = True  # rows 2..3, columns 3..5
    np.testing.assert_array_equal(box_from_mask(mask), [3, 2, 6, 4])
    np.testing.assert_array_equal(box_from_mask(np.zeros((4, 4), bool)), [0, 0, 0, 0])


def test_point_from_mask_prefers_the_interior():
    mask = np.zeros((40, 40), bool)
    mask[5:36, 5:36] = True  # 31 x 31 square: max distance 16, interior = distance >= 8
    pts = point_from_mask(mask, np.random.default_rng(0), 500)
    assert pts.shape == (500, 2) and pts.dtype == np.float32
    np.testing.assert_array_equal(pts % 1, 0.5)
    col, row = pts[:, 0].astype(int), pts[:, 1].astype(int)
    assert mask[row, col].all()
    assert (np.minimum(col - 5, 35 - col) >= 7).all() and (np.minimum(row - 5, 35 - row) >= 7).all()
    # a one-pixel-wide line keeps every pixel as a candidate
    line = np.zeros((5, 20), bool)
    line[2, 3:17] = True
    cols = point_from_mask(line, np.random.default_rng(1), 400)[:, 0].astype(int)
    assert set(cols) == set(range(3, 17))


def test_innermost_point_is_the_distance_transform_maximum():
    mask = np.zeros((20, 30), bool)
    mask[2:9, 3:10] = True  # 7x7: centre (row 5, col 6), 4 from its outline
    mask[10:20, 12:30] = True  # 10x18 touching the bottom and right borders: 5 deep at rows 14-15
    np.testing.assert_array_equal(innermost_point(mask), [[16.5, 14.5]])  # first of the deepest, row-major
    element = make_element(np.pad(mask, ((0, 44), (0, 34))).astype(np.uint8))
    out = SimulatePrompts(num_objects=1, innermost=True).random_map(element, np.random.default_rng(0))
    np.testing.assert_array_equal(out["points"][0], [[16.5, 14.5]])
    with pytest.raises(ValueError, match="innermost"):
        SimulatePrompts(num_points=2, innermost=True)


def test_euclidean_depth_is_scipys_distance_transform():
    rng = np.random.default_rng(0)
    masks = ndimage.binary_dilation(rng.random((3, 37, 50)) > 0.97, iterations=4) ^ (rng.random((3, 37, 50)) > 0.9)
    want = np.stack([ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1] ** 2 for m in masks])
    np.testing.assert_allclose(np.asarray(jax.jit(euclidean_depth)(masks)), want, atol=1e-9)
    assert want.max() >= 16  # deep enough that city-block and Euclidean disagree
    many = rng.random((21, 128, 128)) > 0.3  # 128^2 masks go 8 at a time: two chunks and a remainder of 5
    want = np.stack([ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1] ** 2 for m in many])
    np.testing.assert_allclose(np.asarray(jax.jit(euclidean_depth)(many)), want, atol=1e-9)


def test_shapes_dtypes_and_pass_through():
    element = make_element(three_class_label())
    out = run(SimulatePrompts(num_objects=5, num_points=3), element)
    assert out["boxes"].shape == (5, 4) and out["boxes"].dtype == np.float32
    assert out["points"].shape == (5, 3, 2) and out["points"].dtype == np.float32
    assert out["point_labels"].shape == (5, 3) and out["point_labels"].dtype == np.int32
    assert out["object_class"].shape == (5,) and out["object_class"].dtype == np.int32
    assert out["object_valid"].dtype == bool
    assert out["object_masks"].shape == (5, S // 4, S // 4) and out["object_masks"].dtype == bool
    for k in element:
        assert out[k] is element[k]
    assert "boxes" not in element  # the input is not modified


def test_deterministic_by_seed():
    element = make_element(three_class_label())
    t = SimulatePrompts(num_objects=2, num_points=2)
    assert_same(run(t, element, 3), run(t, element, 3))
    outs = [run(t, element, s) for s in range(6)]
    assert any(not np.array_equal(outs[0]["points"], o["points"]) for o in outs[1:])
    assert any(not np.array_equal(outs[0]["boxes"], o["boxes"]) for o in outs[1:])
    assert len({tuple(o["object_class"]) for o in outs}) > 1  # which 2 of 3 objects varies


@pytest.mark.parametrize("objects", ["class", "component"])
def test_points_inside_objects_and_masks_match(objects):
    label = three_class_label()
    label[40:44, 50:60] = 1  # a second component of class 1
    element = make_element(label)
    t = SimulatePrompts(num_objects=6, num_points=4, objects=objects)
    for seed in range(10):
        out = run(t, element, seed)
        for k in np.flatnonzero(out["object_valid"]):
            c = out["object_class"][k]
            col, row = np.floor(out["points"][k]).astype(int).T
            assert (label[row, col] == c).all()
            assert (out["point_labels"][k] == 1).all()
            if objects == "class":
                np.testing.assert_array_equal(out["object_masks"][k], element["low_res_label"] == c)
            else:
                assert out["object_masks"][k].any()
                assert not (out["object_masks"][k] & (element["low_res_label"] != c)).any()


def test_noiseless_boxes_are_exact_bounding_boxes():
    label = three_class_label()
    out = run(SimulatePrompts(num_objects=3, box_noise=0.0), make_element(label))
    expected = {1: [8, 5, 30, 20], 2: [30, 30, 40, 50], 3: [4, 52, 12, 60]}
    assert sorted(out["object_class"]) == [1, 2, 3]
    for k, c in enumerate(out["object_class"]):
        np.testing.assert_array_equal(out["boxes"][k], expected[c])
        # every point lies strictly inside its noiseless box
        x, y = out["points"][k].T
        assert ((out["boxes"][k][0] < x) & (x < out["boxes"][k][2])).all()
        assert ((out["boxes"][k][1] < y) & (y < out["boxes"][k][3])).all()


def corner_noise(label, truth, draws, **kw):
    element = make_element(label)
    t = SimulatePrompts(num_objects=1, **kw)
    return np.stack([run(t, element, s)["boxes"][0] for s in range(draws)]) - np.asarray(truth, np.float32)


def test_box_noise_is_ten_percent_of_the_side():
    label = np.zeros((S, S), np.uint8)
    label[20:30, 25:45] = 1  # 20 wide, 10 high: std 2.0 in x, 1.0 in y
    noise = corner_noise(label, [25, 20, 45, 30], 1500)
    std = noise.std(0)
    np.testing.assert_allclose(std, [2.0, 1.0, 2.0, 1.0], rtol=0.07)
    np.testing.assert_allclose(noise.mean(0), 0.0, atol=0.15)
    assert np.abs(noise[:, [0, 2]]).max() < 10  # well under the 20 px cap


def test_box_noise_std_is_capped_at_twenty_pixels():
    size = 512
    label = np.zeros((size, size), np.uint8)
    label[156:356, 56:456] = 1  # 400 wide (std 40 before the cap), 200 high (std exactly 20)
    noise = corner_noise(label, [56, 156, 456, 356], 600)
    np.testing.assert_allclose(noise.std(0), [20.0, 20.0, 20.0, 20.0], rtol=0.1)
    assert np.abs(noise).max() > 40  # Gaussian tails: the std is capped, not the noise


def test_boxes_are_clipped_to_the_valid_extent():
    label = np.zeros((S, S), np.uint8)
    label[0:30, 10:40] = 1  # touches the top; right edge 40 = end of the real image
    valid = np.zeros((S, S), bool)
    valid[:48, :40] = True
    t = SimulatePrompts(num_objects=1, box_noise=0.5)
    boxes = np.stack([run(t, make_element(label, valid), s)["boxes"][0] for s in range(200)])
    assert boxes[:, [0, 2]].max() == 40.0 and boxes[:, [1, 3]].min() == 0.0
    assert (boxes[:, 3] <= 48).all()
    assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()


def test_padding_when_fewer_objects_than_k():
    out = run(SimulatePrompts(num_objects=5, num_points=2), make_element(three_class_label()))
    np.testing.assert_array_equal(out["object_valid"], [True, True, True, False, False])
    assert sorted(out["object_class"][:3]) == [1, 2, 3]
    np.testing.assert_array_equal(out["object_class"][3:], 0)
    np.testing.assert_array_equal(out["point_labels"][3:], -1)
    np.testing.assert_array_equal(out["point_labels"][:3], 1)
    assert not out["boxes"][3:].any() and not out["points"][3:].any() and not out["object_masks"][3:].any()


def test_empty_label_gives_all_padding():
    out = run(SimulatePrompts(num_objects=3), make_element(np.zeros((S, S), np.uint8)))
    assert not out["object_valid"].any()
    np.testing.assert_array_equal(out["point_labels"], -1)
    assert not out["boxes"].any() and not out["points"].any() and not out["object_masks"].any()


def test_component_mode_counts_components():
    label = np.zeros((S, S), np.uint8)
    label[4:8, 4:8] = 1
    label[8:12, 8:12] = 1  # touches the first one diagonally: the same 8-connected component
    label[20:28, 20:28] = 1
    label[40:44, 4:60] = 2
    label[50:54, 4:8] = 2
    label[50:54, 52:60] = 2
    n = sum(ndimage.label(label == c, np.ones((3, 3)))[1] for c in (1, 2))
    assert n == 5
    out = run(SimulatePrompts(num_objects=8, objects="component"), make_element(label))
    assert out["object_valid"].sum() == 5
    assert sorted(out["object_class"][out["object_valid"]]) == [1, 1, 2, 2, 2]
    # the masks of one class's components partition that class's low-res mask
    low = make_element(label)["low_res_label"]
    for c in (1, 2):
        masks = out["object_masks"][out["object_class"] == c]
        np.testing.assert_array_equal(masks.sum(0), low == c)
    assert run(SimulatePrompts(num_objects=8), make_element(label))["object_valid"].sum() == 2


def test_filled_mode_takes_in_the_classes_an_object_encloses():
    label = np.zeros((S, S), np.uint8)
    label[8:40, 8:40] = 1  # a liver ...
    label[16:22, 16:22] = 2  # ... with a lesion inside it
    label[30:34, 30:34] = 0  # ... and a hole of background, which stays a hole
    label[44:60, 44:60] = 3
    element = make_element(label)
    out = run(SimulatePrompts(num_objects=4, objects="filled", full_masks=True), element)
    masks = {int(c): out["object_masks_full"][k] for k, c in enumerate(out["object_class"]) if out["object_valid"][k]}
    liver = (label == 1) | (label == 2)
    np.testing.assert_array_equal(masks[1], liver)
    np.testing.assert_array_equal(masks[2], label == 2)  # the enclosed class keeps its own object
    np.testing.assert_array_equal(masks[3], label == 3)
    k = int(np.flatnonzero(out["object_class"] == 1)[0])
    np.testing.assert_array_equal(out["object_masks"][k], liver[2::4, 2::4])  # PIL's nearest, as low_res_label
    np.testing.assert_array_equal(out["boxes"][k] != 0, True)
    classes = run(SimulatePrompts(num_objects=4, objects="class", full_masks=True), element)
    k = int(np.flatnonzero(classes["object_class"] == 1)[0])
    np.testing.assert_array_equal(classes["object_masks_full"][k], label == 1)
    # a skipped class is never an object, yet still fills the hole of the object around it
    skipped = run(SimulatePrompts(num_objects=4, objects="filled", full_masks=True, skip_classes=(2,)), element)
    assert sorted(int(c) for c in skipped["object_class"][skipped["object_valid"]]) == [1, 3]
    k = int(np.flatnonzero(skipped["object_class"] == 1)[0])
    np.testing.assert_array_equal(skipped["object_masks_full"][k], liver)


def test_component_mode_keeps_components_lost_by_downsampling():
    label = np.zeros((S, S), np.uint8)
    label[30:40, 30:40] = 1
    label[9:11, 9:11] = 1  # 2x2 blob missed by label[::4, ::4]
    element = make_element(label)
    assert not element["low_res_label"][2, 2]
    out = run(SimulatePrompts(num_objects=2, objects="component"), element)
    small = [k for k in range(2) if out["points"][k, 0, 0] < 20][0]
    expected = np.zeros((S // 4, S // 4), bool)
    expected[2, 2] = True
    np.testing.assert_array_equal(out["object_masks"][small], expected)


def test_random_subset_without_replacement():
    label = np.zeros((S, S), np.uint8)
    for c in range(1, 7):
        label[c * 8 : c * 8 + 4, 10:20] = c
    t = SimulatePrompts(num_objects=3)
    seen = np.zeros(7, int)
    for seed in range(300):
        classes = run(t, make_element(label), seed)["object_class"]
        assert len(set(classes)) == 3
        seen[classes] += 1
    assert seen[0] == 0 and (np.abs(seen[1:] - 150) < 40).all()  # each class in half the draws


def test_num_classes_check_and_bad_arguments():
    label = three_class_label()
    run(SimulatePrompts(num_classes=4), make_element(label))
    with pytest.raises(ValueError, match="label value 3"):
        run(SimulatePrompts(num_classes=3), make_element(label))
    with pytest.raises(ValueError, match="objects"):
        SimulatePrompts(objects="instance")


def test_pickles_and_runs_in_a_grain_pipeline():
    t = SimulatePrompts(num_objects=2, num_points=2, objects="component", num_classes=4)
    t2 = pickle.loads(pickle.dumps(t))
    assert t2 == t
    element = make_element(three_class_label())
    assert_same(run(t, element, 5), run(t2, element, 5))

    elements = [make_element(three_class_label()) for _ in range(4)]
    elements[1]["label"] = np.flipud(elements[1]["label"]).copy()
    elements[1]["low_res_label"] = elements[1]["label"][::4, ::4].copy()

    def pipeline(seed):
        return list(grain.MapDataset.source(elements).seed(seed).random_map(t2))

    a, b = pipeline(0), pipeline(0)
    for x, y in zip(a, b):
        assert_same(x, y)
    assert not np.array_equal(a[0]["points"], a[2]["points"])  # same element, different rng per index
    c = pipeline(1)
    assert any(not np.array_equal(x["points"], y["points"]) for x, y in zip(a, c))


# --- next_click ---------------------------------------------------------------------------------


def hand_masks():
    gt = np.zeros((8, 8), bool)
    gt[1:4, 1:4] = True
    fn_only = gt.copy()
    fn_only[1, 1] = False
    fn_only[2, 3] = False  # prediction misses (1,1) and (2,3)
    fp_only = gt.copy()
    fp_only[6, 5] = True
    fp_only[7, 7] = True  # prediction adds (6,5) and (7,7)
    return gt, fn_only, fp_only


def test_next_click_labels_false_negatives_and_false_positives():
    gt, fn_only, fp_only = hand_masks()
    keys = jax.random.split(jax.random.key(0), 50)
    for pred, label, pixels in ((fn_only, 1, {(1, 1), (2, 3)}), (fp_only, 0, {(6, 5), (7, 7)})):
        points, labels = jax.vmap(lambda k: next_click(k, pred, gt))(keys)
        assert points.dtype == jnp.float32 and labels.dtype == jnp.int32
        np.testing.assert_array_equal(labels, label)
        chosen = {(int(y), int(x)) for x, y in np.floor(np.asarray(points))}
        assert chosen == pixels
        np.testing.assert_array_equal(np.asarray(points) % 1, 0.5)


def test_next_click_mixed_error_picks_inside_and_labels_by_pixel():
    rng = np.random.default_rng(0)
    gt, pred = rng.random((2, 32, 16, 16)) < 0.3
    points, labels = jax.jit(next_click)(jax.random.key(1), pred, gt)
    assert points.shape == (32, 2) and labels.shape == (32,)
    col, row = np.floor(np.asarray(points)).astype(int).T
    b = np.arange(32)
    assert (pred[b, row, col] != gt[b, row, col]).all()
    np.testing.assert_array_equal(labels, gt[b, row, col].astype(int))
    assert set(np.asarray(labels)) == {0, 1}


def test_next_click_is_uniform_over_the_error_region():
    gt = np.zeros((6, 6), bool)
    pred = gt.copy()
    cells = [(0, 0), (2, 3), (5, 5), (4, 1)]
    for r, c in cells:
        gt[r, c] = True
    n = 4000
    points, _ = jax.jit(jax.vmap(next_click, (0, None, None)))(jax.random.split(jax.random.key(2), n), pred, gt)
    col, row = np.floor(np.asarray(points)).astype(int).T
    counts = np.array([np.sum((row == r) & (col == c)) for r, c in cells])
    assert counts.sum() == n
    chi2 = ((counts - n / 4) ** 2 / (n / 4)).sum()
    assert chi2 < 16.3  # 3 degrees of freedom, p = 0.001


def test_next_click_no_error_gives_minus_one_and_zero_points():
    gt, _, _ = hand_masks()
    points, labels = next_click(jax.random.key(0), gt, gt)
    assert int(labels) == -1
    np.testing.assert_array_equal(points, [0.0, 0.0])


def test_next_click_batch_dims_valid_and_scale():
    gt, fn_only, fp_only = hand_masks()
    pred = np.stack([np.stack([fn_only, fp_only, gt]), np.stack([gt, fp_only, fn_only])])  # (2, 3, 8, 8)
    valid = np.ones((8, 8), bool)
    valid[:, 6:] = False  # hides the false positive at (7, 7)
    points, labels = jax.jit(next_click, static_argnames="mode")(jax.random.key(3), pred, gt, valid, 4.0)
    assert points.shape == (2, 3, 2) and labels.shape == (2, 3)
    np.testing.assert_array_equal(labels, [[1, 0, -1], [-1, 0, 1]])
    np.testing.assert_array_equal(points[0, 1], [(5 + 0.5) * 4, (6 + 0.5) * 4])  # only (6,5) is valid
    np.testing.assert_array_equal(points[1, 0], [0.0, 0.0])
    for p in (points[0, 0], points[1, 2]):
        assert tuple(np.asarray(p) / 4 - 0.5) in {(1.0, 1.0), (3.0, 2.0)}


def test_next_click_center_mode_picks_the_deepest_error_pixel():
    gt = np.zeros((16, 16), bool)
    gt[2:9, 3:10] = True  # 7x7 missed square, center (5, 6)
    gt[14, 14] = True  # a single missed pixel: shallower
    pred = np.zeros_like(gt)
    keys = jax.random.split(jax.random.key(4), 20)
    points, labels = jax.jit(jax.vmap(lambda k: next_click(k, pred, gt, mode="center")))(keys)
    np.testing.assert_array_equal(labels, 1)
    np.testing.assert_array_equal(points, np.tile([6.5, 5.5], (20, 1)))
    # batched: per-mask deepest pixel; an error-free mask still gives -1
    batch = np.stack([pred, gt])
    points, labels = next_click(jax.random.key(5), batch, gt, mode="center")
    np.testing.assert_array_equal(labels, [1, -1])
    np.testing.assert_array_equal(points[0], [6.5, 5.5])
    with pytest.raises(ValueError, match="mode"):
        next_click(jax.random.key(0), pred, gt, mode="edge")
    # ties: "center" draws among the deepest pixels, "innermost" takes the first in raster order (RITM's clicker)
    even = np.zeros((16, 16), bool)
    even[2:6, 2:6] = True  # 4x4: its four middle pixels are equally deep
    drawn = {tuple(np.asarray(next_click(k, pred, even, mode="center")[0])) for k in keys}
    assert drawn == {(3.5, 3.5), (4.5, 3.5), (3.5, 4.5), (4.5, 4.5)}
    for k in keys[:3]:
        np.testing.assert_array_equal(next_click(k, pred, even, mode="innermost")[0], [3.5, 3.5])


def test_next_click_center_mode_keeps_touching_misses_and_false_alarms_apart():
    gt = np.zeros((16, 16), bool)
    pred = np.zeros_like(gt)
    gt[1:5] = True  # a 4-row missed strip ...
    pred[5:9] = True  # ... touching a 4-row false alarm: together 8 rows deep, apart 2 each
    gt[10:15, 5:10] = True  # a 5x5 missed block, 3 deep: the largest error once the strips are apart
    points, labels = next_click(jax.random.key(0), pred, gt, mode="center")
    assert int(labels) == 1
    np.testing.assert_array_equal(points, [7.5, 12.5])
