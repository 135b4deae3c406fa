"""TinyViT's convolutions: the depthwise and 1x1 forms equal XLA's grouped convolution, at stride 1 and 2."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from samjax.modeling.tiny_vit import DEPTHWISE_SUM_FLOPS, Conv2dBN, depthwise_conv


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_as_shifted_sums_equals_grouped_conv(stride):
    layer = Conv2dBN(32, 32, 3, stride, 1, groups=32, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 63, 64, 32)), jnp.float32)  # odd side: edge rows
    assert 2 * x.size * 9 >= DEPTHWISE_SUM_FLOPS  # Conv2dBN takes the shifted-sum form here
    reference = layer.c(x)
    np.testing.assert_allclose(depthwise_conv(x, layer.c.kernel[...], stride, 1), reference, atol=2e-6)
    bn = layer.bn_scale[...] / jnp.sqrt(layer.bn_var[...] + 1e-5)
    np.testing.assert_allclose(layer(x), (reference - layer.bn_mean[...]) * bn + layer.bn_bias[...], atol=2e-6)


def test_pointwise_as_matmul_equals_conv():
    layer = Conv2dBN(16, 24, rngs=nnx.Rngs(1))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 7, 16)), jnp.float32)
    np.testing.assert_allclose(layer(x), layer.bn_bias[...] + layer.c(x) * layer.bn_scale[...] / jnp.sqrt(1 + 1e-5),
                               rtol=1e-5, atol=1e-6)
