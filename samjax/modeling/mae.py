"""Masked autoencoding around SAM's image encoder: patches, random masks, the MAE decoder.

MAE (He et al., 2022) hides 75% of an image's patches and trains an encoder-decoder to paint them
back. Plain MAE feeds the encoder only the visible patches; SAM's encoder cannot run that way: its
windowed blocks cut the *full* token grid into 14x14 windows and their relative-position tables are
sized for those windows. So here the encoder runs on the full grid with a learned ``mask_token`` in
place of every hidden patch's embedding (before the position embedding is added, so each mask token
knows where it is), and the hidden patches' pixels are zeroed first so no convolution can see them.
The windows stay whole and the encoder computes exactly what fine-tuning will run. The decoder is
MAE's: the encoder's output (the 256-channel image embedding, neck included, so the whole encoder is
pretrained) projected to the decoder width, hidden positions replaced by the decoder's own mask
token, fixed 2D sine-cosine positions, global-attention blocks, and a linear head to pixels.

:class:`MaskedAutoencoder` holds SAM's three components under their own names (``image_encoder``,
``prompt_encoder``, ``mask_decoder``) plus ``mask_token`` and ``mae_decoder``: a pretraining run's
checkpoint is a whole SAM that fine-tuning loads as it is (the MAE parts are ignored there).

Layouts follow MAE's reference code (and ``transformers``' ``ViTMAEForPreTraining``): a patch is
flattened row by row, channels last, ``(p, p, C) -> p * p * C``; patches are numbered row-major.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from samjax.modeling import initializers
from samjax.modeling.common import Dtype, default_kernel_init, dense, layer_norm, with_axes
from samjax.modeling.image_encoder import ENCODER_NORM_EPS, Block
from samjax.modeling.sam import Sam


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
    """``(B, H, W, C)`` -> ``(B, (H/p) * (W/p), p * p * C)``, patches row-major, each ``(p, p, C)`` flat."""
    b, h, w, c = images.shape
    p = patch_size
    x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: jax.Array, grid: tuple[int, int], patch_size: int) -> jax.Array:
    """Inverse of :func:`patchify`: ``(B, gh * gw, p * p * C)`` -> ``(B, gh * p, gw * p, C)``."""
    b, _, d = patches.shape
    (gh, gw), p = grid, patch_size
    c = d // (p * p)
    x = patches.reshape(b, gh, gw, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, gh * p, gw * p, c)


def random_masking(noise: jax.Array, mask_ratio: float) -> jax.Array:
    """MAE's per-sample random mask from ``noise (B, L)``: True on the hidden patches.

    The ``int(L * (1 - mask_ratio))`` patches of smallest noise stay visible (argsort of the noise,
    as MAE's reference), so every image hides exactly the same number of patches.
    """
    length = noise.shape[-1]
    keep = int(length * (1 - mask_ratio))
    rank = jnp.argsort(jnp.argsort(noise, axis=-1), axis=-1)
    return rank >= keep


def sincos_2d(grid: tuple[int, int], dim: int) -> np.ndarray:
    """Fixed 2D sine-cosine position embedding ``(gh, gw, dim)``: half the channels for rows, half for columns."""
    if dim % 4:
        raise ValueError(f"the MAE decoder width must be a multiple of 4, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim // 4))

    def one(pos):
        out = pos[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    rows, cols = one(np.arange(grid[0], dtype=np.float64)), one(np.arange(grid[1], dtype=np.float64))
    emb = np.concatenate([np.broadcast_to(rows[:, None], (*grid, dim // 2)),
                          np.broadcast_to(cols[None, :], (*grid, dim // 2))], axis=-1)
    return emb.astype(np.float32)


class MaeDecoder(nnx.Module):
    """MAE's lightweight decoder: image embedding + hidden positions -> pixels of every patch.

    Args:
      in_dim: channels of the encoder's output (256 for SAM).
      grid: ``(gh, gw)`` token grid of the encoder's output.
      patch_size: pixels per patch side; the head predicts ``patch_size**2 * in_chans`` values.
      dim, depth, num_heads: decoder width, blocks and heads (MAE: 512, 8, 16).
    """

    def __init__(self, in_dim: int, grid: tuple[int, int], patch_size: int, *, in_chans: int = 3,
                 dim: int = 512, depth: int = 8, num_heads: int = 16, mlp_ratio: float = 4.0,
                 rngs: nnx.Rngs, dtype: Dtype = jnp.float32):
        self.grid = tuple(grid)
        self.embed = dense(in_dim, dim, (None, "embed"), rngs=rngs, dtype=dtype)
        self.mask_token = nnx.Param(with_axes(initializers.normal(0.02), ("embed",))(rngs.params(), (dim,)))
        self.blocks = nnx.List([
            Block(dim, num_heads, self.grid, window_size=0, mlp_ratio=mlp_ratio, use_rel_pos=False, rngs=rngs,
                  dtype=dtype)
            for _ in range(depth)
        ])
        self.norm = layer_norm(dim, ENCODER_NORM_EPS, rngs=rngs, dtype=dtype)
        self.pred = dense(dim, patch_size * patch_size * in_chans, ("embed", None), rngs=rngs, dtype=dtype)

    def __call__(self, latent: jax.Array, hidden: jax.Array) -> jax.Array:
        """``latent (B, gh, gw, in_dim)``, ``hidden (B, gh, gw)`` bool -> ``(B, gh * gw, p * p * C)``."""
        x = self.embed(latent)
        x = jnp.where(hidden[..., None], self.mask_token[...].astype(x.dtype), x)
        x = x + jnp.asarray(sincos_2d(self.grid, x.shape[-1]), x.dtype)
        for block in self.blocks:
            x = block(x)
        x = self.pred(self.norm(x))
        return x.reshape(x.shape[0], -1, x.shape[-1])


class MaskedAutoencoder(nnx.Module):
    """SAM's image encoder pretrained as a masked autoencoder (see the module docstring).

    Args:
      sam: the SAM whose encoder is pretrained; its prompt encoder and mask decoder are carried
        along untouched so the run's checkpoint is a whole SAM.
      decoder_dim, decoder_depth, decoder_heads: the :class:`MaeDecoder`.
    """

    def __init__(self, sam: Sam, *, decoder_dim: int = 512, decoder_depth: int = 8, decoder_heads: int = 16,
                 rngs: nnx.Rngs, dtype: Dtype = jnp.float32):
        encoder = sam.image_encoder
        self.image_encoder = encoder
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.pixel_mean, self.pixel_std = sam.pixel_mean, sam.pixel_std
        grid = sam.prompt_encoder.image_embedding_size
        self.patch_size = encoder.img_size // grid[0]
        init = with_axes(default_kernel_init, ("embed",))
        self.mask_token = nnx.Param(init(rngs.params(), (encoder.stem_width,)))
        self.mae_decoder = MaeDecoder(sam.prompt_encoder.embed_dim, grid, self.patch_size, dim=decoder_dim,
                                      depth=decoder_depth, num_heads=decoder_heads, rngs=rngs, dtype=dtype)

    @property
    def img_size(self) -> int:
        return self.image_encoder.img_size

    @property
    def grid(self) -> tuple[int, int]:
        return self.mae_decoder.grid

    def normalize(self, x: jax.Array) -> jax.Array:
        """0-255 RGB pixels ``(..., 3)`` -> SAM's normalized input (float32)."""
        return (x.astype(jnp.float32) - jnp.asarray(self.pixel_mean)) / jnp.asarray(self.pixel_std)

    def __call__(self, images: jax.Array, hidden: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Predicted pixels of every patch.

        Args:
          images: ``(B, S, S, 3)`` normalized pixels (SAM's input; padding already zero).
          hidden: ``(B, gh, gw)`` bool, True on the patches to hide (:func:`random_masking`).
          key: drives the encoder's stochastic depth (training only).

        Returns:
          ``(B, gh * gw, p * p * 3)`` predictions in :func:`patchify`'s layout.
        """
        p = self.patch_size
        pixels_hidden = jnp.repeat(jnp.repeat(hidden, p, axis=1), p, axis=2)[..., None]
        x = jnp.where(pixels_hidden, 0.0, images).astype(images.dtype)
        latent = self.image_encoder(x, key=key, hidden=hidden, mask_token=self.mask_token[...])
        return self.mae_decoder(latent, hidden)
