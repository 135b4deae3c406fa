"""The study as a grid of train/eval runs: which training strategy wins under which data budget.

    python -m samjax.study --config configs/study.py --workdir runs/study               # the study in miniature
    python -m samjax.study --config configs/study.py:tiny --workdir /tmp/study          # seconds per run (tests)
    python -m samjax.study --config configs/study.py:full --workdir /scratch/study \
        --set data.name=liver --set init_checkpoint=ckpt/sam_vit_b --only 'setup1/vit_b*'  # one slice of the real study

Fields: ``runs``, a list of entries ``{name, config, set, after, few_shot, evaluate}``: ``config`` is a config
file of this folder with its argument, ``set`` the overrides of that run (``--config.<key>=<value>``), ``after``
the name of a run whose workdir becomes this run's ``init_checkpoint`` (pretraining, setups 2 and 3),
``few_shot`` (optional) the data budgets of this entry, and ``evaluate`` (optional) ``eval.py`` flags: the
entry is a zero-shot baseline, its model evaluated as loaded, without training; ``few_shot``: training images per run, 0 = all;
``seeds``: every few-shot run is repeated with each seed (full-data runs use the first); ``set``: overrides
for every run (a run's own ``set`` wins); ``few_shot_set``: overrides for few-shot runs (fewer steps).

The default grid recreates the study in miniature on the phantoms (see ``_miniature``): a stand-in foundation
model (the quick start's small SAM trained interactively on body, liver and kidney) that every setup starts
from, setups 2 and 3 continuing its training (interactive, MAE), every setup then fine-tuned on the held-out
structures, bone and lesions (``data.classes``), decoder-only and encoder + decoder, vanilla, LoRA and
adapters, on all training slices and on 5, against a UNet of the same size trained from scratch.
"""

import ml_collections

ENCODERS = ("vit_t", "vit_b", "vit_h")


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
        c.runs = [_finetune(f"setup1/{e}-{s}-{p}", e, s, p) for e in ENCODERS
                  for s in ("decoder", "encoder_decoder") for p in ("none", "adapter", "lora")]
        c.runs.append(dict(name="unet", config="unet.py", set={}, after=""))
        c.runs += [dict(name=f"zero-shot/{e}", config=f"finetune.py:{e},decoder,none", set={"train.mode": "box"},
                        after="", few_shot=(0,), evaluate=("--clicks", "20", "--amg")) for e in ENCODERS]
        return c
    if arg not in (None, ""):
        raise ValueError(f"configs/study.py takes no argument, 'tiny' or 'full', got {arg!r}")
    return _miniature(c)


PRETRAIN_CLASSES = "body,liver,kidney"
TASK_CLASSES = "bone,lesion"
SCOPES = ("decoder", "encoder_decoder")
PEFTS = ("none", "lora", "adapter")


def _miniature(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The study's question at laptop scale: one stand-in foundation model that every setup starts from, as
    every setup of the study starts from SAM. ``foundation`` is the quick start's small SAM trained SAM-style
    (``configs/interactive.py``: boxes, clicks and corrections, from random weights) on any connected object of
    the pretraining structures (body, liver, kidney; class-agnostic, as SA-1B's masks); setup 1 fine-tunes it
    directly, setup 2 continues its interactive training on the same slices' labeled structures (one object
    per class, as the study's labeled medical data sets), setup 3 continues with MAE on unlabeled slices (the
    encoder; its prompt encoder and decoder ride along frozen and load into the fine-tuning). Each is then
    fine-tuned in auto mode on the held-out structures, bone and lesions; LoRA and adapters at their measured
    learning rate (``PEFT_LEARNING_RATES``, BENCHMARKS.md)."""
    c.set = ml_collections.ConfigDict({"final_eval_split": "test", "total_steps": 300, "eval_every_steps": 0,
                                       "checkpoint_every_steps": 100})
    c.few_shot_set = ml_collections.ConfigDict({"total_steps": 150})
    task = {"data.classes": TASK_CLASSES}
    # interactive.full_res off: the miniature in the README was measured before the 128-px interactive config
    # trained at the input resolution and on filled objects without lesions (its foundation and setup 2 stay
    # as measured until re-run; the pretraining classes hold no lesions to skip)
    pretrain = {"data.classes": PRETRAIN_CLASSES, "eval_every_steps": 500, "interactive.full_res": False,
                "interactive.skip_classes": ""}
    c.runs = [
        dict(name="foundation", config="interactive.py", after="", few_shot=(0,),
             set={**pretrain, "interactive.objects": "component", "total_steps": FOUNDATION_STEPS}),
        dict(name="setup2/interactive", config="interactive.py", after="foundation", few_shot=(0,),
             set={**pretrain, "interactive.objects": "class", "total_steps": 600}),
        dict(name="setup3/mae", config="mae.py", after="foundation", few_shot=(0,), set={"total_steps": 600}),
    ]
    for setup, after in (("setup1", "foundation"), ("setup2", "setup2/interactive"), ("setup3", "setup3/mae")):
        c.runs += [dict(name=f"{setup}/{s}-{p}", config="quickstart.py", after=after,
                        set={**task, "train.scope": s, "train.peft": p, **_peft_lr(p)}) for s in SCOPES for p in PEFTS]
    c.runs.append(dict(name="unet", config="unet.py:quickstart", set=dict(task), after=""))
    c.runs.append(dict(name="zero-shot/foundation-box", config="quickstart.py", after="foundation", few_shot=(0,),
                       set={**task, "train.mode": "box"}, evaluate=("--clicks", "5")))
    return c


FOUNDATION_STEPS = 1500
# Measured on the foundation (BENCHMARKS.md, "PEFT learning rates"): LoRA and adapters start from a delta of
# zero and move few weights, so they take a larger step than full fine-tuning's 1e-3 (SAMed: 5e-3 for LoRA).
PEFT_LEARNING_RATES = {"none": None, "lora": 3e-3, "adapter": 3e-3}


def _peft_lr(peft: str) -> dict:
    lr = PEFT_LEARNING_RATES[peft]
    return {} if lr is None else {"optim.learning_rate": lr}
