"""The one trainer: data, model, mesh, the jitted step, checkpoints, validation and logs.

Every objective runs here: fine-tuning, MAE and interactive pretraining (``config.objective``; see
``samjax.train.objectives`` for what an objective provides). ``setup`` checks the config first, so a
bad value is one line before any data set is built or any program compiled.

``train(cfg, workdir)`` runs ``cfg.total_steps`` steps of the strategy the config describes and can be
killed at any moment: started again with the same workdir it resumes from the last finished
checkpoint (train state, frozen parameters and the data iterator's position) and continues exactly
as an uninterrupted run. Every ``log_every_steps`` it checks the losses of all steps since the last
check (a non-finite one stops the run with its step and term; nothing after the last good
checkpoint is saved), writes ``metrics.jsonl`` and TensorBoard, and moves the progress bar. With
``eval_every_steps`` it validates every that many steps, at the end, and once before the first step
of a fresh run (step 0: the starting model's score).
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np

from samjax import parallel
from samjax.checkpoint import TrainCheckpoints
from samjax.data import pipeline
from samjax.data.augment import augmentations
from samjax.train import config_check, writers
from samjax.run import info as run_info
from samjax.train import objectives
from samjax.train.progress import ProgressBar
from samjax.train.state import Trainable


def _log(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)


def train_stream(cfg, data: objectives.TrainData, objective: objectives.Objective, mesh):
    """This host's infinite stream of training batches (several data sets mixed with ``data.weights``)."""
    parallel.batch_size_per_process(int(cfg.data.global_batch), mesh)
    return pipeline.train_dataset(
        list(data.sources), weights=data.weights, global_batch=int(cfg.data.global_batch),
        image_size=int(cfg.data.image_size), seed=int(cfg.seed), few_shot=int(cfg.data.few_shot) or None,
        augment=augmentations(cfg.data.augment), prompts=objective.prompts(cfg, data), labeled=objective.labeled,
        process_index=jax.process_index(), process_count=jax.process_count(),
        low_res_size=objective.low_res_size(cfg))


def _device_batch(batch: dict, keys, mesh) -> dict:
    return parallel.global_batch({k: v for k, v in batch.items() if k in keys}, mesh)


@dataclasses.dataclass
class Run:
    """What a finished ``train`` leaves: the objective's pieces and the final state on the mesh."""

    objective: objectives.Objective
    data: objectives.TrainData
    trainable: Trainable
    state: object
    frozen: object
    mesh: object
    last_eval: dict

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.data.class_names


def setup(cfg, log=_log):
    """Checks ``cfg`` and builds what a run needs before its data stream: objective, mesh, data, model.

    Returns ``(objective, mesh, data, trainable)``; a bad config value raises ``ConfigError`` before
    any data set is built or any program compiled.
    """
    objective = objectives.get(cfg)
    config_check.check(cfg, jax.device_count(), jax.process_count(), log=log)
    mesh = parallel.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    log(f"{jax.process_count()} process(es), {jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"mesh {dict(mesh.shape)}; objective {objective.name}")
    data = objective.open_data(cfg)
    model = objective.build_model(cfg, data, log=log)
    trainable = Trainable(model, objective.trainable_filter(cfg), cfg, mesh, objective.loss, log)
    return objective, mesh, data, trainable


def train(cfg, workdir: str) -> Run:
    """Trains as ``cfg`` says into ``workdir`` (see the module docstring)."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    objective, mesh, data, trainable = setup(cfg)
    os.makedirs(workdir, exist_ok=True)
    chief = jax.process_index() == 0
    keys = objective.train_keys(cfg)

    ckpts = TrainCheckpoints(workdir, keep=int(cfg.keep_checkpoints), best_metric=objective.best_metric,
                             higher_is_better=objective.best_higher)
    stream = iter(pipeline.to_iterable(train_stream(cfg, data, objective, mesh), workers=int(cfg.data.workers)))
    start = ckpts.latest_step()
    if start is None:
        state = trainable.init_state()
        frozen = trainable.frozen()
        ckpts.save_frozen(frozen)
        if chief:
            run_info.write_data_info(workdir, data)
        start = 0
    else:
        state = ckpts.restore(start, trainable.abstract_state(), stream)
        frozen = ckpts.restore_frozen(trainable.abstract_frozen())
        _log(f"resumed from {workdir}/checkpoints/{start}")

    # A fresh start drops what an earlier attempt that never reached a checkpoint logged.
    writer = writers.MetricWriter(workdir, is_chief=chief, resume_step=start + 1 if start else 0)
    if start == 0:
        writer.write_hparams(cfg.to_dict())
    bar = ProgressBar(int(cfg.total_steps), initial_step=start, enabled=chief)
    pending: list[tuple[int, dict]] = []
    last_eval: dict = {}
    tick, tick_step = time.perf_counter(), start
    total = int(cfg.total_steps)

    def flush(step: int) -> None:
        """Checks every step since the last flush and logs the mean of the interval."""
        nonlocal tick, tick_step
        fetched = [(s, {k: float(v) for k, v in jax.device_get(m).items()}) for s, m in pending]
        pending.clear()
        for s, m in fetched:
            writers.check_finite(s, m, checkpoint_dir=os.path.join(workdir, "checkpoints"))
        if not fetched:
            return
        now = time.perf_counter()
        mean = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[-1][1]}
        mean["lr"] = fetched[-1][1]["lr"]
        mean["steps_per_s"] = (step - tick_step) / max(now - tick, 1e-9)
        tick, tick_step = now, step
        writer.write(step, mean)
        bar.update(step, loss=mean["loss"], lr=mean["lr"])

    def validate(step: int) -> dict:
        result = objective.validate(cfg, trainable, state.params, frozen, mesh, data)
        writer.write(step, result["scalars"])
        if result.get("images"):
            writer.write_images(step, result["images"])
        _log(f"step {step}: validation {objective.summary(result)}")
        return result

    try:
        if start == 0 and int(cfg.eval_every_steps):  # the starting model's score, to compare against
            validate(0)
        for step in range(start + 1, total + 1):
            batch = _device_batch(next(stream), keys, mesh)
            state, metrics = trainable.step_fn(state, frozen, batch)
            pending.append((step, metrics))
            if step % int(cfg.log_every_steps) == 0 or step == total:
                flush(step)
            do_eval = int(cfg.eval_every_steps) and (step % int(cfg.eval_every_steps) == 0 or step == total)
            if do_eval:
                flush(step)
                last_eval = validate(step)
            if step % int(cfg.checkpoint_every_steps) == 0 or step == total:
                flush(step)
                best = {objective.best_metric: last_eval["best"]} if do_eval else None
                ckpts.save(step, state, stream, best)
    finally:
        bar.close()
        ckpts.close()
        writer.close()
    return Run(objective, data, trainable, state, frozen, mesh, last_eval)


def run(cfg, workdir: str) -> Run:
    """``train``, then (``cfg.final_eval_split``) the held-out evaluation into ``workdir/eval``."""
    result = train(cfg, workdir)
    split = cfg.get("final_eval_split", "")
    if split:
        result.objective.evaluate(cfg, result.trainable, result.state.params, result.frozen, result.mesh,
                                  result.data, os.path.join(os.path.expanduser(workdir), "eval"), split=split,
                                  log=_log)
    return result
