"""Training losses against independent references: NumPy loops, torch and torchvision."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as tv_focal

from samjax.train.losses import (
    auto_mode_loss,
    binary_dice_loss,
    cross_entropy_loss,
    dice_loss_multiclass,
    iou_prediction_loss,
    mask_iou,
    prompted_loss,
    sigmoid_focal_loss,
)


def _softmax(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _ref_dice_multiclass(logits, labels, weights, include_background, smooth):
    """Plain loops over samples and classes."""
    b, c = logits.shape[:2]
    probs = _softmax(logits.astype(np.float64), 1)
    losses = []
    for i in range(b):
        for k in range(0 if include_background else 1, c):
            p = probs[i, k]
            g = (labels[i] == k).astype(np.float64)
            w = weights[i] * ((labels[i] >= 0) & (labels[i] < c))
            inter = (p * g * w).sum()
            losses.append(1 - (2 * inter + smooth) / ((p * w).sum() + (g * w).sum() + smooth))
    return np.mean(losses)


def _ref_ce(logits, labels, weights):
    b, c, h, w = logits.shape
    logp = np.log(_softmax(logits.astype(np.float64), 1))
    num = den = 0.0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                if weights[i, y, x] and 0 <= labels[i, y, x] < c:
                    num += weights[i, y, x] * -logp[i, labels[i, y, x], y, x]
                    den += weights[i, y, x]
    return num / den


def _ref_binary_dice(logits, targets, weights, smooth):
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    return 1 - (2 * (p * targets * weights).sum() + smooth) / ((p * weights).sum() + (targets * weights).sum() + smooth)


def _ref_focal(logits, targets):
    """torchvision's focal loss, mean over one mask's pixels."""
    return tv_focal(torch.tensor(logits, dtype=torch.float64), torch.tensor(targets, dtype=torch.float64),
                    alpha=0.25, gamma=2.0, reduction="mean").item()


def _auto_inputs(seed=0, b=2, c=4, h=9, w=7):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (b, c, h, w)).astype(np.float32)
    labels = rng.integers(0, c, (b, h, w)).astype(np.int32)
    weights = (rng.random((b, h, w)) > 0.3).astype(np.float32)
    return logits, labels, weights


# ---------------------------------------------------------------------------- auto mode


@pytest.mark.parametrize("include_background", [False, True])
def test_multiclass_dice_matches_loop_reference(include_background):
    logits, labels, weights = _auto_inputs()
    for smooth in (1e-5, 1.0):
        got = float(dice_loss_multiclass(logits, labels, weights, include_background=include_background, smooth=smooth))
        want = _ref_dice_multiclass(logits, labels, weights, include_background, smooth)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    got = float(dice_loss_multiclass(logits, labels, include_background=include_background))
    want = _ref_dice_multiclass(logits, labels, np.ones_like(weights), include_background, 1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_cross_entropy_matches_torch_and_loop():
    logits, labels, weights = _auto_inputs(1)
    want = F.cross_entropy(torch.tensor(logits), torch.tensor(labels, dtype=torch.long)).item()
    np.testing.assert_allclose(float(cross_entropy_loss(logits, labels)), want, rtol=1e-5)
    np.testing.assert_allclose(float(cross_entropy_loss(logits, labels, weights)), _ref_ce(logits, labels, weights),
                               rtol=1e-5)
    # Fractional weights are a weighted pixel mean.
    soft = np.random.default_rng(2).random(weights.shape).astype(np.float32)
    np.testing.assert_allclose(float(cross_entropy_loss(logits, labels, soft)), _ref_ce(logits, labels, soft),
                               rtol=1e-5)


def test_out_of_range_labels_are_ignored_like_torch_ignore_index():
    logits, labels, _ = _auto_inputs(3)
    labels = labels.copy()
    labels[0, :3] = -100
    labels[1, 4:, 2] = 255
    torch_labels = torch.tensor(np.where(labels >= 4, -100, labels), dtype=torch.long)
    want = F.cross_entropy(torch.tensor(logits), torch_labels, ignore_index=-100).item()
    np.testing.assert_allclose(float(cross_entropy_loss(logits, labels)), want, rtol=1e-5)
    ones = np.ones(labels.shape, np.float32)
    np.testing.assert_allclose(float(dice_loss_multiclass(logits, labels)),
                               _ref_dice_multiclass(logits, labels, ones, False, 1e-5), rtol=1e-5)


def test_perfect_prediction_gives_near_zero_auto_loss():
    _, labels, _ = _auto_inputs(4)
    logits = 30.0 * np.moveaxis(np.eye(4, dtype=np.float32)[labels], -1, 1)
    total, parts = auto_mode_loss(logits, labels, None)
    assert float(parts["dice"]) < 1e-5
    assert float(parts["ce"]) < 1e-10
    assert float(total) < 1e-5
    # A clearly wrong prediction is far from 0.
    _, wrong = auto_mode_loss(np.roll(logits, 1, axis=1), labels, None)
    assert float(wrong["dice"]) > 0.99 and float(wrong["ce"]) > 25


def test_absent_class_confidently_absent_costs_nothing_and_grads_are_finite():
    labels = np.zeros((1, 8, 8), np.int32)
    labels[0, 2:5, 2:5] = 1                               # class 2 absent from the label
    logits = 40.0 * np.moveaxis(np.eye(3, dtype=np.float32)[labels], -1, 1)
    assert float(dice_loss_multiclass(logits, labels)) < 1e-5
    # Predicting the absent class somewhere is penalized: its Dice term goes to ~1, mean over 2 classes.
    logits2 = logits.copy()
    logits2[0, 2, 6, 6] = 100.0
    np.testing.assert_allclose(float(dice_loss_multiclass(logits2, labels)), 0.5, atol=1e-4)
    g = jax.grad(lambda x: auto_mode_loss(x, labels, None)[0])(jnp.asarray(logits2))
    assert np.isfinite(np.asarray(g)).all()


def test_invalid_pixels_do_not_affect_auto_loss():
    logits, labels, weights = _auto_inputs(5)
    base = [float(v) for v in auto_mode_loss(logits, labels, weights)[1].values()]
    junk = np.random.default_rng(6).normal(0, 1e3, logits.shape)
    noisy = np.where(weights[:, None] > 0, logits, junk).astype(np.float32)
    relabeled = np.where(weights > 0, labels, (labels + 1) % 4)
    after = [float(v) for v in auto_mode_loss(noisy, relabeled, weights)[1].values()]
    np.testing.assert_allclose(after, base, rtol=1e-6)
    grad = jax.grad(lambda x: auto_mode_loss(x, labels, weights)[0])(jnp.asarray(logits))
    grad = np.asarray(grad)
    assert np.all(grad[np.broadcast_to(weights[:, None] == 0, grad.shape)] == 0)
    assert np.abs(grad[np.broadcast_to(weights[:, None] > 0, grad.shape)]).sum() > 0


def test_auto_loss_weighting_and_no_valid_pixels():
    logits, labels, weights = _auto_inputs(7)
    total, parts = auto_mode_loss(logits, labels, weights, dice_weight=0.3, ce_weight=2.0)
    np.testing.assert_allclose(float(total), 0.3 * float(parts["dice"]) + 2.0 * float(parts["ce"]), rtol=1e-6)
    zero = np.zeros_like(weights)
    total, parts = auto_mode_loss(logits, labels, zero)
    assert float(total) == 0.0
    g = jax.grad(lambda x: auto_mode_loss(x, labels, zero)[0])(jnp.asarray(logits))
    assert np.all(np.asarray(g) == 0)


# ---------------------------------------------------------------------------- prompted mode


def _prompted_inputs(seed=0, b=2, k=3, m=3, h=8, w=8):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (b, k, m, h, w)).astype(np.float32)
    iou_pred = rng.random((b, k, m)).astype(np.float32)
    targets = rng.random((b, k, h, w)) > 0.6
    object_valid = np.array([[True, True, False], [True, False, False]])[:b, :k]
    return logits, iou_pred, targets, object_valid


def test_focal_loss_matches_torchvision_per_mask():
    logits, _, targets, _ = _prompted_inputs(1)
    got = np.asarray(sigmoid_focal_loss(logits, targets[:, :, None]))
    assert got.shape == logits.shape[:3]
    for idx in np.ndindex(*got.shape):
        np.testing.assert_allclose(got[idx], _ref_focal(logits[idx], targets[idx[:2]].astype(np.float64)), rtol=1e-5)


def test_focal_loss_with_weights_is_mean_over_valid_pixels():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, (6, 5)).astype(np.float32)
    targets = rng.random((6, 5)) > 0.5
    weights = rng.random((6, 5)) > 0.4
    want = _ref_focal(logits[weights], targets[weights].astype(np.float64))
    np.testing.assert_allclose(float(sigmoid_focal_loss(logits, targets, weights=weights)), want, rtol=1e-5)


def test_binary_dice_matches_loop_reference():
    logits, _, targets, _ = _prompted_inputs(3)
    weights = np.random.default_rng(4).random(targets.shape[-2:]) > 0.2
    got = np.asarray(binary_dice_loss(logits, targets[:, :, None], weights=weights))
    for idx in np.ndindex(*got.shape):
        want = _ref_binary_dice(logits[idx], targets[idx[:2]], weights, 1.0)
        np.testing.assert_allclose(got[idx], want, rtol=1e-5)


def test_iou_prediction_loss_uses_thresholded_mask_and_stops_gradient():
    target = np.zeros((4, 4), bool)
    target[:2, :2] = True                                # 4 pixels
    logits = np.full((4, 4), -5.0, np.float32)
    logits[:2, :3] = 5.0                                 # 6 pixels, 4 of them in target: IoU 4/6
    np.testing.assert_allclose(float(mask_iou(logits, target)), 4 / 6, rtol=1e-6)
    np.testing.assert_allclose(float(iou_prediction_loss(0.5, logits, target)), (0.5 - 4 / 6) ** 2, rtol=1e-6)
    g_pred, g_logits = jax.grad(lambda p, x: iou_prediction_loss(p, x, target), argnums=(0, 1))(
        0.5, jnp.asarray(logits))
    np.testing.assert_allclose(float(g_pred), 2 * (0.5 - 4 / 6), rtol=1e-6)
    assert np.all(np.asarray(g_logits) == 0)
    # Both masks empty: IoU 1.
    assert float(mask_iou(-np.ones((3, 3), np.float32), np.zeros((3, 3), bool))) == 1.0


def _ref_prompted(logits, iou_pred, targets, object_valid, fw=20.0, dw=1.0, iw=1.0):
    focal, dice, iou = [], [], []
    for b, k in zip(*np.nonzero(object_valid)):
        t = targets[b, k].astype(np.float64)
        f = [_ref_focal(logits[b, k, m], t) for m in range(logits.shape[2])]
        d = [_ref_binary_dice(logits[b, k, m], t, 1.0, 1.0) for m in range(logits.shape[2])]
        best = int(np.argmin(fw * np.array(f) + dw * np.array(d)))
        focal.append(f[best])
        dice.append(d[best])
        actual = [((logits[b, k, m] > 0) & (t > 0)).sum() / ((logits[b, k, m] > 0) | (t > 0)).sum()
                  for m in range(logits.shape[2])]
        iou.append(np.mean((iou_pred[b, k] - np.array(actual)) ** 2))
    parts = {"focal": np.mean(focal), "dice": np.mean(dice), "iou": np.mean(iou)}
    return fw * parts["focal"] + dw * parts["dice"] + iw * parts["iou"], parts


def test_prompted_loss_matches_reference():
    logits, iou_pred, targets, object_valid = _prompted_inputs(5)
    total, parts = prompted_loss(logits, iou_pred, targets, object_valid)
    want_total, want = _ref_prompted(logits, iou_pred, targets, object_valid)
    np.testing.assert_allclose(float(total), want_total, rtol=1e-5)
    for key in ("focal", "dice", "iou"):
        np.testing.assert_allclose(float(parts[key]), want[key], rtol=1e-5)
    total, parts = prompted_loss(logits, iou_pred, targets, object_valid,
                                 focal_weight=3.0, dice_weight=2.0, iou_weight=0.5)
    want_total, want = _ref_prompted(logits, iou_pred, targets, object_valid, 3.0, 2.0, 0.5)
    np.testing.assert_allclose(float(total), want_total, rtol=1e-5)
    np.testing.assert_allclose(float(parts["focal"]), want["focal"], rtol=1e-5)


def test_multimask_trains_only_the_best_candidate():
    h = w = 8
    targets = np.zeros((1, 2, h, w), bool)
    targets[0, 0, 1:5, 1:5] = True
    targets[0, 1, 3:8, 2:6] = True
    exact_at = [2, 0]                                     # the exact candidate of each object
    rng = np.random.default_rng(8)
    logits = rng.normal(0, 1, (1, 2, 3, h, w)).astype(np.float32)
    for k, m in enumerate(exact_at):
        logits[0, k, m] = np.where(targets[0, k], 12.0, -12.0)
    iou_pred = np.full((1, 2, 3), 0.5, np.float32)
    valid = np.ones((1, 2), bool)
    total, parts = prompted_loss(logits, iou_pred, targets, valid)
    focal = np.asarray(sigmoid_focal_loss(logits, targets[:, :, None]))
    dice = np.asarray(binary_dice_loss(logits, targets[:, :, None]))
    np.testing.assert_allclose(float(parts["focal"]), np.mean([focal[0, k, m] for k, m in enumerate(exact_at)]),
                               rtol=1e-5)
    np.testing.assert_allclose(float(parts["dice"]), np.mean([dice[0, k, m] for k, m in enumerate(exact_at)]),
                               rtol=1e-5)
    assert float(parts["focal"]) < 1e-6 and float(parts["dice"]) < 0.05
    # Mean over all M of the IoU errors: the exact candidates have IoU 1.
    actual = np.asarray(mask_iou(logits, targets[:, :, None]))
    for k, m in enumerate(exact_at):
        assert actual[0, k, m] == 1.0
    np.testing.assert_allclose(float(parts["iou"]), np.mean((0.5 - actual) ** 2), rtol=1e-5)
    # Only the chosen candidates receive a gradient on their logits; all iou predictions do.
    g_logits, g_iou = jax.grad(lambda x, p: prompted_loss(x, p, targets, valid)[0], argnums=(0, 1))(
        jnp.asarray(logits), jnp.asarray(iou_pred))
    g_logits = np.abs(np.asarray(g_logits)).sum((-2, -1))
    for k, m in enumerate(exact_at):
        others = [j for j in range(3) if j != m]
        assert np.all(g_logits[0, k, others] == 0)
        assert g_logits[0, k, m] > 0
    assert np.all(np.asarray(g_iou) != 0)


def test_candidates_restrict_the_choice_and_the_iou_mean():
    """All four tokens predicted: object 0 may choose among tokens 1-3 (a lone point), object 1 takes token 0."""
    logits, iou_pred, targets, object_valid = _prompted_inputs(12, m=4)
    object_valid[:] = True
    candidates = np.zeros(object_valid.shape + (4,), bool)
    candidates[:, 0, 1:] = True
    candidates[:, 1:, 0] = True
    total, parts = prompted_loss(logits, iou_pred, targets, object_valid, candidates=candidates)
    # The reference: each object's own candidates only, the IoU error averaged over them.
    focal, dice, iou = [], [], []
    for b, k in zip(*np.nonzero(object_valid)):
        keep = np.flatnonzero(candidates[b, k])
        _, part = _ref_prompted(logits[b:b + 1, k:k + 1][:, :, keep], iou_pred[b:b + 1, k:k + 1][:, :, keep],
                                targets[b:b + 1, k:k + 1], np.ones((1, 1), bool))
        focal.append(part["focal"]), dice.append(part["dice"]), iou.append(part["iou"])
    for key, want in (("focal", focal), ("dice", dice), ("iou", iou)):
        np.testing.assert_allclose(float(parts[key]), np.mean(want), rtol=1e-5)
    grads = np.abs(np.asarray(jax.grad(lambda x: prompted_loss(x, iou_pred, targets, object_valid,
                                                                 candidates=candidates)[0])(jnp.asarray(logits))))
    assert (grads.sum((-2, -1))[~candidates] == 0).all()  # a mask that is not a candidate gets no gradient


def test_single_mask_output():
    logits, iou_pred, targets, object_valid = _prompted_inputs(9, m=1)
    total, _ = prompted_loss(logits, iou_pred, targets, object_valid)
    np.testing.assert_allclose(float(total), _ref_prompted(logits, iou_pred, targets, object_valid)[0], rtol=1e-5)


def test_padding_objects_contribute_nothing():
    logits, iou_pred, targets, object_valid = _prompted_inputs(10)
    total, _ = prompted_loss(logits, iou_pred, targets, object_valid)
    rng = np.random.default_rng(11)
    pad = ~object_valid
    logits2 = np.where(pad[:, :, None, None, None], rng.normal(0, 1e4, logits.shape), logits).astype(np.float32)
    iou2 = np.where(pad[:, :, None], 7.0, iou_pred).astype(np.float32)
    targets2 = np.where(pad[:, :, None, None], ~targets, targets)
    total2, _ = prompted_loss(logits2, iou2, targets2, object_valid)
    np.testing.assert_allclose(float(total2), float(total), rtol=1e-6)
    # Equal to the loss of the valid objects alone.
    b, k = np.nonzero(object_valid)
    alone, _ = prompted_loss(logits[b, k][None], iou_pred[b, k][None], targets[b, k][None], np.ones((1, len(b)), bool))
    np.testing.assert_allclose(float(total), float(alone), rtol=1e-5)
    g = jax.grad(lambda x: prompted_loss(x, iou2, targets2, object_valid)[0])(jnp.asarray(logits2))
    g = np.asarray(g)
    assert np.isfinite(g).all() and np.all(g[pad] == 0) and np.abs(g[object_valid]).sum() > 0


def test_no_valid_object_gives_zero_and_finite_grads():
    logits, iou_pred, targets, object_valid = _prompted_inputs(12)
    none = np.zeros_like(object_valid)
    total, parts = prompted_loss(logits, iou_pred, targets, none)
    assert float(total) == 0.0 and all(float(v) == 0.0 for v in parts.values())
    gx, gp = jax.grad(lambda x, p: prompted_loss(x, p, targets, none)[0], argnums=(0, 1))(
        jnp.asarray(logits), jnp.asarray(iou_pred))
    assert np.all(np.asarray(gx) == 0) and np.all(np.asarray(gp) == 0)


def test_pixel_weights_in_prompted_loss_ignore_padding():
    logits, iou_pred, targets, object_valid = _prompted_inputs(13)
    weights = np.zeros((2, 8, 8), np.float32)
    weights[:, :6, :5] = 1
    total, _ = prompted_loss(logits, iou_pred, targets, object_valid, weights=weights)
    crop, _ = prompted_loss(logits[..., :6, :5], iou_pred, targets[..., :6, :5], object_valid)
    np.testing.assert_allclose(float(total), float(crop), rtol=1e-5)
    logits2 = logits.copy()
    logits2[..., 6:, :] = 1e4
    targets2 = targets.copy()
    targets2[..., :, 5:] = True
    total2, _ = prompted_loss(logits2, iou_pred, targets2, object_valid, weights=weights)
    np.testing.assert_allclose(float(total2), float(total), rtol=1e-6)


# ---------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_extreme_logits_have_finite_gradients(scale):
    logits, iou_pred, targets, object_valid = _prompted_inputs(14)
    big = np.sign(logits) * abs(scale) if scale > 0 else np.full_like(logits, scale)
    big = jnp.asarray(big, jnp.float32)
    fns = {
        "prompted": lambda x: prompted_loss(x, iou_pred, targets, object_valid)[0],
        "focal": lambda x: sigmoid_focal_loss(x, targets[:, :, None]).sum(),
        "dice": lambda x: binary_dice_loss(x, targets[:, :, None]).sum(),
    }
    for name, fn in fns.items():
        value, grad = jax.value_and_grad(fn)(big)
        assert np.isfinite(float(value)), name
        assert np.isfinite(np.asarray(grad)).all(), name
    a_logits, labels, weights = _auto_inputs(15)
    a_big = jnp.asarray(np.where(a_logits > 0, scale, -scale), jnp.float32)
    value, grad = jax.value_and_grad(lambda x: auto_mode_loss(x, labels, weights)[0])(a_big)
    assert np.isfinite(float(value)) and np.isfinite(np.asarray(grad)).all()
    # The wrong-everywhere focal loss at 1e4 is the exact large value, not inf.
    wrong = jnp.asarray(np.where(targets[:, :, None], -1e4, 1e4) * np.ones_like(logits), jnp.float32)
    np.testing.assert_allclose(np.asarray(sigmoid_focal_loss(wrong[0, 0, 0], targets[0, 0])),
                               _ref_focal(np.asarray(wrong[0, 0, 0]), targets[0, 0].astype(np.float64)), rtol=1e-5)


def test_bf16_inputs_compute_in_float32():
    logits, iou_pred, targets, object_valid = _prompted_inputs(16)
    lb = jnp.asarray(logits, jnp.bfloat16)
    total, parts = prompted_loss(lb, jnp.asarray(iou_pred, jnp.bfloat16), targets, object_valid)
    assert total.dtype == jnp.float32 and all(v.dtype == jnp.float32 for v in parts.values())
    ib = jnp.asarray(iou_pred, jnp.bfloat16)
    want, _ = prompted_loss(np.asarray(lb.astype(jnp.float32)), np.asarray(ib.astype(jnp.float32)),
                            targets, object_valid)
    np.testing.assert_allclose(float(total), float(want), rtol=1e-6)
    a_logits, labels, weights = _auto_inputs(17)
    total, parts = auto_mode_loss(jnp.asarray(a_logits, jnp.bfloat16), labels, weights)
    assert total.dtype == jnp.float32
    g = jax.grad(lambda x: auto_mode_loss(x, labels, weights)[0])(jnp.asarray(a_logits, jnp.bfloat16))
    assert g.dtype == jnp.bfloat16 and np.isfinite(np.asarray(g, np.float32)).all()


def test_jit_matches_eager():
    logits, iou_pred, targets, object_valid = _prompted_inputs(18)
    eager = prompted_loss(logits, iou_pred, targets, object_valid)
    jitted = jax.jit(prompted_loss)(logits, iou_pred, targets, object_valid)
    np.testing.assert_allclose(float(jitted[0]), float(eager[0]), rtol=1e-6)
    a_logits, labels, weights = _auto_inputs(19)
    eager = auto_mode_loss(a_logits, labels, weights)
    jitted = jax.jit(auto_mode_loss, static_argnames=("include_background",))(a_logits, labels, weights)
    for key in ("dice", "ce"):
        np.testing.assert_allclose(float(jitted[1][key]), float(eager[1][key]), rtol=1e-6)
    grad_fn = jax.jit(jax.grad(lambda x: prompted_loss(x, iou_pred, targets, object_valid)[0]))
    assert np.isfinite(np.asarray(grad_fn(jnp.asarray(logits)))).all()
