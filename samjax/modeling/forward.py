"""The forward passes that training, evaluation and inference share, below all three (next to the model).

SAM: ``encode`` (SAM's ``preprocess`` and image encoder on padded uint8 batches), auto mode's per-class logits
(no prompts, the "no mask" dense embedding: ``auto_logits``, ``auto_class_logits``, ``auto_predictions``),
prompted logits for each image's ``K`` simulated objects (``prompted_logits``), and the resolution changes
between the decoder's low-res grid and the input (``low_res``, ``upsample``). The UNet baseline: its class
logits and class maps at the input resolution. Shapes: images ``(B, S, S, 3)``, low-res ``L = S / 4``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from samjax.modeling.sam import Sam
from samjax.modeling.unet import UNet


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


def auto_class_logits(model: Sam, batch: dict, dtype=jnp.float32) -> jax.Array:
    """Per-class logits ``(B, T, S, S)`` at the input resolution: low-res logits upsampled bilinearly."""
    return upsample(auto_logits(model, batch, None, dtype), batch["image"].shape[1])


def auto_predictions(model: Sam, batch: dict, dtype=jnp.float32) -> jax.Array:
    """Class map ``(B, S, S)`` at the input resolution: the argmax of :func:`auto_class_logits`."""
    return jnp.argmax(auto_class_logits(model, batch, dtype), axis=1).astype(jnp.int32)


def unet_class_logits(model: UNet, batch: dict, dtype=jnp.float32) -> jax.Array:
    """Class logits ``(B, T, H, W)`` at the input resolution (the full-resolution output)."""
    return jnp.moveaxis(model(batch["image"], batch["valid"])[0], -1, 1)


def unet_predictions(model: UNet, batch: dict, dtype=jnp.float32) -> jax.Array:
    """Class maps ``(B, H, W)`` int32 at the input resolution."""
    return jnp.argmax(unet_class_logits(model, batch, dtype), axis=1).astype(jnp.int32)
