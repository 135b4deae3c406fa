"""Where the image encoder's time goes: one windowed and one global block, each attention form.

    python bench/attention_profile.py --model-type vit_b --image-size 1024 --repeats 3

Times the forward pass of one block of each kind (and of its attention alone) on random weights and
inputs, jitted and warmed up, the median of ``--repeats`` runs, for every form of
``samjax.modeling.attention`` (``reference`` materializes every score; ``blocked`` and ``fused`` do
not). The encoder is ``depth - len(global_attn_indexes)`` windowed blocks plus the global ones, so
the per-block times add up to most of ``set_image``.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from _shared import median_seconds
from samjax.model_spec import get_spec
from samjax.modeling import encoder_switches
from samjax.modeling.image_encoder import Block
from samjax.modeling.windows import window_partition


def _median(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    return median_seconds(lambda: jax.block_until_ready(fn(*args)), repeats)


def profile(model_type: str, image_size: int, repeats: int) -> dict:
    spec = get_spec(model_type).replace(image_size=image_size)
    grid = spec.grid_size
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, grid, grid, spec.encoder_embed_dim)), jnp.float32)
    n_global = len(spec.encoder_global_attn_indexes)
    out = {"model_type": model_type, "image_size": image_size, "blocks": {"window": spec.encoder_depth - n_global,
                                                                          "global": n_global}}
    for kind, window in (("window", spec.window_size), ("global", 0)):
        block = Block(spec.encoder_embed_dim, spec.encoder_num_heads, (grid, grid), window_size=window,
                      rngs=nnx.Rngs(0))
        attn_in = window_partition(x, window)[0] if window else x
        for form in ("reference", "blocked", "fused"):
            encoder_switches.set_attention(block, form)
            graphdef, state = nnx.split(block)
            whole = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
            attn_graph, attn_state = nnx.split(block.attn)
            attn = jax.jit(lambda s, x: nnx.merge(attn_graph, s)(x))
            out[f"{kind}/{form}"] = {"block_s": _median(whole, (state, x), repeats),
                                     "attention_s": _median(attn, (attn_state, attn_in), repeats)}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-type", default="vit_b")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = profile(args.model_type, args.image_size, args.repeats)
    result["device"] = jax.devices()[0].device_kind
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
