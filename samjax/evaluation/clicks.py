"""The interactive evaluation of a prompted SAM: a box, then 1..N clicks, each in the middle of the largest error.

The protocol of interactive-segmentation benchmarks, for any model with SAM's own mask tokens: fine-tuned
in box or point mode, interactive-pretrained (setup 2), or a converted SAM zero-shot. For each object of
each evaluation image (each class present, with ``interactive.objects="filled"`` each class with the classes it
encloses, or with ``"component"`` each 8-connected component; ``samjax.data.prompts.SimulatePrompts`` finds
them, up to ``K`` per image):

* **box**: the object's tight bounding box alone, SAM's single-mask output;
* **click 1**: at the object's innermost pixel (the maximum of the Euclidean distance to its outline); of
  the three multimask outputs the one of highest predicted IoU, as SAM's predictor answers an ambiguous click;
* **click k > 1**: every earlier click plus one at the error pixel farthest (Euclidean) from the outline of
  its error region (false negatives and false positives apart: positive on a miss, negative on a false
  alarm; of equally deep pixels the first in raster order), the previous low-res logits fed back as the mask
  prompt. RITM and SimpleClick place clicks so,
  which makes NoC comparable with published numbers.

Masks are scored at the input resolution (low-res logits upsampled bilinearly, > 0) on the image's real
pixels. Per object: Dice and IoU after the box and after each click, and NoC@85 / NoC@90, the number of
clicks that first reaches that IoU (``N`` when none does: capped, as benchmarks count it). Means are over
the objects of a class, then over the classes that have objects.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from samjax import interaction
from samjax.data.prompts import SimulatePrompts
from samjax.evaluation.batches import eval_batches, gather_rows, jit_once
from samjax.modeling import forward
from samjax.run import model as run_model
from samjax.utils.overlay import draw_prompts, overlay_masks
from samjax.evaluation.plots import line_plot
from samjax.utils.overlay import save_png

KEYS = ("image", "valid", "boxes", "points", "object_valid", "object_masks", "object_class", "object_masks_full")
NOC_THRESHOLDS = (0.85, 0.90)
PROTOCOL = ("tight box alone; first click at the object's innermost pixel (best of 3 masks by predicted IoU), each "
            "next click at the error pixel farthest (Euclidean) from its error region's outline, previous logits fed "
            "back; scored at the input resolution; NoC capped at the number of clicks")


def click_protocol(model, batch: dict, num_clicks: int, dtype=jnp.float32) -> dict:
    """The protocol on one batch of ``B`` images with ``K`` object slots each (``N = B * K`` objects).

    Returns ``intersection`` and ``pred_sum`` ``(N, 1 + num_clicks)`` (the box, then 1..num_clicks clicks),
    ``target_sum (N,)``, ``first_last (N, 2, S, S)`` bool masks after the first and the last click, and the
    clicks ``coords (N, P, 2)``, ``labels (N, P)`` (``labels < 0``: no click in that slot).
    """
    b, k = batch["object_valid"].shape
    n, s = b * k, batch["image"].shape[1]
    emb = jnp.repeat(forward.encode(model, batch["image"], batch["valid"], None, dtype), k, axis=0)
    valid = jnp.repeat(batch["valid"], k, axis=0)
    truth = batch["object_masks_full"].reshape(n, s, s) & valid
    point_prompts = interaction.first_prompts(batch, jnp.zeros((n,), bool), num_clicks)
    masks0, iou0, masks, _, (coords, labels) = interaction.interact(
        model, emb, point_prompts, jnp.ones((n,), bool), truth, valid, jax.random.key(0),
        jnp.ones((num_clicks - 1,), bool), 1.0, "innermost", dtype)
    best = 1 + jnp.argmax(iou0[:, 1:], axis=-1)
    first = jnp.take_along_axis(masks0, best[:, None, None, None], axis=1)[:, 0]
    box_prompts = interaction.first_prompts(batch, jnp.ones((n,), bool), 1)
    box = interaction.decode(model, emb, *box_prompts, None, dtype)[0][:, 0]
    logits = jnp.concatenate([box[None], first[None], masks], axis=0)

    def counts(low_res):
        pred = (forward.upsample(low_res, s) > 0) & valid
        return (pred & truth).sum((-1, -2)), pred.sum((-1, -2))

    inter, pred_sum = jax.lax.map(counts, logits)
    return {"intersection": inter.T, "pred_sum": pred_sum.T, "target_sum": truth.sum((-1, -2)),
            "first_last": forward.upsample(jnp.stack([first, logits[-1]], axis=1), s) > 0,
            "coords": coords, "labels": labels}


def clicks_to_reach(iou: np.ndarray, threshold: float) -> np.ndarray:
    """NoC: per object (rows of ``iou (objects, N)``, after 1..N clicks) the first click count whose IoU is
    at least ``threshold``; ``N`` when none is."""
    reached = iou >= threshold
    return np.where(reached.any(1), reached.argmax(1) + 1, iou.shape[1]).astype(np.int64)


class ClickScores:
    """Per-object Dice and IoU after the box and each click, accumulated over batches; :meth:`summary`."""

    def __init__(self, class_names: Sequence[str], num_clicks: int):
        self.class_names, self.num_clicks = tuple(class_names), num_clicks
        self.classes, self.dice, self.iou, self.images = [], [], [], []

    def add(self, classes, intersection, pred_sum, target_sum, images=None) -> None:
        """Rows of real objects: ``classes (M,)``, ``intersection, pred_sum (M, 1 + N)``, ``target_sum (M,)``;
        ``images (M,)``: the index in the split of each object's image (-1: unknown)."""
        inter, pred = np.asarray(intersection, np.float64), np.asarray(pred_sum, np.float64)
        target = np.asarray(target_sum, np.float64)[:, None]
        union = pred + target - inter
        self.images.append(np.full(len(inter), -1, np.int64) if images is None else np.asarray(images, np.int64))
        self.classes.append(np.asarray(classes, np.int64))
        self.dice.append(np.where(pred + target > 0, 2 * inter / np.maximum(pred + target, 1), 1.0))
        self.iou.append(np.where(union > 0, inter / np.maximum(union, 1), 1.0))

    def summary(self) -> dict:
        """Curves and NoC per class and their means over classes (see the module docstring)."""
        n = self.num_clicks
        classes = np.concatenate(self.classes) if self.classes else np.zeros(0, np.int64)
        dice = np.concatenate(self.dice) if self.dice else np.zeros((0, n + 1))
        iou = np.concatenate(self.iou) if self.iou else np.zeros((0, n + 1))
        per_class = {}
        for c, name in enumerate(self.class_names):
            rows = classes == c
            if c == 0 or not rows.any():
                continue
            d, i = dice[rows].mean(0), iou[rows].mean(0)
            entry = {"objects": int(rows.sum()), "dice_box": float(d[0]), "iou_box": float(i[0]),
                     "dice_vs_clicks": d[1:].tolist(), "iou_vs_clicks": i[1:].tolist()}
            for t in NOC_THRESHOLDS:
                noc = clicks_to_reach(iou[rows, 1:], t)
                entry[f"noc{round(t * 100)}"] = float(noc.mean())
                entry[f"reached{round(t * 100)}"] = float((iou[rows, 1:] >= t).any(1).mean())
            per_class[name] = entry
        out = {"objects": int(classes.size), "num_clicks": n, "per_class": per_class}
        for key in ("dice_box", "iou_box", "noc85", "noc90", "reached85", "reached90"):
            out[key] = float(np.mean([e[key] for e in per_class.values()])) if per_class else None
        for key in ("dice_vs_clicks", "iou_vs_clicks"):
            out[key] = np.mean([e[key] for e in per_class.values()], 0).tolist() if per_class else []
        return out

    def rows(self) -> list[dict]:
        """One row per object, in evaluation order: ``image`` (its index in the split), ``class``, ``dice_box``,
        ``dice_1`` .. ``dice_N``."""
        if not self.classes:
            return []
        images, classes, dice = (np.concatenate(v) for v in (self.images, self.classes, self.dice))
        return [{"image": int(i), "class": self.class_names[c], "dice_box": float(d[0]),
                 **{f"dice_{k}": float(d[k]) for k in range(1, self.num_clicks + 1)}}
                for i, c, d in zip(images, classes, dice)]


def eval_prompts(cfg, num_classes: int) -> SimulatePrompts:
    """Every object of an image in class and filled modes (``K`` = foreground classes); components:
    ``train.num_objects``."""
    objects = str(cfg.get("interactive", {}).get("objects", "class"))
    k = max(int(cfg.train.num_objects), num_classes - 1) if objects != "component" else int(cfg.train.num_objects)
    return SimulatePrompts(num_objects=k, num_points=1, box_noise=0.0, objects=objects, num_classes=num_classes,
                           full_masks=True, innermost=True)


def run_clicks(cfg, trainable, params, frozen, mesh, class_names: Sequence[str], num_clicks: int,
               split: str | None = None, max_examples: int | None = None, on_batch: Callable | None = None
               ) -> ClickScores:
    """The protocol over ``split`` (default ``data.eval_split``): ``ClickScores`` of every real object.
    ``on_batch(host_batch, outputs)`` sees each batch's outputs on the device (pictures gather what they
    show, so masks come back to the host only while pictures are wanted)."""
    if num_clicks < 1:
        raise ValueError(f"num_clicks={num_clicks} must be >= 1")
    prompts = eval_prompts(cfg, len(class_names))

    def make():
        def predict(params, frozen, batch):
            return click_protocol(trainable.model(params, frozen), batch, num_clicks, trainable.dtype)
        return predict

    predict = jit_once(trainable, f"click_protocol{num_clicks}x{prompts.num_objects}", make)
    scores = ClickScores(class_names, num_clicks)
    seen = 0
    for host, device in eval_batches(cfg, mesh, KEYS, split, max_examples, prompts=prompts,
                                     low_res_size=run_model.model_spec(cfg).low_res_size):
        out = predict(params, frozen, device)
        counts = {k: gather_rows(out[k]) for k in ("intersection", "pred_sum", "target_sum")}
        weight = gather_rows(device["weight"]) > 0
        valid = gather_rows(device["object_valid"])
        keep = (valid & weight[:, None]).reshape(-1)
        classes = gather_rows(device["object_class"]).reshape(-1)
        images = np.repeat(seen + np.cumsum(weight) - 1, valid.shape[1])  # each object's image in the split
        seen += int(weight.sum())
        scores.add(classes[keep], *(counts[k][keep] for k in ("intersection", "pred_sum", "target_sum")),
                   images=images[keep])
        if on_batch is not None:
            on_batch(host, out)
    return scores


def scalars(summary: dict, prefix: str = "val_") -> dict:
    """The summary's numbers for the metric writers: ``dice`` (mean of the curve), ``dice_box``,
    ``dice_{k}click``, ``noc85``, ``noc90``."""
    curve = summary["dice_vs_clicks"]
    out = {f"{prefix}dice": float(np.mean(curve)) if curve else float("nan"),
           f"{prefix}dice_box": summary["dice_box"]}
    out.update({f"{prefix}dice_{c}click": d for c, d in enumerate(curve, start=1)})
    out.update({f"{prefix}noc{round(t * 100)}": summary[f"noc{round(t * 100)}"] for t in NOC_THRESHOLDS})
    return {k: (float("nan") if v is None else v) for k, v in out.items()}


def click_pictures(host: dict, out: dict, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` objects of this batch, one row each: image | target | after 1 click | after the last
    click, with the clicks drawn (green: positive, red: negative)."""
    rows = []
    k = host["object_valid"].shape[1]
    for n in range(min(out["first_last"].shape[0], host["object_valid"].size)):
        i, j = divmod(n, k)
        if len(rows) >= limit or not host["object_valid"][i, j] or host["weight"][i] == 0:
            continue
        h, w = host["input_size"][i]
        image = host["image"][i, :h, :w]
        target = overlay_masks(image, host["object_masks_full"][i, j][None, :h, :w])
        real = out["labels"][n] >= 0
        first = draw_prompts(overlay_masks(image, out["first_last"][n, 0][None, :h, :w]),
                             out["coords"][n, :1][real[:1]], out["labels"][n, :1][real[:1]])
        last = draw_prompts(overlay_masks(image, out["first_last"][n, 1][None, :h, :w]), out["coords"][n][real],
                            out["labels"][n][real])
        gap = np.full((h, 4, 3), 255, np.uint8)
        rows.append(np.concatenate([image, gap, target, gap, first, gap, last], axis=1))
    return rows


def write_click_report(out_dir: str, summary: dict, meta: dict, pictures: Sequence[np.ndarray] = (),
                       objects: Sequence[dict] = ()) -> dict:
    """``metrics.json`` (``meta`` and the summary), ``dice_vs_clicks.csv`` (class, prompt, Dice, IoU,
    objects), ``dice_vs_clicks.png``, given pictures ``clicks.png``, and given ``objects``
    (:meth:`ClickScores.rows`) ``objects.csv``, one row per object. Returns what metrics.json holds."""
    os.makedirs(out_dir, exist_ok=True)
    result = {**meta, "protocol": PROTOCOL, **summary}
    n = summary["num_clicks"]
    with open(os.path.join(out_dir, "dice_vs_clicks.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "prompt", "dice", "iou", "objects"])
        entries = [*summary["per_class"].items(), ("mean", {**summary, "objects": summary["objects"]})]
        for name, e in entries:
            if e["dice_box"] is None:
                continue
            writer.writerow([name, "box", f"{e['dice_box']:.6f}", f"{e['iou_box']:.6f}", e["objects"]])
            for c in range(n):
                writer.writerow([name, f"{c + 1} click" + "s" * (c > 0), f"{e['dice_vs_clicks'][c]:.6f}",
                                 f"{e['iou_vs_clicks'][c]:.6f}", e["objects"]])
    if objects:
        with open(os.path.join(out_dir, "objects.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(objects[0]))
            writer.writeheader()
            writer.writerows({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()}
                             for row in objects)
    if summary["per_class"]:
        series = {name: e["dice_vs_clicks"] for name, e in summary["per_class"].items()}
        series["mean"] = summary["dice_vs_clicks"]
        title = (f"Dice vs clicks, {meta.get('data', '')} {meta.get('split', '')}: box alone "
                 f"{summary['dice_box']:.3f}, NoC@90 {summary['noc90']:.2f}")
        save_png(line_plot(range(1, n + 1), series, title, "clicks", "Dice"),
                 os.path.join(out_dir, "dice_vs_clicks.png"))
        result["plot"] = "dice_vs_clicks.png"
    if pictures:
        width = max(p.shape[1] for p in pictures)
        padded = [np.pad(p, ((0, 4), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in pictures]
        save_png(np.concatenate(padded, axis=0), os.path.join(out_dir, "clicks.png"))
        result["picture"] = "clicks.png"
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(result, f, indent=2, default=lambda v: None)
    return result


def evaluate_clicks(cfg, trainable, params, frozen, mesh, class_names: Sequence[str], out_dir: str, split: str,
                    num_clicks: int, log: Callable = print, pictures: int = 4) -> dict:
    """Runs the protocol on all of ``split`` and writes its report into ``out_dir`` (process 0)."""
    kept: list[np.ndarray] = []

    def keep_pictures(host, out):
        if len(kept) < pictures:
            shown = {k: gather_rows(out[k]) for k in ("first_last", "coords", "labels")}
            kept.extend(click_pictures(host, shown, pictures - len(kept)))

    scores = run_clicks(cfg, trainable, params, frozen, mesh, class_names, num_clicks, split, max_examples=0,
                        on_batch=keep_pictures)
    summary = scores.summary()
    meta = {"split": split, "data": cfg.data.get("eval_name", "") or cfg.data.name}
    result = (write_click_report(out_dir, summary, meta, kept, scores.rows()) if jax.process_index() == 0
              else {**meta, **summary})
    if summary["per_class"]:
        log(f"{split}: Dice with a box {summary['dice_box']:.4f}, 1 click {summary['dice_vs_clicks'][0]:.4f}, "
            f"{num_clicks} clicks {summary['dice_vs_clicks'][-1]:.4f}, NoC@85 {summary['noc85']:.2f}, NoC@90 "
            f"{summary['noc90']:.2f} ({summary['objects']} objects); wrote {out_dir}/metrics.json, "
            "dice_vs_clicks.csv and .png, objects.csv")
    return result
