"""Evaluate a training run on a held-out split, as its objective scores it.

    python eval.py --config configs/quickstart.py --workdir runs/quickstart [--split test] \
        [--checkpoint latest|best] [--per volume] [--output runs/quickstart/eval_test]
    python eval.py --config configs/mae.py --workdir runs/mae                  # reconstruction loss + picture
    python eval.py --config configs/interactive.py --workdir runs/interactive  # Dice with a box, 1..5 clicks

Uses the run's own config (pass the same ``--config`` and overrides) and its latest or best
checkpoint. Fine-tuning runs get Dice per class and overlay pictures; ``--per volume`` restacks the
2D slices of each case and averages Dice over volumes. A bad value ends in one line naming it.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "the run's config file")
_WORKDIR = flags.DEFINE_string("workdir", None, "the training run to evaluate")
_SPLIT = flags.DEFINE_string("split", "test", "the split to evaluate")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "latest", ["latest", "best"], "which checkpoint of the run")
_PER = flags.DEFINE_enum("per", "image", ["image", "volume"], "average Dice over images or restacked volumes")
_OUTPUT = flags.DEFINE_string("output", None, "folder for metrics.json and pictures (default WORKDIR/eval_SPLIT)")
_OVERLAYS = flags.DEFINE_integer("overlays", 8, "overlay pictures to write (fine-tuning runs)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from samjax.errors import CheckpointError, ConfigError, DataError
    from samjax.train import trainer

    cfg = _CONFIG.value
    workdir = os.path.abspath(os.path.expanduser(_WORKDIR.value))
    cfg.init_checkpoint = workdir
    cfg.init_checkpoint_which = _CHECKPOINT.value
    try:
        if not os.path.isdir(os.path.join(workdir, "checkpoints")):
            raise ConfigError(f"--workdir {workdir} is not a training run (no checkpoints/ folder)")
        objective, mesh, data, trainable = trainer.setup(cfg)
        out = _OUTPUT.value or os.path.join(workdir, f"eval_{_SPLIT.value}")
        objective.evaluate(cfg, trainable, trainable.params(), trainable.frozen(), mesh, data, out,
                           split=_SPLIT.value, overlays=_OVERLAYS.value,
                           mode="case" if _PER.value == "volume" else "image")
    except (ConfigError, CheckpointError, DataError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    from samjax.train.config_check import parse_flags

    app.run(main, flags_parser=parse_flags)
