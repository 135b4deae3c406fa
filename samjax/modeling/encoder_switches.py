"""Switches of the image encoders: stochastic depth per block, rematerialization, the attention form."""

from __future__ import annotations

from typing import Callable

import jax
from flax import nnx

from samjax.modeling.attention import IMPLEMENTATIONS
from samjax.modeling.image_encoder import Attention, ImageEncoderViT
from samjax.modeling.peft import list_encoder_blocks
from samjax.modeling.tiny_vit import TinyViT


def set_drop_path(model, rate: float) -> list[float]:
    """Sets the stochastic-depth rate of every encoder block: ``rate * i / (depth - 1)`` for block ``i``.

    Works on a Sam or its image encoder, ViT or TinyViT (its attention blocks, flat across stages).
    Drop path acts only when the encoder is called with a ``key`` (``image_encoder(x, key=key)``).
    Returns the per-block rates.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop path rate must be in [0, 1), got {rate}")
    blocks = list_encoder_blocks(model)
    rates = [rate * i / (len(blocks) - 1) if len(blocks) > 1 else 0.0 for i in range(len(blocks))]
    for block, r in zip(blocks, rates):
        block.drop_path = float(r)
    return rates


def set_remat(model, enabled: bool = True, policy: str | Callable | None = None) -> None:
    """Switches rematerialization of each image-encoder block on or off (same results, less memory).

    Args:
      model: a Sam or its image encoder.
      policy: ``None`` (save nothing inside a block) or a ``jax.checkpoint_policies`` name such as
        ``"dots_with_no_batch_dims_saveable"``.
    """
    encoder = getattr(model, "image_encoder", model)
    if not isinstance(encoder, (ImageEncoderViT, TinyViT)):
        raise TypeError(f"no remat switch on {type(encoder).__name__}")
    if isinstance(policy, str) and not hasattr(jax.checkpoint_policies, policy):
        raise ValueError(f"unknown jax.checkpoint_policies name {policy!r}")
    encoder.remat = bool(enabled)
    encoder.remat_policy = policy




def set_attention(model, impl: str = "auto") -> int:
    """Sets the form of every ViT attention (``samjax.modeling.attention``: auto, reference, blocked,
    fused) in a Sam, its image encoder, or any model holding ViT blocks (MAE's decoder too).

    The forms compute the same function; this chooses speed and memory. Returns the number of
    attentions set (0 for ViT-T, whose windowed attention is its own).
    """
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, got {impl!r}")
    count = 0
    for _, module in nnx.iter_modules(model):
        if isinstance(module, Attention):
            module.impl = impl
            count += 1
    return count
