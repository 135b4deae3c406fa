"""Training speed: samjax's jitted train step next to a plain PyTorch loop over Meta's SAM, same machine, one run.

    python bench/train_step.py --model-type vit_b --image-size 256 --batch 2 --steps 5

Both sides train the image encoder and the mask decoder (the prompt encoder frozen) with AdamW in
float32, in "auto mode": no prompts, the default dense embedding, a Dice + cross-entropy loss on the
low-res logits of 2 mask tokens (background and foreground; Meta's decoder with ``multimask_output``
gives its 1 + 3 tokens' masks, of which the loop trains the first two). Same random weights shape,
same batch each step. Reported: steps/s after warm-up (samjax: after compilation; the median of
``--steps`` timed steps), the compile time, and the ratio. ``--attention`` picks samjax's form.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import numpy as np
from _shared import load_config, median_seconds
from samjax.run import model as run_model


def _batch(batch: int, size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    low = size // 4
    label = np.zeros((batch, size, size), np.int32)
    label[:, size // 4: 3 * size // 4, size // 3: 2 * size // 3] = 1
    return {
        "image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
        "valid": np.ones((batch, size, size), bool),
        "label": label,
        "low_res_label": label[:, ::4, ::4][:, :low, :low].copy(),
    }


# Dense bf16 peak of the cards a GPU session may get, in TFLOP/s (for model FLOPs utilization).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_tflops(device_kind: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k in device_kind), None)


def samjax_config(model_type: str, size: int, batch: int, attention: str, remat: bool, dtype: str = "float32"):
    cfg = load_config("finetune", f"{model_type},encoder_decoder,none")
    cfg.data.image_size = size
    cfg.data.global_batch = batch
    cfg.model.attention = attention
    cfg.model.remat = remat
    cfg.model.dtype = dtype
    cfg.total_steps = 1000
    cfg.optim.warmup_steps = 10
    return cfg


def bench_samjax(model_type: str, size: int, batch: int, steps: int, attention: str, remat: bool,
                 dtype: str = "float32") -> dict:
    from samjax import parallel
    from samjax.train import strategy
    from samjax.train.objectives import finetune as supervised
    from samjax.train.state import Trainable

    cfg = samjax_config(model_type, size, batch, attention, remat, dtype)
    mesh = parallel.make_mesh(-1, 1, 1)
    start = time.perf_counter()
    model = run_model.build_model(cfg, num_classes=2, log=lambda *_: None)
    build = time.perf_counter() - start
    trainable = Trainable(model, strategy.trainable_filter(cfg), cfg, mesh, supervised.Finetune().loss,
                          log=lambda *_: None)
    state, frozen = trainable.init_state(), trainable.frozen()
    host = _batch(batch, size)
    device_batch = parallel.global_batch(host, mesh)

    start = time.perf_counter()
    compiled = trainable.step_fn.lower(state, frozen, device_batch).compile()
    compile_s = time.perf_counter() - start
    state, metrics = compiled(state, frozen, device_batch)  # warm-up
    jax.block_until_ready(metrics)

    def step():
        nonlocal state, metrics
        state, metrics = compiled(state, frozen, device_batch)
        jax.block_until_ready(metrics)

    step_s = median_seconds(step, steps)
    flops = (compiled.cost_analysis() or {}).get("flops", 0.0)
    out = {"build_s": build, "compile_s": compile_s, "step_s": step_s, "steps_per_s": 1.0 / step_s,
           "images_per_s": batch / step_s, "loss": float(metrics["loss"]), "trainable_params": trainable.param_count,
           "compiled_gflop_per_step": flops / 1e9, "devices": jax.device_count()}
    peak = peak_tflops(jax.devices()[0].device_kind)
    if peak:  # the compiled step's FLOPs per second over the cards' dense bf16 peak
        out["mfu"] = flops / step_s / (peak * 1e12 * jax.device_count())
    return out


def bench_meta(model_type: str, size: int, batch: int, steps: int) -> dict | None:
    try:
        import torch
        import torch.nn.functional as F
        from functools import partial
        from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    except ImportError:
        return None
    from samjax.model_spec import get_spec

    spec = get_spec(model_type)
    if spec.encoder_embed_dim == 0 or model_type == "vit_t":
        return None
    torch.manual_seed(0)
    start = time.perf_counter()
    grid = size // 16
    model = Sam(
        image_encoder=ImageEncoderViT(
            depth=spec.encoder_depth, embed_dim=spec.encoder_embed_dim, img_size=size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=spec.encoder_num_heads, patch_size=16,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=list(spec.encoder_global_attn_indexes),
            window_size=14, out_chans=256),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(size, size),
                                     mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
            depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8), transformer_dim=256, iou_head_depth=3,
            iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).train()
    build = time.perf_counter() - start
    for p in model.prompt_encoder.parameters():
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    host = _batch(batch, size)
    images = torch.as_tensor(host["image"]).permute(0, 3, 1, 2).float()
    target = torch.as_tensor(host["low_res_label"]).long()

    def step():
        x = (images - model.pixel_mean) / model.pixel_std
        emb = model.image_encoder(x)
        b = emb.shape[0]
        sparse = torch.zeros((1, 0, 256))
        dense = model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, grid, grid)
        pe = model.prompt_encoder.get_dense_pe()
        # Meta's decoder takes one image with its prompts: one call per image, as Sam.forward does.
        logits = torch.cat([model.mask_decoder.predict_masks(emb[i:i + 1], pe, sparse, dense)[0][:, :2]
                            for i in range(b)])
        ce = F.cross_entropy(logits, target)
        prob = logits.softmax(1)
        onehot = F.one_hot(target, 2).permute(0, 3, 1, 2).float()
        dice = 1 - (2 * (prob * onehot).sum((2, 3)) + 1) / (prob.sum((2, 3)) + onehot.sum((2, 3)) + 1)
        loss = ce + dice.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return float(loss.detach())

    step()  # warm-up
    losses = []
    step_s = median_seconds(lambda: losses.append(step()), steps)
    loss = losses[-1]
    return {"build_s": build, "step_s": step_s, "steps_per_s": 1.0 / step_s, "loss": loss,
            "threads": torch.get_num_threads(), "trainable_params": sum(p.numel() for p in params)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-type", default="vit_b")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--attention", default="auto", help="samjax's attention form: auto|reference|blocked|fused")
    parser.add_argument("--remat", action="store_true", help="samjax: recompute each encoder block in the backward")
    parser.add_argument("--dtype", default="float32", help="samjax's compute dtype: float32 | bfloat16")
    parser.add_argument("--skip-meta", action="store_true")
    args = parser.parse_args()

    results = {
        "device": str(jax.devices()[0].device_kind),
        "platform": platform.processor() or platform.machine(),
        "model_type": args.model_type, "image_size": args.image_size, "batch": args.batch,
        "samjax": bench_samjax(args.model_type, args.image_size, args.batch, args.steps, args.attention, args.remat,
                               args.dtype),
    }
    if not args.skip_meta:
        results["meta_pytorch"] = bench_meta(args.model_type, args.image_size, args.batch, args.steps)
        if results["meta_pytorch"]:
            results["samjax_over_meta"] = results["samjax"]["steps_per_s"] / results["meta_pytorch"]["steps_per_s"]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
