"""Converted SAM checkpoints on disk: the one place samjax calls Orbax.

A converted checkpoint is a folder::

    DIR/samjax.json   {"format": "samjax-sam", "version": 1, "model_type": "vit_b", "image_size": 1024, ...}
    DIR/params/       Orbax (OCDBT + Zarr) tree of float32 arrays, nested by module path

``samjax.json`` is written last, so a folder without it is an interrupted conversion and is refused.
Loading needs no PyTorch.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from samjax.errors import CheckpointError

FORMAT = "samjax-sam"
VERSION = 1
META_FILE = "samjax.json"


def _nest(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, META_FILE))


def save_sam(path: str | os.PathLike, params: Mapping[str, Any], model_type: str, image_size: int, **info) -> None:
    """Writes flat params and their model description to the folder ``path`` (which must not exist)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and os.listdir(path):
        raise FileExistsError(f"{path} exists and is not empty; choose a new output folder")
    os.makedirs(path, exist_ok=True)
    tree = _nest({k: np.asarray(v, np.float32) for k, v in params.items()})
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(path, "params"), tree)
        ckptr.wait_until_finished()
    meta = {"format": FORMAT, "version": VERSION, "model_type": model_type, "image_size": int(image_size), **info}
    tmp = os.path.join(path, META_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, os.path.join(path, META_FILE))


def read_meta(path: str | os.PathLike) -> dict:
    """The ``samjax.json`` of a converted checkpoint, validated."""
    path = os.fspath(path)
    meta_path = os.path.join(path, META_FILE)
    if not os.path.isfile(meta_path):
        raise CheckpointError(
            f"{path} is not a samjax checkpoint folder (no {META_FILE}); it may be an interrupted "
            "conversion: convert again with convert_weights/convert_sam.py"
        )
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path} is unreadable: {e}") from None
    if meta.get("format") != FORMAT or not isinstance(meta.get("model_type"), str):
        raise CheckpointError(f"{meta_path} does not describe a samjax SAM checkpoint")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer samjax (format version {meta['version']})")
    return meta


def load_sam(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Reads a converted checkpoint: its ``samjax.json`` and its flat params as NumPy arrays."""
    path = os.path.abspath(os.fspath(path))
    meta = read_meta(path)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            tree = ckptr.restore(os.path.join(path, "params"))
    except Exception as e:  # Orbax raises many types for damaged folders
        raise CheckpointError(f"cannot restore the parameters in {path}/params: {type(e).__name__}: {e}") from None
    return meta, {k: np.asarray(v) for k, v in _flatten(tree).items()}


# --- Training runs -------------------------------------------------------------------------------
# A training workdir holds ``checkpoints/<step>/{state,data}`` (Orbax CheckpointManager: the train
# state, and the Grain iterator position of every process) and ``frozen/`` (the parameters the run
# does not train, written once). Orbax writes each step to a temporary folder and renames it when
# complete, so a run killed mid-save never leaves a half-written step that looks finished.

CHECKPOINTS = "checkpoints"
FROZEN = "frozen"
NOTHING_FROZEN = "NOTHING_FROZEN"  # the marker file of a run that trains every parameter


SCORE = "score"


def _score(metrics) -> float:
    """The higher-is-better ranking value stored with a checkpoint (``val_dice`` in older runs)."""
    return metrics.get(SCORE, metrics.get("val_dice", float("-inf")))


class TrainCheckpoints:
    """Asynchronous checkpoints of one run: the last ``keep`` steps, plus the best by ``best_metric``
    (highest, or lowest with ``higher_is_better=False``; stored with each validated step as ``score``)."""

    def __init__(self, workdir: str | os.PathLike, keep: int = 3, best_metric: str | None = "val_dice",
                 async_save: bool = True, higher_is_better: bool = True):
        from orbax.checkpoint import checkpoint_managers as cm

        policies = [cm.LatestN(n=max(1, int(keep)))]
        if best_metric:
            policies.append(cm.BestN(get_metric_fn=_score, reverse=False, n=1, keep_checkpoints_without_metrics=False))
        self.sign = 1.0 if higher_is_better else -1.0
        self.workdir = os.path.abspath(os.fspath(workdir))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=cm.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(os.path.join(self.workdir, CHECKPOINTS), options=options)
        self.best_metric = best_metric

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return _best_step(self.manager.directory) if self.best_metric else None

    def save(self, step: int, state, data_iterator=None, metrics: Mapping[str, float] | None = None) -> None:
        """Saves ``step``; ``metrics`` (``{best_metric: value}``, from a validation) rank it for "best"."""
        import grain

        if metrics and self.best_metric in metrics:
            metrics = {**metrics, SCORE: self.sign * float(metrics[self.best_metric])}
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self.manager.save(int(step), args=ocp.args.Composite(**items), metrics=dict(metrics) if metrics else None,
                          force=True)

    def restore(self, step: int, abstract_state, data_iterator=None):
        """The state saved at ``step``, placed as ``abstract_state``'s shardings say; the iterator is reset in place."""
        import grain

        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self.manager.restore(int(step), args=ocp.args.Composite(**items))["state"]

    def save_frozen(self, frozen) -> None:
        """The parameters this run does not train, once (atomically: a temporary folder renamed)."""
        path = os.path.join(self.workdir, FROZEN)
        if os.path.isdir(path):
            return
        if not jax.tree.leaves(frozen):  # everything trains (a UNet): Orbax saves no empty tree, a marker says so
            if jax.process_index() == 0:
                os.makedirs(path + ".tmp", exist_ok=True)
                open(os.path.join(path + ".tmp", NOTHING_FROZEN), "w").close()
                os.replace(path + ".tmp", path)
            return
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(path, frozen)
            ckptr.wait_until_finished()

    def restore_frozen(self, abstract_frozen):
        if os.path.isfile(os.path.join(self.workdir, FROZEN, NOTHING_FROZEN)):
            return abstract_frozen
        with ocp.StandardCheckpointer() as ckptr:
            return ckptr.restore(os.path.join(self.workdir, FROZEN), abstract_frozen)

    def wait_until_finished(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def latest_model_params(workdir: str | os.PathLike, which: str = "latest") -> dict[str, np.ndarray]:
    """Flat params (``image_encoder.blocks.0...``) of a training run: its frozen part plus the trained
    parameters of its latest checkpoint, its best (``which="best"``) or step ``which`` (``"1200"``); read on
    the host, no mesh needed."""
    workdir = os.path.abspath(os.fspath(workdir))
    manager = ocp.CheckpointManager(os.path.join(workdir, CHECKPOINTS),
                                    options=ocp.CheckpointManagerOptions(read_only=True))
    if str(which).isdigit():
        step = int(which)
        if step not in manager.all_steps():
            raise CheckpointError(f"{workdir} has no checkpoint of step {step}; it has steps "
                                  f"{sorted(manager.all_steps())} (or use latest / best)")
    else:
        step = _best_step(os.path.join(workdir, CHECKPOINTS)) if which == "best" else manager.latest_step()
    if step is None:
        step = manager.latest_step()
    if step is None:
        raise CheckpointError(f"{workdir} has no finished training checkpoint")
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    frozen = {}
    if not os.path.isfile(os.path.join(workdir, FROZEN, NOTHING_FROZEN)):
        with ocp.StandardCheckpointer() as ckptr:
            frozen = ckptr.restore(os.path.join(workdir, FROZEN))
    flat = _flatten(_stringify(frozen))
    flat.update(_flatten(_stringify(state["params"])))
    return {k: np.asarray(v) for k, v in flat.items()}


def _best_step(directory) -> int | None:
    """The finished step with the highest ``score`` (None if no step has one)."""
    options = ocp.CheckpointManagerOptions(read_only=True, best_fn=_score, best_mode="max")
    return ocp.CheckpointManager(os.fspath(directory), options=options).best_step()


def _stringify(tree):
    if isinstance(tree, Mapping):
        return {str(k): _stringify(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return {str(i): _stringify(v) for i, v in enumerate(tree)}
    return tree
