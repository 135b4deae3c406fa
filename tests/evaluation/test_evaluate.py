"""Validation Dice in auto and prompted modes, and the evaluation a finished run writes."""

import csv
import json

import numpy as np
import pytest

import jax
from samjax import parallel
from samjax.evaluation import evaluate
from samjax.train import strategy
from samjax.train.objectives import finetune as supervised
from samjax.train.state import Trainable
from tiny_configs import tiny_config
from samjax.run import model as run_model


def _trainable(cfg):
    mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    model = run_model.build_model(cfg, 6, log=lambda m: None)
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


def test_write_evaluation_files(data_dir, tmp_path):
    """Every file of the report; its Dice (host, from class maps) equals the device statistics' Dice.
    (Per volume: tests/test_segmentation_scores.py by hand; end to end: the eval.py test in
    tests/train/test_resume.py.)"""
    cfg = tiny_config(**{"data.data_dir": data_dir})
    trainable, mesh = _trainable(cfg)
    names = ("background", "body", "liver", "kidney", "bone", "lesion")
    params, frozen = trainable.init_state().params, trainable.frozen()
    out = tmp_path / "eval"
    result = evaluate.write_evaluation(cfg, trainable, params, frozen, mesh, names, str(out), split="test",
                                       log=lambda m: None)
    device = evaluate.validate(cfg, trainable, params, frozen, mesh, names, split="test", max_examples=0)
    saved = json.load(open(out / "metrics.json"))
    assert saved["units"] == 50 and saved["split"] == "test" and saved["distance_units"] == "pixels"
    np.testing.assert_allclose(saved["mean_dice"], device["mean_dice"], rtol=1e-9)
    for name in names[1:]:
        np.testing.assert_allclose(saved["per_class"][name], device["per_class"][name], rtol=1e-9)
        stats = saved["metrics"][name]
        assert stats["dice"]["n"] == stats["hd95"]["n"] == device["count"][name]
        assert 0 <= stats["iou"]["mean"] <= stats["dice"]["mean"] <= 1 and 0 <= stats["nsd"]["mean"] <= 1
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 50 * 5 and set(rows[0]) == {"unit", "slices", "class", "dice", "iou", "hd95", "nsd"}
    assert "| body |" in (out / "scores.md").read_text()
    kinds = sorted(p.split("_")[1] for p in saved["overlays"])
    assert kinds == ["best", "median", "worst"] and all((out / p).is_file() for p in saved["overlays"])
    assert (out / "dice_boxplot.png").is_file()
