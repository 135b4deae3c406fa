"""The Segment Anything model: image encoder + prompt encoder + mask decoder, with pre/post-processing.

Images are channels-last ``(B, H, W, 3)`` RGB; masks are ``(B, M, H, W)`` as in Meta's code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from samjax.modeling.image_encoder import ImageEncoderViT
from samjax.modeling.mask_decoder import MaskDecoder
from samjax.modeling.prompt_encoder import PromptEncoder
from samjax.utils.resize import apply_taps, upscale_crop_resize_matrix, upscale_crop_resize_taps

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nnx.Module):
    """SAM: predicts object masks from an image and prompts.

    Args:
      image_encoder: backbone giving the ``(B, h, w, 256)`` image embedding.
      prompt_encoder: encodes points, boxes and masks.
      mask_decoder: predicts masks from the two.
      pixel_mean, pixel_std: normalization of the 0-255 RGB input.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: tuple[float, float, float] = PIXEL_MEAN,
        pixel_std: tuple[float, float, float] = PIXEL_STD,
    ):
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.pixel_mean = tuple(float(v) for v in pixel_mean)
        self.pixel_std = tuple(float(v) for v in pixel_std)

    @property
    def img_size(self) -> int:
        return self.image_encoder.img_size

    def normalize(self, x: jax.Array) -> jax.Array:
        """0-255 RGB pixels ``(..., 3)`` -> zero mean, unit variance (float32)."""
        return (x.astype(jnp.float32) - jnp.asarray(self.pixel_mean)) / jnp.asarray(self.pixel_std)

    def preprocess(self, x: jax.Array) -> jax.Array:
        """Normalizes ``(B, h, w, 3)`` 0-255 pixels and zero-pads bottom-right to ``img_size``."""
        x = self.normalize(x)
        h, w = x.shape[1:3]
        if h > self.img_size or w > self.img_size:
            raise ValueError(f"image {h}x{w} is larger than the model input {self.img_size}; resize it first")
        return jnp.pad(x, ((0, 0), (0, self.img_size - h), (0, self.img_size - w), (0, 0)))

    def postprocess_masks(
        self, masks: jax.Array, input_size: tuple[int, int], original_size: tuple[int, int], dense: bool = False
    ) -> jax.Array:
        """Upscales low-resolution mask logits ``(B, M, h, w)`` to ``(B, M, *original_size)``.

        As Meta: bilinear to the padded input size, crop the padding, bilinear to the original size;
        the three steps are composed into one banded weight matrix per axis, applied as its few taps a row
        (``resize.upscale_crop_resize_taps``), or with ``dense`` as two matrix products (the same weights):
        faster where reductions over the result follow in the same program, as AMG's filters (a 64-point
        ViT-B AMG call at 800x600 with its set_image: 10.9 s against 21.1 with the taps).
        """
        h, w = masks.shape[-2:]
        if dense:
            hi = jax.lax.Precision.HIGHEST
            mh = upscale_crop_resize_matrix(h, self.img_size, input_size[0], original_size[0])
            mw = upscale_crop_resize_matrix(w, self.img_size, input_size[1], original_size[1])
            masks = jnp.matmul(jnp.asarray(mh, masks.dtype), masks, precision=hi)
            return jnp.matmul(masks, jnp.asarray(mw.T, masks.dtype), precision=hi)
        masks = apply_taps(masks, *upscale_crop_resize_taps(h, self.img_size, input_size[0], original_size[0]), -2)
        return apply_taps(masks, *upscale_crop_resize_taps(w, self.img_size, input_size[1], original_size[1]), -1)

    def __call__(
        self,
        images: jax.Array,
        points: tuple[jax.Array, jax.Array] | None = None,
        boxes: jax.Array | None = None,
        mask_inputs: jax.Array | None = None,
        multimask_output: bool = False,
        *,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """End-to-end on preprocessed ``(B, img_size, img_size, 3)`` images, one prompt set per image.

        ``key`` (training only) drives the image encoder's stochastic depth. Returns low-resolution
        mask logits ``(B, M, h*4, w*4)`` and IoU predictions ``(B, M)``.
        """
        embeddings = self.image_encoder(images, key=key)
        sparse, sparse_mask, dense = self.prompt_encoder(points, boxes, mask_inputs)
        return self.mask_decoder(
            embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output, sparse_mask
        )

