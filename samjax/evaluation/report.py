"""The files an evaluation leaves in its folder: numbers for machines, tables for people, pictures for both.

``metrics.json``   the summary: per class mean / std / median / n of Dice, IoU, HD95 and NSD, their means
                   over classes (``mean_dice``...), the protocol (split, unit, spacing units, tolerance)
``scores.csv``     one row per scored unit (image or volume) and class
``scores.md``      the per-class table, mean ± std
``dice_boxplot.png``  Dice per class over the units
``overlay_{best,median,worst}_<unit>.png``  image | ground truth | prediction of the units whose mean
                   foreground Dice is the highest, the median and the lowest
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence

import numpy as np

from samjax.evaluation import plots
from samjax.evaluation.segmentation_scores import METRICS
from samjax.utils.overlay import overlay_masks, save_png

_NAMES = {"dice": "Dice", "iou": "IoU", "hd95": "HD95", "nsd": "NSD"}


def overlay_row(image: np.ndarray, label: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """image | ground truth | prediction, side by side, classes in the overlay palette."""
    fg = range(1, num_classes)
    truth = overlay_masks(image, np.stack([label == c for c in fg]))
    guess = overlay_masks(image, np.stack([pred == c for c in fg]))
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([image, gap, truth, gap, guess], axis=1)


def encode_png(picture: np.ndarray) -> bytes:
    """A picture kept compressed in memory until the best / median / worst units are known."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(picture, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def unit_scores(rows: Sequence[dict]) -> dict[str, float]:
    """Each unit's mean Dice over the foreground classes it has a score for (units with none are left out)."""
    values: dict[str, list[float]] = {}
    for r in rows:
        if r["dice"] is not None:
            values.setdefault(r["unit"], []).append(r["dice"])
    return {u: float(np.mean(v)) for u, v in values.items()}


def pick_units(scores: dict[str, float]) -> dict[str, str]:
    """``{"best": unit, "median": unit, "worst": unit}`` by mean Dice (ties: the first in order)."""
    if not scores:
        return {}
    order = sorted(scores, key=lambda u: scores[u])
    return {"best": order[-1], "median": order[(len(order) - 1) // 2], "worst": order[0]}


def markdown_table(summary: dict) -> str:
    head = "| class | n | " + " | ".join(_NAMES[m] for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 2)]

    def cell(s):
        return "–" if s["mean"] is None else f"{s['mean']:.3f} ± {s['std']:.3f}"

    for name, stats in summary["metrics"].items():
        lines.append(f"| {name} | {stats['dice']['n']} | " + " | ".join(cell(stats[m]) for m in METRICS) + " |")
    means = " | ".join("–" if summary[f"mean_{m}"] is None else f"**{summary[f'mean_{m}']:.3f}**" for m in METRICS)
    lines.append(f"| mean | | {means} |")
    return "\n".join(lines) + "\n"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))[:80]


def write_report(out_dir: str, rows: Sequence[dict], summary: dict, meta: dict,
                 pictures: dict[str, bytes] | None = None) -> dict:
    """Writes the files of the module docstring into ``out_dir``; returns what went into ``metrics.json``."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "scores.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["unit", "slices", "class", *METRICS])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    with open(os.path.join(out_dir, "scores.md"), "w") as f:
        f.write(f"{meta.get('title', 'Evaluation')}: {meta.get('units', 0)} {meta.get('per', 'image')}(s) of "
                f"{meta.get('data', '')} {meta.get('split', '')}; HD95 in {meta.get('distance_units', 'pixels')}, "
                f"NSD at {meta.get('nsd_tolerance', '')}\n\n")
        f.write(markdown_table(summary))
    dice = {name: [r["dice"] for r in rows if r["class"] == name] for name in summary["metrics"]}
    save_png(plots.box_plot(dice, f"Dice per class ({meta.get('per', 'image')})", "Dice", 0.0, 1.0),
             os.path.join(out_dir, "dice_boxplot.png"))
    written = []
    for kind, unit in pick_units(unit_scores(rows)).items():
        if pictures and unit in pictures:
            name = f"overlay_{kind}_{_safe(unit)}.png"
            with open(os.path.join(out_dir, name), "wb") as f:
                f.write(pictures[unit])
            written.append(name)
    result = {**meta, **summary, "overlays": written, "files": ["scores.csv", "scores.md", "dice_boxplot.png"]}
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(_jsonable(result), f, indent=2)
    return result


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x
