"""Dice evaluation for semantic segmentation: sufficient statistics, per-image and per-case means.

Dice of class ``c`` between a predicted class map and a label map is ``2 |A ∩ B| / (|A| + |B|)``,
``A`` and ``B`` the pixels of class ``c`` in the prediction and the label (valid pixels only). It
is computed from three additive counts per class, ``intersections = |A ∩ B|``,
``pred_sums = |A|`` and ``label_sums = |B|`` (:func:`dice_per_class` in NumPy, :func:`dice_jnp`
on device inside ``jit``), so it can be aggregated over a data set in three ways:

* per image (:class:`DiceAccumulator` ``mode="image"``): Dice of every image, then the mean over
  images;
* per case (``mode="case"``, alias ``"volume"``): counts summed over all slices of a case (the
  restacked 3D volume), Dice of every case, then the mean over cases (the usual 3D medical score);
* globally: counts summed over the whole data set, one Dice per class (``global_*`` results).

A class absent from both the prediction and the label of an image (or case) has ``|A| + |B| = 0``
and no Dice: it is skipped for that image, counting neither as 1 nor as 0. Class 0 is background
and is left out of ``mean_dice``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

MODES = ("image", "case", "volume")


def dice_per_class(pred, label, num_classes: int, valid=None, per_image: bool = False):
    """Dice sufficient statistics of integer class maps, in NumPy.

    Args:
      pred, label: int class maps of one shape ``(..., H, W)``, values in ``[0, num_classes)`` on
        valid pixels (a ``ValueError`` otherwise).
      num_classes: ``C``, background (class 0) included.
      valid: optional bool map broadcastable to ``(..., H, W)``; only its True pixels count.
      per_image: keep the leading axes: each output ``(..., C)`` instead of ``(C,)``.

    Returns:
      ``(intersections, pred_sums, label_sums)`` int64, each ``(C,)`` (summed over all leading axes)
      or ``(..., C)``: per class, the pixels where both maps have it, where ``pred`` has it, and where
      ``label`` has it.
    """
    pred, label = np.asarray(pred), np.asarray(label)
    if pred.shape != label.shape or pred.ndim < 2:
        raise ValueError(f"pred and label must share one (..., H, W) shape, got {pred.shape} and {label.shape}")
    for name, a in (("pred", pred), ("label", label)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise ValueError(f"{name} must be an integer class map, got dtype {a.dtype}")
    lead = pred.shape[:-2]
    n = int(np.prod(lead, dtype=np.int64))
    p = pred.reshape(n, -1).astype(np.int64)
    g = label.reshape(n, -1).astype(np.int64)
    v = np.ones(p.shape, bool) if valid is None else np.broadcast_to(np.asarray(valid, bool), pred.shape).reshape(n, -1)
    for name, a in (("pred", p), ("label", g)):
        bad = v & ((a < 0) | (a >= num_classes))
        if bad.any():
            raise ValueError(f"{name} has values outside [0, {num_classes}) on valid pixels: {np.unique(a[bad])[:8]}")
    offset = np.arange(n, dtype=np.int64)[:, None] * num_classes

    def count(index, keep):
        return np.bincount((offset + index)[keep], minlength=n * num_classes).reshape(n, num_classes)

    stats = (count(g, v & (p == g)), count(p, v), count(g, v))
    if per_image:
        return tuple(s.reshape(lead + (num_classes,)) for s in stats)
    return tuple(s.sum(0) for s in stats)


def dice_jnp(pred, label, num_classes: int, valid=None, per_image: bool = False):
    """On-device :func:`dice_per_class` (jit-able with ``num_classes`` and ``per_image`` static).

    Args:
      pred: either an int class map ``(..., H, W)``, or a one-hot (or soft probability) map
        ``(..., C, H, W)`` with the class axis third from last (the layout of SAM's logits).
      label: int class map ``(..., H, W)``; values outside ``[0, C)`` match no class.
      num_classes: ``C``.
      valid: optional bool map broadcastable to ``label``.
      per_image: keep the leading axes, as in :func:`dice_per_class`.

    Returns:
      ``(intersections, pred_sums, label_sums)``, each ``(C,)`` or ``(..., C)``: int32 counts for a
      class map, float32 (soft) sums for a one-hot ``pred``. For a class map with in-range values
      they equal :func:`dice_per_class` exactly.
    """
    label = jnp.asarray(label)
    classes = jnp.arange(num_classes).reshape(num_classes, 1, 1)
    g = label[..., None, :, :] == classes                                   # (..., C, H, W)
    keep = jnp.ones(label.shape, bool) if valid is None else jnp.broadcast_to(jnp.asarray(valid, bool), label.shape)
    keep = keep[..., None, :, :]
    pred = jnp.asarray(pred)
    if pred.ndim == label.ndim + 1:
        if pred.shape[-3] != num_classes:
            raise ValueError(f"one-hot pred has {pred.shape[-3]} classes, expected {num_classes}")
        p = jnp.where(keep, pred.astype(jnp.float32), 0.0)
        g = (g & keep).astype(jnp.float32)
    elif pred.shape == label.shape:
        p = ((pred[..., None, :, :] == classes) & keep).astype(jnp.int32)
        g = (g & keep).astype(jnp.int32)
    else:
        raise ValueError(f"pred {pred.shape} is neither a class map nor a one-hot map for label {label.shape}")
    stats = (jnp.sum(p * g, axis=(-2, -1)), jnp.sum(p, axis=(-2, -1)), jnp.sum(g, axis=(-2, -1)))
    if per_image:
        return stats
    lead = tuple(range(label.ndim - 2))
    return tuple(jnp.sum(s, axis=lead) for s in stats)


def dice_from_stats(intersections, pred_sums, label_sums):
    """``2 I / (P + L)`` elementwise, float64; NaN where ``P + L == 0`` (class absent from both)."""
    i, p, g = (np.asarray(a, np.float64) for a in (intersections, pred_sums, label_sums))
    den = p + g
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2.0 * i / np.where(den > 0, den, 1.0), np.nan)


def _nanmean(x, axis=None):
    """Mean ignoring NaN; NaN (without a warning) where every value is NaN."""
    x = np.asarray(x, np.float64)
    n = np.sum(~np.isnan(x), axis=axis)
    s = np.nansum(x, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


class DiceAccumulator:
    """Accumulates Dice over a data set, one batch at a time (NumPy, host side).

    ``mode="image"``: each image's per-class Dice is computed at once and averaged over images;
    ``mode="case"`` (or ``"volume"``): counts are summed per case id over all its slices, and Dice is
    computed per case and averaged over cases. Either way a class absent from both the prediction
    and the label of an image (case) is skipped for it, and a class's score is the mean over the
    images (cases) where it is defined; ``mean_dice`` is the mean of the foreground classes' scores
    (classes ``1..C-1``) that are defined. The global counts over everything seen are kept too.
    """

    def __init__(self, num_classes: int, mode: str = "image"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background and a class), got {num_classes}")
        self.num_classes = num_classes
        self.mode = "case" if mode == "volume" else mode
        self.reset()

    def reset(self):
        c = self.num_classes
        self.num_images = 0
        self._totals = np.zeros((3, c), np.int64)       # global intersections, pred_sums, label_sums
        self._dice_sum = np.zeros(c, np.float64)        # image mode
        self._dice_count = np.zeros(c, np.int64)
        self._cases: dict = {}                          # case mode: case id -> (3, C) counts

    def update(self, pred, label, valid=None, case_ids=None):
        """Adds a batch of class maps ``(..., H, W)`` (see :func:`dice_per_class`).

        ``case_ids``: in case mode, the case of each image (a sequence as long as the flattened
        leading axes, or one id for all of them); ignored in image mode.
        """
        stats = dice_per_class(pred, label, self.num_classes, valid, per_image=True)
        self.update_stats(*stats, case_ids=case_ids)

    def update_stats(self, intersections, pred_sums, label_sums, case_ids=None):
        """Adds per-image counts ``(..., C)`` (e.g. from :func:`dice_jnp` with ``per_image=True``)."""
        stats = np.stack([np.asarray(a).reshape(-1, self.num_classes) for a in
                          (intersections, pred_sums, label_sums)], axis=1)      # (N, 3, C)
        n = stats.shape[0]
        if self.mode == "case":
            if case_ids is None:
                raise ValueError("case mode needs case_ids")
            ids = [case_ids] * n if np.ndim(case_ids) == 0 else list(np.asarray(case_ids).reshape(-1))
            if len(ids) != n:
                raise ValueError(f"{len(ids)} case ids for {n} images")
            for cid, s in zip(ids, stats):
                cid = cid.item() if isinstance(cid, np.generic) else cid
                if cid in self._cases:
                    self._cases[cid] = self._cases[cid] + s
                else:
                    self._cases[cid] = s.copy()
        else:
            dice = dice_from_stats(stats[:, 0], stats[:, 1], stats[:, 2])        # (N, C)
            defined = ~np.isnan(dice)
            self._dice_sum += np.where(defined, dice, 0.0).sum(0)
            self._dice_count += defined.sum(0)
        self._totals += stats.sum(0).astype(np.int64)
        self.num_images += n

    def _names(self, class_names):
        fg = range(1, self.num_classes)
        if class_names is None:
            return [f"class_{c}" for c in fg]
        names = list(class_names)
        if len(names) == self.num_classes:
            return names[1:]
        if len(names) == self.num_classes - 1:
            return names
        raise ValueError(f"{len(names)} class names for {self.num_classes} classes (background included)")

    def result(self, class_names: Sequence[str] | None = None) -> dict:
        """The scores so far, foreground classes only.

        ``class_names``: ``C`` names (background first, then dropped) or ``C - 1`` foreground names;
        default ``class_1`` ... Returns a dict:

        * ``mean_dice``: mean over foreground classes of ``per_class`` (NaN entries skipped);
        * ``per_class``: ``{name: mean Dice over the images (cases) where the class is defined}``,
          NaN if it is defined in none;
        * ``count``: ``{name: number of images (cases) averaged over}``;
        * ``global_mean_dice``, ``global_per_class``: Dice of the counts summed over the data set;
        * ``mode``, ``num_images`` and, in case mode, ``num_cases``.
        """
        names = self._names(class_names)
        if self.mode == "case":
            stats = (np.stack(list(self._cases.values())) if self._cases
                     else np.zeros((0, 3, self.num_classes), np.int64))
            dice = dice_from_stats(stats[:, 0], stats[:, 1], stats[:, 2])
            per_class = _nanmean(dice, axis=0) if len(stats) else np.full(self.num_classes, np.nan)
            count = np.sum(~np.isnan(dice), axis=0)
        else:
            count = self._dice_count
            with np.errstate(invalid="ignore", divide="ignore"):
                per_class = np.where(count > 0, self._dice_sum / np.maximum(count, 1), np.nan)
        global_dice = dice_from_stats(*self._totals)
        out = {
            "mode": self.mode,
            "mean_dice": float(_nanmean(per_class[1:])),
            "per_class": {n: float(d) for n, d in zip(names, per_class[1:])},
            "count": {n: int(k) for n, k in zip(names, count[1:])},
            "global_mean_dice": float(_nanmean(global_dice[1:])),
            "global_per_class": {n: float(d) for n, d in zip(names, global_dice[1:])},
            "num_images": int(self.num_images),
        }
        if self.mode == "case":
            out["num_cases"] = len(self._cases)
        return out
