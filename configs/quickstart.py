"""Quick start: a small SAM trained from random weights on the built-in phantoms, on a laptop CPU.

    python train.py --config configs/quickstart.py --workdir runs/quickstart

Builds ``phantoms/labeled_128`` on first use, trains auto mode (one mask per class, no prompts), then
evaluates on the held-out test split: ``runs/quickstart/eval/metrics.json`` and overlay pictures.
``--config.total_steps=N`` changes the length.
"""

import ml_collections

from configs import finetune


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = finetune.get_config("vit_b,encoder_decoder,none")
    c.total_steps = 1200
    c.log_every_steps = 25
    c.eval_every_steps = 400
    c.checkpoint_every_steps = 400
    c.final_eval_split = "test"
    c.model.overrides = ml_collections.ConfigDict(dict(
        encoder_embed_dim=96, encoder_depth=4, encoder_num_heads=3, encoder_global_attn_indexes=(1, 3),
        patch_size=8, window_size=8, prompt_embed_dim=128, decoder_mlp_dim=512, decoder_num_heads=4,
        iou_head_hidden_dim=128, mask_in_chans=16))  # SAM's 16: see configs/tiny.py
    c.data.name = "phantoms/labeled_128"
    c.data.image_size = 128
    c.data.global_batch = 8
    c.data.eval_batch = 25
    c.data.eval_max_examples = 50
    c.data.augment = ml_collections.ConfigDict({"flip": 0.5, "affine": 0.3, "intensity": 0.3, "elastic": 0.0})
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 50
    c.optim.weight_decay = 0.05
    c.optim.grad_clip_norm = 1.0
    return c
