"""SAM's two-way transformer: prompt tokens and image embedding attend to each other.

Follows Meta's ``TwoWayTransformer``. Each block runs (1) self-attention of the tokens, (2) tokens
attending to the image, (3) an MLP on the tokens, (4) the image attending to the tokens; a final
token-to-image attention follows the blocks. Positional encodings are re-added to queries and keys
at every attention. LayerNorms use PyTorch's default eps 1e-5 here (not the encoder's 1e-6).

``token_mask`` (B, N) marks real tokens; padded tokens are excluded as keys wherever tokens are keys,
so a padded prompt batch gives the same result as the unpadded one.

Each block may carry two optional adapters (``samjax.modeling.peft``), both off by default:
``adapter_self_attn`` on the token self-attention output and ``adapter_cross_attn`` on the
token-to-image attention output, each applied before the residual add (and the LayerNorm).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from samjax.modeling.common import Dtype, MLPBlock, dense, layer_norm

DECODER_NORM_EPS = 1e-5


class Attention(nnx.Module):
    """Multi-head attention whose q/k/v projections may shrink the width by ``downsample_rate``."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype = jnp.float32,
    ):
        internal_dim = embedding_dim // downsample_rate
        if internal_dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide embedding_dim // downsample_rate = {internal_dim}")
        self.num_heads = num_heads
        kw = dict(rngs=rngs, dtype=dtype)
        self.q_proj = dense(embedding_dim, internal_dim, ("embed", "heads"), **kw)
        self.k_proj = dense(embedding_dim, internal_dim, ("embed", "heads"), **kw)
        self.v_proj = dense(embedding_dim, internal_dim, ("embed", "heads"), **kw)
        self.out_proj = dense(internal_dim, embedding_dim, ("heads", "embed"), **kw)

    def _separate_heads(self, x: jax.Array) -> jax.Array:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(0, 2, 1, 3)

    def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
        """``q (B, Nq, C)``, ``k, v (B, Nk, C)``, ``key_mask (B, Nk)`` -> ``(B, Nq, C)``."""
        return self.attend(self.q_proj(q), self.k_proj(k), self.v_proj(v), key_mask)

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
        """The attention of already projected ``q (B, Nq, C')``, ``k, v (B, Nk, C')``; a batch of 1 is shared."""
        b = max(q.shape[0], k.shape[0])
        q, k, v = (self._separate_heads(jnp.broadcast_to(x, (b, *x.shape[1:]))) for x in (q, k, v))
        logits = jnp.einsum("bhqd,bhkd->bhqk", q, k) / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
        logits = logits.astype(jnp.float32)
        if key_mask is not None:
            logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bhkd->bqhd", attn, v)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], -1))


class TwoWayAttentionBlock(nnx.Module):
    """One block of the two-way transformer (sparse tokens <-> dense image tokens).

    Args:
      skip_first_layer_pe: the first block's self-attention neither adds the positional encoding
        nor keeps a residual (Meta's behaviour).

    ``adapter_self_attn`` / ``adapter_cross_attn`` (default None) transform the output of the token
    self-attention / token-to-image attention before it joins the residual stream:
    ``queries = norm1(queries + adapter_self_attn(self_attn(...)))`` and
    ``queries = norm2(queries + adapter_cross_attn(cross_attn_token_to_image(...)))``.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype = jnp.float32,
    ):
        kw = dict(rngs=rngs, dtype=dtype)
        self.self_attn = Attention(embedding_dim, num_heads, **kw)
        self.norm1 = layer_norm(embedding_dim, DECODER_NORM_EPS, **kw)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate, **kw)
        self.norm2 = layer_norm(embedding_dim, DECODER_NORM_EPS, **kw)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, jax.nn.relu, **kw)
        self.norm3 = layer_norm(embedding_dim, DECODER_NORM_EPS, **kw)
        self.norm4 = layer_norm(embedding_dim, DECODER_NORM_EPS, **kw)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate, **kw)
        self.skip_first_layer_pe = skip_first_layer_pe
        self.adapter_self_attn = nnx.data(None)
        self.adapter_cross_attn = nnx.data(None)

    @staticmethod
    def _adapt(adapter: nnx.Module | None, x: jax.Array) -> jax.Array:
        return x if adapter is None else adapter(x)

    def __call__(
        self,
        queries: jax.Array,
        keys: jax.Array,
        query_pe: jax.Array,
        key_pe: jax.Array,
        token_mask: jax.Array | None = None,
        image_side: ImageSide | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """``image_side``: this block's prompt-independent projections of ``keys`` (:meth:`image_side`)."""
        if self.skip_first_layer_pe:
            queries = self._adapt(self.adapter_self_attn, self.self_attn(queries, queries, queries, token_mask))
        else:
            q = queries + query_pe
            queries = queries + self._adapt(self.adapter_self_attn, self.self_attn(q, q, queries, token_mask))
        queries = self.norm1(queries)

        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        side = image_side if image_side is not None else self.image_side(keys, key_pe)
        attn = t2i.attend(t2i.q_proj(queries + query_pe), side.t2i_k, side.t2i_v)
        queries = self.norm2(queries + self._adapt(self.adapter_cross_attn, attn))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        keys = self.norm4(keys + i2t.attend(side.i2t_q, i2t.k_proj(q), i2t.v_proj(queries), token_mask))
        return queries, keys

    def image_side(self, keys: jax.Array, key_pe: jax.Array) -> ImageSide:
        """The projections of the image tokens ``keys (B, Nk, C)`` made before they change in this block."""
        k = keys + key_pe
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        return ImageSide(t2i.k_proj(k), t2i.v_proj(keys), i2t.q_proj(k))


class ImageSide(NamedTuple):
    """A block's image-token projections ``(B, Nk, C')``: the token-to-image keys and values, the
    image-to-token queries. They depend on the image and the dense prompt only, so the first block's can
    be computed once per image (``MaskDecoder.image_side``) and shared by every prompt without a mask."""

    t2i_k: jax.Array
    t2i_v: jax.Array
    i2t_q: jax.Array


class TwoWayTransformer(nnx.Module):
    """``depth`` two-way blocks and a final token-to-image attention.

    Args:
      depth: number of blocks (2 in SAM).
      embedding_dim: channel width (256).
      num_heads: attention heads (8).
      mlp_dim: hidden width of the token MLP (2048).
    """

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int = 2,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype = jnp.float32,
    ):
        kw = dict(rngs=rngs, dtype=dtype)
        self.layers = nnx.List(
            [
                TwoWayAttentionBlock(
                    embedding_dim, num_heads, mlp_dim, attention_downsample_rate, skip_first_layer_pe=(i == 0), **kw
                )
                for i in range(depth)
            ]
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate, **kw)
        self.norm_final_attn = layer_norm(embedding_dim, DECODER_NORM_EPS, **kw)

    def __call__(
        self,
        image_embedding: jax.Array,
        image_pe: jax.Array,
        point_embedding: jax.Array,
        token_mask: jax.Array | None = None,
        image_side: ImageSide | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Runs the transformer.

        Args:
          image_embedding: ``(B, h, w, C)``.
          image_pe: ``(B, h, w, C)`` positional encoding of the grid.
          point_embedding: ``(B, N, C)`` tokens (output tokens then prompt tokens).
          token_mask: ``(B, N)`` bool, False for padding tokens.
          image_side: the first block's image-side projections (:meth:`image_side`), batch 1 or B.

        Returns:
          processed tokens ``(B, N, C)`` and image tokens ``(B, h*w, C)``.
        """
        b, h, w, c = image_embedding.shape
        keys = image_embedding.reshape(b, h * w, c)
        key_pe = image_pe.reshape(image_pe.shape[0], h * w, c)
        queries = point_embedding
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, point_embedding, key_pe, token_mask, image_side if i == 0 else None)
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys

    def image_side(self, image_embedding: jax.Array, image_pe: jax.Array) -> ImageSide:
        """The first block's image-side projections of ``image_embedding (B, h, w, C)`` (image + dense prompt)."""
        b, h, w, c = image_embedding.shape
        return self.layers[0].image_side(image_embedding.reshape(b, h * w, c), image_pe.reshape(-1, h * w, c))
