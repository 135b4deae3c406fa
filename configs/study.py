"""The study as a grid of train/eval runs: which training strategy wins under which data budget.

    python -m samjax.study --config configs/study.py --workdir runs/study               # SAM grid on phantoms
    python -m samjax.study --config configs/study.py:tiny --workdir /tmp/study          # seconds per run (tests)
    python -m samjax.study --config configs/study.py:full --workdir /scratch/study \
        --set data.name=liver --set init_checkpoint=ckpt/sam_vit_b --only 'setup1/vit_b*'  # one slice of the real study

Fields: ``runs``, a list of entries ``{name, config, set, after, few_shot}``: ``config`` is a config file of
this folder with its argument, ``set`` the overrides of that run (``--config.<key>=<value>``), ``after``
the name of a run whose workdir becomes this run's ``init_checkpoint`` (pretraining, setups 2 and 3), and
``few_shot`` (optional) the data budgets of this entry; ``few_shot``: training images per run, 0 = all;
``seeds``: every few-shot run is repeated with each seed (full-data runs use the first); ``set``: overrides
for every run (a run's own ``set`` wins).
"""

import ml_collections

SETUP1 = [("vit_b", "decoder", "none"), ("vit_b", "decoder", "lora"), ("vit_b", "decoder", "adapter"),
          ("vit_b", "encoder_decoder", "none"), ("vit_b", "encoder_decoder", "lora"),
          ("vit_b", "encoder_decoder", "adapter")]


def _finetune(name, encoder, scope, peft, after=""):
    return dict(name=name, config=f"finetune.py:{encoder},{scope},{peft}", set={}, after=after)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.few_shot = (0, 5)
    c.seeds = (0, 1, 2)
    c.set = ml_collections.ConfigDict({"final_eval_split": "test"})
    if arg == "tiny":  # the runner end to end in about a minute: setup 1 with seeds, setup 3 chained
        c.seeds = (0, 1)
        c.set = ml_collections.ConfigDict({"final_eval_split": "test", "total_steps": 4, "eval_every_steps": 0,
                                           "checkpoint_every_steps": 4})
        c.runs = [
            dict(name="setup1/vit_b-decoder-none", config="tiny.py:vit_b,decoder,none", set={}, after="",
                 few_shot=(5,)),
            dict(name="setup3/mae", config="tiny.py:mae", set={}, after="", few_shot=(0,)),
            dict(name="setup3/vit_b-decoder-none", config="tiny.py:vit_b,decoder,none", set={}, after="setup3/mae",
                 few_shot=(0,)),
        ]
        return c
    if arg == "full":  # the study at real size: ViT-T, B and H, from Meta's / MobileSAM's weights (set init_checkpoint)
        c.runs = [_finetune(f"setup1/{e}-{s}-{p}", e, s, p) for e in ("vit_t", "vit_b", "vit_h")
                  for s in ("decoder", "encoder_decoder") for p in ("none", "adapter", "lora")]
        c.runs.append(dict(name="unet", config="unet.py", set={}, after=""))
        return c
    if arg not in (None, ""):
        raise ValueError(f"configs/study.py takes no argument, 'tiny' or 'full', got {arg!r}")
    # In miniature on the phantoms: the quick start's SAM from random weights (setup 1) in every scope x PEFT,
    # against the UNet of the same size; each run is the quick start's length (~5 min on 2 CPU cores).
    c.runs = [dict(name=f"setup1/quickstart-{s}-{p}", config="quickstart.py", after="",
                   set={"train.scope": s, "train.peft": p}) for _, s, p in SETUP1]
    c.runs.append(dict(name="unet", config="unet.py:quickstart", set={}, after=""))
    return c
