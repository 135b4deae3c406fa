"""Box operations and non-maximum suppression as fixed-shape JAX programs (run on the device).

Every function takes padded arrays plus a ``valid`` mask, so one compiled program serves any number
of candidates up to the padded size. Semantics follow torchvision's ``nms`` (a stable descending
sort of the scores, suppression when IoU > threshold) and Meta's ``batched_mask_to_box``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def mask_to_box(masks: jax.Array) -> jax.Array:
    """Tight XYXY boxes (inclusive pixel indices) of boolean masks ``(..., H, W)``; ``[0, 0, 0, 0]`` if empty."""
    h, w = masks.shape[-2:]
    rows = jnp.any(masks, axis=-1)  # (..., H)
    cols = jnp.any(masks, axis=-2)  # (..., W)
    ys, xs = jnp.arange(h), jnp.arange(w)
    bottom = jnp.max(jnp.where(rows, ys, -1), axis=-1)
    top = jnp.min(jnp.where(rows, ys, h), axis=-1)
    right = jnp.max(jnp.where(cols, xs, -1), axis=-1)
    left = jnp.min(jnp.where(cols, xs, w), axis=-1)
    empty = (right < left) | (bottom < top)
    boxes = jnp.stack([left, top, right, bottom], axis=-1)
    return jnp.where(empty[..., None], 0, boxes).astype(jnp.int32)


def stability_score(logits: jax.Array, threshold: float, offset: float) -> jax.Array:
    """IoU of the masks thresholded at ``threshold + offset`` and ``threshold - offset``, ``(..., H, W)`` -> ``(...)``."""
    inter = jnp.sum(logits > threshold + offset, axis=(-2, -1), dtype=jnp.int32)
    union = jnp.sum(logits > threshold - offset, axis=(-2, -1), dtype=jnp.int32)
    return inter / union


def box_near_crop_edge(boxes: jax.Array, crop_box, orig_box, atol: float = 20.0) -> jax.Array:
    """Whether XYXY ``boxes`` in crop coordinates touch a crop edge that is not an image edge."""
    crop = jnp.asarray(crop_box, jnp.float32)
    orig = jnp.asarray(orig_box, jnp.float32)
    shifted = boxes.astype(jnp.float32) + jnp.stack([crop[0], crop[1], crop[0], crop[1]])
    near_crop = jnp.abs(shifted - crop) <= atol
    near_image = jnp.abs(shifted - orig) <= atol
    return jnp.any(near_crop & ~near_image, axis=-1)


def box_iou(boxes: jax.Array) -> jax.Array:
    """Pairwise IoU ``(N, N)`` of XYXY boxes ``(N, 4)`` (torchvision's formula, no +1)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    lt = jnp.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = jnp.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    wh = jnp.clip(rb - lt, 0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area[:, None] + area[None, :] - inter)


@jax.jit
def _nms(boxes: jax.Array, scores: jax.Array, valid: jax.Array, iou_threshold: jax.Array) -> jax.Array:
    n = boxes.shape[0]
    order = jnp.argsort(jnp.where(valid, -scores, jnp.inf), stable=True)
    sorted_boxes = boxes[order].astype(jnp.float32)
    overlaps = box_iou(sorted_boxes) > iou_threshold
    sorted_valid = valid[order]

    def body(i, keep):
        suppressed = jnp.any(keep & overlaps[:, i] & (jnp.arange(n) < i))
        return keep.at[i].set(sorted_valid[i] & ~suppressed)

    keep_sorted = jax.lax.fori_loop(0, n, body, jnp.zeros(n, bool))
    return order, keep_sorted


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, highest score first (torchvision's ``nms``).

    Runs on the device in a program padded to a power-of-two number of boxes.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64)
    size = 1 << (n - 1).bit_length()
    b = np.zeros((size, 4), np.float32)
    s = np.zeros(size, np.float32)
    b[:n], s[:n] = boxes, scores
    order, keep = _nms(b, s, np.arange(size) < n, np.float32(iou_threshold))
    order, keep = np.asarray(order), np.asarray(keep)
    return order[keep].astype(np.int64)
