"""SAM's mask decoder: output tokens, the two-way transformer, upscaling and hypernetwork heads.

Follows Meta's ``MaskDecoder``. An IoU token and ``num_multimask_outputs + 1`` mask tokens are
prepended to the prompt tokens; after the transformer, each mask token goes through its own MLP
(a hypernetwork) whose output is dotted with the 4x-upscaled image embedding to give one mask, and
the IoU token predicts each mask's quality. Single-mask output uses token 0, multimask the rest.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from samjax.modeling import initializers
from samjax.modeling.common import ConvTranspose2x2, Dtype, dense, gelu, layer_norm_2d, with_axes
from samjax.modeling.transformer import ImageSide, TwoWayTransformer


class MLP(nnx.Module):
    """``num_layers`` linear layers with ReLU between them (optionally a sigmoid on the output)."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype = jnp.float32,
    ):
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nnx.List(
            [dense(i, o, (None, None), rngs=rngs, dtype=dtype) for i, o in zip(dims[:-1], dims[1:])]
        )
        self.sigmoid_output = sigmoid_output

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = jax.nn.relu(x)
        return jax.nn.sigmoid(x) if self.sigmoid_output else x


class MaskDecoder(nnx.Module):
    """Predicts masks and their IoU from an image embedding and prompt embeddings.

    Args:
      transformer_dim: channel width (256).
      transformer: the two-way transformer.
      num_multimask_outputs: masks predicted in multimask mode (3).
      iou_head_depth, iou_head_hidden_dim: the IoU MLP (3 layers, 256 wide).
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        rngs: nnx.Rngs,
        dtype: Dtype = jnp.float32,
    ):
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        embed_init = with_axes(initializers.normal(1.0), (None, "embed"))
        self.iou_token = nnx.Param(embed_init(rngs.params(), (1, transformer_dim)))
        self.mask_tokens = nnx.Param(embed_init(rngs.params(), (self.num_mask_tokens, transformer_dim)))
        kw = dict(rngs=rngs, dtype=dtype)
        self.upscale_conv1 = ConvTranspose2x2(transformer_dim, transformer_dim // 4, **kw)
        self.upscale_norm = layer_norm_2d(transformer_dim // 4, **kw)
        self.upscale_conv2 = ConvTranspose2x2(transformer_dim // 4, transformer_dim // 8, **kw)
        self.output_hypernetworks_mlps = nnx.List(
            [MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3, **kw) for _ in range(self.num_mask_tokens)]
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth, **kw)

    def __call__(
        self,
        image_embeddings: jax.Array,
        image_pe: jax.Array,
        sparse_prompt_embeddings: jax.Array,
        dense_prompt_embeddings: jax.Array,
        multimask_output: bool,
        sparse_mask: jax.Array | None = None,
        image_side: ImageSide | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Predicts masks.

        Args:
          image_embeddings: ``(1 or B, h, w, C)``; a batch of 1 is shared by all B prompts.
          image_pe: ``(1, h, w, C)``.
          sparse_prompt_embeddings: ``(B, N, C)``; ``sparse_mask (B, N)`` marks real tokens.
          dense_prompt_embeddings: ``(B, h, w, C)``.
          multimask_output: three masks (tokens 1-3) instead of one (token 0).
          image_side: :meth:`image_side` of these embeddings, dense prompt and PE, if computed ahead.

        Returns:
          mask logits ``(B, M, 4h, 4w)`` and IoU predictions ``(B, M)``, M = 3 or 1.
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, sparse_mask, image_side
        )
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sl], iou_pred[:, sl]

    def image_side(self, image_embeddings: jax.Array, image_pe: jax.Array, dense_prompt_embeddings: jax.Array
                   ) -> ImageSide:
        """The transformer's first image-side projections (``TwoWayTransformer.image_side``) of
        ``image_embeddings + dense_prompt_embeddings`` ``(1, h, w, C)``: prompt-independent where the dense
        prompt is (no mask given), so one image computes them once for all its prompts (``(1, h*w, C/2)`` each,
        0.8 GFLOP of the ~3.5 of a ViT-B decoder call)."""
        return self.transformer.image_side(image_embeddings + dense_prompt_embeddings, image_pe)

    def predict_masks(
        self,
        image_embeddings: jax.Array,
        image_pe: jax.Array,
        sparse_prompt_embeddings: jax.Array,
        dense_prompt_embeddings: jax.Array,
        sparse_mask: jax.Array | None = None,
        image_side: ImageSide | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """All ``num_mask_tokens`` masks ``(B, T, 4h, 4w)`` and IoU predictions ``(B, T)``."""
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = jnp.concatenate([self.iou_token[...], self.mask_tokens[...]], axis=0)
        output_tokens = jnp.broadcast_to(output_tokens[None], (b, *output_tokens.shape))
        tokens = jnp.concatenate([output_tokens, sparse_prompt_embeddings.astype(output_tokens.dtype)], axis=1)
        token_mask = None
        if sparse_mask is not None:
            token_mask = jnp.concatenate([jnp.ones((b, self.num_mask_tokens + 1), bool), sparse_mask], axis=1)

        src = image_embeddings + dense_prompt_embeddings  # broadcasts a shared image over the prompts
        src = jnp.broadcast_to(src, (b, *src.shape[1:]))
        pos_src = jnp.broadcast_to(image_pe, src.shape)
        _, h, w, c = src.shape

        hs, src = self.transformer(src, pos_src, tokens, token_mask, image_side)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]

        src = src.reshape(b, h, w, c)
        upscaled = gelu(self.upscale_norm(self.upscale_conv1(src)))
        upscaled = gelu(self.upscale_conv2(upscaled))  # (B, 4h, 4w, C/8)
        hyper_in = jnp.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], axis=1
        )  # (B, T, C/8)
        masks = jnp.einsum("btc,bhwc->bthw", hyper_in, upscaled)
        iou_pred = self.iou_prediction_head(iou_token_out)
        return masks, iou_pred
