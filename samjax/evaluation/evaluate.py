"""Validation during training and the evaluation of a finished run: Dice per class.

Auto mode predicts a class map per image (low-res logits upsampled to the input size, argmax) and
compares it with the label on the image's real pixels; prompted modes predict one mask per
simulated box/point object and score it against the object's class. Per-class statistics are
computed on the device inside one jitted function and accumulated on the host
(``samjax.evaluation.metrics.DiceAccumulator``: mean over images of per-image Dice, or per restacked volume).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from samjax.data.prompts import SimulatePrompts
from samjax.evaluation import clicks as click_eval
from samjax.evaluation import metrics
from samjax.evaluation import report as eval_report
from samjax.evaluation.batches import eval_batches, eval_source, gather_rows, jit_once
from samjax.evaluation.report import _jsonable
from samjax.evaluation.segmentation_scores import SegmentationScores, summarize
from samjax.modeling import forward
from samjax.run import model as run_model

NUMERIC_KEYS = ("image", "valid", "label", "low_res_label", "weight", "boxes", "points", "point_labels",
                "object_valid", "object_masks", "object_class")


PROMPTED_CLICKS = 3  # clicks after the first prompt that the final evaluation of box / point runs records


def format_dice(result: dict) -> str:
    per_class = " ".join(f"{k} {v:.3f}" for k, v in result.get("per_class", {}).items() if isinstance(v, float))
    return f"mean Dice {result.get('mean_dice', float('nan')):.4f} ({per_class})"


def _predict_fn(trainable, num_classes: int, predictions=None):
    """Dice statistics and class maps of a batch; ``predictions(model, batch, dtype)`` makes the class maps
    (default: SAM's auto mode)."""
    predictions = predictions or forward.auto_predictions

    def predict(params, frozen, batch):
        model = trainable.model(params, frozen)
        pred = predictions(model, batch, trainable.dtype)
        valid = batch["valid"] & (batch["weight"][:, None, None] > 0)
        return metrics.dice_jnp(pred, batch["label"].astype(jnp.int32), num_classes, valid, per_image=True), pred

    return jit_once(trainable, f"{predictions.__module__}.{predictions.__name__}{num_classes}", lambda: predict)


def _prompted_fn(trainable, num_classes: int, mode: str):
    """Per-object Dice statistics at low resolution, in the object's class column: ``(B*K, C)`` each.

    The mask SAM would return is the one with the highest predicted IoU; padding objects count nowhere.
    """
    def predict(params, frozen, batch):
        model = trainable.model(params, frozen)
        logits, iou = forward.prompted_logits(model, batch, mode, None, trainable.dtype)
        best = jnp.argmax(iou, axis=-1)
        masks = jnp.take_along_axis(logits, best[..., None, None, None], axis=2)[:, :, 0] > 0
        target = batch["object_masks"]
        keep = batch["object_valid"] & (batch["weight"][:, None] > 0)
        onehot = jax.nn.one_hot(batch["object_class"], num_classes, dtype=jnp.int32) * keep[..., None]
        counts = [(masks & target).sum((-1, -2)), masks.sum((-1, -2)), target.sum((-1, -2))]
        return tuple((c[..., None] * onehot).reshape(-1, num_classes) for c in counts)

    return jit_once(trainable, f"{mode}{num_classes}", lambda: predict)


def validate(cfg, trainable, params, frozen, mesh, class_names, split: str | None = None,
             max_examples: int | None = None, mode: str = "image", predictions=None,
             low_res_size: int | None = None) -> dict:
    """Dice of the current parameters on ``split`` (default ``data.eval_split``).

    Auto mode: class maps against labels at the input resolution. Prompted modes: each object's
    mask (from its simulated box or point, fixed by the seed) against the object, at low resolution
    (``low_res_size``: the objective's grid; default SAM's for ``cfg``).
    """
    num_classes = len(class_names)
    auto = cfg.train.mode == "auto"
    prompts = None
    if not auto:
        prompts = SimulatePrompts(num_objects=int(cfg.train.num_objects), num_classes=num_classes)
        mode = "image"
    low_res_size = low_res_size or run_model.model_spec(cfg).low_res_size
    predict = (_predict_fn(trainable, num_classes, predictions) if auto
               else _prompted_fn(trainable, num_classes, cfg.train.mode))
    acc = metrics.DiceAccumulator(num_classes, mode=mode)
    for batch, device in eval_batches(cfg, mesh, NUMERIC_KEYS, split, max_examples, prompts=prompts,
                                      low_res_size=low_res_size):
        if not auto:
            stats = [np.asarray(multihost_utils.process_allgather(s, tiled=True)) for s in predict(params, frozen, device)]
            acc.update_stats(*stats)
            continue
        (inter, psum, lsum), pred = predict(params, frozen, device)
        stats = [np.asarray(multihost_utils.process_allgather(s, tiled=True)) for s in (inter, psum, lsum)]
        weight = np.asarray(multihost_utils.process_allgather(device["weight"], tiled=True)) > 0
        cases = None if mode == "image" else _gather_strings(batch["case"])
        acc.update_stats(*(s[weight] for s in stats), case_ids=None if cases is None else np.asarray(cases)[weight])
    return acc.result(class_names)


def _gather_strings(strings) -> list[str]:
    """Every process's strings (case ids) in process order, as ``process_allgather(tiled=True)`` orders rows."""
    strings = [str(x) for x in strings]
    if jax.process_count() == 1:
        return strings
    encoded = [x.encode() for x in strings]
    width = int(np.max(multihost_utils.process_allgather(np.array([max(map(len, encoded), default=1)]))))
    table = np.zeros((len(encoded), max(width, 1)), np.uint8)
    for i, e in enumerate(encoded):
        table[i, :len(e)] = np.frombuffer(e, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(table, tiled=True))
    return [bytes(r).rstrip(b"\0").decode() for r in rows]


def _gather_host(x) -> np.ndarray:
    """A host array of this process's rows -> every process's rows."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=True))


def _thumbnail(picture: np.ndarray, height: int = 256) -> np.ndarray:
    step = -(-picture.shape[0] // height)
    return picture[::step, ::step] if step > 1 else picture


def write_evaluation(cfg, trainable, params, frozen, mesh, class_names, out_dir: str, split: str = "test",
                     overlays: int = 3, log=print, mode: str = "image", tolerance: float = 2.0,
                     predictions=None, class_maps=None, title: str = "") -> dict:
    """Evaluates on ``split`` and writes ``out_dir``: every metric and picture of ``samjax.evaluation.report``.

    Auto mode: class maps at the model's input resolution (the label resized by nearest neighbour, the
    pixel spacing scaled to match) scored per image or per restacked volume (``mode``) with Dice, IoU,
    HD95 and NSD at ``tolerance`` (mm, or pixels for data sets that record no spacing). Prompted modes
    (box / point fine-tuning): the click protocol per object (:func:`_write_prompted`). ``overlays`` > 0 writes
    the best, median and worst units' pictures. ``class_maps(host_batch) -> (B, S, S)`` replaces the model's
    class maps by host-made ones of this process's rows (the automatic mask generator, ``amg_matching``).
    """
    if cfg.train.mode != "auto" and class_maps is None:
        return _write_prompted(cfg, trainable, params, frozen, mesh, class_names, out_dir, split, log)
    num_classes = len(class_names)
    source = eval_source(cfg, split)
    scores = SegmentationScores(class_names, per=mode, tolerance=tolerance, slice_spacing=source.slice_spacing)
    predict = _predict_fn(trainable, num_classes, predictions) if class_maps is None else None
    pictures, picture_area = {}, {}
    units = set()
    for batch, device in eval_batches(cfg, mesh, NUMERIC_KEYS, split, max_examples=0):
        pred = gather_rows(predict(params, frozen, device)[1]) if predict else _gather_host(class_maps(batch))
        label = gather_rows(device["label"])
        weight = gather_rows(device["weight"]) > 0
        image = gather_rows(device["image"]) if overlays else None
        host = {k: _gather_host(batch[k]) for k in ("input_size", "original_size", "spacing", "slice")}
        cases = _gather_strings(batch["case"])
        for i in np.flatnonzero(weight):
            h, w = (int(v) for v in host["input_size"][i])
            p, g = pred[i, :h, :w], label[i, :h, :w]
            spacing = host["spacing"][i] * host["original_size"][i] / host["input_size"][i]
            scores.add(p, g, cases[i], int(host["slice"][i]), spacing)
            unit = cases[i] if scores.per == "volume" else f"{cases[i]}/{int(host['slice'][i])}"
            units.add(unit)
            area = int((g > 0).sum())
            if overlays and area >= picture_area.get(unit, -1):  # a volume shows its slice with the most label
                picture_area[unit] = area
                row = eval_report.overlay_row(image[i, :h, :w], g, p, num_classes)
                pictures[unit] = eval_report.encode_png(_thumbnail(row))
    rows = scores.rows()
    summary = summarize(rows, class_names)
    spacing_known = "spacing" in (source.records[0] if len(source.records) else {})
    meta = {"title": title or f"{cfg.data.name}", "split": split, "data": cfg.data.get("eval_name", "") or cfg.data.name,
            "per": scores.per, "units": len(units), "num_images": int(sum(1 for r in rows if r["class"] == class_names[1])
                                                                       if scores.per == "image" else 0),
            "distance_units": "mm" if spacing_known else "pixels", "nsd_tolerance": tolerance,
            "notes": scores.notes}
    if jax.process_index() == 0:
        result = eval_report.write_report(out_dir, rows, summary, meta, pictures if overlays else None)
    else:
        result = {**meta, **summary}
    log(f"{split}: {format_dice(result)}; HD95 {_num(result['mean_hd95'])} {meta['distance_units']}, "
        f"NSD {_num(result['mean_nsd'])}; wrote {out_dir}/metrics.json, scores.csv, scores.md and pictures")
    return result


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _write_prompted(cfg, trainable, params, frozen, mesh, class_names, out_dir, split, log) -> dict:
    """Box / point fine-tuning: the click protocol (``samjax.evaluation.clicks``: every object's tight box at the
    input resolution, then clicks at the innermost error) into ``out_dir``, the same protocol as interactive runs
    and zero-shot SAMs. ``mean_dice`` is the Dice of the mode's own prompt: the box, or one click."""
    import json
    import os

    result = click_eval.evaluate_clicks(cfg, trainable, params, frozen, mesh, class_names, out_dir, split,
                                        PROMPTED_CLICKS, log=log)
    first = "dice_box" if cfg.train.mode == "box" else "dice_vs_clicks"
    dice = result[first] if first == "dice_box" else result[first][0]
    result = {**result, "per": "object", "mean_dice": dice,
              "scored_prompt": "the box" if first == "dice_box" else "one click"}
    if jax.process_index() == 0:
        with open(os.path.join(out_dir, "metrics.json"), "w") as f:
            json.dump(_jsonable(result), f, indent=2)
    return result
