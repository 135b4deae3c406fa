"""Segmentation losses for fine-tuning SAM, in pure ``jax.numpy`` (jit-able, vmappable).

Two training modes:

* **auto** (multi-class semantic segmentation): the model emits ``C`` class logits per pixel of
  SAM's low-resolution mask grid, ``logits (B, C, h, w)``, against an integer class map
  ``labels (B, h, w)``: :func:`dice_loss_multiclass` + :func:`cross_entropy_loss`
  (:func:`auto_mode_loss`);
* **prompted** (SAM's own objective): per object ``M`` candidate masks ``logits (B, K, M, h, w)``
  and their predicted IoUs ``iou_pred (B, K, M)``, against one bool target per object:
  :func:`sigmoid_focal_loss`, :func:`binary_dice_loss` and :func:`iou_prediction_loss`, combined
  as in the SAM paper by :func:`prompted_loss`.

Conventions shared by every function:

* all arithmetic is float32 whatever the input dtype (bf16 logits are upcast first);
* ``weights`` is an optional per-pixel float (or bool) map broadcastable to the pixel grid, 1 on
  valid pixels and 0 on padding; a pixel of weight 0 has no effect on the value or the gradient,
  whatever its logits;
* every loss is finite, with finite gradients, for logits as large as ``+-1e4``, for absent
  classes or objects, and for an all-zero ``weights``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_F32 = jnp.float32


def _f32(x):
    return jnp.asarray(x).astype(_F32)


def _safe_div(num, den):
    """``num / den`` where ``den > 0``, else 0; the gradient stays finite in both branches."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _class_weights(labels, num_classes: int, weights):
    """``(B, h, w)`` float32: ``weights`` (or 1) on pixels whose label is in ``[0, C)``, else 0."""
    labels = jnp.asarray(labels)
    w = (labels >= 0) & (labels < num_classes)
    w = w.astype(_F32)
    if weights is not None:
        w = w * jnp.broadcast_to(_f32(weights), labels.shape)
    return w


# ----------------------------------------------------------------------------------------------
# Auto mode: multi-class semantic segmentation
# ----------------------------------------------------------------------------------------------


def dice_loss_multiclass(logits, labels, weights=None, include_background: bool = False,
                         smooth: float = 1e-5):
    """Soft multi-class Dice loss from softmax probabilities, a float32 scalar.

    Args:
      logits: ``(B, C, h, w)`` class logits (any float dtype).
      labels: ``(B, h, w)`` int class map; class 0 is background. Pixels whose label is outside
        ``[0, C)`` (e.g. 255 as "ignore") count as invalid, like weight 0.
      weights: optional ``(B, h, w)`` float/bool map of valid pixels (1 valid, 0 padding).
      include_background: if False (default) class 0 is left out of the mean.
      smooth: ``s`` below.

    With ``p = softmax(logits, axis=1)``, ``g = one_hot(labels)`` and ``w`` the valid-pixel
    weights, for every sample ``b`` and class ``c``::

        L[b, c] = 1 - (2 * sum(w p g) + s) / (sum(w p) + sum(w g) + s)      (sums over h, w)

    and the loss is the mean of ``L[b, c]`` over the batch and the classes (``1..C-1``, or
    ``0..C-1`` with ``include_background``). A class absent from the ground truth of a sample gives
    ``L = sum(w p) / (sum(w p) + s)``: about 0 once its predicted probability mass is well below
    ``s`` (absent from both prediction and target), and up to 1 while the model still predicts it,
    so false positives are penalized. A sample with no valid pixel gives 0 for every class.
    """
    logits = _f32(logits)
    num_classes = logits.shape[1]
    if not include_background and num_classes < 2:
        raise ValueError("include_background=False needs at least 2 classes")
    w = _class_weights(labels, num_classes, weights)[:, None]                 # (B, 1, h, w)
    p = jax.nn.softmax(logits, axis=1)
    g = jax.nn.one_hot(labels, num_classes, axis=1, dtype=_F32)              # (B, C, h, w)
    inter = jnp.sum(w * p * g, axis=(-2, -1))                                 # (B, C)
    p_sum = jnp.sum(w * p, axis=(-2, -1))
    g_sum = jnp.sum(w * g, axis=(-2, -1))
    loss = 1.0 - (2.0 * inter + smooth) / (p_sum + g_sum + smooth)
    if not include_background:
        loss = loss[:, 1:]
    return jnp.mean(loss)


def cross_entropy_loss(logits, labels, weights=None):
    """Softmax cross entropy averaged over the valid pixels of the whole batch, a float32 scalar.

    ``sum(w * -log softmax(logits)[label]) / sum(w)`` over every pixel of every sample (a pixel
    mean, not a mean of per-sample means), ``w`` being ``weights`` (or 1) on pixels whose label is in
    ``[0, C)`` and 0 elsewhere; 0 if no pixel is valid. ``logits (B, C, h, w)``, ``labels (B, h, w)``
    int, ``weights`` optional ``(B, h, w)``. With no weights and all labels valid this is
    ``torch.nn.functional.cross_entropy(logits, labels)``.
    """
    logits = _f32(logits)
    num_classes = logits.shape[1]
    w = _class_weights(labels, num_classes, weights)
    logp = jax.nn.log_softmax(logits, axis=1)
    index = jnp.clip(jnp.asarray(labels).astype(jnp.int32), 0, num_classes - 1)
    nll = -jnp.take_along_axis(logp, index[:, None], axis=1)[:, 0]           # (B, h, w)
    return _safe_div(jnp.sum(w * nll), jnp.sum(w))


def auto_mode_loss(logits, labels, valid=None, dice_weight: float = 1.0, ce_weight: float = 1.0,
                   include_background: bool = False, smooth: float = 1e-5):
    """``dice_weight * dice + ce_weight * ce`` and ``{"dice": dice, "ce": ce}`` (unweighted parts).

    ``logits (B, C, h, w)``, ``labels (B, h, w)`` int, ``valid`` optional ``(B, h, w)`` valid-pixel
    mask; see :func:`dice_loss_multiclass` and :func:`cross_entropy_loss`.
    """
    dice = dice_loss_multiclass(logits, labels, valid, include_background=include_background, smooth=smooth)
    ce = cross_entropy_loss(logits, labels, valid)
    return dice_weight * dice + ce_weight * ce, {"dice": dice, "ce": ce}


# ----------------------------------------------------------------------------------------------
# Prompted mode: SAM's losses
# ----------------------------------------------------------------------------------------------


def _pixel_mean(x, weights):
    """Mean of ``x (..., h, w)`` over its last two axes, weighted; 0 where all weights are 0."""
    if weights is None:
        return jnp.mean(x, axis=(-2, -1))
    w = jnp.broadcast_to(_f32(weights), x.shape)
    return _safe_div(jnp.sum(w * x, axis=(-2, -1)), jnp.sum(w, axis=(-2, -1)))


def sigmoid_focal_loss(logits, targets, alpha: float = 0.25, gamma: float = 2.0, weights=None):
    """Per-mask sigmoid focal loss (Lin et al.), float32 of shape ``logits.shape[:-2]``.

    ``logits (..., h, w)``, ``targets`` in ``[0, 1]`` broadcastable to it. Per pixel, with
    ``p = sigmoid(x)`` and ``p_t = p t + (1 - p)(1 - t)``::

        FL = alpha_t * (1 - p_t) ** gamma * BCE(x, t),  alpha_t = alpha t + (1 - alpha)(1 - t)

    (``alpha < 0`` drops the ``alpha_t`` factor), then the mean over the mask's (valid) pixels:
    ``torchvision.ops.sigmoid_focal_loss(..., reduction="mean")`` applied to each mask on its own.
    """
    x = _f32(logits)
    t = jnp.broadcast_to(_f32(targets), x.shape)
    bce = -(t * jax.nn.log_sigmoid(x) + (1.0 - t) * jax.nn.log_sigmoid(-x))
    one_minus_pt = t * jax.nn.sigmoid(-x) + (1.0 - t) * jax.nn.sigmoid(x)    # exact near p_t = 1
    loss = bce if gamma == 0 else bce * one_minus_pt ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1.0 - alpha) * (1.0 - t)) * loss
    return _pixel_mean(loss, weights)


def binary_dice_loss(logits, targets, weights=None, smooth: float = 1.0):
    """Per-mask soft Dice loss, float32 of shape ``logits.shape[:-2]``.

    ``1 - (2 * sum(w p t) + s) / (sum(w p) + sum(w t) + s)`` over the last two axes, with
    ``p = sigmoid(logits)``, ``t = targets`` (broadcastable), ``w = weights`` (or 1), ``s = smooth``.
    """
    x = _f32(logits)
    t = jnp.broadcast_to(_f32(targets), x.shape)
    p = jax.nn.sigmoid(x)
    w = 1.0 if weights is None else jnp.broadcast_to(_f32(weights), x.shape)
    inter = jnp.sum(w * p * t, axis=(-2, -1))
    den = jnp.sum(w * p, axis=(-2, -1)) + jnp.sum(w * t, axis=(-2, -1))
    return 1.0 - (2.0 * inter + smooth) / (den + smooth)


def mask_iou(logits, targets, weights=None):
    """IoU of the hard mask ``logits > 0`` with ``targets > 0.5`` per mask, float32, no gradient.

    Shape ``logits.shape[:-2]``; counts only pixels of nonzero ``weights``; an empty union (both
    masks empty) gives IoU 1.
    """
    pred = _f32(logits) > 0
    tgt = jnp.broadcast_to(_f32(targets) > 0.5, pred.shape)
    if weights is not None:
        keep = jnp.broadcast_to(_f32(weights) > 0, pred.shape)
        pred, tgt = pred & keep, tgt & keep
    inter = jnp.sum(pred & tgt, axis=(-2, -1)).astype(_F32)
    union = jnp.sum(pred | tgt, axis=(-2, -1)).astype(_F32)
    iou = jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 1.0)
    return jax.lax.stop_gradient(iou)


def iou_prediction_loss(iou_pred, logits, targets, weights=None):
    """Per-mask squared error ``(iou_pred - IoU(logits > 0, targets)) ** 2``, float32.

    Shape ``iou_pred.shape == logits.shape[:-2]``; the actual IoU is :func:`mask_iou`, under
    ``stop_gradient``, so only ``iou_pred`` receives a gradient. The mean of this is SAM's IoU MSE.
    """
    return (_f32(iou_pred) - mask_iou(logits, targets, weights)) ** 2


def prompted_loss(logits, iou_pred, targets, object_valid, focal_weight: float = 20.0,
                  dice_weight: float = 1.0, iou_weight: float = 1.0, weights=None, candidates=None,
                  focal_alpha: float = 0.25):
    """SAM's training loss for prompted masks: ``(total, {"focal", "dice", "iou"})``, float32.

    Args:
      logits: ``(B, K, M, h, w)`` mask logits, ``M`` candidate masks for each of ``K`` objects.
      iou_pred: ``(B, K, M)`` predicted IoUs.
      targets: ``(B, K, h, w)`` bool target mask of each object.
      object_valid: ``(B, K)`` bool; False marks padding objects, which contribute nothing (to the
        value or the gradient).
      focal_weight, dice_weight, iou_weight: SAM paper's 20 : 1 focal : dice, plus IoU MSE at 1.
      focal_alpha: the focal loss's weight of positive pixels (SAM 2: 0.25; < 0: unweighted).
      weights: optional ``(B, h, w)`` valid-pixel map for image padding (see module docstring).
      candidates: optional ``(B, K, M)`` bool: the masks each object may choose from (the rest count
        nowhere); e.g. all ``M = 4`` tokens predicted, the ambiguous objects choosing among tokens 1-3
        and the others taking token 0.

    For each object and candidate mask ``m``: ``mask_loss[m] = focal_weight * focal[m] +
    dice_weight * dice[m]`` (per-mask :func:`sigmoid_focal_loss` with ``focal_alpha``, gamma 2, and
    :func:`binary_dice_loss`). With ``M > 1`` (multimask output) only the candidate of lowest
    ``mask_loss`` is trained on the mask loss ("we backprop only the minimum loss over masks", SAM
    paper), while the IoU loss :func:`iou_prediction_loss` applies to all ``M`` candidates (mean over
    ``M``), so the IoU head learns to rank them. Each of ``focal``, ``dice`` and ``iou`` is then the
    mean over valid objects (0 when there is none, with zero gradients), and::

        total = focal_weight * focal + dice_weight * dice + iou_weight * iou
    """
    x = _f32(logits)
    if x.ndim != 5:
        raise ValueError(f"logits must be (B, K, M, h, w), got shape {x.shape}")
    t = _f32(targets)[:, :, None]                                            # (B, K, 1, h, w)
    w = None if weights is None else _f32(weights)[:, None, None]            # (B, 1, 1, h, w)
    focal = sigmoid_focal_loss(x, t, alpha=focal_alpha, weights=w)           # (B, K, M)
    dice = binary_dice_loss(x, t, weights=w)
    iou = iou_prediction_loss(iou_pred, x, t, weights=w)
    mask_loss = focal_weight * focal + dice_weight * dice
    if candidates is None:
        allowed = jnp.ones(mask_loss.shape, _F32)
    else:
        allowed = jnp.broadcast_to(jnp.asarray(candidates, bool), mask_loss.shape).astype(_F32)
        mask_loss = jnp.where(allowed > 0, mask_loss, jnp.inf)
    best = jnp.argmin(mask_loss, axis=-1)                                    # (B, K)
    pick = jax.nn.one_hot(best, x.shape[2], dtype=_F32)
    per_object = {
        "focal": jnp.sum(pick * focal, axis=-1),
        "dice": jnp.sum(pick * dice, axis=-1),
        "iou": _safe_div(jnp.sum(allowed * iou, axis=-1), jnp.sum(allowed, axis=-1)),
    }
    valid = jnp.asarray(object_valid, bool)
    count = jnp.sum(valid).astype(_F32)
    parts = {k: _safe_div(jnp.sum(jnp.where(valid, v, 0.0)), count) for k, v in per_object.items()}
    total = focal_weight * parts["focal"] + dice_weight * parts["dice"] + iou_weight * parts["iou"]
    return total, parts
