"""Evaluate a training run: Dice per class on a held-out split, overlay pictures, metrics.json.

    python eval.py --config configs/quickstart.py --workdir runs/quickstart [--split test] \
        [--checkpoint latest|best] [--per volume] [--output runs/quickstart/eval_test]

Uses the run's own config (pass the same ``--config`` and overrides) and its latest or best
checkpoint. ``--per volume`` restacks the 2D slices of each case and averages Dice over volumes.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "the run's config file")
_WORKDIR = flags.DEFINE_string("workdir", None, "the training run to evaluate")
_SPLIT = flags.DEFINE_string("split", "test", "the split to evaluate")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "latest", ["latest", "best"], "which checkpoint of the run")
_PER = flags.DEFINE_enum("per", "image", ["image", "volume"], "average Dice over images or restacked volumes")
_OUTPUT = flags.DEFINE_string("output", None, "folder for metrics.json and overlays (default WORKDIR/eval_SPLIT)")
_OVERLAYS = flags.DEFINE_integer("overlays", 8, "overlay pictures to write")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from samjax import parallel
    from samjax.train import evaluate, strategy, supervised, trainer
    from samjax.train.state import Trainable

    cfg = _CONFIG.value
    workdir = os.path.abspath(os.path.expanduser(_WORKDIR.value))
    cfg.init_checkpoint = workdir
    cfg.init_checkpoint_which = _CHECKPOINT.value
    class_names = trainer.open_data(cfg).class_names
    mesh = parallel.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    model = strategy.build_model(cfg, len(class_names))
    trainable = Trainable(model, strategy.trainable_filter(cfg), cfg, mesh, supervised.loss_fn(cfg.train.mode))
    out = _OUTPUT.value or os.path.join(workdir, f"eval_{_SPLIT.value}")
    evaluate.write_evaluation(cfg, trainable, trainable.init_state().params, trainable.frozen(), mesh, class_names,
                              out, split=_SPLIT.value, overlays=_OVERLAYS.value,
                              mode="case" if _PER.value == "volume" else "image")


if __name__ == "__main__":
    app.run(main)
