"""Evaluate a training run, or a SAM as loaded (zero-shot), on a held-out split.

    python eval.py --workdir runs/quickstart                              # the run's own config, latest checkpoint
    python eval.py --workdir runs/quickstart --checkpoint best --per volume --split validation
    python eval.py --workdir runs/quickstart --checkpoint 800 --output /tmp/step800
    python eval.py --workdir runs/interactive --clicks 20                 # box, then 1..20 clicks; NoC@85/90
    python eval.py --workdir runs/interactive --protocol box_corrections  # CVPR 2025 challenge: box + 5 corrections
    python eval.py --sam ckpt/sam_vit_b --model-type vit_b --config configs/finetune.py:vit_b,decoder,none \
        --config.train.mode=box --config.data.name=liver --output runs/zero_shot_b --clicks 5 --amg   # zero-shot

The config is the run's own ``WORKDIR/config.json`` unless ``--config`` (with its ``--config.*``
overrides) is given. Fine-tuning runs in auto mode get Dice, IoU, HD95 and NSD per class, per image or
per restacked volume (``--per volume``), with ``metrics.json``, ``scores.csv``, ``scores.md``, a Dice box
plot and the best / median / worst overlays in ``--output`` (default ``WORKDIR/eval`` for the run's final
evaluation split, ``WORKDIR/eval_<split>`` for another); box / point runs the click protocol; MAE runs their
reconstruction loss and picture; interactive runs the click protocol (``samjax/evaluation/clicks.py``).

Without ``--workdir`` the model is a SAM as loaded, ``--sam FILE`` (Meta's ``.pth`` or a converted folder;
``--model-type`` sets ``model.encoder``) or ``--config``'s ``init_checkpoint``, scored on ``--config``'s data
and written to ``--output``: the zero-shot baselines. A SAM has no class heads, so its zero-shot evaluation
needs prompts (``--config.train.mode=box`` or ``point``). ``--clicks N`` adds the interactive protocol (a box,
then 1..N clicks, each at the largest error) for any model with SAM's own mask tokens, in ``OUTPUT/clicks``;
``--amg`` adds the automatic mask generator, its masks matched to the labels (``samjax/evaluation/amg_matching.py``),
in ``OUTPUT/amg``. ``--protocol box_corrections`` adds the CVPR 2025 interactive challenge's counting (a box,
then 5 corrections; DSC, NSD, DSC_AUC, NSD_AUC; ``samjax/evaluation/box_corrections.py``) in
``OUTPUT/box_corrections``. A bad value ends in one line naming it.
"""

if __name__ == "__main__":  # before JAX loads: transparent huge pages (samjax.utils.huge_pages)
    from samjax.utils import huge_pages

    huge_pages.reexec()

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file (default: the run's WORKDIR/config.json)")
_WORKDIR = flags.DEFINE_string("workdir", None, "the training run to evaluate (none: --config's model as loaded)")
_SPLIT = flags.DEFINE_string("split", None, "the split to evaluate (default: the run's final_eval_split, else test)")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "which checkpoint of the run: latest, best or a step")
_SAM = flags.DEFINE_string("sam", None, "a SAM as loaded instead of a run: Meta's .pth or a converted folder (sets "
                           "init_checkpoint; needs --config for the data)")
_MODEL_TYPE = flags.DEFINE_string("model-type", None, "the SAM of --sam: vit_t, vit_b, vit_l or vit_h (sets "
                                  "model.encoder; default: the config's)")
_PER = flags.DEFINE_enum("per", "image", ["image", "volume"], "score each 2D image or each restacked volume")
_TOLERANCE = flags.DEFINE_float("nsd_tolerance", 2.0, "normalized surface Dice tolerance (mm, or pixels when "
                                "the data set records no spacing)")
_OUTPUT = flags.DEFINE_string("output", None, "folder for the results (default: see above)")
_OVERLAYS = flags.DEFINE_integer("overlays", 3, "write the best / median / worst overlays (0: none)")
_CLICKS = flags.DEFINE_integer("clicks", 0, "the interactive protocol with a box and 1..N clicks (interactive runs: "
                               "default interactive.eval_clicks)")
_PROTOCOL = flags.DEFINE_enum("protocol", "", ["", "box_corrections"],
                              "box_corrections: the CVPR 2025 interactive challenge's counting, a box then 5 "
                              "corrections (DSC, NSD, their AUCs), in OUTPUT/box_corrections")
_AMG = flags.DEFINE_bool("amg", False, "also score the automatic mask generator, masks matched to the labels")
_AMG_POINTS = flags.DEFINE_integer("amg_points_per_side", 32, "the generator's grid of point prompts per side")


def _model_config(workdir: str | None):
    """The config of the model to evaluate: a training run's (loaded from it) or ``--config``'s as loaded."""
    from samjax.errors import ConfigError

    from samjax.cli_options import check_run_checkpoint

    if workdir:
        if _SAM.value or _MODEL_TYPE.value:
            raise ConfigError("give --workdir RUN (a training run) or --sam FILE (a SAM's weights), not both")
        if check_run_checkpoint(_CHECKPOINT.value):
            raise ConfigError(check_run_checkpoint(_CHECKPOINT.value))
        if not os.path.isdir(os.path.join(workdir, "checkpoints")):
            raise ConfigError(f"--workdir {workdir} is not a training run (no checkpoints/ folder)")
        from samjax.run.info import run_config

        cfg = _CONFIG.value if _CONFIG.value is not None else run_config(workdir)
        cfg.init_checkpoint = workdir
        cfg.init_checkpoint_which = _CHECKPOINT.value
        return cfg
    if _CONFIG.value is None:
        raise ConfigError("give --workdir RUN (a training run), or a SAM as loaded: --sam FILE --config "
                          "configs/<file>.py (its data) --output DIR")
    cfg = _CONFIG.value
    if _SAM.value:
        cfg.init_checkpoint = _SAM.value
    if _MODEL_TYPE.value:
        if _MODEL_TYPE.value not in ("vit_t", "vit_b", "vit_l", "vit_h"):
            raise ConfigError(f"--model-type {_MODEL_TYPE.value}: one of vit_t, vit_b, vit_l, vit_h")
        cfg.model.encoder = _MODEL_TYPE.value
    if not cfg.get("init_checkpoint", ""):
        raise ConfigError("give --workdir RUN (a training run), or a SAM as loaded: --sam FILE --config "
                          "configs/<file>.py (its data) --output DIR")
    if not _OUTPUT.value:
        raise ConfigError("--output DIR is needed without --workdir (where the results go)")
    run = os.path.isdir(os.path.join(os.path.expanduser(cfg.init_checkpoint), "checkpoints"))
    if not run and cfg.get("objective", "finetune") == "finetune" and cfg.train.mode == "auto":
        raise ConfigError(f"{cfg.init_checkpoint} is a SAM: it has no class heads, so train.mode=auto would score "
                          "random ones; evaluate it from prompts: --config.train.mode=box (or point), with "
                          "--clicks N for the click protocol")
    return cfg


def _check_prompted(objective, cfg, flag: str) -> None:
    """``--clicks`` and ``--amg`` need SAM's own mask tokens: box / point / interactive models."""
    from samjax.errors import ConfigError

    if not objective.uses_sam or objective.name == "mae":
        raise ConfigError(f"{flag} needs a SAM with its prompt encoder; this is a {objective.name} run")
    if objective.name == "finetune" and cfg.train.mode == "auto":
        raise ConfigError(f"{flag} needs SAM's own mask tokens, but train.mode=auto replaces them by one per class; "
                          "evaluate a box / point / interactive run, or set --config.train.mode=box")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from samjax.errors import CheckpointError, ConfigError, DataError
    from samjax.train import trainer

    workdir = os.path.abspath(os.path.expanduser(_WORKDIR.value)) if _WORKDIR.value else None
    try:
        cfg = _model_config(workdir)
        if not _TOLERANCE.value > 0:
            raise ConfigError(f"--nsd_tolerance={_TOLERANCE.value} must be positive")
        if _CLICKS.value < 0 or _AMG_POINTS.value < 1:
            raise ConfigError("--clicks must be >= 0 and --amg_points_per_side >= 1")
        split = _SPLIT.value or cfg.get("final_eval_split", "") or "test"
        objective, mesh, data, trainable = trainer.setup(cfg)
        for flag, on in (("--clicks", _CLICKS.value > 0 and objective.name != "interactive"), ("--amg", _AMG.value),
                         ("--protocol", bool(_PROTOCOL.value))):
            if on:
                _check_prompted(objective, cfg, flag)
        final = split == (cfg.get("final_eval_split", "") or "test")
        out = _OUTPUT.value or os.path.join(workdir, "eval" if final else f"eval_{split}")
        options = dict(overlays=_OVERLAYS.value)
        class_maps = objective.name in ("finetune", "unet") and cfg.train.mode == "auto"
        if _PER.value == "volume" and not (class_maps or _AMG.value):
            raise ConfigError(f"--per volume scores class maps, and this {objective.name} run "
                              f"(train.mode={cfg.train.mode}) predicts one mask per prompted object; drop --per, "
                              "or add --amg to score the automatic mask generator's class maps per volume")
        if class_maps:
            options.update(mode="case" if _PER.value == "volume" else "image", tolerance=_TOLERANCE.value)
        if objective.name == "interactive" and _CLICKS.value:
            options.update(clicks=_CLICKS.value)
        params, frozen = trainable.params(), trainable.frozen()
        objective.evaluate(cfg, trainable, params, frozen, mesh, data, out, split=split, **options)
        names = list(data.class_names) or [f"class_{c}" for c in range(data.num_classes)]
        if _CLICKS.value and objective.name != "interactive":
            from samjax.evaluation import clicks as click_eval

            click_eval.evaluate_clicks(cfg, trainable, params, frozen, mesh, names, os.path.join(out, "clicks"),
                                       split, _CLICKS.value)
        if _PROTOCOL.value == "box_corrections":
            from samjax.evaluation import box_corrections

            box_corrections.evaluate_box_corrections(cfg, trainable, params, frozen, mesh, names,
                                                     os.path.join(out, "box_corrections"), split, _TOLERANCE.value)
        if _AMG.value:
            _evaluate_amg(cfg, trainable, params, frozen, mesh, names, os.path.join(out, "amg"), split)
    except (ConfigError, CheckpointError, DataError) as e:
        raise SystemExit(f"error: {e}") from None


def _evaluate_amg(cfg, trainable, params, frozen, mesh, names, out, split):
    import jax

    from samjax.evaluation import amg_matching as amg_eval
    from samjax.evaluation import evaluate
    from samjax.evaluation.batches import eval_source

    total = len(eval_source(cfg, split).records) if jax.process_count() == 1 else None
    maps = amg_eval.class_maps(trainable.model(params, frozen), len(names), total=total,
                               points_per_side=_AMG_POINTS.value)
    evaluate.write_evaluation(cfg, trainable, params, frozen, mesh, names, out, split=split, overlays=_OVERLAYS.value,
                              mode="case" if _PER.value == "volume" else "image", tolerance=_TOLERANCE.value,
                              class_maps=maps, title=f"{cfg.data.name}, automatic mask generator (oracle match)")


if __name__ == "__main__":
    from samjax.train.config_check import parse_flags

    app.run(main, flags_parser=parse_flags)
