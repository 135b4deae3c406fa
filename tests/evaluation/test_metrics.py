"""Dice metrics: hand-computed examples, per-image vs per-case aggregation, NumPy vs on-device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax.evaluation.metrics import DiceAccumulator, dice_from_stats, dice_jnp, dice_per_class


def _maps():
    """Two 4x4 class maps (classes 0..2) whose overlaps are counted by hand below."""
    label = np.array([[1, 1, 0, 0],
                      [1, 1, 0, 0],
                      [0, 0, 2, 2],
                      [0, 0, 2, 2]])
    pred = np.array([[1, 1, 1, 0],
                     [1, 0, 0, 0],
                     [0, 0, 2, 0],
                     [0, 0, 0, 0]])
    return pred, label


def test_hand_computed_4x4():
    pred, label = _maps()
    inter, psum, lsum = dice_per_class(pred, label, 3)
    # class 1: pred 4 px, label 4 px, 3 shared; class 2: pred 1, label 4, 1 shared; background: 11, 8, 7.
    np.testing.assert_array_equal(inter, [7, 3, 1])
    np.testing.assert_array_equal(psum, [11, 4, 1])
    np.testing.assert_array_equal(lsum, [8, 4, 4])
    np.testing.assert_allclose(dice_from_stats(inter, psum, lsum), [14 / 19, 6 / 8, 2 / 5])
    acc = DiceAccumulator(3)
    acc.update(pred, label)
    res = acc.result(["background", "liver", "tumor"])
    assert res["per_class"] == pytest.approx({"liver": 0.75, "tumor": 0.4})
    assert res["mean_dice"] == pytest.approx((0.75 + 0.4) / 2)        # background left out
    assert res["count"] == {"liver": 1, "tumor": 1}
    assert res["num_images"] == 1


def test_valid_mask_excludes_pixels():
    pred, label = _maps()
    valid = np.ones((4, 4), bool)
    valid[:, 2:] = False                       # keep the left half only
    inter, psum, lsum = dice_per_class(pred, label, 3, valid)
    np.testing.assert_array_equal(inter, [4, 3, 0])
    np.testing.assert_array_equal(psum, [5, 3, 0])
    np.testing.assert_array_equal(lsum, [4, 4, 0])
    acc = DiceAccumulator(3)
    acc.update(pred, label, valid)
    res = acc.result()
    assert res["per_class"]["class_1"] == pytest.approx(6 / 7)
    assert np.isnan(res["per_class"]["class_2"]) and res["count"]["class_2"] == 0
    assert res["mean_dice"] == pytest.approx(6 / 7)


def test_absent_class_is_skipped_per_image_not_scored():
    pred, label = _maps()
    empty = np.zeros((4, 4), int)             # nothing but background in either map
    only1 = np.where(label == 1, 1, 0)
    pred_only1 = np.where(pred == 1, 1, 0)
    acc = DiceAccumulator(3, mode="image")
    acc.update(np.stack([pred, pred_only1, empty]), np.stack([label, only1, empty]))
    res = acc.result(["liver", "tumor"])
    # liver: images 1 and 2 (0.75 each), image 3 skipped; tumor: image 1 only.
    assert res["per_class"] == pytest.approx({"liver": 0.75, "tumor": 0.4})
    assert res["count"] == {"liver": 2, "tumor": 1}
    assert res["num_images"] == 3
    # A class predicted but absent from the label scores 0 for that image.
    fp = np.zeros((4, 4), int)
    fp[0, 0] = 2
    acc.update(fp, empty)
    res = acc.result(["liver", "tumor"])
    assert res["per_class"]["tumor"] == pytest.approx(0.2) and res["count"]["tumor"] == 2


def test_per_case_accumulation_equals_dice_of_stacked_volume():
    rng = np.random.default_rng(0)
    vol_a_label = rng.integers(0, 3, (5, 6, 7))
    vol_a_pred = np.where(rng.random((5, 6, 7)) < 0.7, vol_a_label, rng.integers(0, 3, (5, 6, 7)))
    vol_b_label = rng.integers(0, 2, (3, 6, 7))     # case b has no class 2 anywhere
    vol_b_pred = np.where(rng.random((3, 6, 7)) < 0.8, vol_b_label, 0)
    acc = DiceAccumulator(3, mode="volume")
    # Slices arrive interleaved across batches, as from a shuffled loader.
    slices = [("a", i) for i in range(5)] + [("b", i) for i in range(3)]
    order = rng.permutation(len(slices))
    vols = {"a": (vol_a_pred, vol_a_label), "b": (vol_b_pred, vol_b_label)}
    for chunk in np.array_split(order, 3):
        p = np.stack([vols[slices[j][0]][0][slices[j][1]] for j in chunk])
        g = np.stack([vols[slices[j][0]][1][slices[j][1]] for j in chunk])
        acc.update(p, g, case_ids=[slices[j][0] for j in chunk])
    res = acc.result()

    def volume_dice(p, g, c):
        a, b = p == c, g == c
        return 2 * np.sum(a & b) / (a.sum() + b.sum()) if a.sum() + b.sum() else np.nan

    d1 = [volume_dice(*vols[k], 1) for k in "ab"]
    d2 = [volume_dice(*vols[k], 2) for k in "ab"]
    assert np.isnan(d2[1])
    assert res["mode"] == "case" and res["num_cases"] == 2 and res["num_images"] == 8
    assert res["per_class"]["class_1"] == pytest.approx(np.mean(d1))
    assert res["per_class"]["class_2"] == pytest.approx(d2[0])       # case b skipped
    assert res["count"] == {"class_1": 2, "class_2": 1}
    assert res["mean_dice"] == pytest.approx((np.mean(d1) + d2[0]) / 2)
    # The global Dice pools every voxel of both cases.
    allp = np.concatenate([vol_a_pred.ravel(), vol_b_pred.ravel()])
    allg = np.concatenate([vol_a_label.ravel(), vol_b_label.ravel()])
    assert res["global_per_class"]["class_1"] == pytest.approx(volume_dice(allp, allg, 1))
    # It differs from the per-slice mean, which is what image mode gives.
    img = DiceAccumulator(3, mode="image")
    img.update(np.concatenate([vol_a_pred, vol_b_pred]), np.concatenate([vol_a_label, vol_b_label]))
    per_slice = [volume_dice(p, g, 1) for p, g in zip(np.concatenate([vol_a_pred, vol_b_pred]),
                                                      np.concatenate([vol_a_label, vol_b_label]))]
    assert img.result()["per_class"]["class_1"] == pytest.approx(np.nanmean(per_slice))
    assert img.result()["per_class"]["class_1"] != pytest.approx(res["per_class"]["class_1"])


def test_scalar_case_id_and_errors():
    pred, label = _maps()
    acc = DiceAccumulator(3, mode="case")
    acc.update(pred[None], label[None], case_ids="x")
    acc.update(pred[None], label[None], case_ids=np.array(["x"]))
    assert acc.result()["num_cases"] == 1
    assert acc.result()["per_class"]["class_1"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="case_ids"):
        acc.update(pred, label)
    with pytest.raises(ValueError, match="case ids"):
        acc.update(np.stack([pred, pred]), np.stack([label, label]), case_ids=["a"])
    with pytest.raises(ValueError, match="outside"):
        dice_per_class(pred, np.where(label == 2, 5, label), 3)
    with pytest.raises(ValueError, match="mode"):
        DiceAccumulator(3, mode="pixel")
    # Out-of-range values on invalid pixels are fine (e.g. 255 = ignore on padding).
    lab = label.copy()
    lab[3, 3] = 255
    valid = lab != 255
    np.testing.assert_array_equal(dice_per_class(pred, lab, 3, valid)[2], [8, 4, 3])
    acc.reset()
    assert acc.num_images == 0 and acc.result()["num_cases"] == 0 and np.isnan(acc.result()["mean_dice"])


def test_per_image_stats_sum_to_totals():
    rng = np.random.default_rng(1)
    pred, label = rng.integers(0, 4, (2, 3, 5, 6)), rng.integers(0, 4, (2, 3, 5, 6))
    per = dice_per_class(pred, label, 4, per_image=True)
    tot = dice_per_class(pred, label, 4)
    for a, b in zip(per, tot):
        assert a.shape == (2, 3, 4)
        np.testing.assert_array_equal(a.sum((0, 1)), b)
    for i in range(2):
        for j in range(3):
            for c in range(4):
                assert per[0][i, j, c] == np.sum((pred[i, j] == c) & (label[i, j] == c))


def test_jnp_equals_numpy_class_map_and_onehot():
    rng = np.random.default_rng(2)
    pred, label = rng.integers(0, 5, (3, 16, 12)), rng.integers(0, 5, (3, 16, 12))
    valid = rng.random((3, 16, 12)) > 0.25
    for per_image in (False, True):
        want = dice_per_class(pred, label, 5, valid, per_image=per_image)
        got = jax.jit(dice_jnp, static_argnums=(2,), static_argnames=("per_image",))(
            jnp.asarray(pred), jnp.asarray(label), 5, jnp.asarray(valid), per_image=per_image)
        for g, w in zip(got, want):
            assert g.dtype == jnp.int32
            np.testing.assert_array_equal(np.asarray(g), w)
        onehot = jnp.moveaxis(jax.nn.one_hot(pred, 5), -1, -3)           # (3, 5, 16, 12)
        got = dice_jnp(onehot, label, 5, valid, per_image=per_image)
        for g, w in zip(got, want):
            assert g.dtype == jnp.float32
            np.testing.assert_array_equal(np.asarray(g), w)
    # Without valid, and feeding the device stats to the accumulator.
    acc_np, acc_dev = DiceAccumulator(5), DiceAccumulator(5)
    acc_np.update(pred, label)
    acc_dev.update_stats(*dice_jnp(pred, label, 5, per_image=True))
    assert acc_dev.result() == acc_np.result()


def test_jnp_soft_probabilities():
    probs = np.zeros((2, 2, 2), np.float32)                # (C, H, W)
    probs[1] = [[0.9, 0.2], [0.5, 0.0]]
    probs[0] = 1 - probs[1]
    label = np.array([[1, 0], [1, 0]])
    inter, psum, lsum = dice_jnp(probs, label, 2)
    np.testing.assert_allclose(np.asarray(inter), [0.8 + 1.0, 0.9 + 0.5])
    np.testing.assert_allclose(np.asarray(psum), [2.4, 1.6])
    np.testing.assert_array_equal(np.asarray(lsum), [2, 2])
