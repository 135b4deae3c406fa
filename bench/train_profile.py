"""Where the training step's time goes: the encoder's forward and backward, per block kind, and the rest.

    python bench/train_profile.py --model-type vit_b --image-size 256 --batch 2

The parts of ``bench/train_step.py``'s step, each jitted alone on the same random weights and
inputs (median of ``--repeats`` runs after a warm-up): the image encoder forward, forward + backward
(gradients of every parameter and the input), one windowed and one global block forward and
forward + backward, its MLP and its attention (``qkv`` given). ``gflop`` is XLA's count of each
compiled program; ``gflop_per_s`` says how close to the machine's matrix-multiply peak a part runs.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import samjax
from _shared import median_seconds


def _time(fn, args, repeats: int) -> dict:
    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    seconds = median_seconds(lambda: jax.block_until_ready(compiled(*args)), repeats)
    flops = (compiled.cost_analysis() or {}).get("flops", 0.0)
    return {"s": seconds, "gflop": flops / 1e9, "gflop_per_s": flops / 1e9 / seconds}


def _grad(fn):
    return jax.grad(lambda *a: jnp.sum(fn(*a) ** 2), argnums=(0, 1))


def profile(model_type: str, image_size: int, batch: int, repeats: int) -> dict:
    model = samjax.sam_model_registry[model_type](image_size=image_size)
    encoder = model.image_encoder
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(batch, image_size, image_size, 3)), jnp.float32)
    graph, state = nnx.split(encoder)
    run = lambda s, x: nnx.merge(graph, s)(x)  # noqa: E731
    parts = {"encoder forward": _time(run, (state, images), repeats),
             "encoder forward+backward": _time(_grad(run), (state, images), repeats)}
    blocks = list(encoder.blocks)
    grid = image_size // encoder.patch_size
    tokens = jnp.asarray(rng.normal(size=(batch, grid, grid, encoder.stem_width)), jnp.float32)
    kinds = {"windowed": next((b for b in blocks if b.window_size), None),
             "global": next((b for b in blocks if not b.window_size), None)}
    for kind, block in kinds.items():
        if block is None:
            continue
        g, s = nnx.split(block)
        fwd = lambda s, x, g=g: nnx.merge(g, s)(x)  # noqa: E731
        parts[f"{kind} block forward"] = _time(fwd, (s, tokens), repeats)
        parts[f"{kind} block forward+backward"] = _time(_grad(fwd), (s, tokens), repeats)
        ag, a_s = nnx.split(block.attn)
        qkv = jnp.asarray(rng.normal(size=(batch, grid, grid, 3 * encoder.stem_width)), jnp.float32)
        if block.window_size:
            from samjax.modeling.windows import window_attention

            attend = lambda s, q, g=ag, w=block.window_size: window_attention(  # noqa: E731
                nnx.merge(g, s).attend, q, w, None)
        else:
            attend = lambda s, q, g=ag: nnx.merge(g, s).attend(q)  # noqa: E731
        parts[f"{kind} attention (qkv given) forward+backward"] = _time(_grad(attend), (a_s, qkv), repeats)
    mg, ms = nnx.split(blocks[0].mlp)
    mlp = lambda s, x: nnx.merge(mg, s)(x)  # noqa: E731
    parts["mlp forward+backward"] = _time(_grad(mlp), (ms, tokens), repeats)
    n_global = sum(1 for b in blocks if not b.window_size)
    return {"model_type": model_type, "image_size": image_size, "batch": batch,
            "blocks": {"windowed": len(blocks) - n_global, "global": n_global},
            "rows": [{"part": k, **v} for k, v in parts.items()], "device": str(jax.devices()[0].device_kind)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-type", default="vit_b")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(profile(args.model_type, args.image_size, args.batch, args.repeats), indent=1))


if __name__ == "__main__":
    main()
