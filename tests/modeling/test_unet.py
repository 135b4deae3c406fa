"""The UNet baseline's network: output pyramid, the size rule, normalization over real pixels only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from samjax.modeling.keys import HostKeys, to_device
from samjax.modeling.unet import UNet


@pytest.fixture(scope="module")
def unet():
    return to_device(UNet(4, (8, 16, 32), rngs=HostKeys(0)))


def test_outputs_and_parameters(unet):
    images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (2, 32, 48, 3)), jnp.uint8)
    outputs = unet(images, jnp.ones((2, 32, 48), bool))
    assert [o.shape for o in outputs] == [(2, 32, 48, 4), (2, 16, 24, 4)]  # full resolution first; one per decoder stage
    # two 3x3 convolutions (+ norm scale and bias) per stage, a transposed 2x2 and two merge blocks per decoder
    # stage, a 1x1 head per decoder stage
    block = lambda i, o: 9 * i * o + o + 2 * o  # noqa: E731
    expected = (block(3, 8) + block(8, 8) + block(8, 16) + block(16, 16) + block(16, 32) + block(32, 32)
                + 4 * 32 * 16 + 16 + block(32, 16) + block(16, 16) + 4 * 16 * 8 + 8 + block(16, 8) + block(8, 8)
                + 16 * 4 + 4 + 8 * 4 + 4)
    assert sum(p.size for p in jax.tree.leaves(nnx.state(unet, nnx.Param))) == expected
    with pytest.raises(ValueError, match="divisible by 4"):
        unet(images[:, :30], jnp.ones((2, 30, 48), bool))


def test_padding_does_not_change_the_image(unet):
    """An image padded with zeros (valid marks its real pixels) gives the normalization of the image alone."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (1, 32, 32, 3)).astype(np.uint8)
    padded = np.zeros((1, 32, 48, 3), np.uint8)
    padded[:, :, :32] = image
    valid = np.zeros((1, 32, 48), bool)
    valid[:, :, :32] = True
    a = UNet.normalize(jnp.asarray(image), jnp.ones((1, 32, 32), bool))
    b = UNet.normalize(jnp.asarray(padded), jnp.asarray(valid))
    np.testing.assert_allclose(np.asarray(b)[:, :, :32], np.asarray(a), rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(b[:, :, 32:]).max()) == 0.0
    assert abs(float(a.mean())) < 1e-5 and abs(float(a.std()) - 1) < 1e-4
