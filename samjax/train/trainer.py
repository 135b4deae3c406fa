"""The one trainer: data, model, mesh, the jitted step, checkpoints, validation and logs.

``train(cfg, workdir)`` runs ``cfg.total_steps`` steps of the strategy the config describes and can be
killed at any moment: started again with the same workdir it resumes from the last finished
checkpoint (train state, frozen parameters and the data iterator's position) and continues exactly
as an uninterrupted run. Every ``log_every_steps`` it checks the losses of all steps since the last
check (a non-finite one stops the run with its step and term; nothing after the last good
checkpoint is saved), writes ``metrics.jsonl`` and TensorBoard, and moves the progress bar.
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
from samjax.data.prompts import SimulatePrompts
from samjax.train import evaluate, strategy, supervised, writers
from samjax.train.progress import ProgressBar
from samjax.train.state import Trainable

BATCH_KEYS = ("image", "valid", "label", "low_res_label", "boxes", "points", "point_labels", "object_valid",
              "object_masks", "object_class")


def _log(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)


def open_data(cfg):
    """The training source and the class names of the run."""
    source = pipeline.open_source(cfg.data.name, cfg.data.train_split, cfg.data.data_dir)
    if not source.class_names:
        raise ValueError(f"{cfg.data.name} declares no class names; supervised training needs labels")
    return source


def train_stream(cfg, source, mesh, low_res_size: int):
    prompts = None
    if cfg.train.mode != "auto":
        prompts = SimulatePrompts(num_objects=int(cfg.train.num_objects), num_points=1,
                                  num_classes=len(source.class_names))
    ds = pipeline.train_dataset(
        [source], global_batch=int(cfg.data.global_batch), image_size=int(cfg.data.image_size), seed=int(cfg.seed),
        few_shot=int(cfg.data.few_shot) or None, augment=augmentations(cfg.data.augment), prompts=prompts,
        process_index=jax.process_index(), process_count=jax.process_count(), low_res_size=low_res_size)
    parallel.batch_size_per_process(int(cfg.data.global_batch), mesh)
    return ds


def _device_batch(batch: dict, mesh) -> dict:
    return parallel.global_batch({k: v for k, v in batch.items() if k in BATCH_KEYS}, mesh)


def _eval_scalars(result: dict) -> dict:
    out = {"val_mean_dice": result["mean_dice"]}
    out.update({f"val_dice/{name}": v for name, v in result.get("per_class", {}).items()})
    return out


@dataclasses.dataclass
class Run:
    """What a finished ``train`` leaves: the strategy's pieces and the final state on the mesh."""

    trainable: Trainable
    state: object
    frozen: object
    mesh: object
    class_names: tuple[str, ...]
    last_eval: dict


def train(cfg, workdir: str) -> Run:
    """Trains as ``cfg`` says into ``workdir`` (see the module docstring)."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    os.makedirs(workdir, exist_ok=True)
    chief = jax.process_index() == 0
    mesh = parallel.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    _log(f"{jax.process_count()} process(es), {jax.device_count()} {jax.devices()[0].platform} device(s), "
         f"mesh {dict(mesh.shape)}")

    source = open_data(cfg)
    class_names = source.class_names
    model = strategy.build_model(cfg, len(class_names), log=_log)
    trainable = Trainable(model, strategy.trainable_filter(cfg), cfg, mesh, supervised.loss_fn(cfg.train.mode), _log)
    del model

    ckpts = TrainCheckpoints(workdir, keep=int(cfg.keep_checkpoints))
    low_res_size = strategy.model_spec(cfg, len(class_names)).low_res_size
    data = iter(pipeline.to_iterable(train_stream(cfg, source, mesh, low_res_size), workers=int(cfg.data.workers)))
    start = ckpts.latest_step()
    if start is None:
        state = trainable.init_state()
        frozen = trainable.frozen()
        ckpts.save_frozen(frozen)
        start = 0
    else:
        state = ckpts.restore(start, trainable.abstract_state(), data)
        frozen = ckpts.restore_frozen(trainable.abstract_frozen())
        _log(f"resumed from {workdir}/checkpoints/{start}")

    writer = writers.MetricWriter(workdir, is_chief=chief, resume_step=start + 1 if start else None)
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

    try:
        for step in range(start + 1, total + 1):
            batch = _device_batch(next(data), mesh)
            state, metrics = trainable.step_fn(state, frozen, batch)
            pending.append((step, metrics))
            if step % int(cfg.log_every_steps) == 0 or step == total:
                flush(step)
            do_eval = int(cfg.eval_every_steps) and (step % int(cfg.eval_every_steps) == 0 or step == total)
            if do_eval:
                flush(step)
                last_eval = evaluate.validate(cfg, trainable, state.params, frozen, mesh, class_names)
                writer.write(step, _eval_scalars(last_eval))
                _log(f"step {step}: validation {evaluate.format_dice(last_eval)}")
            if step % int(cfg.checkpoint_every_steps) == 0 or step == total:
                flush(step)
                metrics_for_best = {"val_dice": last_eval["mean_dice"]} if do_eval and "mean_dice" in last_eval else None
                ckpts.save(step, state, data, metrics_for_best)
    finally:
        bar.close()
        ckpts.close()
        writer.close()
    return Run(trainable, state, frozen, mesh, class_names, last_eval)


def run(cfg, workdir: str) -> Run:
    """``train``, then (``cfg.final_eval_split``) the held-out evaluation into ``workdir/eval``."""
    result = train(cfg, workdir)
    split = cfg.get("final_eval_split", "")
    if split:
        evaluate.write_evaluation(cfg, result.trainable, result.state.params, result.frozen, result.mesh,
                                  result.class_names, os.path.join(workdir, "eval"), split=split, log=_log)
    return result
