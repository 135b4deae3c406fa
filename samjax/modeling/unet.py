"""A 2D UNet in the nnU-Net style: the study's baseline trained from scratch, the bar SAM has to clear.

Encoder stage ``s`` (widths ``features``, e.g. 32, 64, 128, 256, 320): two 3x3 convolutions, each followed
by instance normalization and leaky ReLU (slope 0.01), the first with stride 2 from the second stage on
(strided convolutions instead of pooling). Decoder: a 2x2 transposed convolution with stride 2 to the
skip's width, concatenated with the skip, two more convolution blocks; a 1x1 convolution per decoder
stage gives class logits at that resolution (deep supervision: all but the coarsest enter the loss,
weights halving per stage as nnU-Net's). Channels-last; input ``(B, H, W, 3)`` uint8 as the data
pipeline gives SAM, each image z-scored over its real pixels. ``H`` and ``W`` must be multiples of
``2 ** (len(features) - 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from samjax.modeling import initializers

# nnU-Net initializes its convolutions with He (Kaiming) normal for leaky ReLU with slope 0.01.
_CONV_INIT = initializers.variance_scaling(2.0 / (1 + 0.01 ** 2), "fan_in", "normal")


class ConvBlock(nnx.Module):
    """3x3 convolution (stride 1 or 2) -> instance norm -> leaky ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, *, rngs, dtype=jnp.float32):
        self.conv = nnx.Conv(cin, cout, (3, 3), strides=stride, padding=((1, 1), (1, 1)), dtype=dtype,
                             kernel_init=_CONV_INIT, bias_init=initializers.zeros_init, rngs=rngs)
        self.norm = nnx.InstanceNorm(cout, epsilon=1e-5, dtype=dtype, scale_init=initializers.ones_init,
                                     bias_init=initializers.zeros_init, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.leaky_relu(self.norm(self.conv(x)), 0.01)


class UNet(nnx.Module):
    """``UNet(num_classes, features)(images, valid) -> [logits (B, H / 2**k, W / 2**k, C) for k = 0, 1, ...]``."""

    def __init__(self, num_classes: int, features: Sequence[int] = (32, 64, 128, 256, 320), in_channels: int = 3,
                 *, rngs, dtype=jnp.float32):
        features = tuple(int(f) for f in features)
        if len(features) < 2 or min(features) < 1:
            raise ValueError(f"features must hold at least two positive widths, got {features}")
        self.features, self.num_classes = features, int(num_classes)
        kw = dict(rngs=rngs, dtype=dtype)
        self.down = nnx.List([
            nnx.List([ConvBlock(in_channels if s == 0 else features[s - 1], f, 1 if s == 0 else 2, **kw),
                      ConvBlock(f, f, **kw)])
            for s, f in enumerate(features)])
        self.up = nnx.List([
            nnx.ConvTranspose(features[s + 1], features[s], (2, 2), strides=(2, 2), padding="VALID", dtype=dtype,
                              kernel_init=_CONV_INIT, bias_init=initializers.zeros_init, rngs=rngs)
            for s in range(len(features) - 1)])
        self.merge = nnx.List([
            nnx.List([ConvBlock(2 * features[s], features[s], **kw), ConvBlock(features[s], features[s], **kw)])
            for s in range(len(features) - 1)])
        self.heads = nnx.List([
            nnx.Conv(features[s], num_classes, (1, 1), dtype=dtype, kernel_init=_CONV_INIT,
                     bias_init=initializers.zeros_init, rngs=rngs)
            for s in range(len(features) - 1)])

    @property
    def divisor(self) -> int:
        return 2 ** (len(self.features) - 1)

    @staticmethod
    def normalize(images: jax.Array, valid: jax.Array) -> jax.Array:
        """uint8 ``(B, H, W, C)`` -> float32 z-scored per image over its real pixels (padding set to 0)."""
        x = images.astype(jnp.float32)
        w = valid.astype(jnp.float32)[..., None]
        n = jnp.maximum(w.sum((1, 2, 3), keepdims=True) * x.shape[-1], 1.0)
        mean = (x * w).sum((1, 2, 3), keepdims=True) / n
        var = (((x - mean) * w) ** 2).sum((1, 2, 3), keepdims=True) / n
        return (x - mean) / jnp.sqrt(var + 1e-6) * w

    def __call__(self, images: jax.Array, valid: jax.Array) -> list[jax.Array]:
        h, w = images.shape[1:3]
        if h % self.divisor or w % self.divisor:
            raise ValueError(f"UNet with {len(self.features)} stages needs sizes divisible by {self.divisor}, "
                             f"got {h}x{w}")
        x = self.normalize(images, valid).astype(self.heads[0].dtype or jnp.float32)
        skips = []
        for first, second in self.down:
            x = second(first(x))
            skips.append(x)
        outputs = []
        for s in reversed(range(len(self.features) - 1)):
            x = jnp.concatenate([skips[s], self.up[s](x)], axis=-1)
            first, second = self.merge[s]
            x = second(first(x))
            outputs.append(self.heads[s](x))
        return outputs[::-1]  # full resolution first
