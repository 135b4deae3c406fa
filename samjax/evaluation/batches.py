"""The evaluation data of a run and the plumbing every evaluation loop shares: batches of a split on the mesh,
rows gathered from every process, and programs compiled once per model.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from samjax import parallel
from samjax.data import pipeline
from samjax.data.selection import data_classes, data_names, open_cached


def eval_source(cfg, split: str | None = None) -> pipeline.Source:
    """The evaluation split (default ``data.eval_split``) of ``data.eval_name`` (default: the first training
    set), opened once per process: every validation of a run reuses it."""
    name = cfg.data.get("eval_name", "") or data_names(cfg)[0]
    return open_cached(name, split or cfg.data.eval_split, os.path.expanduser(cfg.data.data_dir), data_classes(cfg))


def eval_batches(cfg, mesh, keys: Sequence[str], split: str | None = None, max_examples: int | None = None,
                 labeled: bool = True, prompts=None, low_res_size: int | None = None):
    """Every example of ``split`` of ``data.eval_name`` (default: the first training set) once, in global batches
    of ``data.eval_batch`` (rounded up to the mesh): yields ``(host_batch, device_batch)``; ``device_batch`` holds
    ``keys`` plus ``weight`` (0 on padding)."""
    source = eval_source(cfg, split)
    limit = max_examples if max_examples is not None else int(cfg.data.get("eval_max_examples", 0) or 0)
    if limit and limit < len(source.records):
        source = pipeline.head(source, limit)
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    batch_size = -(-int(cfg.data.eval_batch) // ways) * ways
    ds = pipeline.eval_dataset(source, global_batch=batch_size, image_size=int(cfg.data.image_size), labeled=labeled,
                               process_index=jax.process_index(), process_count=jax.process_count(),
                               low_res_size=low_res_size, prompts=prompts, seed=int(cfg.seed))
    wanted = tuple(keys) + ("weight",)
    for batch in ds:
        yield batch, parallel.global_batch({k: batch[k] for k in wanted if k in batch}, mesh)


def jit_once(trainable, name: str, make: Callable):
    """``jax.jit(make())``, built once per trainable: every validation reuses the compiled program."""
    cache = trainable.__dict__.setdefault("_jitted", {})
    if name not in cache:
        cache[name] = jax.jit(make())
    return cache[name]


def gather_rows(x) -> np.ndarray:
    """A batch-sharded device array -> every process's rows as one host array."""
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
