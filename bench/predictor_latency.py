"""Latency of interactive segmentation: samjax's SamPredictor next to Meta's PyTorch one, eager and compiled.

    python bench/predictor_latency.py --model-type vit_b --image-size 1024 --repeats 3
    python bench/predictor_latency.py --model-type vit_t   # against MobileSAM's PyTorch predictor
    python bench/predictor_latency.py --attention reference --skip-meta   # samjax with every score materialized
    python bench/predictor_latency.py --dtype bfloat16 --skip-meta   # samjax computing in bfloat16

Same weights and the same work on both sides: Meta's model (``segment_anything``, or ``mobile_sam`` for
ViT-T) is built with its default initialization from a fixed seed, saved as one ``.pth`` and loaded by
samjax's checkpoint conversion, and each side runs one 800x600 image: the first set_image (samjax: XLA
compilation included; compiled PyTorch: inductor's), the steady set_image, one box prompt, 64 box prompts in
one batched call (medians of ``--repeats``), and the automatic mask generator with a
``--amg-points-per-side`` grid after a warm-up run (the IoU and stability filters off, as random weights
pass neither; the number of masks each side kept after NMS is printed, the same work when they agree). PyTorch runs twice: eager, then with the
image encoder and the mask decoder under ``torch.compile`` (inductor, default mode; Meta's attention code
as it is). ``ratios_*`` divide PyTorch's seconds by samjax's (above 1: samjax is faster).

``limit``: each side's FLOP rate as a fraction of this machine's matrix-product rate measured in the same
run, or of a card's bf16 peak (``_shared.limit_gflops``); the FLOPs are XLA's cost analysis of samjax's
programs, the same work for both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

import samjax
from _shared import limit_gflops, median_seconds, meta_sam, same_weights, xla_flops


# Random weights predict no mask that SAM's default IoU and stability filters keep: both filters off, so
# both sides keep (and box-NMS) the same masks, and the counts printed show the same work was done.
AMG_FILTERS = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)


def bench_samjax(model, image: np.ndarray, boxes: np.ndarray, repeats: int, amg_points: int = 16) -> dict:
    pred = samjax.SamPredictor(model)

    def set_image():
        pred.set_image(image)
        pred.features.block_until_ready()

    first = median_seconds(set_image, 1)
    pred.predict(box=boxes[0])  # compile the prompt programs once
    pred.predict_batch(boxes=boxes)
    out = {
        "first_set_image_s": first,
        "set_image_s": median_seconds(set_image, repeats),
        "predict_one_box_s": median_seconds(lambda: pred.predict(box=boxes[0]), repeats),
        "predict_64_boxes_s": median_seconds(lambda: pred.predict_batch(boxes=boxes), repeats),
    }
    if amg_points:
        amg = samjax.SamAutomaticMaskGenerator(model, points_per_side=amg_points, **AMG_FILTERS)
        amg.generate(image)  # compiles
        out["amg_image_s"] = median_seconds(lambda: amg.generate(image), 1)
        out["amg_masks"] = len(amg.generate(image))
    return out


def samjax_flops(model, image: np.ndarray, boxes: np.ndarray, amg_points: int) -> dict:
    """XLA's FLOP count of each measured call (set_image, the prompt programs, AMG's batches)."""
    from samjax import predictor as predictor_module
    from samjax.automatic_mask_generator import _masks_for_points

    pred = samjax.SamPredictor(model)
    pred.set_image(image)
    size = model.img_size
    padded = np.zeros((1, size, size, 3), np.uint8)
    embed = xla_flops(predictor_module._embed, pred._graphdef, pred._state, padded,
                      np.array(pred.input_size, np.int32))
    embed += xla_flops(predictor_module._image_side, pred._graphdef, pred._state, pred.features)

    def prompts(b):
        bx = pred.transform.apply_boxes(boxes[:b], pred.original_size).astype(np.float32)
        return xla_flops(predictor_module._predict, pred._graphdef, pred._state, pred.features, pred._side, None,
                         None, bx, np.ones(b, bool), None, multimask_output=True, input_size=pred.input_size,
                         original_size=pred.original_size, return_logits=False)

    out = {"set_image": embed, "predict_one_box": prompts(1), "predict_64_boxes": prompts(64)}
    if amg_points:
        amg = samjax.SamAutomaticMaskGenerator(model, points_per_side=amg_points)
        p = amg.points_per_batch
        batch = xla_flops(_masks_for_points, pred._graphdef, pred._state, pred.features, np.zeros((p, 2), np.float32),
                          np.ones(p, bool), np.zeros(4, np.float32), np.zeros(4, np.float32),
                          input_size=pred.input_size, crop_size=pred.original_size, offset=1.0, thresholds=(0.0, 0.0))
        out["amg_image"] = embed + -(-amg_points**2 // p) * batch
    return out


def bench_meta(model, image: np.ndarray, boxes: np.ndarray, repeats: int, amg_points: int, model_type: str) -> dict:
    import torch
    if model_type == "vit_t":
        from mobile_sam import SamAutomaticMaskGenerator, SamPredictor
    else:
        from segment_anything import SamAutomaticMaskGenerator, SamPredictor
    pred = SamPredictor(model)
    tboxes = pred.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float), image.shape[:2])

    def batched():
        with torch.no_grad():
            pred.predict_torch(None, None, tboxes, multimask_output=True)

    first = median_seconds(lambda: pred.set_image(image), 1)
    pred.predict(box=boxes[0])
    batched()  # compiled: each prompt shape compiles once, outside the timings
    out = {
        "first_set_image_s": first,
        "set_image_s": median_seconds(lambda: pred.set_image(image), repeats),
        "predict_one_box_s": median_seconds(lambda: pred.predict(box=boxes[0]), repeats),
        "predict_64_boxes_s": median_seconds(batched, repeats),
    }
    if amg_points:
        amg = SamAutomaticMaskGenerator(model, points_per_side=amg_points, **AMG_FILTERS)
        with torch.no_grad():
            amg.generate(image)
            out["amg_image_s"] = median_seconds(lambda: amg.generate(image), 1)
            out["amg_masks"] = len(amg.generate(image))
    return out


def compiled(model):
    """Meta's model with its image encoder and mask decoder under ``torch.compile`` (inductor)."""
    import torch
    model.image_encoder = torch.compile(model.image_encoder)
    model.mask_decoder = torch.compile(model.mask_decoder)
    return model


def limits(seconds: dict, flops: dict, gflops: float) -> dict:
    return {k: flops[k] / seconds[f"{k}_s"] / 1e9 / gflops for k in flops if f"{k}_s" in seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-type", default="vit_b")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-meta", action="store_true", help="samjax only (random weights)")
    parser.add_argument("--skip-compiled", action="store_true", help="no torch.compile column")
    parser.add_argument("--attention", default="auto", help="samjax's attention form: auto|reference|blocked|fused")
    parser.add_argument("--amg-points-per-side", type=int, default=16, help="automatic mask generation grid (0: skip)")
    parser.add_argument("--dtype", default="float32", help="samjax's compute dtype: float32 | bfloat16 (weights fp32)")
    args = parser.parse_args()
    from samjax.modeling.encoder_switches import set_attention

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    x0 = rng.uniform(0, 600, 64)
    y0 = rng.uniform(0, 400, 64)
    boxes = np.stack([x0, y0, x0 + rng.uniform(20, 200, 64), y0 + rng.uniform(20, 200, 64)], axis=1)

    meta = None
    if not args.skip_meta and args.image_size == 1024:  # the PyTorch builders make 1024 models only
        meta, _ = meta_sam(args.model_type)
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        if meta is not None:
            model = same_weights(meta, args.model_type, os.path.join(tmp, "sam.pth"), dtype=dtype)
        else:
            model = samjax.sam_model_registry[args.model_type](image_size=args.image_size, dtype=dtype)
    set_attention(model, args.attention)
    gflops, basis = limit_gflops()
    results = {
        "device": str(jax.devices()[0].device_kind),
        "platform": platform.processor() or platform.machine(),
        "model_type": args.model_type,
        "image_size": args.image_size,
        "dtype": args.dtype,
        "weights": "Meta's default init (seed 0), one .pth on both sides" if meta is not None else "samjax random",
        "limit_gflops": gflops,
        "limit_basis": basis,
        "flops": samjax_flops(model, image, boxes, args.amg_points_per_side),
        "samjax": bench_samjax(model, image, boxes, args.repeats, args.amg_points_per_side),
    }
    results["limit_samjax"] = limits(results["samjax"], results["flops"], gflops)
    if args.attention != "auto":
        results["attention"] = args.attention
    if meta is not None:
        columns = [("meta_eager", meta)]
        if not args.skip_compiled:
            columns.append(("meta_compiled", None))
        for name, m in columns:
            m = m if m is not None else compiled(meta)
            r = bench_meta(m, image, boxes, args.repeats, args.amg_points_per_side, args.model_type)
            results[name] = r
            results[f"limit_{name}"] = limits(r, results["flops"], gflops)
            results[f"ratios_{name}"] = {k: r[k] / results["samjax"][k] for k in r
                                        if k.endswith("_s") and k in results["samjax"]}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
