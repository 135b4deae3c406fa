"""Examples in the form SAM trains on: longest side resized to the model input, zero-padded square.

The image goes through the predictor's ``ResizeLongestSide`` (PIL bilinear, as Meta), so training
and inference see the same pixels; the label is resized by nearest neighbour (no new class values).
Padding is bottom-right, as ``Sam.preprocess``: the step normalizes the image and multiplies by
``valid`` so the padding is 0 after normalization, exactly what SAM's own preprocessing gives.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np
from PIL import Image

from samjax.utils.transforms import ResizeLongestSide, as_rgb_uint8


def _nearest(label: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    pad = [(0, size - x.shape[0]), (0, size - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
    return np.pad(x, pad)


@dataclasses.dataclass(frozen=True)
class SamFormat(grain.transforms.Map):
    """``image`` uint8 ``(H, W[, C])`` (+ ``label`` ``(H, W)``) -> SAM's padded square input.

    Adds or replaces: ``image`` uint8 ``(S, S, 3)``; ``valid`` bool ``(S, S)`` (True on real pixels);
    ``input_size`` int32 ``(2,)`` (the resized ``h, w`` before padding); ``original_size`` int32
    ``(2,)``; with a label, ``label`` uint8 ``(S, S)`` and ``low_res_label`` uint8 ``(L, L)``, the size
    of the decoder's logits (``low_res_size``, default S/4 as with SAM's 16-pixel patches; nearest
    neighbour from the padded label).
    """

    image_size: int = 1024
    low_res_size: int | None = None

    def map(self, element: dict) -> dict:
        out = dict(element)
        image = as_rgb_uint8(element["image"])
        s = self.image_size
        h, w = ResizeLongestSide.get_preprocess_shape(image.shape[0], image.shape[1], s)
        resized = ResizeLongestSide(s).apply_image(image)
        out["image"] = _pad(resized, s)
        valid = np.zeros((s, s), bool)
        valid[:h, :w] = True
        out["valid"] = valid
        out["input_size"] = np.array([h, w], np.int32)
        out["original_size"] = np.array(image.shape[:2], np.int32)
        if "label" in element:
            label = np.asarray(element["label"])
            if label.shape != image.shape[:2]:
                raise ValueError(f"label shape {label.shape} does not match image shape {image.shape[:2]}")
            out["label"] = _pad(_nearest(label.astype(np.uint8), h, w), s)
            low = self.low_res_size or s // 4
            out["low_res_label"] = _nearest(out["label"], low, low)
        return out
