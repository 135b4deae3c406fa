"""Host-side helpers of automatic mask generation: point grids, crops, run-length encodings and
small-region clean-up, matching Meta's ``segment_anything.utils.amg``.
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any

import numpy as np
from scipy import ndimage


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``(n^2, 2)`` evenly spaced (x, y) points in [0, 1], at cell centres."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer, ``n_per_side / scale_per_layer**i`` points on a side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """XYXY crop boxes of every layer (layer 0 is the whole image; layer i has (2^i)^2 crops)."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len, n_crops, overlap):
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n))
        crop_w, crop_h = crop_len(im_w, n, overlap), crop_len(im_h, n, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n)]
        y0s = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(i_layer + 1)
    return boxes, layers


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed column-major RLE ``{"size": [h, w], "counts": [...]}`` of a ``(h, w)`` mask (COCO order)."""
    h, w = mask.shape
    flat = np.asarray(mask, bool).T.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [h * w]])
    counts = np.diff(edges).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": [h, w], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`mask_to_rle`."""
    h, w = rle["size"]
    values = np.arange(len(rle["counts"])) % 2 == 1
    flat = np.repeat(values, rle["counts"])
    return flat.reshape(w, h).T


def area_from_rle(rle: dict[str, Any]) -> int:
    return int(sum(rle["counts"][1::2]))


def coco_encode_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """COCO's compressed RLE string (``pycocotools.mask.encode``'s ``counts``), without pycocotools."""
    counts = rle["counts"]
    chars = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return {"size": list(rle["size"]), "counts": "".join(chars)}


def box_xyxy_to_xywh(box) -> list:
    x0, y0, x1, y1 = (v.item() if hasattr(v, "item") else v for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fills holes (``mode="holes"``) or removes islands (``"islands"``) smaller than ``area_thresh``.

    8-connected components, as Meta's OpenCV version; returns the mask and whether it changed.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    correct_holes = mode == "holes"
    working = correct_holes ^ np.asarray(mask, bool)
    regions, n = ndimage.label(working, structure=np.ones((3, 3), int))
    sizes = np.bincount(regions.reshape(-1), minlength=n + 1)[1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    fill = [0] + small
    if not correct_holes:
        fill = [i for i in range(n + 1) if i not in fill]
        if not fill:  # every island is small: keep the largest
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True
