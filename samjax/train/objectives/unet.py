"""The study's baseline as an objective: a UNet (``samjax.modeling.unet``) trained from scratch on the same
data, by the same trainer, scored by the same evaluation as SAM's auto mode.

``objective = "unet"`` (``configs/unet.py``). Loss: Dice + cross-entropy (``losses.auto_mode_loss``, the
weights of ``train.dice_weight`` / ``train.ce_weight``) on the full-resolution logits and, with
``model.unet.deep_supervision``, on every coarser decoder output but the coarsest, against the label
subsampled to it (nearest), weighted 1, 1/2, 1/4, ... and normalized, as nnU-Net does. Predictions: the
argmax of the full-resolution logits, so Dice, HD95 and NSD are computed exactly as for SAM.
``init_checkpoint`` may name a UNet training workdir (``eval.py`` loads the run this way).
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from samjax.errors import ConfigError
from samjax.modeling.forward import unet_class_logits, unet_predictions
from samjax.modeling.unet import UNet
from samjax.train import losses
from samjax.train.objectives.base import TrainData
from samjax.train.objectives.finetune import Finetune
from samjax.run.model import build_unet


def supervision_weights(outputs: int, deep: bool) -> list[float]:
    """Loss weight of each output, full resolution first: 1, 1/2, 1/4, ..., the coarsest 0, summing to 1."""
    if not deep or outputs == 1:
        return [1.0] + [0.0] * (outputs - 1)
    raw = [0.5 ** k for k in range(outputs - 1)] + [0.0]
    return [w / sum(raw) for w in raw]


def unet_loss(model: UNet, batch: dict, key, cfg, dtype=jnp.float32):
    outputs = model(batch["image"], batch["valid"])
    weights = supervision_weights(len(outputs), bool(cfg.model.unet.deep_supervision))
    total, terms = 0.0, {}
    for k, (logits, w) in enumerate(zip(outputs, weights)):
        if w == 0:
            continue
        step = 2 ** k
        valid = batch["valid"][:, ::step, ::step].astype(jnp.float32)
        if "weight" in batch:
            valid = valid * batch["weight"][:, None, None]
        loss, parts = losses.auto_mode_loss(jnp.moveaxis(logits.astype(jnp.float32), -1, 1),
                                            batch["label"][:, ::step, ::step].astype(jnp.int32), valid,
                                            dice_weight=cfg.train.dice_weight, ce_weight=cfg.train.ce_weight)
        total = total + w * loss
        if k == 0:
            terms = parts
    return total, terms


class UNetBaseline(Finetune):
    """``objective = "unet"``: the UNet baseline, auto mode only (a UNet takes no prompts); validated and
    evaluated as fine-tuning's auto mode, from its own class maps."""

    name = "unet"
    uses_sam = False
    batch_keys = ("image", "valid", "label")
    predictions = staticmethod(unet_predictions)
    class_logits = staticmethod(unet_class_logits)

    def check(self, cfg) -> None:
        features = cfg.model.unet.features
        if (not isinstance(features, (tuple, list)) or len(features) < 2
                or not all(isinstance(f, int) and f > 0 for f in features)):
            raise ConfigError(f"model.unet.features={features!r} must be two or more positive widths, "
                              "e.g. (32, 64, 128, 256, 320)")
        divisor = 2 ** (len(features) - 1)
        if int(cfg.data.image_size) % divisor:
            raise ConfigError(f"data.image_size={cfg.data.image_size} must be a multiple of {divisor} for a "
                              f"UNet of {len(features)} stages (model.unet.features)")
        if cfg.train.mode != "auto":
            raise ConfigError(f"train.mode={cfg.train.mode!r}: the UNet baseline takes no prompts; "
                              "set --config.train.mode=auto")

    def build_model(self, cfg, data: TrainData, log: Callable = print) -> UNet:
        return build_unet(cfg, data.num_classes, log)

    def trainable_filter(self, cfg):
        from flax import nnx

        return nnx.Param

    def loss(self, model, batch, key, cfg, dtype):
        return unet_loss(model, batch, key, cfg, dtype)

    def low_res_size(self, cfg) -> int:
        return int(cfg.data.image_size) // 4  # unused: the UNet scores full-resolution labels
