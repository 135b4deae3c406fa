"""Supervised fine-tuning: the losses of auto and prompted modes (their forward passes in
``samjax.modeling.forward``), and its ``Objective``.

Auto mode: no prompts. The decoder sees only its output tokens and the default "no mask" dense
embedding; its ``T = num_classes`` mask tokens (background included) give one low-res logit map per
class, trained with Dice + cross-entropy. Prompted mode: each image carries ``K`` objects with a
simulated box or points (``samjax.data.prompts``); the image embedding is shared by its K prompts,
and SAM's losses apply (focal 20 : Dice 1, plus the IoU head's MSE; with a single point the three
multimask outputs compete and only the best is trained, as in SAM).
"""

from __future__ import annotations

import jax.numpy as jnp

from samjax.modeling.forward import auto_class_logits, auto_logits, low_res, prompted_logits
from samjax.modeling.sam import Sam
from samjax.run import model as run_model
from samjax.train import losses, strategy
from samjax.train.objectives.base import Objective, TrainData
from samjax.data.prompts import SimulatePrompts
from samjax.evaluation import evaluate


def auto_loss(model: Sam, batch: dict, key, cfg, dtype=jnp.float32):
    logits = auto_logits(model, batch, key, dtype)
    size = logits.shape[-1]
    valid = low_res(batch["valid"], size).astype(jnp.float32)
    if "weight" in batch:
        valid = valid * batch["weight"][:, None, None]
    total, terms = losses.auto_mode_loss(logits, batch["low_res_label"].astype(jnp.int32), valid,
                                         dice_weight=cfg.train.dice_weight, ce_weight=cfg.train.ce_weight)
    return total, terms


def prompted_loss(model: Sam, batch: dict, key, cfg, dtype=jnp.float32):
    logits, iou = prompted_logits(model, batch, cfg.train.mode, key, dtype)
    valid = batch["object_valid"]
    if "weight" in batch:
        valid = valid & (batch["weight"][:, None] > 0)
    return losses.prompted_loss(logits, iou, batch["object_masks"], valid)


def loss_fn(mode: str):
    """The loss of a training mode: ``(model, batch, key, cfg, dtype) -> (total, terms)``."""
    return auto_loss if mode == "auto" else prompted_loss


class Finetune(Objective):
    """``objective = "finetune"``: task-specific supervised fine-tuning (the study's grid), auto or prompted."""

    name = "finetune"
    predictions = None  # auto mode's class maps: SAM's (forward.auto_predictions); the UNet baseline's own
    class_logits = staticmethod(auto_class_logits)  # their logits at the input size (inference on scans)
    batch_keys = ("image", "valid", "label", "low_res_label", "boxes", "points", "point_labels", "object_valid",
                  "object_masks", "object_class")

    def prompts(self, cfg, data: TrainData):
        if cfg.train.mode == "auto":
            return None
        return SimulatePrompts(num_objects=int(cfg.train.num_objects), num_points=1, num_classes=data.num_classes)

    def build_model(self, cfg, data: TrainData, log=print):
        return run_model.build_model(cfg, data.num_classes, log=log)

    def trainable_filter(self, cfg):
        return strategy.trainable_filter(cfg)

    def loss(self, model, batch, key, cfg, dtype):
        return loss_fn(cfg.train.mode)(model, batch, key, cfg, dtype)

    def low_res_size(self, cfg) -> int:
        return run_model.model_spec(cfg).low_res_size

    def validate(self, cfg, trainable, params, frozen, mesh, data: TrainData, split=None) -> dict:
        result = evaluate.validate(cfg, trainable, params, frozen, mesh, data.class_names, split=split,
                                   low_res_size=self.low_res_size(cfg),
                                   predictions=self.predictions)
        scalars = {"val_mean_dice": result["mean_dice"]}
        scalars.update({f"val_dice/{name}": v for name, v in result.get("per_class", {}).items()})
        return {**result, "scalars": scalars, "best": result["mean_dice"]}

    def evaluate(self, cfg, trainable, params, frozen, mesh, data: TrainData, out_dir, split, log=print,
                 **options) -> dict:
        return evaluate.write_evaluation(cfg, trainable, params, frozen, mesh, data.class_names, out_dir, split=split,
                                         log=log, predictions=self.predictions, **options)

    def summary(self, result: dict) -> str:
        return evaluate.format_dice(result)
