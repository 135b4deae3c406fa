"""Images per second through SAM (image encoder + mask decoder), batched, with fixed shapes.

    python bench/encoder_throughput.py --model-type vit_b --batch 8 --dtype bfloat16 --attention auto

The accelerator question of issue 11: the published best PyTorch numbers are ~92 img/s (ViT-B) and
~25 img/s (ViT-H) on an A100, encoder plus decoder, batch 8. One jitted program embeds ``--batch``
1024-px images and decodes one box per image (compiled once; nothing recompiles between batches),
parameters in float32 and computed in ``--dtype``. Reported: compile time, the median seconds per
batch of ``--repeats`` runs after a warm-up, images/s, and the compiled program's FLOPs per image.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import samjax
from _shared import limit_gflops, median_seconds
from samjax.modeling.encoder_switches import set_attention


def measure(model_type: str, batch: int, dtype: str, attention: str, repeats: int, image_size: int = 1024) -> dict:
    model = samjax.sam_model_registry[model_type](image_size=image_size)
    set_attention(model, attention)
    graphdef, state = nnx.split(model)
    compute = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32

    @jax.jit
    def forward(state, images, boxes):
        state = jax.tree.map(lambda x: x.astype(compute) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
        sam = nnx.merge(graphdef, state)
        emb = sam.image_encoder(sam.normalize(images).astype(compute))
        sparse, mask, dense = sam.prompt_encoder(boxes=boxes)
        masks, iou = sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe().astype(compute),
                                      sparse.astype(compute), dense.astype(compute), False, mask)
        return masks, iou

    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8))
    boxes = jnp.asarray(np.tile([[100.0, 120.0, 400.0, 500.0]], (batch, 1)), jnp.float32)
    start = time.perf_counter()
    compiled = forward.lower(state, images, boxes).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(state, images, boxes))
    seconds = median_seconds(lambda: jax.block_until_ready(compiled(state, images, boxes)), repeats)
    flops = (compiled.cost_analysis() or {}).get("flops", 0.0)
    return {"model_type": model_type, "batch": batch, "dtype": dtype, "attention": attention,
            "compile_s": compile_s, "batch_s": seconds, "images_per_s": batch / seconds,
            "gflop_per_image": flops / batch / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-type", nargs="+", default=["vit_b"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16", help="compute dtype: bfloat16 | float32")
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    rows = [measure(m, args.batch, args.dtype, args.attention, args.repeats, args.image_size) for m in args.model_type]
    gflops, basis = limit_gflops()
    for row in rows:  # the forward's FLOP rate over the machine's limit (a card's bf16 peak on a GPU)
        row["limit"] = row["gflop_per_image"] * row["images_per_s"] / gflops
    print(json.dumps({"device": str(jax.devices()[0].device_kind), "limit_gflops": gflops, "limit_basis": basis,
                      "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
