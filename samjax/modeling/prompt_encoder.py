"""SAM's prompt encoder: points, boxes and masks to sparse and dense prompt embeddings.

Follows Meta's ``PromptEncoder``. Points and box corners become random-Fourier positional encodings
plus a learned embedding per kind (background point, foreground point, top-left, bottom-right, "not
a point"); a low-resolution mask becomes a dense embedding through a small conv stack, and "no
mask" becomes one learned vector broadcast over the grid.

To keep shapes fixed under ``jit``, prompts may be padded: a point with label ``PADDING_LABEL``, or
a box whose ``box_mask`` entry is False, yields a zero token that ``sparse_mask`` marks False; the
mask decoder leaves such tokens out of every attention, so padding never changes a result.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from samjax.modeling import initializers
from samjax.modeling.common import Buffer, Dtype, default_kernel_init, gelu, layer_norm_2d, with_axes

NOT_A_POINT_LABEL = -1  # Meta's padding point: a real token embedded as "not a point".
PADDING_LABEL = -2  # samjax's bucket padding: no token at all.


class PositionEmbeddingRandom(nnx.Module):
    """Positional encoding with random spatial frequencies (Tancik et al.), a fixed buffer.

    Args:
      num_pos_feats: half the embedding width; the encoding is ``[sin, cos]`` of ``num_pos_feats``
        projections.
      scale: standard deviation of the Gaussian frequency matrix (1.0 when None or <= 0).
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None, *, rngs: nnx.Rngs):
        if scale is None or scale <= 0.0:
            scale = 1.0
        matrix = initializers.normal(scale)(rngs.params(), (2, num_pos_feats), jnp.float32)
        self.positional_encoding_gaussian_matrix = Buffer(matrix)

    def _pe_encoding(self, coords: jax.Array) -> jax.Array:
        """Coordinates in [0, 1], ``(..., 2)`` -> ``(..., 2 * num_pos_feats)``."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix[...]
        coords = 2 * math.pi * coords
        return jnp.concatenate([jnp.sin(coords), jnp.cos(coords)], axis=-1)

    def __call__(self, size: tuple[int, int]) -> jax.Array:
        """Encoding of the centres of an ``(h, w)`` grid: ``(h, w, 2 * num_pos_feats)``."""
        h, w = size
        y = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
        x = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
        grid = jnp.stack(jnp.broadcast_arrays(x[None, :], y[:, None]), axis=-1)
        return self._pe_encoding(grid)

    def forward_with_coords(self, coords: jax.Array, image_size: tuple[int, int]) -> jax.Array:
        """Pixel coordinates ``(..., 2)`` as (x, y) in an ``(H, W)`` image -> ``(..., C)``."""
        scale = jnp.array([1.0 / image_size[1], 1.0 / image_size[0]], jnp.float32)
        return self._pe_encoding(coords.astype(jnp.float32) * scale)


class PromptEncoder(nnx.Module):
    """Encodes prompts for the mask decoder.

    Args:
      embed_dim: prompt embedding width (256).
      image_embedding_size: ``(h, w)`` of the image embedding (64x64 at 1024).
      input_image_size: ``(H, W)`` of the padded encoder input (1024x1024).
      mask_in_chans: hidden channels of the mask downscaling stack (16).
    """

    num_point_embeddings = 4  # background point, foreground point, box top-left, box bottom-right

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int = 16,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype = jnp.float32,
    ):
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.dtype = dtype
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2, rngs=rngs)
        embed_init = with_axes(initializers.normal(1.0), (None, "embed"))
        self.point_embeddings = nnx.List(
            [nnx.Param(embed_init(rngs.params(), (1, embed_dim))) for _ in range(self.num_point_embeddings)]
        )
        self.not_a_point_embed = nnx.Param(embed_init(rngs.params(), (1, embed_dim)))
        self.no_mask_embed = nnx.Param(embed_init(rngs.params(), (1, embed_dim)))

        def conv(cin, cout, k):
            return nnx.Conv(
                cin, cout, kernel_size=(k, k), strides=(k, k), padding="VALID", dtype=dtype,
                kernel_init=default_kernel_init, rngs=rngs,
            )

        self.mask_conv1 = conv(1, mask_in_chans // 4, 2)
        self.mask_norm1 = layer_norm_2d(mask_in_chans // 4, rngs=rngs, dtype=dtype)
        self.mask_conv2 = conv(mask_in_chans // 4, mask_in_chans, 2)
        self.mask_norm2 = layer_norm_2d(mask_in_chans, rngs=rngs, dtype=dtype)
        self.mask_conv3 = conv(mask_in_chans, embed_dim, 1)

    def get_dense_pe(self) -> jax.Array:
        """Positional encoding of the image embedding grid, ``(1, h, w, embed_dim)``."""
        return self.pe_layer(self.image_embedding_size)[None]

    def _embed_points(self, points: jax.Array, labels: jax.Array, pad: bool) -> tuple[jax.Array, jax.Array]:
        points = points.astype(jnp.float32) + 0.5  # to the pixel centre
        labels = labels.astype(jnp.int32)
        if pad:
            b = points.shape[0]
            points = jnp.concatenate([points, jnp.zeros((b, 1, 2), points.dtype)], axis=1)
            labels = jnp.concatenate([labels, jnp.full((b, 1), NOT_A_POINT_LABEL, labels.dtype)], axis=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        lab = labels[..., None]
        emb = jnp.where(lab == 0, emb + self.point_embeddings[0][0], emb)
        emb = jnp.where(lab == 1, emb + self.point_embeddings[1][0], emb)
        emb = jnp.where(lab == NOT_A_POINT_LABEL, self.not_a_point_embed[0], emb)
        valid = labels != PADDING_LABEL
        emb = jnp.where(valid[..., None], emb, 0.0)
        return emb, valid

    def _embed_boxes(self, boxes: jax.Array) -> jax.Array:
        corners = boxes.astype(jnp.float32).reshape(-1, 2, 2) + 0.5
        emb = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_embed = jnp.concatenate([self.point_embeddings[2][...], self.point_embeddings[3][...]])
        return emb + corner_embed

    def _embed_masks(self, masks: jax.Array) -> jax.Array:
        """``(B, 4h, 4w, 1)`` mask logits -> ``(B, h, w, embed_dim)``."""
        x = gelu(self.mask_norm1(self.mask_conv1(masks.astype(self.dtype))))
        x = gelu(self.mask_norm2(self.mask_conv2(x)))
        return self.mask_conv3(x)

    def __call__(
        self,
        points: tuple[jax.Array, jax.Array] | None = None,
        boxes: jax.Array | None = None,
        masks: jax.Array | None = None,
        box_mask: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Embeds the prompts of a batch.

        Args:
          points: ``(coords (B, N, 2), labels (B, N))`` in input-image pixels (x, y); labels 1
            foreground, 0 background, -1 "not a point", ``PADDING_LABEL`` absent. As in Meta's code,
            points without boxes get one extra "not a point" token.
          boxes: ``(B, 4)`` as (x0, y0, x1, y1).
          masks: ``(B, 4h, 4w)`` or ``(B, 4h, 4w, 1)`` low-resolution mask logits.
          box_mask: ``(B,)`` bool, False where a batch entry has no box (fixed-shape batches).

        Returns:
          sparse ``(B, N', embed_dim)``, sparse_mask ``(B, N')`` (False marks padding) and dense
          ``(B, h, w, embed_dim)`` embeddings.
        """
        bs = self._batch_size(points, boxes, masks)
        sparse = [jnp.zeros((bs, 0, self.embed_dim), jnp.float32)]
        valid = [jnp.zeros((bs, 0), bool)]
        if points is not None:
            coords, labels = points
            emb, ok = self._embed_points(coords, labels, pad=boxes is None)
            sparse.append(emb)
            valid.append(ok)
        if boxes is not None:
            emb = self._embed_boxes(boxes)
            ok = jnp.ones((bs, 2), bool) if box_mask is None else jnp.repeat(box_mask[:, None], 2, axis=1)
            sparse.append(jnp.where(ok[..., None], emb, 0.0))
            valid.append(ok)
        if masks is not None:
            if masks.ndim == 3:
                masks = masks[..., None]
            dense = self._embed_masks(masks)
        else:
            h, w = self.image_embedding_size
            dense = jnp.broadcast_to(self.no_mask_embed[...].reshape(1, 1, 1, -1), (bs, h, w, self.embed_dim))
        return jnp.concatenate(sparse, axis=1), jnp.concatenate(valid, axis=1), dense

    @staticmethod
    def _batch_size(points, boxes, masks) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1
