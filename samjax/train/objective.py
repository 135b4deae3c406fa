"""What a training objective plugs into the one trainer: data, model, loss, validation, evaluation.

The trainer (``samjax.train.trainer``) owns the loop, the mesh, checkpoints, metrics and resume; an
``Objective`` says what is trained and how it is scored. ``config.objective`` picks one:

- ``finetune``: task-specific supervised fine-tuning, auto mode or box/point prompts
  (``samjax.train.supervised``);
- ``mae``: task-agnostic self-supervised pretraining of the image encoder (``samjax.train.mae``);
- ``interactive``: task-expansive prompt-based training, SAM's interactive simulation
  (``samjax.train.interactive``);
- ``unet``: the study's baseline, a UNet trained from scratch (``samjax.train.unet_baseline``).

Every objective's step is one jitted ``loss(model, batch, key, cfg, dtype) -> (total, terms)``
differentiated by the trainer; ``key`` is ``fold_in(seed, step)``, so a resumed run draws what an
uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Sequence

import jax
import numpy as np

from samjax.data import pipeline

OBJECTIVES = ("finetune", "mae", "interactive", "unet")


@dataclasses.dataclass(frozen=True)
class TrainData:
    """The opened training sources of a run (several are mixed with ``weights``) and their classes."""

    sources: tuple[pipeline.Source, ...]
    weights: tuple[float, ...] | None
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def data_names(cfg) -> list[str]:
    """``data.name`` as a list: one name, or several separated by commas (mixed with ``data.weights``)."""
    value = cfg.data.name
    names = list(value) if isinstance(value, (list, tuple)) else str(value).split(",")
    return [n.strip() for n in names if n.strip()]


def data_weights(cfg) -> tuple[float, ...] | None:
    """``data.weights`` (``"1,3"`` or a list) as floats, or None for equal weights."""
    value = cfg.data.get("weights", "")
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    return tuple(float(v) for v in value) if value else None


class Objective:
    """The base objective; subclasses override what differs (see the module docstring)."""

    name: str = ""
    uses_sam: bool = True             # the model is SAM (its model.* fields are checked)
    labeled: bool = True              # the training examples need labels
    needs_class_names: bool = True    # the model's heads depend on the class list
    best_metric: str = "val_dice"     # the validation scalar that picks the best checkpoint
    best_higher: bool = True
    batch_keys: tuple[str, ...] = ("image", "valid")

    def check(self, cfg) -> None:
        """Raises ``ConfigError`` for values of this objective's own config fields."""

    def train_keys(self, cfg) -> tuple[str, ...]:
        """The batch fields the training step reads (``batch_keys``; an objective may add config-dependent ones)."""
        return self.batch_keys

    def open_data(self, cfg) -> TrainData:
        """The training sources of ``cfg.data`` (several names mixed with ``data.weights``)."""
        from samjax.errors import DataError

        sources = tuple(pipeline.open_source(n, cfg.data.train_split, cfg.data.data_dir, data_classes(cfg))
                        for n in data_names(cfg))
        if self.labeled:
            for s in sources:
                if len(s.records) and "label" not in s.records[0]:
                    raise DataError(f"{s.name} has no labels; {self.name} needs labeled data (MAE pretraining "
                                    "can use it: configs/mae.py)")
        names = [s.class_names for s in sources]
        if self.needs_class_names:
            if not names[0]:
                raise DataError(f"{sources[0].name} declares no class names; {self.name} needs labeled data")
            for s in sources[1:]:
                if s.class_names != names[0]:
                    raise DataError(f"{s.name} has classes {s.class_names}, {sources[0].name} has {names[0]}: "
                                     f"data sets mixed in one {self.name} run must declare the same classes")
        longest = max(names, key=len)
        return TrainData(sources, data_weights(cfg), tuple(longest))

    def prompts(self, cfg, data: TrainData):
        """A Grain transform adding simulated prompts to training examples, or None."""
        return None

    def build_model(self, cfg, data: TrainData, log: Callable = print):
        raise NotImplementedError

    def trainable_filter(self, cfg):
        raise NotImplementedError

    def loss(self, model, batch: dict, key, cfg, dtype):
        raise NotImplementedError

    def low_res_size(self, cfg) -> int:
        from samjax.train import strategy

        return strategy.model_spec(cfg).low_res_size

    def validate(self, cfg, trainable, params, frozen, mesh, data: TrainData, split: str | None = None) -> dict:
        """Scores on ``split`` (default ``data.eval_split``): ``{"scalars": {...}, "best": value, ...}``;
        the scalars go to the metric writers, ``best`` (the value of ``best_metric``) ranks checkpoints,
        ``"images"`` (name -> uint8 picture), if any, go to TensorBoard."""
        raise NotImplementedError

    def evaluate(self, cfg, trainable, params, frozen, mesh, data: TrainData, out_dir: str, split: str,
                 log: Callable = print, **options) -> dict:
        """The held-out evaluation a finished run (or ``eval.py``) writes into ``out_dir``."""
        raise NotImplementedError

    def summary(self, result: dict) -> str:
        """One line for the log."""
        return " ".join(f"{k} {v:.4f}" for k, v in result.get("scalars", {}).items())


def get(cfg) -> Objective:
    """The objective ``cfg.objective`` names (``finetune`` when the field is absent)."""
    name = cfg.get("objective", "finetune")
    if name == "finetune":
        from samjax.train.supervised import Finetune

        return Finetune()
    if name == "mae":
        from samjax.train.mae import MaePretraining

        return MaePretraining()
    if name == "interactive":
        from samjax.train.interactive import InteractiveTraining

        return InteractiveTraining()
    if name == "unet":
        from samjax.train.unet_baseline import UNetBaseline

        return UNetBaseline()
    from samjax.errors import ConfigError

    raise ConfigError(f"objective={name!r} is not an objective; use one of {', '.join(OBJECTIVES)}")


def jit_once(trainable, name: str, make: Callable):
    """``jax.jit(make())``, built once per trainable: every validation reuses the compiled program."""
    cache = trainable.__dict__.setdefault("_jitted", {})
    if name not in cache:
        cache[name] = jax.jit(make())
    return cache[name]


def gather_rows(x) -> np.ndarray:
    """A batch-sharded device array -> every process's rows as one host array."""
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def data_classes(cfg) -> tuple[str, ...]:
    """``data.classes``: the foreground classes kept (comma-separated names; empty: all)."""
    return tuple(c.strip() for c in str(cfg.data.get("classes", "") or "").split(",") if c.strip())


@functools.lru_cache(maxsize=8)
def _open_source(name: str, split: str, data_dir: str, classes: tuple[str, ...] = ()) -> pipeline.Source:
    return pipeline.open_source(name, split, data_dir, classes)


def eval_source(cfg, split: str | None = None) -> pipeline.Source:
    """The evaluation split (default ``data.eval_split``) of ``data.eval_name`` (default: the first training
    set), opened once per process: every validation of a run reuses it."""
    name = cfg.data.get("eval_name", "") or data_names(cfg)[0]
    return _open_source(name, split or cfg.data.eval_split, os.path.expanduser(cfg.data.data_dir), data_classes(cfg))


def eval_batches(cfg, mesh, keys: Sequence[str], split: str | None = None, max_examples: int | None = None,
                 labeled: bool = True, prompts=None, low_res_size: int | None = None):
    """Every example of ``split`` of ``data.eval_name`` (default: the first training set) once, in global batches of ``data.eval_batch`` (rounded up to the mesh):
    yields ``(host_batch, device_batch)``; ``device_batch`` holds ``keys`` plus ``weight`` (0 on padding)."""
    from samjax import parallel

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

