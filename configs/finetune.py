"""Task-specific supervised fine-tuning of SAM: the study's grid of encoders, scopes and PEFT methods.

    python train.py --config configs/finetune.py --workdir runs/liver_vit_b \
        --config.init_checkpoint=ckpt/sam_vit_b --config.data.name=liver \
        --config.model.encoder=vit_b --config.train.scope=decoder --config.train.peft=lora

``get_config("vit_h,encoder_decoder,adapter")`` (or ``--config configs/finetune.py:vit_h,encoder_decoder,adapter``)
picks a grid point; every field can be overridden on the command line.
"""

import ml_collections

ENCODERS = ("vit_t", "vit_b", "vit_l", "vit_h")
SCOPES = ("decoder", "encoder_decoder")
PEFTS = ("none", "adapter", "lora")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    encoder, scope, peft = (arg.split(",") if arg else ("vit_b", "decoder", "none"))
    c = ml_collections.ConfigDict()
    c.objective = "finetune"  # finetune | mae (configs/mae.py) | interactive (configs/interactive.py)
    c.seed = 0
    c.init_checkpoint = ""  # a converted SAM folder / Meta .pth / a samjax training workdir; "" = random init
    c.init_checkpoint_which = "latest"  # for a training workdir: its latest or best checkpoint
    c.total_steps = 10_000
    c.log_every_steps = 50
    c.eval_every_steps = 1_000
    c.checkpoint_every_steps = 1_000
    c.keep_checkpoints = 3
    c.compilation_cache_dir = "~/.cache/samjax/jax"  # XLA programs kept across restarts ("" disables)
    c.final_eval_split = ""  # e.g. "test": evaluate after training into workdir/eval

    c.model = ml_collections.ConfigDict()
    c.model.encoder = encoder  # vit_t | vit_b | vit_l | vit_h
    c.model.overrides = ml_collections.ConfigDict()  # SamSpec fields, e.g. tiny sizes for tests
    c.model.drop_path = 0.0
    c.model.remat = False
    c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)
    c.model.attention = "auto"  # the encoder attention's form: auto | reference | blocked | fused (same results)

    c.data = ml_collections.ConfigDict()
    c.data.name = "phantoms/labeled_256"  # or several, comma-separated: "liver,kidney" (mixed by data.weights)
    c.data.weights = ""  # e.g. "2,1": sampling weights of the data sets in data.name ("": equal)
    c.data.eval_name = ""  # the data set validated and evaluated on ("": the first of data.name)
    c.data.data_dir = "~/tensorflow_datasets"
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.image_size = 1024
    c.data.global_batch = 8
    c.data.few_shot = 0  # N training images/volumes (0: all)
    c.data.classes = ""  # keep only these foreground classes, e.g. "bone,lesion" (the others: background); "": all
    c.data.workers = 0
    c.data.augment = ml_collections.ConfigDict({"flip": 0.5, "affine": 0.5, "intensity": 0.5, "elastic": 0.0})
    c.data.eval_batch = 8
    c.data.eval_max_examples = 0  # 0: the whole split

    c.train = ml_collections.ConfigDict()
    c.train.mode = "auto"  # auto (no prompts, one mask per class) | box | point
    c.train.scope = scope  # decoder | encoder_decoder
    c.train.peft = peft  # none | adapter | lora
    c.train.lora_rank = 4
    c.train.lora_alpha = 4.0
    c.train.lora_encoder_blocks = "all"  # "all" or a list of block indices
    c.train.adapter_encoder_blocks = "all"
    c.train.prompt_encoder = False  # train the prompt encoder too (SAM's interactive stage does; MedSAM freezes it)
    c.train.num_objects = 4  # prompted modes: objects per image
    c.train.dice_weight = 1.0
    c.train.ce_weight = 1.0
    c.train.grad_accum_steps = 1

    c.optim = ml_collections.ConfigDict()
    c.optim.optimizer = "adamw"
    c.optim.learning_rate = 1e-4
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.01
    c.optim.grad_clip_norm = 1.0
    c.optim.schedule = "cosine"  # cosine | poly | constant
    c.optim.warmup_steps = 200
    c.optim.min_lr_ratio = 0.01
    c.optim.poly_power = 0.9
    c.optim.layer_decay = 1.0

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    return c
