"""The study's baseline: a 2D UNet (nnU-Net style) trained from scratch by the same trainer, scored by the same
evaluation as SAM.

    python train.py --config configs/unet.py --workdir runs/unet_liver --config.data.name=liver
    python train.py --config configs/unet.py:quickstart --workdir runs/unet_quickstart   # beside the quick start
    python eval.py --workdir runs/unet_liver --per volume

The fields are ``configs/finetune.py``'s (data, optimizer, mesh, checkpoints) plus ``model.unet``; the SAM
fields (``model.encoder``, ``train.scope``, ``train.peft``, ``init_checkpoint`` of a SAM) do not apply.
``:quickstart`` trains on the quick start's data, size, batch and schedule with a UNet of about the quick
start SAM's size (1.6 M parameters), so the two compare directly.
"""

import ml_collections

from configs import finetune, quickstart


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = quickstart.get_config() if arg == "quickstart" else finetune.get_config()
    if arg not in (None, "", "quickstart"):
        raise ValueError(f"configs/unet.py takes no argument or 'quickstart', got {arg!r}")
    c.objective = "unet"
    c.model.unet = ml_collections.ConfigDict()
    c.model.unet.features = (32, 64, 128, 256, 320)  # channels per stage; stride 2 between stages
    c.model.unet.deep_supervision = True  # loss on every decoder output but the coarsest (1, 1/2, 1/4, ...)
    if arg == "quickstart":
        c.model.unet.features = (16, 32, 64, 128, 192)
    else:
        c.data.image_size = 512
        c.optim.learning_rate = 1e-3
        c.optim.weight_decay = 3e-5
    return c
