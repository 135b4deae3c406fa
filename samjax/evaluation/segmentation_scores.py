"""Every score of a segmentation evaluation, per class, per 2D image or per restacked 3D volume.

For each scored unit (an image, or a case's slices stacked in slice order) and each foreground class:
Dice ``2|P∩G| / (|P|+|G|)``, IoU ``|P∩G| / |P∪G|``, HD95 and NSD (``samjax.evaluation.surface_distance``, in mm
when the pixel spacing is known, in pixels otherwise). A class absent from both the prediction and the
label of a unit has no score there (NaN, left out of every mean), as in ``samjax.evaluation.metrics``; absent from
one of them only: Dice = IoU = NSD = 0 and HD95 = the unit's diagonal.

The distance transforms run on a thread pool (SciPy releases the GIL), so they overlap with the device
computing the next batch; :meth:`SegmentationScores.rows` waits for them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from samjax.evaluation import surface_distance

METRICS = ("dice", "iou", "hd95", "nsd")
HIGHER_IS_BETTER = {"dice": True, "iou": True, "hd95": False, "nsd": True}


def score_unit(pred: np.ndarray, label: np.ndarray, class_names: Sequence[str], spacing, tolerance: float) -> dict:
    """``{metric: (C,) float array}`` for one image or volume of class maps (NaN: background, absent class)."""
    pred, label = np.asarray(pred), np.asarray(label)
    n = len(class_names)
    out = {m: np.full(n, np.nan) for m in METRICS}
    for c in range(1, n):
        p, g = pred == c, label == c
        inter, ps, gs = int((p & g).sum()), int(p.sum()), int(g.sum())
        if ps + gs == 0:
            continue
        out["dice"][c] = 2 * inter / (ps + gs)
        out["iou"][c] = inter / (ps + gs - inter)
        out["hd95"][c], out["nsd"][c] = surface_distance.hd95_and_nsd(p, g, spacing, tolerance)
    return out


class SegmentationScores:
    """Collects class maps image by image and scores them per image or per case (volume).

    ``per="image"``: each :meth:`add` is scored at once (on the pool). ``per="volume"`` (or ``"case"``):
    the slices of a case are kept until :meth:`rows`, then stacked by slice index into ``(Z, H, W)``
    with spacing ``(slice_spacing[case], *in-plane spacing)``; a case whose slice spacing is unknown
    takes its in-plane spacing's mean, and is listed in :attr:`notes`.
    """

    def __init__(self, class_names: Sequence[str], per: str = "image", tolerance: float = 2.0,
                 slice_spacing: dict[str, float] | None = None, workers: int | None = None):
        if per not in ("image", "volume", "case"):
            raise ValueError(f"per must be 'image' or 'volume', got {per!r}")
        if not tolerance > 0:
            raise ValueError(f"the surface Dice tolerance must be positive, got {tolerance}")
        self.class_names = tuple(class_names)
        self.per = "image" if per == "image" else "volume"
        self.tolerance = float(tolerance)
        self.slice_spacing = dict(slice_spacing or {})
        self.notes: list[str] = []
        self._pool = ThreadPoolExecutor(max_workers=workers or max(1, os.cpu_count() or 1))
        self._pending: list[tuple[str, int, Future]] = []
        self._slices: dict[str, list[tuple[int, np.ndarray, np.ndarray, tuple[float, float]]]] = {}

    def add(self, pred: np.ndarray, label: np.ndarray, case: str, slice_index: int = 0, spacing=(1.0, 1.0)) -> None:
        """One 2D image: predicted and true class maps ``(H, W)`` of its real pixels, its pixel spacing."""
        pred, label = np.asarray(pred, np.uint8), np.asarray(label, np.uint8)
        if pred.shape != label.shape or pred.ndim != 2:
            raise ValueError(f"pred and label must be (H, W) class maps of one shape, got {pred.shape}, {label.shape}")
        spacing = tuple(float(s) for s in spacing)
        if self.per == "image":
            future = self._pool.submit(score_unit, pred, label, self.class_names, spacing, self.tolerance)
            self._pending.append((f"{case}/{int(slice_index)}", 1, future))
        else:
            self._slices.setdefault(str(case), []).append((int(slice_index), pred, label, spacing))

    def _submit_volumes(self) -> None:
        unknown = []
        for case, slices in self._slices.items():
            slices.sort(key=lambda s: s[0])
            shapes = {s[1].shape for s in slices}
            if len(shapes) > 1:
                raise ValueError(f"case {case}: its slices have different sizes {sorted(shapes)}; "
                                 "score it per image (--per image)")
            in_plane = slices[0][3]
            thickness = self.slice_spacing.get(case)
            if thickness is None:
                thickness = float(np.mean(in_plane))
                if len(slices) > 1:
                    unknown.append(case)
            pred = np.stack([s[1] for s in slices])
            label = np.stack([s[2] for s in slices])
            future = self._pool.submit(score_unit, pred, label, self.class_names, (thickness, *in_plane),
                                       self.tolerance)
            self._pending.append((case, len(slices), future))
        if unknown:
            self.notes.append(f"slice spacing unknown for {len(unknown)} case(s); taken equal to the in-plane spacing")
        self._slices = {}

    def rows(self) -> list[dict]:
        """One row per unit and foreground class: ``unit``, ``slices``, ``class``, and the four metrics
        (None where the class is absent from both maps). Waits for pending work; call once."""
        if self._slices:
            self._submit_volumes()
        rows = []
        for unit, n, future in self._pending:
            scores = future.result()
            for c in range(1, len(self.class_names)):
                row = {"unit": unit, "slices": n, "class": self.class_names[c]}
                row.update({m: (None if math.isnan(scores[m][c]) else float(scores[m][c])) for m in METRICS})
                rows.append(row)
        self._pending = []
        self._pool.shutdown(wait=False)
        return rows


def summarize(rows: Sequence[dict], class_names: Sequence[str]) -> dict:
    """``metrics``: per class and metric, mean, standard deviation, median and count over the units where
    the class is defined; ``per_class``: each class's mean Dice; ``mean_<metric>``: the mean of the per-class
    means (foreground classes with a value)."""
    per_class = {}
    for name in class_names[1:]:
        stats = {}
        for m in METRICS:
            values = np.array([r[m] for r in rows if r["class"] == name and r[m] is not None], float)
            stats[m] = {"mean": _stat(np.mean, values), "std": _stat(np.std, values),
                        "median": _stat(np.median, values), "n": int(values.size)}
        per_class[name] = stats
    out = {"metrics": per_class, "per_class": {name: s["dice"]["mean"] for name, s in per_class.items()}}
    for m in METRICS:
        means = [s[m]["mean"] for s in per_class.values() if s[m]["mean"] is not None]
        out[f"mean_{m}"] = float(np.mean(means)) if means else None
    return out


def _stat(fn, values: np.ndarray):
    return float(fn(values)) if values.size else None
