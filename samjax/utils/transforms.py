"""Image and prompt transforms of SAM's predictor: resize the longest side, scale coordinates.

Matches Meta's ``ResizeLongestSide`` exactly: images go through PIL's bilinear resize (what
torchvision does for PIL images), coordinates are scaled by the same per-axis factors.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def as_rgb_uint8(image, name: str = "image") -> np.ndarray:
    """Checks an image and returns it as ``(H, W, 3)`` uint8.

    Accepts ``(H, W)`` and ``(H, W, 1)`` grayscale (replicated to 3 channels, as medical images
    usually are) and ``(H, W, 3)``. Anything else gets an error that says what was passed.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(
            f"{name} must be uint8 with values 0-255, got dtype {arr.dtype}; map intensities to 0-255 "
            "first (for CT, apply a window; for MR, clip to percentiles)"
        )
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"{name} must have shape (H, W), (H, W, 1) or (H, W, 3), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr)


class ResizeLongestSide:
    """Resizes images so the longest side is ``target_length``, and maps coordinates to match."""

    def __init__(self, target_length: int):
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        """``(newh, neww)`` with the longest side ``long_side_length``, rounded half up."""
        scale = long_side_length * 1.0 / max(oldh, oldw)
        newh, neww = oldh * scale, oldw * scale
        return int(newh + 0.5), int(neww + 0.5)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 -> ``(newh, neww, 3)`` uint8 (PIL bilinear)."""
        h, w = self.get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``(..., 2)`` pixel (x, y) in the original image -> the resized image, float64."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        coords = np.array(coords, dtype=np.float64)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``(..., 4)`` boxes (x0, y0, x1, y1) -> the resized image."""
        boxes = np.asarray(boxes)
        return self.apply_coords(boxes.reshape(*boxes.shape[:-1], 2, 2), original_size).reshape(boxes.shape)
