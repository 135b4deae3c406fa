"""Supervised fine-tuning: the forward passes and losses of auto and prompted modes, and its ``Objective``.

Auto mode: no prompts. The decoder sees only its output tokens and the default "no mask" dense
embedding; its ``T = num_classes`` mask tokens (background included) give one low-res logit map per
class, trained with Dice + cross-entropy. Prompted mode: each image carries ``K`` objects with a
simulated box or points (``samjax.data.prompts``); the image embedding is shared by its K prompts,
and SAM's losses apply (focal 20 : Dice 1, plus the IoU head's MSE; with a single point the three
multimask outputs compete and only the best is trained, as in SAM).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from samjax.modeling.sam import Sam
from samjax.train import losses, strategy
from samjax.train.objective import Objective, TrainData


def encode(model: Sam, images: jax.Array, valid: jax.Array, key: jax.Array | None, dtype=jnp.float32) -> jax.Array:
    """uint8 ``(B, S, S, 3)`` padded images -> image embeddings ``(B, h, w, C)``.

    Normalizing then zeroing the padding (``valid`` False) is exactly SAM's ``preprocess``.
    """
    x = model.normalize(images) * valid[..., None]
    return model.image_encoder(x.astype(dtype), key=key)


def low_res(x: jax.Array, size: int) -> jax.Array:
    """``(B, S, S)`` -> ``(B, size, size)`` by taking the pixel nearest each low-res cell centre."""
    step = x.shape[-1] // size
    return x[..., step // 2::step, step // 2::step]


def upsample(logits: jax.Array, size: int) -> jax.Array:
    """Low-res logits ``(..., L, L)`` -> ``(..., size, size)``, bilinear (SAM's post-processing at the input
    size); unchanged when already ``size``."""
    if logits.shape[-1] == size:
        return logits
    return jax.image.resize(logits, logits.shape[:-2] + (size, size), method="bilinear")


def auto_logits(model: Sam, batch: dict, key=None, dtype=jnp.float32) -> jax.Array:
    """Per-class low-res logits ``(B, T, S/4, S/4)`` with no prompts."""
    emb = encode(model, batch["image"], batch["valid"], key, dtype)
    b, h, w, c = emb.shape
    pe = model.prompt_encoder
    sparse = jnp.zeros((b, 0, c), emb.dtype)
    dense = jnp.broadcast_to(pe.no_mask_embed[...].reshape(1, 1, 1, -1).astype(emb.dtype), emb.shape)
    masks, _ = model.mask_decoder.predict_masks(emb, pe.get_dense_pe().astype(emb.dtype), sparse, dense)
    return masks.astype(jnp.float32)


def auto_loss(model: Sam, batch: dict, key, cfg, dtype=jnp.float32):
    logits = auto_logits(model, batch, key, dtype)
    size = logits.shape[-1]
    valid = low_res(batch["valid"], size).astype(jnp.float32)
    if "weight" in batch:
        valid = valid * batch["weight"][:, None, None]
    total, terms = losses.auto_mode_loss(logits, batch["low_res_label"].astype(jnp.int32), valid,
                                         dice_weight=cfg.train.dice_weight, ce_weight=cfg.train.ce_weight)
    return total, terms


def prompted_logits(model: Sam, batch: dict, mode: str, key=None, dtype=jnp.float32):
    """Mask logits ``(B, K, M, S/4, S/4)`` and IoU predictions ``(B, K, M)`` for the K objects of each image.

    ``mode`` is ``box`` (one mask per object) or ``point`` (the first point; three masks when it is alone).
    """
    emb = encode(model, batch["image"], batch["valid"], key, dtype)
    b, k = batch["object_valid"].shape
    emb = jnp.repeat(emb, k, axis=0)
    pe = model.prompt_encoder
    if mode == "box":
        boxes = batch["boxes"].reshape(b * k, 4)
        sparse, sparse_mask, dense = pe(boxes=boxes, box_mask=batch["object_valid"].reshape(b * k))
        multimask = False
    elif mode == "point":
        coords = batch["points"].reshape(b * k, -1, 2)
        labels = batch["point_labels"].reshape(b * k, -1)
        sparse, sparse_mask, dense = pe(points=(coords, labels))
        multimask = coords.shape[1] == 1
    else:
        raise ValueError(f"prompted mode must be 'box' or 'point', got {mode!r}")
    masks, iou = model.mask_decoder(emb, pe.get_dense_pe().astype(emb.dtype), sparse.astype(emb.dtype),
                                    dense.astype(emb.dtype), multimask, sparse_mask)
    m = masks.shape[1]
    return masks.reshape(b, k, m, *masks.shape[2:]).astype(jnp.float32), iou.reshape(b, k, m).astype(jnp.float32)


def prompted_loss(model: Sam, batch: dict, key, cfg, dtype=jnp.float32):
    logits, iou = prompted_logits(model, batch, cfg.train.mode, key, dtype)
    valid = batch["object_valid"]
    if "weight" in batch:
        valid = valid & (batch["weight"][:, None] > 0)
    return losses.prompted_loss(logits, iou, batch["object_masks"], valid)


def loss_fn(mode: str):
    """The loss of a training mode: ``(model, batch, key, cfg, dtype) -> (total, terms)``."""
    return auto_loss if mode == "auto" else prompted_loss


def auto_class_logits(model: Sam, batch: dict, dtype=jnp.float32) -> jax.Array:
    """Per-class logits ``(B, T, S, S)`` at the input resolution: low-res logits upsampled bilinearly."""
    return upsample(auto_logits(model, batch, None, dtype), batch["image"].shape[1])


def auto_predictions(model: Sam, batch: dict, dtype=jnp.float32) -> jax.Array:
    """Class map ``(B, S, S)`` at the input resolution: the argmax of :func:`auto_class_logits`."""
    return jnp.argmax(auto_class_logits(model, batch, dtype), axis=1).astype(jnp.int32)


class Finetune(Objective):
    """``objective = "finetune"``: task-specific supervised fine-tuning (the study's grid), auto or prompted."""

    name = "finetune"
    predictions = None  # auto mode's class maps: SAM's (supervised.auto_predictions); the UNet baseline's own
    class_logits = staticmethod(auto_class_logits)  # their logits at the input size (inference on scans)
    batch_keys = ("image", "valid", "label", "low_res_label", "boxes", "points", "point_labels", "object_valid",
                  "object_masks", "object_class")

    def prompts(self, cfg, data: TrainData):
        if cfg.train.mode == "auto":
            return None
        from samjax.data.prompts import SimulatePrompts

        return SimulatePrompts(num_objects=int(cfg.train.num_objects), num_points=1, num_classes=data.num_classes)

    def build_model(self, cfg, data: TrainData, log=print):
        return strategy.build_model(cfg, data.num_classes, log=log)

    def trainable_filter(self, cfg):
        return strategy.trainable_filter(cfg)

    def loss(self, model, batch, key, cfg, dtype):
        return loss_fn(cfg.train.mode)(model, batch, key, cfg, dtype)

    def low_res_size(self, cfg) -> int:
        return strategy.model_spec(cfg).low_res_size

    def validate(self, cfg, trainable, params, frozen, mesh, data: TrainData, split=None) -> dict:
        from samjax.train import evaluate

        result = evaluate.validate(cfg, trainable, params, frozen, mesh, data.class_names, split=split,
                                   predictions=self.predictions)
        scalars = {"val_mean_dice": result["mean_dice"]}
        scalars.update({f"val_dice/{name}": v for name, v in result.get("per_class", {}).items()})
        return {**result, "scalars": scalars, "best": result["mean_dice"]}

    def evaluate(self, cfg, trainable, params, frozen, mesh, data: TrainData, out_dir, split, log=print,
                 **options) -> dict:
        from samjax.train import evaluate

        return evaluate.write_evaluation(cfg, trainable, params, frozen, mesh, data.class_names, out_dir, split=split,
                                         log=log, predictions=self.predictions, **options)

    def summary(self, result: dict) -> str:
        from samjax.train import evaluate

        return evaluate.format_dice(result)
