"""Procedural 2D "scans" with exact labels: the built-in data set of samjax (no download needed).

Each phantom is an axial slice through a body: an outline with a fat layer, a large irregular organ
(liver-like), two kidneys, a vertebral bone ring, and 0-3 small lesions inside the large organ whose
contrast to it is low. Every shape is deformed by a smooth random displacement field and its outline
perturbed by low harmonics; the image gets partial-volume blur, noise and (for MR) a bias field. CT
slices are generated in Hounsfield units and windowed; MR slices in arbitrary units and clipped at
percentiles. Everything is a pure function of the seed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CLASS_NAMES = ("background", "body", "liver", "kidney", "bone", "lesion")
MODALITIES = ("ct", "mr")

# Tissue intensities: CT in HU, MR in arbitrary T1-like units.
_INTENSITY = {
    "ct": dict(air=-1000.0, fat=-90.0, muscle=45.0, liver=62.0, kidney=150.0, cortex=750.0, marrow=130.0, lesion=38.0),
    "mr": dict(air=0.0, fat=0.9, muscle=0.35, liver=0.5, kidney=0.28, cortex=0.05, marrow=0.7, lesion=0.4),
}
_NOISE = {"ct": 14.0, "mr": 0.05}
_CT_WINDOW = (40.0, 400.0)  # abdominal window: level, width


def _smooth_field(rng: np.random.Generator, size: int, cells: int, amplitude: float) -> np.ndarray:
    """A smooth random field: ``cells x cells`` Gaussian values, upsampled bicubically to ``size``."""
    coarse = rng.normal(0.0, amplitude, (cells, cells))
    return ndimage.zoom(coarse, size / cells, order=3, mode="nearest")[:size, :size]


def _blob(x, y, cx, cy, rx, ry, angle, harmonics) -> np.ndarray:
    """Inside of a rotated ellipse whose radius is modulated by a few harmonics of the polar angle."""
    c, s = np.cos(angle), np.sin(angle)
    u = ((x - cx) * c + (y - cy) * s) / rx
    v = (-(x - cx) * s + (y - cy) * c) / ry
    theta = np.arctan2(v, u)
    radius = 1.0 + sum(a * np.cos(k * theta + p) for k, a, p in harmonics)
    return np.hypot(u, v) < radius


def _harmonics(rng: np.random.Generator, strength: float):
    return [(k, rng.uniform(0, strength / k), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)]


def make_phantom(seed: int, size: int = 256, modality: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """One phantom slice.

    Args:
      seed: the phantom's identity; the same seed always gives the same slice.
      size: side of the square image in pixels.
      modality: ``"ct"``, ``"mr"`` or None (chosen by the seed).

    Returns:
      ``image (size, size)`` uint8, ``label (size, size)`` uint8 with values indexing
      :data:`CLASS_NAMES`, and the modality.
    """
    rng = np.random.default_rng(seed)
    if modality is None:
        modality = MODALITIES[int(rng.integers(len(MODALITIES)))]
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(coords, coords, indexing="ij")
    # A smooth deformation shared by all organs, and a small global rotation and zoom.
    x = x + _smooth_field(rng, size, 4, 0.04)
    y = y + _smooth_field(rng, size, 4, 0.04)
    rot, zoom = rng.uniform(-0.15, 0.15), rng.uniform(0.9, 1.1)
    x, y = (x * np.cos(rot) - y * np.sin(rot)) * zoom, (x * np.sin(rot) + y * np.cos(rot)) * zoom

    body_rx, body_ry = rng.uniform(0.78, 0.9), rng.uniform(0.58, 0.7)
    body_h = _harmonics(rng, 0.05)
    body = _blob(x, y, 0, 0.05, body_rx, body_ry, 0.0, body_h)
    inner = _blob(x, y, 0, 0.05, body_rx - rng.uniform(0.05, 0.09), body_ry - rng.uniform(0.05, 0.09), 0.0, body_h)
    liver = _blob(x, y, rng.uniform(-0.42, -0.28), rng.uniform(-0.2, -0.05), rng.uniform(0.28, 0.38),
                  rng.uniform(0.2, 0.28), rng.uniform(-0.5, 0.5), _harmonics(rng, 0.18)) & inner
    kidneys = np.zeros_like(body)
    for side in (-1, 1):
        kidneys |= _blob(x, y, side * rng.uniform(0.38, 0.48), rng.uniform(0.22, 0.32), rng.uniform(0.08, 0.11),
                         rng.uniform(0.12, 0.16), side * rng.uniform(0.2, 0.6), _harmonics(rng, 0.08))
    kidneys &= inner & ~liver
    spine_cx, spine_cy = rng.uniform(-0.03, 0.03), rng.uniform(0.4, 0.46)
    outer_r = rng.uniform(0.1, 0.13)
    bone_outer = _blob(x, y, spine_cx, spine_cy, outer_r, outer_r * rng.uniform(0.85, 1.0), 0.0, _harmonics(rng, 0.06))
    marrow = _blob(x, y, spine_cx, spine_cy, outer_r * 0.6, outer_r * 0.55, 0.0, [])
    bone = bone_outer & ~marrow & inner
    lesions = np.zeros_like(body)
    candidates = np.argwhere(ndimage.binary_erosion(liver, iterations=max(2, size // 40)))
    for _ in range(int(rng.integers(0, 4)) if len(candidates) else 0):
        cy_px, cx_px = candidates[rng.integers(len(candidates))]
        r = rng.uniform(0.025, 0.055)
        lesions |= _blob(x, y, x[cy_px, cx_px], y[cy_px, cx_px], r, r * rng.uniform(0.7, 1.0),
                         rng.uniform(0, np.pi), _harmonics(rng, 0.15))
    lesions &= liver

    label = np.zeros((size, size), np.uint8)
    for index, mask in ((1, body), (2, liver), (3, kidneys), (4, bone), (5, lesions)):
        label[mask] = index

    t = _INTENSITY[modality]
    image = np.full((size, size), t["air"])
    image[body] = t["fat"]
    image[inner] = t["muscle"]
    image[liver] = t["liver"]
    image[kidneys] = t["kidney"]
    image[bone_outer & inner] = t["cortex"]
    image[marrow & inner] = t["marrow"]
    image[lesions] = t["lesion"] + rng.normal(0, 0.15) * (t["liver"] - t["lesion"])
    texture = _smooth_field(rng, size, 16, 0.35 * _NOISE[modality])
    image = ndimage.gaussian_filter(image + texture * body, sigma=0.6 * size / 256)
    if modality == "mr":
        image = image * (1.0 + _smooth_field(rng, size, 3, 0.15))  # coil bias field
        image = np.abs(image + rng.normal(0, _NOISE["mr"], image.shape))  # magnitude (Rician-like) noise
        lo, hi = np.percentile(image, (0.5, 99.5))
    else:
        image = image + rng.normal(0, _NOISE["ct"], image.shape)
        level, width = _CT_WINDOW
        lo, hi = level - width / 2, level + width / 2
    image = np.clip((image - lo) / (hi - lo), 0, 1)
    return (image * 255 + 0.5).astype(np.uint8), label, modality
