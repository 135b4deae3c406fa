"""What a training run was and saw, kept in its workdir: ``config.json`` and ``data.json`` (class names and
preprocessing).

A model is only usable on new scans with the class names its outputs mean and the way its training
images were made (slicing axis, CT window or percentiles: ``pipeline.Source.preprocessing``). The
trainer writes them when a run starts, so inference (``samjax.segment``) needs the workdir only, not
the data set; runs older than this file fall back to opening the run's data set.
"""

from __future__ import annotations

import json
import os

import ml_collections

from samjax.data import selection
from samjax.errors import ConfigError

FILE = "data.json"


def write_data_info(workdir: str, data) -> None:
    """``workdir/data.json`` from a run's ``TrainData``: class names, data set names, preprocessing."""
    info = {"class_names": list(data.class_names), "data": [s.name for s in data.sources],
            "preprocessing": dict(data.sources[0].preprocessing) if data.sources else {}}
    tmp = os.path.join(workdir, FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(info, f, indent=2)
    os.replace(tmp, os.path.join(workdir, FILE))


def read_data_info(workdir: str, cfg=None) -> dict:
    """``{"class_names": [...], "preprocessing": {...}}`` of a run: its ``data.json``, or (older runs) what
    opening ``cfg``'s training data gives."""
    path = os.path.join(workdir, FILE)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                return json.load(f)
        except ValueError as e:
            raise ConfigError(f"{path} is not readable JSON ({e}); delete it to read the run's data set "
                              "instead") from None
    if cfg is None:
        raise FileNotFoundError(f"{path} does not exist")
    sources = selection.open_sources(cfg)
    return {"class_names": list(selection.class_names(sources)), "data": [s.name for s in sources],
            "preprocessing": dict(sources[0].preprocessing)}


def _tuples(value):
    """JSON lists back to the tuples configs hold (``encoder_global_attn_indexes`` and the like)."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def run_config(workdir: str):
    """The config a run saved in ``workdir/config.json``."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(f"{path} does not exist: give the run's config with --config configs/<file>.py")
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(_tuples(json.load(f)))
    except ValueError as e:
        raise ConfigError(f"{path} is not a readable config ({e}); give --config configs/<file>.py") from None
