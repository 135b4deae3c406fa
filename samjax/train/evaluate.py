"""Validation during training and the evaluation of a finished run: Dice per class.

Auto mode predicts a class map per image (low-res logits upsampled to the input size, argmax) and
compares it with the label on the image's real pixels; prompted modes predict one mask per
simulated box/point object and score it against the object's class. Per-class statistics are
computed on the device inside one jitted function and accumulated on the host
(``samjax.metrics.DiceAccumulator``: mean over images of per-image Dice, or per restacked volume).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from samjax import metrics
from samjax.train import strategy, supervised
from samjax.train.objective import eval_batches, jit_once

NUMERIC_KEYS = ("image", "valid", "label", "low_res_label", "weight", "boxes", "points", "point_labels",
                "object_valid", "object_masks", "object_class")


def format_dice(result: dict) -> str:
    per_class = " ".join(f"{k} {v:.3f}" for k, v in result.get("per_class", {}).items())
    return f"mean Dice {result.get('mean_dice', float('nan')):.4f} ({per_class})"


def _predict_fn(trainable, num_classes: int):
    def predict(params, frozen, batch):
        model = trainable.model(params, frozen)
        pred = supervised.auto_predictions(model, batch, trainable.dtype)
        valid = batch["valid"] & (batch["weight"][:, None, None] > 0)
        return metrics.dice_jnp(pred, batch["label"].astype(jnp.int32), num_classes, valid, per_image=True), pred

    return jit_once(trainable, f"auto{num_classes}", lambda: predict)


def _prompted_fn(trainable, num_classes: int, mode: str):
    """Per-object Dice statistics at low resolution, in the object's class column: ``(B*K, C)`` each.

    The mask SAM would return is the one with the highest predicted IoU; padding objects count nowhere.
    """
    def predict(params, frozen, batch):
        model = trainable.model(params, frozen)
        logits, iou = supervised.prompted_logits(model, batch, mode, None, trainable.dtype)
        best = jnp.argmax(iou, axis=-1)
        masks = jnp.take_along_axis(logits, best[..., None, None, None], axis=2)[:, :, 0] > 0
        target = batch["object_masks"]
        keep = batch["object_valid"] & (batch["weight"][:, None] > 0)
        onehot = jax.nn.one_hot(batch["object_class"], num_classes, dtype=jnp.int32) * keep[..., None]
        counts = [(masks & target).sum((-1, -2)), masks.sum((-1, -2)), target.sum((-1, -2))]
        return tuple((c[..., None] * onehot).reshape(-1, num_classes) for c in counts)

    return jit_once(trainable, f"{mode}{num_classes}", lambda: predict)


def validate(cfg, trainable, params, frozen, mesh, class_names, split: str | None = None,
             max_examples: int | None = None, mode: str = "image", on_batch=None) -> dict:
    """Dice of the current parameters on ``split`` (default ``data.eval_split``).

    Auto mode: class maps against labels at the input resolution. Prompted modes: each object's
    mask (from its simulated box or point, fixed by the seed) against the object, at low resolution.
    """
    num_classes = len(class_names)
    auto = cfg.train.mode == "auto"
    prompts = None
    if not auto:
        from samjax.data.prompts import SimulatePrompts

        prompts = SimulatePrompts(num_objects=int(cfg.train.num_objects), num_classes=num_classes)
        mode = "image"
    low_res_size = strategy.model_spec(cfg, num_classes).low_res_size
    predict = _predict_fn(trainable, num_classes) if auto else _prompted_fn(trainable, num_classes, cfg.train.mode)
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
        cases = batch["case"]
        if jax.process_count() > 1:
            cases = None if mode == "image" else _gather_strings(cases)
        acc.update_stats(*(s[weight] for s in stats), case_ids=None if cases is None else np.asarray(cases)[weight])
        if on_batch is not None:
            on_batch(batch, np.asarray(jax.device_get(pred)) if jax.process_count() == 1 else None)
    return acc.result(class_names)


def _gather_strings(strings) -> list[str]:
    raise NotImplementedError("per-volume Dice across several processes: run eval.py on one process")


def _overlay_row(image, label, pred, num_classes: int) -> np.ndarray:
    """image | ground truth | prediction, side by side, classes in the overlay palette."""
    from samjax.overlay import overlay_masks

    fg = range(1, num_classes)
    truth = overlay_masks(image, np.stack([label == c for c in fg]))
    guess = overlay_masks(image, np.stack([pred == c for c in fg]))
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([image, gap, truth, gap, guess], axis=1)


def write_evaluation(cfg, trainable, params, frozen, mesh, class_names, out_dir: str, split: str = "test",
                     overlays: int = 8, log=print, mode: str = "image") -> dict:
    """Evaluates on ``split`` and writes ``out_dir/metrics.json`` and ``overlay_<i>.png`` pictures."""
    import json
    import os

    from samjax.overlay import save_png

    os.makedirs(out_dir, exist_ok=True)
    written = []

    def on_batch(batch, pred):
        if pred is None or len(written) >= overlays:
            return
        for i in range(pred.shape[0]):
            if len(written) >= overlays or batch["weight"][i] == 0:
                continue
            h, w = batch["input_size"][i]
            row = _overlay_row(batch["image"][i, :h, :w], batch["label"][i, :h, :w], pred[i, :h, :w], len(class_names))
            path = os.path.join(out_dir, f"overlay_{len(written):02d}_{batch['case'][i]}.png")
            if jax.process_index() == 0:
                save_png(row, path)
            written.append(path)

    result = validate(cfg, trainable, params, frozen, mesh, class_names, split=split, max_examples=0,
                      mode=mode, on_batch=on_batch)
    result = {**result, "split": split, "data": cfg.data.name, "overlays": [os.path.basename(p) for p in written]}
    if jax.process_index() == 0:
        with open(os.path.join(out_dir, "metrics.json"), "w") as f:
            json.dump(_jsonable(result), f, indent=2)
    log(f"{split}: {format_dice(result)}; wrote {out_dir}/metrics.json and {len(written)} overlay(s)")
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
