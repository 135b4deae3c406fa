"""The interactive training step of ``configs/interactive.py`` (the README's 128-px model): seconds, page faults.

    python bench/interactive_step.py --steps 24
    python bench/interactive_step.py --set interactive.click_rounds=2 interactive.no_click_rounds=1

One process: the config's data, model and jitted step (``train.py``'s), 8 real batches, 4 warm-up steps, then
``--steps`` timed steps. Reported: seconds a step, the process's minor page faults and kernel / user CPU
seconds a step (``getrusage``: the faults are XLA's temporary buffer mapped afresh each call, see
``samjax/utils/huge_pages.py``; ``huge_pages`` says whether glibc's tunable was on), XLA's FLOP count of
the step, and its fraction of this machine's matrix-product rate measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from _shared import limit_gflops, load_config  # noqa: E402
from samjax.data import pipeline  # noqa: E402
from samjax.train import trainer  # noqa: E402


def _override(cfg, assignment: str) -> None:
    """``a.b=value`` into ``cfg``, the value parsed as the field's type (as ``--config.a.b=value``)."""
    key, value = assignment.split("=", 1)
    *path, last = key.split(".")
    node = cfg
    for part in path:
        node = node[part]
    old = node[last]
    node[last] = (value.lower() == "true") if isinstance(old, bool) else type(old)(value)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="config overrides")
    args = p.parse_args(argv)
    cfg = load_config("interactive")
    for assignment in args.set:
        _override(cfg, assignment)
    objective, mesh, data, trainable = trainer.setup(cfg, log=lambda m: None)
    stream = iter(pipeline.to_iterable(trainer.train_stream(cfg, data, objective, mesh), workers=0))
    keys = objective.train_keys(cfg)
    state, frozen = trainable.init_state(), trainable.frozen()
    batches = [trainer._device_batch(next(stream), keys, mesh) for _ in range(8)]
    step = trainable.step_fn.lower(state, frozen, batches[0]).compile()  # one program: timed and counted
    flops = float((step.cost_analysis() or {}).get("flops", 0.0))
    for batch in batches[:4]:
        state, metrics = step(state, frozen, batch)
    jax.block_until_ready(metrics)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for i in range(args.steps):
        state, metrics = step(state, frozen, batches[i % len(batches)])
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / args.steps
    after = resource.getrusage(resource.RUSAGE_SELF)
    limit, basis = limit_gflops()
    result = {
        "config": "configs/interactive.py " + " ".join(args.set),
        "seconds_per_step": round(seconds, 4),
        "minor_faults_per_step": (after.ru_minflt - before.ru_minflt) // args.steps,
        "kernel_cpu_s_per_step": round((after.ru_stime - before.ru_stime) / args.steps, 4),
        "user_cpu_s_per_step": round((after.ru_utime - before.ru_utime) / args.steps, 4),
        "huge_pages": "glibc.malloc.hugetlb=1" in os.environ.get("GLIBC_TUNABLES", ""),
        "gflop_per_step": round(flops / 1e9, 2),
        "limit_gflops": round(limit, 1),
        "limit_basis": basis,
        "limit_fraction": round(flops / seconds / 1e9 / limit, 3),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
