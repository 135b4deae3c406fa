"""Pictures of predictions: masks blended over the image with outlines, prompts drawn on top."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# Distinct colours (RGB) for up to eight masks; repeats after that.
PALETTE = np.array(
    [(255, 64, 64), (64, 160, 255), (64, 220, 96), (255, 200, 40),
     (200, 80, 255), (255, 128, 0), (0, 220, 220), (255, 96, 180)],
    np.float32,
)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def overlay_masks(image: np.ndarray, masks: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blends boolean ``masks (M, H, W)`` over an ``(H, W, 3)`` uint8 image, each in its own colour."""
    out = image.astype(np.float32).copy()
    for i, mask in enumerate(np.asarray(masks, bool)):
        color = PALETTE[i % len(PALETTE)]
        out[mask] = (1 - alpha) * out[mask] + alpha * color
        out[_outline(mask)] = color
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def draw_prompts(
    image: np.ndarray,
    point_coords: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
) -> np.ndarray:
    """Draws points (green foreground, red background) and a box (yellow) on an RGB uint8 image."""
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    r = max(3, round(min(image.shape[:2]) / 100))
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in np.asarray(box).reshape(4))
        draw.rectangle([x0, y0, x1, y1], outline=(255, 230, 0), width=max(1, r // 2))
    if point_coords is not None:
        for (x, y), label in zip(np.asarray(point_coords).reshape(-1, 2), np.asarray(point_labels).reshape(-1)):
            fill = (0, 230, 0) if label == 1 else (230, 0, 0)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(255, 255, 255))
    return np.asarray(pil)


def save_png(image: np.ndarray, path: str) -> None:
    Image.fromarray(np.asarray(image, np.uint8)).save(path)
