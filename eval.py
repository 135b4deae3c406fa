"""Evaluate a training run on a held-out split, as its objective scores it.

    python eval.py --workdir runs/quickstart                              # the run's own config, latest checkpoint
    python eval.py --workdir runs/quickstart --checkpoint best --per volume --split validation
    python eval.py --workdir runs/quickstart --checkpoint 800 --output /tmp/step800
    python eval.py --config configs/quickstart.py --workdir runs/quickstart --config.data.eval_name=other_set

The config is the run's own ``WORKDIR/config.json`` unless ``--config`` (with its ``--config.*``
overrides) is given. Fine-tuning runs in auto mode get Dice, IoU, HD95 and NSD per class, per image or
per restacked volume (``--per volume``), with ``metrics.json``, ``scores.csv``, ``scores.md``, a Dice box
plot and the best / median / worst overlays in ``--output`` (default ``WORKDIR/eval`` for the run's final
evaluation split, ``WORKDIR/eval_<split>`` for another); MAE runs their reconstruction loss and picture,
interactive runs Dice with a box and 1..N clicks. A bad value ends in one line naming it.
"""

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file (default: the run's WORKDIR/config.json)")
_WORKDIR = flags.DEFINE_string("workdir", None, "the training run to evaluate")
_SPLIT = flags.DEFINE_string("split", None, "the split to evaluate (default: the run's final_eval_split, else test)")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "which checkpoint of the run: latest, best or a step")
_PER = flags.DEFINE_enum("per", "image", ["image", "volume"], "score each 2D image or each restacked volume")
_TOLERANCE = flags.DEFINE_float("nsd_tolerance", 2.0, "normalized surface Dice tolerance (mm, or pixels when "
                                "the data set records no spacing)")
_OUTPUT = flags.DEFINE_string("output", None, "folder for the results (default: see above)")
_OVERLAYS = flags.DEFINE_integer("overlays", 3, "write the best / median / worst overlays (0: none)")
flags.mark_flags_as_required(["workdir"])


def _tuples(value):
    """JSON lists back to the tuples configs hold (``encoder_global_attn_indexes`` and the like)."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def run_config(workdir: str):
    """The config a run saved in ``workdir/config.json``."""
    import ml_collections

    from samjax.errors import ConfigError

    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(f"{path} does not exist: give the run's config with --config configs/<file>.py")
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(_tuples(json.load(f)))
    except ValueError as e:
        raise ConfigError(f"{path} is not a readable config ({e}); give --config configs/<file>.py") from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from samjax.errors import CheckpointError, ConfigError, DataError
    from samjax.train import trainer

    workdir = os.path.abspath(os.path.expanduser(_WORKDIR.value))
    try:
        if not os.path.isdir(os.path.join(workdir, "checkpoints")):
            raise ConfigError(f"--workdir {workdir} is not a training run (no checkpoints/ folder)")
        cfg = _CONFIG.value if _CONFIG.value is not None else run_config(workdir)
        cfg.init_checkpoint = workdir
        cfg.init_checkpoint_which = _CHECKPOINT.value
        if not _TOLERANCE.value > 0:
            raise ConfigError(f"--nsd_tolerance={_TOLERANCE.value} must be positive")
        split = _SPLIT.value or cfg.get("final_eval_split", "") or "test"
        objective, mesh, data, trainable = trainer.setup(cfg)
        final = split == (cfg.get("final_eval_split", "") or "test")
        out = _OUTPUT.value or os.path.join(workdir, "eval" if final else f"eval_{split}")
        options = dict(overlays=_OVERLAYS.value)
        if objective.name == "finetune":
            options.update(mode="case" if _PER.value == "volume" else "image", tolerance=_TOLERANCE.value)
        objective.evaluate(cfg, trainable, trainable.params(), trainable.frozen(), mesh, data, out, split=split,
                           **options)
    except (ConfigError, CheckpointError, DataError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    from samjax.train.config_check import parse_flags

    app.run(main, flags_parser=parse_flags)
