"""Boundary metrics of binary masks in 2D or 3D: 95th-percentile Hausdorff distance and normalized surface Dice.

Both compare the boundaries of a predicted mask ``P`` and a reference mask ``G`` in physical units
(``spacing``: mm per axis, or 1 = pixels). A mask's boundary is its pixels with a background neighbour
along an axis (the mask minus its erosion by the cross-shaped structuring element; the image border
counts as background). With ``d(x, B)`` the Euclidean distance from pixel ``x`` to the nearest pixel
of boundary ``B``:

* **HD95** = max( 95th percentile of ``d(p, ∂G)`` over ``p ∈ ∂P``, 95th percentile of ``d(g, ∂P)``
  over ``g ∈ ∂G`` ) (linear interpolation between order statistics), as MONAI's
  ``compute_hausdorff_distance(percentile=95)``;
* **NSD at tolerance τ** = ( #{p ∈ ∂P : d(p, ∂G) ≤ τ} + #{g ∈ ∂G : d(g, ∂P) ≤ τ} ) / ( |∂P| + |∂G| ),
  the share of both boundaries within τ of the other (Nikolov et al. 2021), counted in boundary pixels
  as MONAI's ``compute_surface_dice``.

Empty masks, as the medical segmentation literature handles them: both empty -> no value (NaN; the
class is absent from that image or volume and is excluded from the means, as for Dice); exactly one
empty -> NSD 0 and HD95 = the diagonal of the image or volume (the largest distance it can hold), so a
missed or hallucinated structure counts as the worst case instead of disappearing from the mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def boundary(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a bool mask: those with a background (or out-of-image) axis neighbour."""
    mask = np.asarray(mask, bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _spacing(spacing, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), (ndim,)))
    if not all(s > 0 and math.isfinite(s) for s in spacing):
        raise ValueError(f"spacing must be positive and finite, got {spacing}")
    return spacing


def boundary_distances(pred: np.ndarray, label: np.ndarray, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """``(d(∂P -> ∂G), d(∂G -> ∂P))``: the distance from each boundary pixel of one mask to the other's
    boundary, in the units of ``spacing``. Both masks must be non-empty.

    Computed on the bounding box of ``P ∪ G`` plus one pixel (same values, far less work on large images).
    """
    pred, label = np.asarray(pred, bool), np.asarray(label, bool)
    sampling = _spacing(spacing, pred.ndim)
    union = pred | label
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(union))
    pb, lb = boundary(pred)[box], boundary(label)[box]
    to_label = ndimage.distance_transform_edt(~lb, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~pb, sampling=sampling)
    return to_label[pb], to_pred[lb]


def diagonal(shape: Sequence[int], spacing=None) -> float:
    """The longest distance inside an image of ``shape``: what HD95 is when exactly one mask is empty."""
    sampling = _spacing(spacing, len(shape))
    return float(math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(shape, sampling))))


def hd95_and_nsd(pred: np.ndarray, label: np.ndarray, spacing=None, tolerance: float = 1.0) -> tuple[float, float]:
    """HD95 and NSD at ``tolerance`` of two bool masks of one shape (see the module docstring for empties)."""
    pred, label = np.asarray(pred, bool), np.asarray(label, bool)
    if pred.shape != label.shape:
        raise ValueError(f"pred and label must share one shape, got {pred.shape} and {label.shape}")
    p_any, l_any = bool(pred.any()), bool(label.any())
    if not p_any and not l_any:
        return math.nan, math.nan
    if not (p_any and l_any):
        return diagonal(pred.shape, spacing), 0.0
    a, b = boundary_distances(pred, label, spacing)
    hd95 = max(float(np.percentile(a, 95)), float(np.percentile(b, 95)))
    nsd = (int((a <= tolerance).sum()) + int((b <= tolerance).sum())) / (a.size + b.size)
    return hd95, nsd


def per_class(pred: np.ndarray, label: np.ndarray, num_classes: int, spacing=None,
              tolerance: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """HD95 and NSD of every class ``1..C-1`` of two class maps (2D or 3D): two ``(C,)`` float arrays,
    NaN for the background column and for classes absent from both maps."""
    pred, label = np.asarray(pred), np.asarray(label)
    hd = np.full(num_classes, np.nan)
    nsd = np.full(num_classes, np.nan)
    for c in range(1, num_classes):
        hd[c], nsd[c] = hd95_and_nsd(pred == c, label == c, spacing, tolerance)
    return hd, nsd
