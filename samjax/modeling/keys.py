"""The random keys a model's constructor draws its initial values from, cheap to trace.

``KeyStream(seed)`` hands out exactly the keys ``nnx.Rngs(seed)`` would (``fold_in(key(seed), n)`` for the
n-th draw, whatever the stream's name), so a model built with either has the same values. It keeps its
counter in Python instead of in an ``nnx`` variable: under ``nnx.eval_shape`` every update of that variable
made JAX format an error message over the whole trace so far (quadratic: building ViT-B abstractly took
1.3 s, ViT-H several), while a Python counter costs nothing. Modules only ever call ``rngs.params()`` (or
another stream name), so this stands in wherever a constructor takes ``rngs``.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from samjax.modeling.initializers import HostKey


class KeyStream:
    """``nnx.Rngs``-compatible source of initialization keys: ``rngs.params()``, ``rngs()``, ``rngs.any_name()``."""

    def __init__(self, seed: int | jax.Array = 0):
        self.key = jax.random.key(seed) if isinstance(seed, int) else seed
        self.count = 0

    def make(self, n: int):
        """The n-th key of the stream."""
        return jax.random.fold_in(self.key, n)

    def __call__(self):
        key = self.make(self.count)
        self.count += 1
        return key

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self


class HostKeys(KeyStream):
    """Like :class:`KeyStream`, but hands out :class:`~samjax.modeling.initializers.HostKey` seeds: samjax's
    initializers then draw with NumPy, compiling nothing (a random ViT-B builds in about a second instead of
    ~9). The n-th draw is seeded by ``(seed, n)``. Call :func:`to_device` on the built model."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.count = 0

    def make(self, n: int) -> HostKey:
        return HostKey(np.random.SeedSequence([self.seed, n]))


def to_device(model: nnx.Module) -> nnx.Module:
    """Moves the host (NumPy) values a :class:`HostKeys` build left in ``model`` onto the default device."""
    graph, state = nnx.split(model)
    leaves, tree = jax.tree.flatten(state)
    host = [i for i, leaf in enumerate(leaves) if isinstance(leaf, np.ndarray)]
    for i, value in zip(host, jax.device_put([leaves[i] for i in host], may_alias=True)):
        leaves[i] = value
    nnx.update(model, jax.tree.unflatten(tree, leaves))
    return model
