"""The training objectives, one module each, and the registry that picks one by ``config.objective``.

- ``finetune``: task-specific supervised fine-tuning, auto mode or box/point prompts (``finetune.py``);
- ``mae``: task-agnostic self-supervised pretraining of the image encoder (``mae.py``);
- ``interactive``: task-expansive prompt-based training, SAM's interactive simulation (``interactive.py``);
- ``unet``: the study's baseline, a UNet trained from scratch (``unet.py``).

An objective subclasses ``base.Objective`` (which imports none of them) and is added to ``REGISTRY``
below. Objectives may import the model, the data pipeline, the simulated user (``samjax.interaction``) and
``samjax.evaluation``, which scores what they hand it; nothing here imports the trainer.
"""

from __future__ import annotations

from samjax.errors import ConfigError
from samjax.train.objectives.base import Objective, TrainData
from samjax.train.objectives.finetune import Finetune
from samjax.train.objectives.interactive import InteractiveTraining
from samjax.train.objectives.mae import MaePretraining
from samjax.train.objectives.unet import UNetBaseline

REGISTRY: dict[str, type[Objective]] = {
    "finetune": Finetune, "mae": MaePretraining, "interactive": InteractiveTraining, "unet": UNetBaseline}
OBJECTIVES = tuple(REGISTRY)

__all__ = ["OBJECTIVES", "REGISTRY", "Objective", "TrainData", "get"]


def get(cfg) -> Objective:
    """The objective ``cfg.objective`` names (``finetune`` when the field is absent)."""
    name = cfg.get("objective", "finetune")
    if name not in REGISTRY:
        raise ConfigError(f"objective={name!r} is not an objective; use one of {', '.join(OBJECTIVES)}")
    return REGISTRY[name]()
