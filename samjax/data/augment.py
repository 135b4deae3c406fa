"""Deterministic augmentations for medical segmentation training, as Grain ``RandomMap`` transforms.

An element is a dict of NumPy arrays for one example (no batch axis): ``"image"`` uint8 ``(H, W)`` or
``(H, W, C)`` with C in {1, 3}, and optionally ``"label"`` uint8 ``(H, W)`` class indices (0 =
background). Other keys pass through untouched. The transforms run before resizing to the model's
size, at the image's own (possibly non-square) size, and keep every shape and dtype.

Conventions:
- Each transform is a frozen, picklable dataclass and a pure function of ``(element, rng)``; it draws
  the same random numbers whatever the number of channels, and never mutates its input.
- Each applies with probability ``p`` (one ``rng.random()`` draw first); when it does not apply the
  element is returned as is.
- Geometric transforms move image and label with one and the same map, every image channel alike.
  Images are resampled bilinearly in float32, then rounded and clipped back to their dtype; labels by
  nearest neighbour, so no new class values appear. Pixels mapped from outside the image are filled
  with 0 in both the image and the label (``mode="constant"``): black, background.
- Intensity transforms touch the image only.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping

import grain
import numpy as np
from scipy import ndimage

_MODE = "constant"  # fill outside the image with 0 (image black, label background)
_FLIP_AXES = {"vertical": 0, "horizontal": 1}


def _to_dtype(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip float ``x`` into the range of integer ``dtype`` (plain cast for float dtypes)."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        x = np.clip(np.rint(x), info.min, info.max)
    return x.astype(dtype)


def _warp(element: dict, warp) -> dict:
    """Apply ``warp(array2d, order) -> array2d`` to each image channel (order 1) and the label (order 0)."""
    image = element["image"]
    f = image.astype(np.float32)
    if f.ndim == 2:
        out = warp(f, 1)
    else:
        out = np.stack([warp(f[..., c], 1) for c in range(f.shape[-1])], axis=-1)
    result = dict(element, image=_to_dtype(out, image.dtype))
    if "label" in element:
        result["label"] = warp(np.asarray(element["label"]), 0)
    return result


def _check_p(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability p must be in [0, 1], got {p}")


@dataclasses.dataclass(frozen=True)
class RandomFlip(grain.transforms.RandomMap):
    """Mirror image and label; each axis in ``axes`` flips independently with probability ``p``.

    ``"horizontal"`` reverses columns (W), ``"vertical"`` rows (H). A left-right flip of an axial slice
    swaps the patient's anatomical sides: fine for side-agnostic classes, but disable it (or remap the
    labels) when classes are lateralised, e.g. "left kidney" vs "right kidney".
    """

    p: float = 0.5
    axes: tuple[str, ...] = ("horizontal",)

    def __post_init__(self):
        _check_p(self.p)
        object.__setattr__(self, "axes", tuple(self.axes))
        unknown = [a for a in self.axes if a not in _FLIP_AXES]
        if unknown:
            raise ValueError(f"unknown flip axes {unknown}; use {sorted(_FLIP_AXES)}")

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        axes = tuple(_FLIP_AXES[a] for a in self.axes if rng.random() < self.p)
        if not axes:
            return element
        result = dict(element, image=np.ascontiguousarray(np.flip(element["image"], axes)))
        if "label" in element:
            result["label"] = np.ascontiguousarray(np.flip(element["label"], axes))
        return result


@dataclasses.dataclass(frozen=True)
class RandomRotate90(grain.transforms.RandomMap):
    """Rotate image and label by ``k * 90`` degrees (``np.rot90`` over H, W) with probability ``p``.

    Square images take k uniform in {1, 2, 3}; non-square ones only k = 2 (180 degrees), since a
    quarter turn would swap H and W and shapes must stay fixed.
    """

    p: float = 0.5

    def __post_init__(self):
        _check_p(self.p)

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        if rng.random() >= self.p:
            return element
        k = int(rng.integers(1, 4))  # drawn for every shape, so the stream does not depend on it
        h, w = element["image"].shape[:2]
        k = k if h == w else 2
        result = dict(element, image=np.ascontiguousarray(np.rot90(element["image"], k, axes=(0, 1))))
        if "label" in element:
            result["label"] = np.ascontiguousarray(np.rot90(element["label"], k, axes=(0, 1)))
        return result


@dataclasses.dataclass(frozen=True)
class RandomAffine(grain.transforms.RandomMap):
    """One random similarity transform about the image center, with probability ``p``.

    Angle uniform in ``[-degrees, degrees]``, isotropic scale uniform in ``scale``, shift uniform in
    ``[-translate, translate]`` times H (rows) and W (columns) separately. One
    ``scipy.ndimage.affine_transform`` matrix for image (bilinear) and label (nearest); outside is 0.
    """

    p: float = 0.5
    degrees: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.05

    def __post_init__(self):
        _check_p(self.p)
        object.__setattr__(self, "scale", tuple(float(s) for s in self.scale))
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")
        if self.degrees < 0 or self.translate < 0:
            raise ValueError("degrees and translate must be >= 0")

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        if rng.random() >= self.p:
            return element
        theta = np.deg2rad(rng.uniform(-self.degrees, self.degrees))
        s = rng.uniform(*self.scale)
        shift = rng.uniform(-self.translate, self.translate, 2)
        h, w = element["image"].shape[:2]
        center = np.array([(h - 1) / 2, (w - 1) / 2])
        shift = shift * np.array([h, w])
        # Forward map (row, col): out = center + shift + s R (in - center); scipy wants out -> in.
        c, sn = np.cos(theta), np.sin(theta)
        inverse = np.array([[c, sn], [-sn, c]]) / s
        offset = center - inverse @ (center + shift)

        def warp(x, order):
            return ndimage.affine_transform(x, inverse, offset, order=order, mode=_MODE, cval=0)

        return _warp(element, warp)


@dataclasses.dataclass(frozen=True)
class RandomIntensity(grain.transforms.RandomMap):
    """Gamma, contrast and brightness on the image only (uint8, full scale 255), with probability ``p``.

    In order, on float32: ``x = 255 (x / 255) ** gamma`` with gamma log-uniform in ``gamma``; contrast
    ``x = m + c (x - m)`` about the image mean ``m`` with c uniform in ``contrast``; brightness
    ``x += 255 b`` with b uniform in ``[-brightness, brightness]``; then rounded and clipped to 0..255.
    All channels share the parameters, so colours keep their hue. Each step is monotone.
    """

    p: float = 0.5
    brightness: float = 0.1
    contrast: tuple[float, float] = (0.8, 1.2)
    gamma: tuple[float, float] = (0.8, 1.25)

    def __post_init__(self):
        _check_p(self.p)
        for name in ("contrast", "gamma"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2 or not 0 < value[0] <= value[1]:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {value}")
            object.__setattr__(self, name, value)
        if self.brightness < 0:
            raise ValueError("brightness must be >= 0")

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        if rng.random() >= self.p:
            return element
        gamma = np.exp(rng.uniform(*np.log(self.gamma)))
        contrast = rng.uniform(*self.contrast)
        brightness = rng.uniform(-self.brightness, self.brightness)
        image = element["image"]
        x = 255.0 * (image.astype(np.float32) / 255.0) ** np.float32(gamma)
        x = x.mean() + np.float32(contrast) * (x - x.mean())
        x = x + np.float32(255.0 * brightness)
        return dict(element, image=_to_dtype(x, image.dtype))


@dataclasses.dataclass(frozen=True)
class RandomElastic(grain.transforms.RandomMap):
    """Smooth random deformation of image and label, with probability ``p``.

    Sizes are fractions of the image's shorter side ``n = min(H, W)``, so the same setting deforms
    a 128 and a 512 pixel scan alike: uniform noise in [-1, 1] per axis is Gaussian-filtered with
    ``sigma * n`` pixels (the scale of the wobble), scaled so that its largest component is
    ``alpha * n`` pixels (the largest displacement), and sampled with ``map_coordinates``, order 1
    for the image and 0 for the label. For speed the noise is drawn and filtered on a grid coarser by
    ``~sigma * n / 4`` and upsampled bilinearly, which changes nothing visible in a field this smooth.
    """

    p: float = 0.2
    alpha: float = 0.04
    sigma: float = 0.08

    def __post_init__(self):
        _check_p(self.p)
        if self.alpha < 0 or self.sigma <= 0:
            raise ValueError("alpha must be >= 0 and sigma > 0")

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        if rng.random() >= self.p:
            return element
        h, w = element["image"].shape[:2]
        n = min(h, w)
        sigma = self.sigma * n
        factor = max(1, int(sigma // 4))
        coarse = (-(-h // factor), -(-w // factor))
        noise = rng.uniform(-1.0, 1.0, (2, *coarse))
        field = np.stack([ndimage.gaussian_filter(f, sigma / factor) for f in noise])
        if factor > 1:
            field = np.stack([ndimage.zoom(f, (h / coarse[0], w / coarse[1]), order=1) for f in field])
        field *= self.alpha * n / max(np.abs(field).max(), 1e-12)
        coords = np.mgrid[0:h, 0:w].astype(np.float32) + field.astype(np.float32)

        def warp(x, order):
            return ndimage.map_coordinates(x, coords, order=order, mode=_MODE, cval=0)

        return _warp(element, warp)


_BUILDERS = {  # in the order they are applied: geometric first, intensity last
    "flip": RandomFlip,
    "rotate90": RandomRotate90,
    "affine": RandomAffine,
    "elastic": RandomElastic,
    "intensity": RandomIntensity,
}

DEFAULT_CONFIG = types.MappingProxyType(
    {"flip": 0.5, "rotate90": 0.0, "affine": 0.5, "elastic": 0.2, "intensity": 0.5}
)


def augmentations(cfg: Mapping | None = DEFAULT_CONFIG) -> list[grain.transforms.RandomMap]:
    """The augmentation list for ``cfg``, in the fixed order flip, rotate90, affine, elastic, intensity.

    ``cfg`` maps a name to its probability (0 or missing disables it), or to a mapping of the
    transform's fields, e.g. ``{"affine": {"p": 0.5, "degrees": 10}}``; unset fields keep their
    defaults. A plain dict or an ``ml_collections.ConfigDict``; None, ``"none"`` or empty gives [].
    Raises ValueError naming unknown keys.
    """
    if cfg is None or (isinstance(cfg, str) and cfg.lower() == "none"):
        return []
    if hasattr(cfg, "to_dict"):  # ml_collections.ConfigDict
        cfg = cfg.to_dict()
    unknown = sorted(set(cfg) - set(_BUILDERS))
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; known: {list(_BUILDERS)}")
    out = []
    for name, cls in _BUILDERS.items():
        value = cfg.get(name)
        if value is None:
            continue
        if hasattr(value, "to_dict"):
            value = value.to_dict()
        kwargs = dict(value) if isinstance(value, Mapping) else {"p": float(value)}
        if kwargs.get("p", cls.p) > 0:
            out.append(cls(**kwargs))
    return out
