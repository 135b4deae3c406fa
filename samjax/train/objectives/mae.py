"""Task-agnostic self-supervised pretraining: SAM's image encoder as a masked autoencoder.

Each step draws a fresh random mask per image (``mae.mask_ratio`` of the patches, by argsort of
uniform noise, on the device from the step's key), runs ``samjax.modeling.mae.MaskedAutoencoder`` and
scores the predicted pixels of the hidden patches only, against the normalized pixels of each
patch (``mae.norm_pix_loss``: minus the patch mean, over the square root of the patch's unbiased
variance + 1e-6, as MAE's reference). Patches made only of padding count nowhere.

Validation is the same loss on held-out images with masks fixed by the seed, so runs and steps
compare; a picture of a few of them (masked input | reconstruction | original) goes to TensorBoard
and, at the end of a run, to ``workdir/eval/reconstruction.png``. Labels, if the data set has them,
are ignored.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from samjax.errors import ConfigError
from samjax.evaluation.batches import eval_batches, gather_rows, jit_once
from samjax.modeling import mae
from samjax.modeling.keys import HostKeys, to_device
from samjax.modeling.sam import PIXEL_MEAN, PIXEL_STD
from samjax.run import model as run_model
from samjax.train.objectives.base import Objective, TrainData
from samjax.utils.overlay import save_png

EVAL_NOISE_SEED = 20_240_611


def norm_pix_target(patches: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Each patch ``(..., D)`` minus its mean, over ``sqrt(unbiased variance + eps)``."""
    mean = patches.mean(-1, keepdims=True)
    var = patches.var(-1, keepdims=True, ddof=1)
    return (patches - mean) / jnp.sqrt(var + eps)


def reconstruction_loss(pred: jax.Array, target: jax.Array, hidden: jax.Array, weight: jax.Array | None = None):
    """MAE's loss: per-patch mean squared error, averaged over the hidden patches (times ``weight``).

    ``pred, target (B, L, D)``, ``hidden (B, L)`` bool, ``weight (B, L)`` optional. Float32 scalar; 0
    when no patch counts.
    """
    per_patch = jnp.mean((pred.astype(jnp.float32) - target.astype(jnp.float32)) ** 2, axis=-1)
    w = hidden.astype(jnp.float32) if weight is None else hidden.astype(jnp.float32) * weight
    total = jnp.sum(w)
    return jnp.where(total > 0, jnp.sum(per_patch * w) / jnp.maximum(total, 1.0), 0.0)


def _forward(model: mae.MaskedAutoencoder, batch: dict, noise: jax.Array, cfg, key, dtype):
    """Predictions, targets, hidden mask and patch weights of one batch."""
    p = model.patch_size
    x = model.normalize(batch["image"]) * batch["valid"][..., None]
    gh, gw = model.grid
    hidden = mae.random_masking(noise, float(cfg.mae.mask_ratio))
    pred = model(x.astype(dtype), hidden.reshape(-1, gh, gw), key=key).astype(jnp.float32)
    target = mae.patchify(x, p)
    if cfg.mae.norm_pix_loss:
        target = norm_pix_target(target)
    weight = mae.patchify(batch["valid"][..., None].astype(jnp.float32), p).max(-1)
    if "weight" in batch:
        weight = weight * batch["weight"][:, None]
    return pred, target, hidden, weight


def _noise(key, batch: dict, model) -> jax.Array:
    gh, gw = model.grid
    return jax.random.uniform(key, (batch["image"].shape[0], gh * gw))


def mae_loss(model, batch: dict, key, cfg, dtype=jnp.float32):
    """The step's loss: ``(total, {"reconstruction": total})``."""
    mask_key, drop_key = jax.random.split(key)
    pred, target, hidden, weight = _forward(model, batch, _noise(mask_key, batch, model), cfg, drop_key, dtype)
    loss = reconstruction_loss(pred, target, hidden, weight)
    return loss, {"reconstruction": loss}


def reconstruction_picture(images: np.ndarray, pred: np.ndarray, hidden: np.ndarray, patch_size: int,
                           norm_pix: bool, rows: int = 4) -> np.ndarray:
    """uint8 picture, one row per image: masked input | reconstruction (visible patches pasted) | original.

    ``images (B, S, S, 3)`` uint8, ``pred (B, L, p*p*3)`` in the loss's units, ``hidden (B, L)`` bool.
    """
    p, g = patch_size, images.shape[1] // patch_size
    image = np.asarray(images[:rows]).astype(np.float32)
    mean, std = np.asarray(PIXEL_MEAN, np.float32), np.asarray(PIXEL_STD, np.float32)
    patches = np.asarray(mae.patchify(jnp.asarray((image - mean) / std), p))
    pred = np.asarray(pred[:rows])
    if norm_pix:  # back to pixels with each patch's own statistics, as MAE's visualization
        mu = patches.mean(-1, keepdims=True)
        pred = pred * np.sqrt(patches.var(-1, keepdims=True, ddof=1) + 1e-6) + mu
    hide = np.asarray(hidden[:rows])[..., None]
    recon = np.asarray(mae.unpatchify(jnp.asarray(np.where(hide, pred, patches)), (g, g), p)) * std + mean
    gray = np.asarray(mae.unpatchify(jnp.asarray(np.where(hide, 1.0, 0.0) * np.ones_like(patches)), (g, g), p))
    masked = np.where(gray > 0, 127.0, image)
    gap = np.full((image.shape[1], 4, 3), 255.0, np.float32)
    lines = [np.concatenate([masked[i], gap, recon[i], gap, image[i]], axis=1) for i in range(len(image))]
    hgap = np.full((4, lines[0].shape[1], 3), 255.0, np.float32)
    out = [lines[0]]
    for line in lines[1:]:
        out += [hgap, line]
    return np.clip(np.rint(np.concatenate(out, axis=0)), 0, 255).astype(np.uint8)


class MaePretraining(Objective):
    """``objective = "mae"`` (see the module docstring)."""

    name = "mae"
    labeled = False
    needs_class_names = False
    best_metric = "val_loss"
    best_higher = False
    batch_keys = ("image", "valid")

    def check(self, cfg) -> None:
        m = cfg.get("mae")
        if m is None:
            raise ConfigError("objective=mae needs a config.mae block; start from configs/mae.py")
        if not 0.0 < float(m.mask_ratio) < 1.0:
            raise ConfigError(f"mae.mask_ratio={m.mask_ratio} must be between 0 and 1 (MAE: 0.75)")
        dim, heads = int(m.decoder_dim), int(m.decoder_heads)
        if dim < 4 or dim % 4 or heads < 1 or dim % heads or int(m.decoder_depth) < 0:
            raise ConfigError(f"mae.decoder_dim={dim} must be a multiple of 4 and of mae.decoder_heads={heads}, "
                              f"and mae.decoder_depth >= 0 (MAE: 512, 16 heads, 8 blocks)")
        if cfg.train.peft != "none":
            raise ConfigError(f"train.peft={cfg.train.peft!r}: MAE pretraining trains the whole encoder; "
                              "set --config.train.peft=none")

    def build_model(self, cfg, data: TrainData, log: Callable = print) -> mae.MaskedAutoencoder:
        sam = run_model.build_sam(cfg)
        m = cfg.mae
        model = mae.MaskedAutoencoder(sam, decoder_dim=int(m.decoder_dim), decoder_depth=int(m.decoder_depth),
                                      decoder_heads=int(m.decoder_heads), rngs=HostKeys(int(cfg.seed) + 1))
        to_device(model)
        return run_model.finish_model(model, cfg, log)

    def trainable_filter(self, cfg):
        parts = (nnx.PathContains("image_encoder"), nnx.PathContains("mae_decoder"), nnx.PathContains("mask_token"))
        return nnx.All(nnx.Param, nnx.Any(*parts))

    def loss(self, model, batch, key, cfg, dtype):
        return mae_loss(model, batch, key, cfg, dtype)

    def _scores(self, cfg, trainable, params, frozen, mesh, split, max_examples=None):
        """Mean held-out loss over real images (masks fixed by ``EVAL_NOISE_SEED``), and the first
        batch's images, predictions and masks for the picture."""
        def make():
            def predict(params, frozen, batch, key):
                model = trainable.model(params, frozen)
                pred, target, hidden, weight = _forward(model, batch, _noise(key, batch, model), cfg, None,
                                                        trainable.dtype)
                w = hidden * weight
                return jnp.sum(jnp.mean((pred - target) ** 2, axis=-1) * w, -1), jnp.sum(w, -1), pred, hidden
            return predict

        predict = jit_once(trainable, "scores", make)

        total = count = 0.0
        first = None
        for index, (host, device) in enumerate(eval_batches(cfg, mesh, self.batch_keys, split, max_examples,
                                                            labeled=False)):
            key = jax.random.fold_in(jax.random.key(EVAL_NOISE_SEED), index)
            sums, counts, pred, hidden = predict(params, frozen, device, key)
            total += float(np.sum(gather_rows(sums)))
            count += float(np.sum(gather_rows(counts)))
            if first is None:
                first = (gather_rows(device["image"]), gather_rows(pred), gather_rows(hidden))
        return (total / count if count else float("nan")), first

    def _picture(self, cfg, first) -> np.ndarray:
        images, pred, hidden = first
        patch = int(cfg.data.image_size) // run_model.model_spec(cfg).grid_size
        return reconstruction_picture(images, pred, hidden, patch, bool(cfg.mae.norm_pix_loss))

    def validate(self, cfg, trainable, params, frozen, mesh, data, split=None) -> dict:
        loss, first = self._scores(cfg, trainable, params, frozen, mesh, split)
        return {"scalars": {"val_loss": loss}, "best": loss, "images": {"reconstruction": self._picture(cfg, first)}}

    def evaluate(self, cfg, trainable, params, frozen, mesh, data, out_dir, split, log=print, **options) -> dict:
        loss, first = self._scores(cfg, trainable, params, frozen, mesh, split, max_examples=0)
        result = {"split": split, "data": cfg.data.name, "reconstruction_loss": loss,
                  "mask_ratio": float(cfg.mae.mask_ratio), "norm_pix_loss": bool(cfg.mae.norm_pix_loss),
                  "picture": "reconstruction.png"}
        picture = self._picture(cfg, first)
        if jax.process_index() == 0:
            os.makedirs(out_dir, exist_ok=True)
            save_png(picture, os.path.join(out_dir, "reconstruction.png"))
            with open(os.path.join(out_dir, "metrics.json"), "w") as f:
                json.dump(result, f, indent=2)
        log(f"{split}: reconstruction loss {loss:.4f} on the hidden patches; wrote {out_dir}/metrics.json and "
            "reconstruction.png (masked input | reconstruction | original)")
        return {**result, "scalars": {"test_loss": loss}}

    def summary(self, result: dict) -> str:
        return f"reconstruction loss {result['scalars']['val_loss']:.4f}"
