"""``SamAutomaticMaskGenerator``: "segment everything", Meta's algorithm with its arguments and output.

A grid of single-point prompts covers the image (and, with ``crop_n_layers > 0``, overlapping crops of
it); each point gives three candidate masks, which are filtered by predicted IoU, stability under a
shifted threshold and contact with crop edges, then de-duplicated by box NMS within and across crops.

Each batch of ``points_per_batch`` points is one jitted program of fixed shape (the last batch is
padded), which also computes the stability scores, boxes and filters on the device; NMS runs on the
device too (``samjax.utils.nms``). Only the surviving masks come back to the host, as run-length encodings.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from samjax.utils import amg
from samjax.modeling.sam import Sam
from samjax.utils.nms import box_near_crop_edge, mask_to_box, nms, stability_score
from samjax.predictor import SamPredictor
from samjax.utils.transforms import as_rgb_uint8

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "input_size", "crop_size", "offset", "thresholds"),
)
def _masks_for_points(graphdef, state, features, coords, valid, crop_box, orig_box, *, input_size, crop_size,
                      offset, thresholds):
    """Three masks per point prompt, with their scores, boxes and the filters' verdict.

    ``coords (P, 2)`` in model-input pixels, ``valid (P,)`` marks real points. Returns masks
    ``(P*3, h, w)`` bool, IoU and stability ``(P*3,)``, boxes ``(P*3, 4)`` and ``keep (P*3,)``.
    """
    model = nnx.merge(graphdef, state)
    pred_iou_thresh, stability_thresh = thresholds
    p = coords.shape[0]
    labels = jnp.ones((p, 1), jnp.int32)
    sparse, sparse_mask, dense = model.prompt_encoder((coords[:, None], labels), None, None)
    image_pe = model.prompt_encoder.get_dense_pe()
    side = model.mask_decoder.image_side(features, image_pe, dense[:1])  # once for all P prompts: no mask given
    low_res, iou = model.mask_decoder(features, image_pe, sparse, dense, True, sparse_mask, side)
    logits = model.postprocess_masks(low_res.astype(jnp.float32), input_size, crop_size, dense=True)
    logits, iou = logits.reshape(p * 3, *crop_size), iou.astype(jnp.float32).reshape(p * 3)
    keep = jnp.repeat(valid, 3)
    if pred_iou_thresh > 0.0:
        keep &= iou > pred_iou_thresh
    stability = stability_score(logits, model.mask_threshold, offset)
    if stability_thresh > 0.0:
        keep &= stability >= stability_thresh
    masks = logits > model.mask_threshold
    boxes = mask_to_box(masks)
    keep &= ~box_near_crop_edge(boxes, crop_box, orig_box)
    return masks, iou, stability, boxes, keep


class SamAutomaticMaskGenerator:
    """Generates masks for a whole image without prompts (Meta's arguments and defaults).

    Args:
      model: the SAM model.
      points_per_side: grid points per image side (``points_per_side**2`` prompts), or None with
        ``point_grids``.
      points_per_batch: prompts per jitted call.
      pred_iou_thresh: keep masks whose predicted IoU is above this.
      stability_score_thresh: keep masks whose stability score is at least this.
      stability_score_offset: the threshold shift of the stability score.
      box_nms_thresh: box IoU above which a lower-scoring mask of a crop is dropped.
      crop_n_layers: extra layers of crops; layer i has (2^i)^2 overlapping crops.
      crop_nms_thresh: box IoU for removing duplicates between crops (smaller crops win).
      crop_overlap_ratio: overlap of first-layer crops as a fraction of the image's short side.
      crop_n_points_downscale_factor: grid points per side shrink by this per layer.
      point_grids: explicit (x, y) grids in [0, 1], one per layer.
      min_mask_region_area: remove islands and fill holes smaller than this many pixels.
      output_mode: ``"binary_mask"``, ``"uncompressed_rle"`` or ``"coco_rle"``.
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
    ):
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be positive, got {points_per_batch}")
        if points_per_side is not None:
            point_grids = amg.build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        if len(point_grids) < crop_n_layers + 1:
            raise ValueError(f"point_grids needs one grid per crop layer ({crop_n_layers + 1}), got {len(point_grids)}")
        self.point_grids = [np.asarray(g, np.float64).reshape(-1, 2) for g in point_grids]
        self.predictor = SamPredictor(model)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode

    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks for ``image`` (``(H, W, 3)`` uint8, or grayscale), as Meta's records.

        Each record has ``segmentation`` (per ``output_mode``), ``area``, ``bbox`` (XYWH),
        ``predicted_iou``, ``point_coords``, ``stability_score`` and ``crop_box`` (XYWH).
        """
        image = as_rgb_uint8(image)
        data = self._generate_masks(image)
        if self.min_mask_region_area > 0:
            data = self._remove_small_regions(data, max(self.box_nms_thresh, self.crop_nms_thresh))
        records = []
        for i, rle in enumerate(data["rles"]):
            if self.output_mode == "coco_rle":
                segmentation = amg.coco_encode_rle(rle)
            elif self.output_mode == "binary_mask":
                segmentation = amg.rle_to_mask(rle)
            else:
                segmentation = rle
            records.append({
                "segmentation": segmentation,
                "area": amg.area_from_rle(rle),
                "bbox": amg.box_xyxy_to_xywh(data["boxes"][i]),
                "predicted_iou": float(data["iou_preds"][i]),
                "point_coords": [data["points"][i].tolist()],
                "stability_score": float(data["stability_score"][i]),
                "crop_box": amg.box_xyxy_to_xywh(data["crop_boxes"][i]),
            })
        return records

    def _generate_masks(self, image: np.ndarray) -> dict[str, Any]:
        orig_size = image.shape[:2]
        crop_boxes, layer_idxs = amg.generate_crop_boxes(orig_size, self.crop_n_layers, self.crop_overlap_ratio)
        parts = [self._process_crop(image, box, layer, orig_size) for box, layer in zip(crop_boxes, layer_idxs)]
        data = _concat(parts)
        if len(crop_boxes) > 1 and len(data["rles"]):
            crops = data["crop_boxes"].astype(np.float64)
            scores = 1.0 / ((crops[:, 2] - crops[:, 0]) * (crops[:, 3] - crops[:, 1]))  # smaller crops win
            data = _select(data, nms(data["boxes"], scores, self.crop_nms_thresh))
        return data

    def _process_crop(self, image, crop_box, layer, orig_size) -> dict[str, Any]:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        crop_size = crop.shape[:2]
        self.predictor.set_image(crop)
        pred = self.predictor
        points = self.point_grids[layer] * np.array(crop_size)[None, ::-1]
        boxes_in = (np.array(crop_box, np.float32), np.array([0, 0, orig_size[1], orig_size[0]], np.float32))
        static = dict(
            input_size=pred.input_size, crop_size=tuple(crop_size), offset=float(self.stability_score_offset),
            thresholds=(float(self.pred_iou_thresh), float(self.stability_score_thresh)),
        )
        parts = []
        for start in range(0, len(points), self.points_per_batch):
            batch = points[start : start + self.points_per_batch]
            coords = np.zeros((self.points_per_batch, 2), np.float32)
            coords[: len(batch)] = pred.transform.apply_coords(batch, crop_size)
            valid = np.arange(self.points_per_batch) < len(batch)
            masks, iou, stability, boxes, keep = _masks_for_points(
                pred._graphdef, pred._state, pred.features, coords, valid, *boxes_in, **static
            )
            idx = np.flatnonzero(np.asarray(keep))
            if len(idx) == 0:
                continue
            kept_masks = np.asarray(_take(masks, idx))
            parts.append({
                "rles": [amg.mask_to_rle(_uncrop(m, crop_box, orig_size)) for m in kept_masks],
                "iou_preds": np.asarray(iou)[idx],
                "stability_score": np.asarray(stability)[idx],
                "boxes": np.asarray(boxes)[idx].astype(np.int64),
                "points": np.repeat(batch, 3, axis=0)[idx],
            })
        self.predictor.reset_image()
        data = _concat(parts)
        data = _select(data, nms(data["boxes"], data["iou_preds"], self.box_nms_thresh))
        data["boxes"] = data["boxes"] + np.array([x0, y0, x0, y0])
        data["points"] = data["points"] + np.array([x0, y0])
        data["crop_boxes"] = np.tile(np.array(crop_box), (len(data["rles"]), 1))
        return data

    def _remove_small_regions(self, data: dict[str, Any], nms_thresh: float) -> dict[str, Any]:
        """Fills small holes and removes small islands, then drops new duplicates (Meta's order)."""
        if not len(data["rles"]):
            return data
        masks, scores = [], []
        for rle in data["rles"]:
            mask, changed_holes = amg.remove_small_regions(amg.rle_to_mask(rle), self.min_mask_region_area, "holes")
            mask, changed_islands = amg.remove_small_regions(mask, self.min_mask_region_area, "islands")
            masks.append(mask)
            scores.append(0.0 if (changed_holes or changed_islands) else 1.0)  # prefer untouched masks
        boxes = np.asarray(mask_to_box(jnp.asarray(np.stack(masks))))
        keep = nms(boxes, np.array(scores), nms_thresh)
        for i in keep:
            if scores[i] == 0.0:
                data["rles"][i] = amg.mask_to_rle(masks[i])
                data["boxes"][i] = boxes[i]
        return _select(data, keep)


def _take(masks: jax.Array, idx: np.ndarray) -> jax.Array:
    """``masks[idx]`` through a power-of-two padded gather (one program per bucket)."""
    size = 1 << (len(idx) - 1).bit_length()
    padded = np.zeros(size, np.int32)
    padded[: len(idx)] = idx
    return _gather(masks, padded)[: len(idx)]


@jax.jit
def _gather(masks, idx):
    return masks[idx]


def _uncrop(mask: np.ndarray, crop_box, orig_size) -> np.ndarray:
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) == (0, 0, orig_size[1], orig_size[0]):
        return mask
    out = np.zeros(orig_size, bool)
    out[y0:y1, x0:x1] = mask
    return out


_FIELDS = ("rles", "iou_preds", "stability_score", "boxes", "points", "crop_boxes")


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"rles": [r for p in parts for r in p["rles"]]}
    empty = {"iou_preds": np.zeros(0, np.float32), "stability_score": np.zeros(0, np.float32),
             "boxes": np.zeros((0, 4), np.int64), "points": np.zeros((0, 2)), "crop_boxes": np.zeros((0, 4), np.int64)}
    for key, zero in empty.items():
        out[key] = np.concatenate([zero] + [p[key] for p in parts if key in p])
    return out


def _select(data: dict[str, Any], idx: np.ndarray) -> dict[str, Any]:
    out = {"rles": [data["rles"][i] for i in idx]}
    for key in _FIELDS[1:]:
        if key in data and len(data[key]) == len(data["rles"]):
            out[key] = data[key][idx]
    return out
