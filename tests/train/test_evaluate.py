"""Validation Dice in auto and prompted modes, and the evaluation a finished run writes."""

import json
import os

import numpy as np
import pytest

import jax
from samjax import parallel
from samjax.train import evaluate, strategy, supervised
from samjax.train.state import Trainable
from test_strategy import tiny_config


def _trainable(cfg):
    mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    model = strategy.build_model(cfg, 6, log=lambda m: None)
    t = Trainable(model, strategy.trainable_filter(cfg), cfg, mesh, supervised.loss_fn(cfg.train.mode), log=lambda m: None)
    return t, mesh


@pytest.mark.parametrize("mode", ["auto", "box"])
def test_validate_scores_every_class(data_dir, mode):
    cfg = tiny_config(**{"train.mode": mode, "data.data_dir": data_dir, "data.eval_max_examples": 12})
    trainable, mesh = _trainable(cfg)
    names = ("background", "body", "liver", "kidney", "bone", "lesion")
    result = evaluate.validate(cfg, trainable, trainable.init_state().params, trainable.frozen(), mesh, names)
    assert set(result["per_class"]) == set(names[1:])
    assert 0.0 <= result["mean_dice"] <= 1.0
    if mode == "auto":
        assert result["num_images"] == 12
        assert result["count"]["body"] == 12  # every phantom has a body
    else:
        assert sum(result["count"].values()) > 12  # one score per simulated object


def test_write_evaluation_pictures_and_json(data_dir, tmp_path):
    cfg = tiny_config(**{"data.data_dir": data_dir})
    trainable, mesh = _trainable(cfg)
    names = ("background", "body", "liver", "kidney", "bone", "lesion")
    out = tmp_path / "eval"
    result = evaluate.write_evaluation(cfg, trainable, trainable.init_state().params, trainable.frozen(), mesh,
                                       names, str(out), split="test", overlays=3, log=lambda m: None)
    saved = json.load(open(out / "metrics.json"))
    assert saved["num_images"] == 50 and saved["split"] == "test"
    np.testing.assert_allclose(saved["mean_dice"], result["mean_dice"])
    pictures = sorted(p for p in os.listdir(out) if p.endswith(".png"))
    assert len(pictures) == 3 and saved["overlays"] == pictures
