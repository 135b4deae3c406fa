"""Setup 3 of the study, task-agnostic: MAE pretraining of SAM's image encoder on unlabeled images, then fine-tuning.

    # 1. pretrain (default: the quick start's small SAM on the unlabeled phantoms, a few minutes on a laptop CPU)
    python train.py --config configs/mae.py --workdir runs/mae
    # 2. fine-tune from it: the quick start, its encoder (and the rest of SAM) loaded from the MAE run
    python train.py --config configs/quickstart.py --workdir runs/quickstart_from_mae \\
        --config.init_checkpoint=runs/mae

At scale, ``configs/mae.py:vit_b`` (or ``vit_l``, ``vit_h``) pretrains the real encoder at 1024 pixels
from SAM's weights (``--config.init_checkpoint=ckpt/sam_vit_h``, converted with
``convert_weights/convert_sam.py``) or from scratch (no ``init_checkpoint``), with MAE's decoder
(8 blocks, 512 wide, 16 heads), on any mix of data sets; labels, if any, are ignored:

    python train.py --config configs/mae.py:vit_h --workdir /shared/runs/mae_h \\
        --config.init_checkpoint=ckpt/sam_vit_h --config.mesh.fsdp=8 --config.model.remat=True \\
        --config.data.name=ct_unlabeled,mr_unlabeled,liver --config.data.weights=2,1,1
    python train.py --config configs/finetune.py:vit_h,encoder_decoder,lora --workdir /shared/runs/liver_h \\
        --config.init_checkpoint=/shared/runs/mae_h --config.data.name=liver

The encoder runs on the whole token grid with a learned mask token in place of the hidden patches
(SAM's windowed attention needs the full grid); see ``samjax/modeling/mae.py`` and the README.
"""

import ml_collections

from configs import finetune, quickstart

# Optimization as MAE's pretraining recipe: AdamW (0.9, 0.95), weight decay 0.05, warm-up then cosine.
MAE_OPTIM = dict(b1=0.9, b2=0.95, weight_decay=0.05, schedule="cosine", layer_decay=1.0, grad_clip_norm=0.0)


def _mae(c: ml_collections.ConfigDict, decoder_dim: int, decoder_depth: int, decoder_heads: int):
    c.objective = "mae"
    c.mae = ml_collections.ConfigDict(dict(
        mask_ratio=0.75,        # MAE: hide 75% of the patches
        norm_pix_loss=True,     # targets: each patch's pixels normalized by its own mean and variance
        decoder_dim=decoder_dim, decoder_depth=decoder_depth, decoder_heads=decoder_heads))
    c.train.scope = "encoder_decoder"  # the image encoder (and the MAE decoder) are trained
    c.train.peft = "none"
    c.optim.update(MAE_OPTIM)
    c.data.augment = ml_collections.ConfigDict({"flip": 0.5, "affine": 0.5, "intensity": 0.0, "elastic": 0.0})
    c.final_eval_split = "test"
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg:  # a real encoder size at 1024 pixels with MAE's own decoder
        c = finetune.get_config(f"{arg},encoder_decoder,none")
        c = _mae(c, decoder_dim=512, decoder_depth=8, decoder_heads=16)
        c.total_steps = 100_000
        c.optim.learning_rate = 1.5e-4 * c.data.global_batch / 256  # MAE: 1.5e-4 per 256 images
        c.optim.warmup_steps = 5_000
        c.data.name = "phantoms/unlabeled_256"
        c.data.eval_split = "validation"
        return c
    c = quickstart.get_config()
    # A decoder sized to the quick start's 96-wide encoder (MAE's 512 x 8 would be 17x the encoder).
    c = _mae(c, decoder_dim=128, decoder_depth=2, decoder_heads=4)
    c.total_steps = 1200
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 50
    c.data.name = "phantoms/unlabeled_128"
    c.data.eval_max_examples = 50
    return c
