"""Boxes and points for a scan, from a JSON file, as 2D prompts on the slices the model sees.

    {"coordinates": "voxel",                       # or "world": RAS+ mm, the space of the scan's affine
     "objects": [
       {"label": "liver", "box": [[40, 60, 12], [90, 110, 20]]},       # a 3D box: one 2D box per slice 12..20
       {"label": 3, "box": [[10, 70, 15], [30, 95, 15]]},              # both corners on one slice: that slice
       {"label": 3, "points": [[20, 80, 15, 1], [25, 90, 15, 0]]}]}    # points (i, j, k[, 1 fg | 0 bg])

For a volume, corners and points are 3D: voxel indices ``i, j, k`` in stored order (a box's corners are its
first and last voxels, both inside it; a point is a voxel's centre), or world mm (a box is the region
between its corners, the bounding box of its 8 corners in voxel space). A box spans every slice along the
run's axis between its corners, the same 2D box on each: one box propagated, or one slice when both
corners lie on it. In-plane coordinates follow SAM's (and the training prompts'): x the column and y the
row of ``np.take(volume, slice, axis)``, pixel ``(r, c)`` covering ``[c, c + 1) x [r, r + 1)``. For a 2D
image, boxes ``[x0, y0, x1, y1]`` and points ``[x, y(, label)]`` are in those pixel coordinates directly,
as the predictor takes them (``[0, 0, W, H]`` is the whole image). ``label`` is a class index (1..255)
or one of the run's class names (default: the object's position, 1, 2, ...); later objects are painted
over earlier ones.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from samjax.errors import DataError


@dataclasses.dataclass
class SlicePrompt:
    """One object's prompt on one slice: ``box`` (4,) ``x0, y0, x1, y1`` and/or ``points`` (n, 2) ``x, y`` with
    ``point_labels`` (n,) in the slice's pixels (x the column of ``np.take(volume, slice, axis)``)."""

    slice: int
    label: int
    object: int
    box: np.ndarray | None = None
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None


def read_prompts(path: str, shape: tuple[int, ...], affine=None, axis: int = 2, class_names=()) -> list[SlicePrompt]:
    """The prompts of the JSON file ``path`` for a scan of spatial ``shape`` (3D volume, or ``(H, W)``)."""
    try:
        with open(path) as f:
            spec = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the prompts ({e}); see samjax/scans/prompts.py for the format") from None
    return parse_prompts(spec, shape, affine, axis, class_names, source=path)


def _label(value, index: int, class_names, where: str) -> int:
    if value is None:
        if index + 1 > 255:
            raise DataError(f"{where}: more than 255 objects without a label; give each a \"label\" (1..255)")
        return index + 1
    if isinstance(value, str):
        if value in class_names[1:]:
            return list(class_names).index(value)
        raise DataError(f"{where}: label {value!r} is not a class of this model ({', '.join(class_names[1:]) or 'none'})")
    if not isinstance(value, int) or not 1 <= value <= 255:
        raise DataError(f"{where}: label {value!r} must be a class name or an integer 1..255")
    return value


def _numbers(value, n: tuple[int, ...], where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: expected numbers, got {value!r}") from None
    if arr.ndim != 1 or arr.shape[0] not in n or not np.all(np.isfinite(arr)):
        raise DataError(f"{where}: expected {' or '.join(map(str, n))} numbers, got {value!r}")
    return arr


def parse_prompts(spec: dict, shape, affine=None, axis: int = 2, class_names=(), source: str = "prompts"):
    """The prompts of a parsed JSON ``spec`` (see the module docstring) for a scan of spatial ``shape``."""
    if not isinstance(spec, dict) or not isinstance(spec.get("objects"), list) or not spec["objects"]:
        raise DataError(f"{source}: expected {{\"objects\": [{{\"box\": ..., \"points\": ..., \"label\": ...}}, ...]}}")
    coordinates = spec.get("coordinates", "voxel")
    if coordinates not in ("voxel", "world") or (coordinates == "world" and (len(shape) != 3 or affine is None)):
        raise DataError(f"{source}: coordinates {coordinates!r} must be 'voxel' or (volumes) 'world'")
    if len(shape) == 3:
        to_plane = _VolumePlane(shape, axis, None if coordinates == "voxel" else affine)
    else:
        to_plane = _ImagePlane(shape)
    out: list[SlicePrompt] = []
    for index, obj in enumerate(spec["objects"]):
        where = f"{source}: object {index}"
        if not isinstance(obj, dict) or not ({"box", "points"} & set(obj)):
            raise DataError(f"{where}: give a \"box\" and/or \"points\"")
        label = _label(obj.get("label"), index, class_names, where)
        per_slice: dict[int, SlicePrompt] = {}
        if "box" in obj:
            first, last, box = to_plane.box(obj["box"], f"{where} box")
            for k in range(first, last + 1):
                per_slice[k] = SlicePrompt(k, label, index, box=box)
        points = obj.get("points", [])
        if not isinstance(points, list):
            raise DataError(f"{where}: \"points\" is a list of points, got {points!r}")
        for p in points:
            k, xy, kind = to_plane.point(p, f"{where} point")
            prompt = per_slice.setdefault(k, SlicePrompt(k, label, index))
            prompt.points = xy[None] if prompt.points is None else np.vstack([prompt.points, xy])
            prompt.point_labels = np.append(prompt.point_labels if prompt.point_labels is not None else [], kind)
        out.extend(per_slice[k] for k in sorted(per_slice))
    return out


def _point_label(p: np.ndarray, dims: int, where: str) -> int:
    if len(p) == dims:
        return 1
    if p[dims] not in (0.0, 1.0):
        raise DataError(f"{where}: the label {p[dims]:g} must be 1 (foreground) or 0 (background)")
    return int(p[dims])


class _ImagePlane:
    """A 2D image's prompts: SAM's pixel coordinates, inside ``[0, W] x [0, H]``."""

    def __init__(self, shape):
        self.h, self.w = shape[:2]

    def _check(self, x, y, where):
        if not (0 <= x <= self.w and 0 <= y <= self.h):
            raise DataError(f"{where}: ({x:g}, {y:g}) lies outside the {self.w} x {self.h} image")

    def box(self, value, where):
        b = _numbers(value, (4,), where)
        x0, y0, x1, y1 = min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])
        self._check(x0, y0, where)
        self._check(x1, y1, where)
        return 0, 0, np.array([x0, y0, x1, y1])

    def point(self, value, where):
        p = _numbers(value, (2, 3), where)
        self._check(p[0], p[1], where)
        return 0, p[:2].copy(), _point_label(p, 2, where)


class _VolumePlane:
    """A volume's prompts: voxel indices (or world mm through ``affine``) -> slice and in-plane pixel coordinates."""

    def __init__(self, shape, axis: int, affine=None):
        self.shape = tuple(shape)
        self.axis = axis % 3
        self.rows, self.cols = [a for a in range(3) if a != self.axis]
        self.to_voxel = None if affine is None else np.linalg.inv(np.asarray(affine, np.float64))

    def _voxel(self, p, where):
        v = p if self.to_voxel is None else (self.to_voxel @ np.append(p, 1.0))[:3]
        if np.any(v < -0.5) or np.any(v > np.asarray(self.shape) - 0.5):
            raise DataError(f"{where}: {np.round(v, 2).tolist()} (voxel) lies outside the scan of shape {self.shape}")
        return v

    def _slice(self, v) -> int:
        return int(np.clip(np.floor(v[self.axis] + 0.5), 0, self.shape[self.axis] - 1))

    def box(self, value, where):
        if not (isinstance(value, list) and len(value) == 2):
            raise DataError(f"{where}: a volume's box is two 3D corners [[i, j, k], [i, j, k]]")
        a, b = (_numbers(c, (3,), where) for c in value)
        if self.to_voxel is None:  # first and last voxel, both inside: edges at min and max + 1
            lo, hi = (self._voxel(np.minimum(a, b), where), self._voxel(np.maximum(a, b), where))
            edges_lo, edges_hi = lo, hi + 1.0
        else:  # a region of space: the bounding box of its 8 corners, voxel centres at +0.5
            corners = np.array([[(a, b)[m >> d & 1][d] for d in range(3)] for m in range(8)])
            v = np.array([self._voxel(c, where) for c in corners])
            lo, hi = v.min(0), v.max(0)
            edges_lo, edges_hi = lo + 0.5, hi + 0.5
        box = np.array([edges_lo[self.cols], edges_lo[self.rows], edges_hi[self.cols], edges_hi[self.rows]])
        box = np.clip(box, 0, [self.shape[self.cols], self.shape[self.rows]] * 2)
        return self._slice(lo), self._slice(hi), box

    def point(self, value, where):
        p = _numbers(value, (3, 4), where)
        v = self._voxel(p[:3], where)
        return self._slice(v), np.array([v[self.cols] + 0.5, v[self.rows] + 0.5]), _point_label(p, 3, where)
