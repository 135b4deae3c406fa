"""Boxes and points for a scan, from a JSON file, as 2D prompts on the slices the model sees.

    {"coordinates": "voxel",                       # or "world": RAS+ mm, the space of the scan's affine
     "objects": [
       {"label": "liver", "box": [[40, 60, 12], [90, 110, 20]]},       # a 3D box: one 2D box per slice 12..20
       {"label": 3, "box": [[10, 70, 15], [30, 95, 15]]},              # both corners on one slice: that slice
       {"label": 3, "points": [[20, 80, 15, 1], [25, 90, 15, 0]]}]}    # points (i, j, k[, 1 fg | 0 bg])

For a volume, corners and points are 3D (voxel indices ``i, j, k`` in stored order, or world mm); a box
spans every slice along the run's axis between its corners' (rounded) positions, the same 2D box on each:
one box propagated, or one slice when both corners lie on it. For a 2D image, boxes are ``[x0, y0, x1, y1]``
and points ``[x, y(, label)]`` in pixels (x the column). ``label`` is a class index (1..255) or one of the
run's class names (default: the object's position, 1, 2, ...); later objects are painted over earlier ones.
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
        raise DataError(f"{path}: cannot read the prompts ({e}); see samjax/scan_prompts.py for the format") from None
    return parse_prompts(spec, shape, affine, axis, class_names, source=path)


def _label(value, index: int, class_names, where: str) -> int:
    if value is None:
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
    volume = len(shape) == 3
    if coordinates not in ("voxel", "world") or (coordinates == "world" and (not volume or affine is None)):
        raise DataError(f"{source}: coordinates {coordinates!r} must be 'voxel' or (volumes) 'world'")
    dims = 3 if volume else 2
    to_voxel = np.linalg.inv(np.asarray(affine, np.float64)) if coordinates == "world" else None
    in_plane = [a for a in range(3) if a != axis % 3] if volume else [0, 1]

    def voxel(p):
        return (to_voxel @ np.append(p, 1.0))[:3] if to_voxel is not None else p

    def check(v, where):
        if np.any(v < -0.5) or np.any(v > np.asarray(shape[:dims]) - 0.5):
            raise DataError(f"{where}: {np.round(v, 2).tolist()} (voxel) lies outside the scan of shape {tuple(shape)}")

    def plane(v):  # voxel -> (slice, x, y) with x the column of the 2D slice
        if not volume:
            return 0, v[0], v[1]
        return int(round(v[axis % 3])), v[in_plane[1]], v[in_plane[0]]

    out: list[SlicePrompt] = []
    for index, obj in enumerate(spec["objects"]):
        where = f"{source}: object {index}"
        if not isinstance(obj, dict) or not ({"box", "points"} & set(obj)):
            raise DataError(f"{where}: give a \"box\" and/or \"points\"")
        label = _label(obj.get("label"), index, class_names, where)
        per_slice: dict[int, SlicePrompt] = {}
        if "box" in obj:
            if volume:
                corners = obj["box"]
                if not (isinstance(corners, list) and len(corners) == 2):
                    raise DataError(f"{where}: a volume's box is two 3D corners [[i, j, k], [i, j, k]]")
                a, b = (voxel(_numbers(c, (3,), f"{where} box")) for c in corners)
                for v in (a, b):
                    check(v, f"{where} box corner")
                (sa, xa, ya), (sb, xb, yb) = plane(a), plane(b)
                box = np.array([min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)])
                for k in range(min(sa, sb), max(sa, sb) + 1):
                    per_slice[k] = SlicePrompt(k, label, index, box=box)
            else:
                box = _numbers(obj["box"], (4,), f"{where} box")
                check(box[[1, 0]], f"{where} box corner")
                check(box[[3, 2]], f"{where} box corner")
                per_slice[0] = SlicePrompt(0, label, index, box=np.array([*np.minimum(box[:2], box[2:]),
                                                                          *np.maximum(box[:2], box[2:])]))
        for p in obj.get("points", []) or []:
            p = _numbers(p, (dims, dims + 1), f"{where} point")
            kind = 1 if len(p) == dims else int(p[dims])
            if kind not in (0, 1):
                raise DataError(f"{where} point: the label {p[dims]} must be 1 (foreground) or 0 (background)")
            v = voxel(p[:dims]) if volume else p[[1, 0]]  # 2D points are (x, y): check as (row, column)
            check(v, f"{where} point")
            k, x, y = plane(v) if volume else (0, p[0], p[1])
            prompt = per_slice.setdefault(k, SlicePrompt(k, label, index))
            prompt.points = np.array([[x, y]]) if prompt.points is None else np.vstack([prompt.points, [x, y]])
            prompt.point_labels = np.append(prompt.point_labels if prompt.point_labels is not None else [], kind)
        out.extend(per_slice[k] for k in sorted(per_slice))
    return out
