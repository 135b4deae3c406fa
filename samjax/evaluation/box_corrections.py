"""The CVPR 2025 interactive challenge's counting (MedSegFM), in 2D: a box, then up to 5 correction clicks.

For every image of the split and every class present in it (one object per class, as the challenge prompts
each class), SAM is prompted with the class's tight bounding box (step 0, the single-mask output), then
corrected 5 times (steps 1-5). Each correction is placed as the challenge's evaluation script places it:
in the largest 8-connected component of the error (missed and spilled pixels together), at its pixel
farthest from the component's outline (Euclidean distance transform, the image border counting as
outline; the first such pixel in row-major order), a foreground click if that pixel belongs to the
object, a background click otherwise. Every earlier click and the box stay, and the previous low-res
logits are fed back as the mask prompt. Masks are scored at the input resolution.

Per image, each step's DSC and NSD (tolerance ``tolerance`` pixels; NSD is counted as 0 when the DSC is
at most 0.2, as the challenge does) are the means over the image's classes; DSC_AUC and NSD_AUC are the
trapezoidal areas under the 5 correction steps (x = 1..5, so at most 4), Final DSC and NSD the last step.
Reported: the means over images, the per-step curves, and the per-class means of every step.

Unlike ``samjax.evaluation.clicks`` (the first click inside the object, the multimask answer to it, RITM's
click placement), the clicks here are chosen on the host between device calls: components and distance
transforms of the whole error are not a fixed-shape program.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from samjax import interaction
from samjax.evaluation import clicks as click_eval
from samjax.evaluation.batches import eval_batches, gather_rows, jit_once
from samjax.evaluation.surface_distance import hd95_and_nsd
from samjax.modeling import forward
from samjax.modeling.prompt_encoder import PADDING_LABEL
from samjax.run import model as run_model
from samjax.evaluation.plots import line_plot
from samjax.utils.overlay import save_png

CORRECTIONS = 5
NSD_MIN_DSC = 0.2  # below this DSC the challenge counts NSD as 0
PROTOCOL = ("CVPR 2025 interactive challenge counting: tight box, then 5 corrections, each at the innermost pixel "
            "(Euclidean) of the largest 8-connected error component, previous logits fed back; DSC and NSD per image "
            "(mean over its classes) after each step; AUC over the 5 corrections; scored at the input resolution")
_EIGHT = np.ones((3, 3), bool)


def correction_click(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, int] | None:
    """The next correction of bool ``(H, W)`` masks: ``(x, y, label)`` with ``x, y`` the pixel centre and
    ``label`` 1 (foreground) or 0 (background), or None when the prediction has no error."""
    error = pred ^ truth
    if not error.any():
        return None
    components, count = ndimage.label(error, structure=_EIGHT)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    sizes[0] = 0
    largest = components == int(np.argmax(sizes))
    distance = ndimage.distance_transform_edt(np.pad(largest, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return col + 0.5, row + 0.5, int(truth[row, col])


def area_under_steps(values: Sequence[float]) -> float:
    """Trapezoidal area under ``values`` at x = 1, 2, ... (the challenge's DSC_AUC / NSD_AUC)."""
    v = np.asarray(values, np.float64)
    return float(np.sum((v[1:] + v[:-1]) / 2.0))


def _programs(trainable):
    def make_encode():
        def encode(params, frozen, batch):
            model = trainable.model(params, frozen)
            k = batch["object_valid"].shape[1]
            return jnp.repeat(forward.encode(model, batch["image"], batch["valid"], None, trainable.dtype), k, 0)
        return encode

    def make_decode(fed_back: bool):
        def decode(params, frozen, emb, coords, labels, boxes, box_mask, prev, valid):
            model = trainable.model(params, frozen)
            masks, _ = interaction.decode(model, emb, coords, labels, boxes, box_mask, prev if fed_back else None,
                                          trainable.dtype)
            return masks[:, 0], (forward.upsample(masks[:, 0], valid.shape[-1]) > 0) & valid
        return lambda: decode

    return (jit_once(trainable, "box_corrections_encode", make_encode),
            jit_once(trainable, "box_corrections_box", make_decode(False)),
            jit_once(trainable, "box_corrections_next", make_decode(True)))


def run_box_corrections(cfg, trainable, params, frozen, mesh, class_names: Sequence[str], split: str,
                        corrections: int = CORRECTIONS, tolerance: float = 2.0, max_examples: int = 0) -> dict:
    """The protocol over ``split``: per image and step, DSC and NSD (see the module docstring)."""
    encode, decode_box, decode_next = _programs(trainable)
    prompts = click_eval.eval_prompts(cfg, len(class_names))
    images = []  # per image: classes (M,), dsc (M, 1 + corrections), nsd (M, 1 + corrections)
    for host, batch in eval_batches(cfg, mesh, click_eval.KEYS, split, max_examples, prompts=prompts,
                                    low_res_size=run_model.model_spec(cfg).low_res_size):
        b, k = host["object_valid"].shape
        n, s = b * k, host["image"].shape[1]
        emb = encode(params, frozen, batch)
        valid_full = jnp.repeat(batch["valid"], k, axis=0)
        truth = (gather_rows(batch["object_masks_full"]).reshape(n, s, s)
                 & np.repeat(gather_rows(batch["valid"]), k, axis=0))
        real = (gather_rows(batch["object_valid"]) & (gather_rows(batch["weight"]) > 0)[:, None]).reshape(-1)
        coords = np.zeros((n, corrections, 2), np.float32)
        labels = np.full((n, corrections), PADDING_LABEL, np.int32)
        boxes = batch["boxes"].reshape(n, 4).astype(jnp.float32)
        box_mask = batch["object_valid"].reshape(n)
        prev = jnp.zeros((n,) + (run_model.model_spec(cfg).low_res_size,) * 2, jnp.float32)
        dsc = np.zeros((n, corrections + 1))
        nsd = np.zeros((n, corrections + 1))
        for step in range(corrections + 1):
            decode = decode_next if step else decode_box
            prev, pred = decode(params, frozen, emb, jnp.asarray(coords), jnp.asarray(labels), boxes, box_mask, prev,
                                valid_full)
            pred = gather_rows(pred)
            for i in np.flatnonzero(real):
                inter, total = (pred[i] & truth[i]).sum(), pred[i].sum() + truth[i].sum()
                dsc[i, step] = 2.0 * inter / total if total else 1.0
                if dsc[i, step] > NSD_MIN_DSC:
                    nsd[i, step] = hd95_and_nsd(pred[i], truth[i], tolerance=tolerance)[1]
                if step < corrections:
                    click = correction_click(pred[i], truth[i])
                    if click is not None:
                        coords[i, step], labels[i, step] = click[:2], click[2]
        classes = gather_rows(batch["object_class"]).reshape(-1)
        for j in range(b):
            rows = [j * k + q for q in range(k) if real[j * k + q]]
            if rows:
                images.append((classes[rows], dsc[rows], nsd[rows]))
    return summarize(images, class_names, corrections)


def summarize(images, class_names: Sequence[str], corrections: int) -> dict:
    """Means over images of each image's class-mean DSC / NSD per step, AUCs and finals; per-class curves."""
    per_image_dsc = np.array([d.mean(0) for _, d, _ in images]).reshape(-1, corrections + 1)
    per_image_nsd = np.array([v.mean(0) for _, _, v in images]).reshape(-1, corrections + 1)
    out = {"protocol": PROTOCOL, "images": len(images), "corrections": corrections,
           "dsc_vs_steps": per_image_dsc.mean(0).tolist() if images else [],
           "nsd_vs_steps": per_image_nsd.mean(0).tolist() if images else [],
           "dsc_auc": float(np.mean([area_under_steps(d[1:]) for d in per_image_dsc])) if images else None,
           "nsd_auc": float(np.mean([area_under_steps(v[1:]) for v in per_image_nsd])) if images else None,
           "final_dsc": float(per_image_dsc[:, -1].mean()) if images else None,
           "final_nsd": float(per_image_nsd[:, -1].mean()) if images else None, "per_class": {}}
    classes = np.concatenate([c for c, _, _ in images]) if images else np.zeros(0, np.int64)
    dsc = np.concatenate([d for _, d, _ in images]) if images else np.zeros((0, corrections + 1))
    nsd = np.concatenate([v for _, _, v in images]) if images else np.zeros((0, corrections + 1))
    for c, name in enumerate(class_names):
        rows = classes == c
        if c and rows.any():
            out["per_class"][name] = {"objects": int(rows.sum()), "dsc_vs_steps": dsc[rows].mean(0).tolist(),
                                      "nsd_vs_steps": nsd[rows].mean(0).tolist()}
    return out


def write_report(out_dir: str, result: dict, meta: dict) -> dict:
    """``metrics.json``, ``steps.csv`` (class, step, DSC, NSD) and ``dsc_nsd_vs_steps.png``."""
    os.makedirs(out_dir, exist_ok=True)
    result = {**meta, **result}
    names = ["box"] + [f"{c} correction" + "s" * (c > 1) for c in range(1, result["corrections"] + 1)]
    with open(os.path.join(out_dir, "steps.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "step", "dsc", "nsd"])
        rows = [*result["per_class"].items(), ("mean of images", result)]
        for name, e in rows:
            for step, (d, v) in enumerate(zip(e["dsc_vs_steps"], e["nsd_vs_steps"])):
                writer.writerow([name, names[step], f"{d:.6f}", f"{v:.6f}"])
    if result["images"]:
        series = {"DSC": result["dsc_vs_steps"], "NSD": result["nsd_vs_steps"]}
        title = (f"box then corrections, {meta.get('data', '')} {meta.get('split', '')}: DSC_AUC "
                 f"{result['dsc_auc']:.3f}, NSD_AUC {result['nsd_auc']:.3f}")
        save_png(line_plot(range(0, result["corrections"] + 1), series, title, "corrections (0: the box alone)",
                           "score"), os.path.join(out_dir, "dsc_nsd_vs_steps.png"))
        result["plot"] = "dsc_nsd_vs_steps.png"
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(result, f, indent=2, default=lambda v: None)
    return result


def evaluate_box_corrections(cfg, trainable, params, frozen, mesh, class_names: Sequence[str], out_dir: str,
                             split: str, tolerance: float = 2.0, log: Callable = print) -> dict:
    """Runs the protocol on all of ``split`` and writes its report into ``out_dir`` (process 0)."""
    result = run_box_corrections(cfg, trainable, params, frozen, mesh, class_names, split, tolerance=tolerance)
    meta = {"split": split, "data": cfg.data.get("eval_name", "") or cfg.data.name, "nsd_tolerance_px": tolerance}
    if jax.process_index() == 0:
        result = write_report(out_dir, result, meta)
    if result["images"]:
        log(f"{split}: box DSC {result['dsc_vs_steps'][0]:.4f}, final DSC {result['final_dsc']:.4f} NSD "
            f"{result['final_nsd']:.4f}, DSC_AUC {result['dsc_auc']:.3f}, NSD_AUC {result['nsd_auc']:.3f} "
            f"({result['images']} images); wrote {out_dir}/metrics.json, steps.csv and .png")
    return result
