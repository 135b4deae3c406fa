"""Training speed: samjax's jitted train step next to a plain PyTorch loop over Meta's SAM, same machine, one run.

    python bench/train_step.py --model-type vit_b --image-size 256 --batch 2 --steps 5
    python bench/train_step.py --model-type vit_t --image-size 1024 --batch 1 --steps 3  # MobileSAM: 1024 only

Both sides train the image encoder and the mask decoder (the prompt encoder frozen) with AdamW in
float32, in "auto mode": no prompts, the default dense embedding, a Dice + cross-entropy loss on the
low-res logits of 2 mask tokens (background and foreground), the whole batch in one decoder call. Same
weights (samjax's initialization, copied into Meta's modules: ``segment_anything``, ``mobile_sam`` for
ViT-T), same batch each step. PyTorch runs eager and with the loss under ``torch.compile`` (inductor),
each from the same starting weights. Reported: steps/s after warm-up (samjax: after compilation; the
median of ``--steps`` timed steps), the compile time, the ratios, and each side's fraction of the
limit (``limit_*``: XLA's FLOP count of samjax's step, the same work for both sides, over the machine's
matrix-product rate measured in the same run, or a card's bf16 peak: ``_shared.limit_gflops``). ``--attention`` picks samjax's form.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time

import jax
import numpy as np
from _shared import limit_gflops, load_config, median_seconds, peak_tflops
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
                 dtype: str = "float32", on_build=None) -> dict:
    """samjax's jitted step; ``on_build(model, spec)`` sees the model before its first step."""
    from samjax import parallel
    from samjax.train import strategy
    from samjax.train.objectives import finetune as supervised
    from samjax.train.state import Trainable

    cfg = samjax_config(model_type, size, batch, attention, remat, dtype)
    mesh = parallel.make_mesh(-1, 1, 1)
    start = time.perf_counter()
    model = run_model.build_model(cfg, num_classes=2, log=lambda *_: None)
    build = time.perf_counter() - start
    if on_build is not None:
        on_build(model, run_model.model_spec(cfg, 2))
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


def meta_model(model, spec, size: int):
    """Meta's PyTorch SAM (``mobile_sam``'s for ViT-T) at ``size`` with 2 mask tokens, holding ``model``'s
    weights (samjax -> Meta layout, loaded strictly), or None when the package is missing."""
    try:
        import torch
        from functools import partial
        if spec.encoder == "tiny_vit":
            from mobile_sam.modeling import MaskDecoder, PromptEncoder, Sam, TinyViT, TwoWayTransformer
        else:
            from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    except ImportError:
        return None
    from samjax.params import flat_params
    from samjax.weights.meta_sam import to_meta

    if spec.encoder == "tiny_vit" and size != 1024:
        return None  # MobileSAM's TinyViT reshapes to a 64x64 grid: 1024-pixel inputs only

    d = spec.prompt_embed_dim
    grid = size // 16
    if spec.encoder == "tiny_vit":
        encoder = TinyViT(img_size=size, in_chans=3, num_classes=1000, embed_dims=list(spec.tiny_embed_dims),
                          depths=list(spec.tiny_depths), num_heads=list(spec.tiny_num_heads),
                          window_sizes=list(spec.tiny_window_sizes), mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0,
                          use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8)
    else:
        encoder = ImageEncoderViT(
            depth=spec.encoder_depth, embed_dim=spec.encoder_embed_dim, img_size=size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=spec.encoder_num_heads, patch_size=16,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=list(spec.encoder_global_attn_indexes),
            window_size=spec.window_size, out_chans=d)
    meta = Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(embed_dim=d, image_embedding_size=(grid, grid), input_image_size=(size, size),
                                     mask_in_chans=spec.mask_in_chans),
        mask_decoder=MaskDecoder(num_multimask_outputs=spec.num_multimask_outputs, transformer=TwoWayTransformer(
            depth=spec.decoder_depth, embedding_dim=d, mlp_dim=spec.decoder_mlp_dim,
            num_heads=spec.decoder_num_heads), transformer_dim=d, iou_head_depth=spec.iou_head_depth,
            iou_head_hidden_dim=spec.iou_head_hidden_dim),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    weights = to_meta({k: np.asarray(v) for k, v in flat_params(model).items()}, spec)
    state = meta.state_dict()
    meta.load_state_dict({k: torch.as_tensor(weights[k]) for k in state}, strict=True)
    return meta.train()


def decode_batched(decoder, emb, pe, dense):
    """Meta's ``MaskDecoder.predict_masks`` for a batch of images, each with its own copy of the output tokens
    and no prompt tokens (auto mode), as samjax's step decodes: every mask token's logits ``(B, T, 4h, 4w)``
    and the IoU head's output. (Meta's own method takes one image per call.)"""
    import torch

    b = emb.shape[0]
    tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], 0)[None].expand(b, -1, -1)
    hs, src = decoder.transformer(emb + dense, pe.expand(b, -1, -1, -1), tokens)
    _, c, h, w = emb.shape
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper = torch.stack([mlp(hs[:, 1 + i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], 1)
    masks = (hyper @ upscaled.flatten(2)).reshape(b, -1, *upscaled.shape[-2:])
    return masks, decoder.iou_prediction_head(hs[:, 0])


def bench_meta(meta, size: int, batch: int, steps: int, compile_: bool) -> dict:
    """Meta's model trained as samjax's step trains it: encoder and decoder, AdamW, Dice + cross-entropy on
    the 2 tokens' low-res logits, the whole batch in one decoder call; eager, or with the loss's forward
    (and so its backward) under ``torch.compile``."""
    import torch
    import torch.nn.functional as F

    for p in meta.prompt_encoder.parameters():
        p.requires_grad_(False)
    params = [p for p in meta.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    host = _batch(batch, size)
    images = torch.as_tensor(host["image"]).permute(0, 3, 1, 2).float()
    target = torch.as_tensor(host["low_res_label"]).long()
    grid = size // 16

    def loss_fn(images, target):
        x = (images - meta.pixel_mean) / meta.pixel_std
        emb = meta.image_encoder(x)
        dense = meta.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, grid, grid)
        logits, _ = decode_batched(meta.mask_decoder, emb, meta.prompt_encoder.get_dense_pe(), dense)
        ce = F.cross_entropy(logits, target)
        prob = logits.softmax(1)
        onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
        dice = 1 - (2 * (prob * onehot).sum((2, 3)) + 1) / (prob.sum((2, 3)) + onehot.sum((2, 3)) + 1)
        return ce + dice.mean()

    forward = torch.compile(loss_fn) if compile_ else loss_fn

    def step():
        loss = forward(images, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return float(loss.detach())

    start = time.perf_counter()
    step()  # warm-up (and inductor's compilation)
    first = time.perf_counter() - start
    losses = []
    step_s = median_seconds(lambda: losses.append(step()), steps)
    return {"first_step_s": first, "step_s": step_s, "steps_per_s": 1.0 / step_s, "loss": losses[-1],
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
    parser.add_argument("--skip-compiled", action="store_true", help="no torch.compile column")
    args = parser.parse_args()

    metas = []
    on_build = None if args.skip_meta else lambda model, spec: metas.append(meta_model(model, spec, args.image_size))
    results = {
        "device": str(jax.devices()[0].device_kind),
        "platform": platform.processor() or platform.machine(),
        "model_type": args.model_type, "image_size": args.image_size, "batch": args.batch,
        "samjax": bench_samjax(args.model_type, args.image_size, args.batch, args.steps, args.attention, args.remat,
                               args.dtype, on_build),
    }
    flops = results["samjax"]["compiled_gflop_per_step"]
    results["limit_gflops"], results["limit_basis"] = limit_gflops()
    results["limit_samjax"] = flops / results["samjax"]["step_s"] / results["limit_gflops"]
    if metas and metas[0] is not None:
        columns = {"meta_eager": metas[0]}  # the compiled column starts from the same weights, copied first
        if not args.skip_compiled:
            columns = {"meta_compiled": copy.deepcopy(metas[0]), **columns}
        for name in ("meta_eager", "meta_compiled"):
            if name not in columns:
                continue
            r = bench_meta(columns[name], args.image_size, args.batch, args.steps, compile_=name == "meta_compiled")
            results[name] = r
            results[f"samjax_over_{name}"] = results["samjax"]["steps_per_s"] / r["steps_per_s"]
            results[f"limit_{name}"] = flops / r["step_s"] / results["limit_gflops"]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
