"""What a training objective plugs into the one trainer: data, model, loss, validation, evaluation.

The trainer (``samjax.train.trainer``) owns the loop, the mesh, checkpoints, metrics and resume; an
``Objective`` says what is trained and how it is scored (each objective in its own module of
``samjax.train.objectives``, which registers them; this base knows none of them).

Every objective's step is one jitted ``loss(model, batch, key, cfg, dtype) -> (total, terms)``
differentiated by the trainer; ``key`` is ``fold_in(seed, step)``, so a resumed run draws what an
uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from samjax.data import pipeline
from samjax.data import selection
from samjax.errors import DataError
from samjax.run.model import model_spec


@dataclasses.dataclass(frozen=True)
class TrainData:
    """The opened training sources of a run (several are mixed with ``weights``) and their classes."""

    sources: tuple[pipeline.Source, ...]
    weights: tuple[float, ...] | None
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


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
        sources = tuple(selection.open_sources(cfg))
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
        return TrainData(sources, selection.data_weights(cfg), selection.class_names(sources))

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
        return model_spec(cfg).low_res_size

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
