"""Train SAM: fine-tuning, MAE and interactive pretraining, on one CPU, one GPU or many hosts.

    python train.py --config configs/quickstart.py --workdir runs/quickstart
    python train.py --config configs/mae.py --workdir runs/mae                   # MAE pretraining
    python train.py --config configs/interactive.py --workdir runs/interactive   # SAM's interactive training
    python train.py --config configs/finetune.py:vit_b,decoder,lora --workdir runs/x \
        --config.init_checkpoint=ckpt/sam_vit_b --config.data.name=liver --config.mesh.fsdp=4

Started again with the same ``--workdir`` a run resumes from its last checkpoint. On a cluster, start
one process per host: JAX detects TPU pods, SLURM and Open MPI; elsewhere pass
``--coordinator_address``, ``--num_processes`` and ``--process_id``. A bad config value, data set or
checkpoint ends the command with one line naming it (exit code 1), before anything is built.
"""

if __name__ == "__main__":  # before JAX loads: transparent huge pages (samjax.utils.huge_pages)
    from samjax.utils import huge_pages

    huge_pages.reexec()

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "an ml_collections config file (configs/*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and pictures go")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host runs)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "processes in the run (multi-host runs)")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index (multi-host runs)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # TFDS and JAX report at INFO; the trainer prints what matters
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.expanduser(_CONFIG.value.get("compilation_cache_dir", ""))
    if cache:  # compiled programs survive restarts: a resumed run starts in seconds
        import jax

        jax.config.update("jax_compilation_cache_dir", cache)
        # Small programs too: a random-init model's ~65 initializer programs compile in 8-10 s (ViT-B)
        # and load from the cache in ~1.5 s (BENCHMARKS.md, "Building a model").
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    from samjax.errors import CheckpointError, ConfigError, DataError
    from samjax.train import distributed
    from samjax.train.writers import NonFiniteLossError

    try:
        distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        from samjax.train import trainer

        trainer.run(_CONFIG.value, os.path.expanduser(_WORKDIR.value))
    except (ConfigError, CheckpointError, DataError, NonFiniteLossError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    from samjax.train.config_check import parse_flags

    app.run(main, flags_parser=parse_flags)
