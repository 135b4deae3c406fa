"""Latency of interactive segmentation: samjax's SamPredictor next to Meta's PyTorch one.

    python bench/predictor_latency.py --model-type vit_b --image-size 1024 --repeats 3
    python bench/predictor_latency.py --model-type vit_t   # against MobileSAM's PyTorch predictor
    python bench/predictor_latency.py --attention reference --skip-meta   # samjax with every score materialized

Both run the same randomly initialized weights (speed does not depend on their values) on the same
800x600 image. Reported: model build, first set_image (samjax: includes XLA compilation), steady
set_image, one box prompt, 64 box prompts in one batched call (the median of ``--repeats`` runs),
and the automatic mask generator on the image with a ``--amg-points-per-side`` grid (after a
warm-up run). The PyTorch side is Meta's ``segment_anything`` (ViT-B/L/H) or ``mobile_sam`` (ViT-T),
skipped when not installed; ``ratios`` divide its seconds by samjax's (above 1: samjax is faster).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import numpy as np

import samjax
from _shared import median_seconds
from samjax.model_spec import get_spec


def bench_samjax(model_type: str, image_size: int, image: np.ndarray, boxes: np.ndarray, repeats: int,
                 attention: str = "auto", amg_points: int = 16) -> dict:
    from samjax.modeling.encoder_switches import set_attention

    start = time.perf_counter()
    model = samjax.sam_model_registry[model_type](image_size=image_size)
    build = time.perf_counter() - start
    set_attention(model, attention)
    pred = samjax.SamPredictor(model)

    def set_image():
        pred.set_image(image)
        pred.features.block_until_ready()

    first = median_seconds(set_image, 1)
    pred.predict(box=boxes[0])  # compile the prompt programs once
    pred.predict_batch(boxes=boxes)
    out = {
        "build_s": build,
        "first_set_image_s": first,
        "set_image_s": median_seconds(set_image, repeats),
        "predict_one_box_s": median_seconds(lambda: pred.predict(box=boxes[0]), repeats),
        "predict_64_boxes_s": median_seconds(lambda: pred.predict_batch(boxes=boxes), repeats),
    }
    if amg_points:
        amg = samjax.SamAutomaticMaskGenerator(model, points_per_side=amg_points)
        amg.generate(image)  # compiles
        out["amg_image_s"] = median_seconds(lambda: amg.generate(image), 1)
    return out


def bench_meta(model_type: str, image_size: int, image: np.ndarray, boxes: np.ndarray, repeats: int,
               amg_points: int = 16) -> dict | None:
    try:
        import torch
        if model_type == "vit_t":
            from mobile_sam import SamAutomaticMaskGenerator, SamPredictor
            from mobile_sam import sam_model_registry as registry
        else:
            from segment_anything import SamAutomaticMaskGenerator, SamPredictor
            from segment_anything.build_sam import _build_sam
    except ImportError:
        return None
    spec = get_spec(model_type)
    if image_size != 1024:
        return None  # the PyTorch builders make 1024 models only
    start = time.perf_counter()
    if model_type == "vit_t":
        model = registry["vit_t"]().eval()
    else:
        model = _build_sam(spec.encoder_embed_dim, spec.encoder_depth, spec.encoder_num_heads,
                           list(spec.encoder_global_attn_indexes)).eval()
    build = time.perf_counter() - start
    pred = SamPredictor(model)
    tboxes = pred.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float), image.shape[:2])

    def batched():
        with torch.no_grad():
            pred.predict_torch(None, None, tboxes, multimask_output=True)

    out = {
        "build_s": build,
        "first_set_image_s": median_seconds(lambda: pred.set_image(image), 1),
        "set_image_s": median_seconds(lambda: pred.set_image(image), repeats),
        "predict_one_box_s": median_seconds(lambda: pred.predict(box=boxes[0]), repeats),
        "predict_64_boxes_s": median_seconds(batched, repeats),
    }
    if amg_points:
        amg = SamAutomaticMaskGenerator(model, points_per_side=amg_points)
        with torch.no_grad():
            amg.generate(image)
            out["amg_image_s"] = median_seconds(lambda: amg.generate(image), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-type", default="vit_b")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-meta", action="store_true")
    parser.add_argument("--attention", default="auto", help="samjax's attention form: auto|reference|blocked|fused")
    parser.add_argument("--amg-points-per-side", type=int, default=16, help="automatic mask generation grid (0: skip)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    x0 = rng.uniform(0, 600, 64)
    y0 = rng.uniform(0, 400, 64)
    boxes = np.stack([x0, y0, x0 + rng.uniform(20, 200, 64), y0 + rng.uniform(20, 200, 64)], axis=1)

    results = {
        "device": str(jax.devices()[0].device_kind),
        "platform": platform.processor() or platform.machine(),
        "model_type": args.model_type,
        "image_size": args.image_size,
        "samjax": bench_samjax(args.model_type, args.image_size, image, boxes, args.repeats, args.attention,
                               args.amg_points_per_side),
    }
    if args.attention != "auto":
        results["attention"] = args.attention
    if not args.skip_meta:
        meta = bench_meta(args.model_type, args.image_size, image, boxes, args.repeats, args.amg_points_per_side)
        results["meta_pytorch"] = meta
        if meta:
            results["ratios"] = {k: meta[k] / results["samjax"][k] for k in meta if k in results["samjax"]}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
