"""Building blocks shared by SAM's components, with logical axis names on every parameter.

All spatial tensors are channels-last (NHWC). The encoders' and transformers' large parameters carry
logical axis names (``"embed"``, ``"heads"``, ``"mlp"``) as metadata only; the sharding rules of the
training code map them onto a device mesh, and unnamed (small) parameters are replicated.
``eager_sharding=False`` keeps model construction mesh-free.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from samjax.modeling.initializers import default_kernel_init, lecun_normal, ones_init, zeros_init  # noqa: F401

Dtype = jnp.dtype



def with_axes(init: Callable, axes: Sequence[str | None]) -> Callable:
    """Annotates an initializer with logical axis names (metadata only, no mesh needed)."""
    return nnx.with_partitioning(init, tuple(axes), eager_sharding=False)


class Buffer(nnx.Variable):
    """A fixed, non-trainable tensor that is part of the checkpoint (PyTorch's ``register_buffer``)."""


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as PyTorch's ``nn.GELU()``."""
    return jax.nn.gelu(x, approximate=False)


def dense(
    in_features: int,
    out_features: int,
    axes: tuple[str | None, str | None],
    *,
    rngs: nnx.Rngs,
    dtype: Dtype = jnp.float32,
    use_bias: bool = True,
) -> nnx.Linear:
    """A Linear layer with kernel ``(in, out)`` named ``axes`` and bias named ``axes[1]``."""
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=dtype,
        kernel_init=with_axes(default_kernel_init, axes),
        bias_init=with_axes(zeros_init, axes[1:]),
        rngs=rngs,
    )


def layer_norm(
    features: int,
    eps: float,
    *,
    rngs: nnx.Rngs,
    dtype: Dtype = jnp.float32,
    axis_name: str | None = "embed",
) -> nnx.LayerNorm:
    """LayerNorm over the last axis. ``eps`` is explicit because Meta's SAM mixes 1e-6 and 1e-5.

    The variance is the two-pass ``mean((x - mean)^2)`` as in PyTorch: Flax's default one-pass
    ``mean(x^2) - mean^2`` loses precision on activations with a large mean.
    """
    return nnx.LayerNorm(
        features,
        epsilon=eps,
        dtype=dtype,
        use_fast_variance=False,
        scale_init=with_axes(ones_init, (axis_name,)),
        bias_init=with_axes(zeros_init, (axis_name,)),
        rngs=rngs,
    )


def layer_norm_2d(features: int, *, rngs: nnx.Rngs, dtype: Dtype = jnp.float32) -> nnx.LayerNorm:
    """Meta's ``LayerNorm2d``: a LayerNorm over channels with eps 1e-6 (channels-last here)."""
    return layer_norm(features, 1e-6, rngs=rngs, dtype=dtype, axis_name=None)


class MLPBlock(nnx.Module):
    """Two-layer MLP ``lin2(act(lin1(x)))``: the ViT block's MLP and the two-way transformer's.

    Args:
      embedding_dim: input and output width.
      mlp_dim: hidden width.
      act: the activation (exact GELU in the encoder, ReLU in the two-way transformer).
    """

    def __init__(
        self,
        embedding_dim: int,
        mlp_dim: int,
        act: Callable[[jax.Array], jax.Array] = gelu,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype = jnp.float32,
    ):
        self.lin1 = dense(embedding_dim, mlp_dim, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.lin2 = dense(mlp_dim, embedding_dim, ("mlp", "embed"), rngs=rngs, dtype=dtype)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.lin2(self.act(self.lin1(x)))


class ConvTranspose2x2(nnx.Module):
    """A transposed convolution with kernel 2 and stride 2 (PyTorch ``ConvTranspose2d(c, o, 2, 2)``).

    The windows do not overlap, so it is one matmul per output sub-pixel: exact and layout-explicit.
    Kernel shape ``(2, 2, in, out)``; input ``(B, H, W, in)`` -> output ``(B, 2H, 2W, out)``.
    """

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, dtype: Dtype = jnp.float32):
        init = with_axes(lecun_normal(in_axis=2, out_axis=3), (None, None, "embed", None))
        self.kernel = nnx.Param(init(rngs.params(), (2, 2, in_features, out_features), jnp.float32))
        self.bias = nnx.Param(with_axes(zeros_init, (None,))(rngs.params(), (out_features,), jnp.float32))
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, _ = x.shape
        kernel = self.kernel[...].astype(self.dtype)
        y = jnp.einsum("bhwc,ijco->bhiwjo", x.astype(self.dtype), kernel)
        y = y.reshape(b, 2 * h, 2 * w, kernel.shape[-1])
        return y + self.bias[...].astype(self.dtype)
