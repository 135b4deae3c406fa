"""The UNet baseline through the one trainer: its loss weights, one jitted step that learns, and the SAM
evaluation's files from its class maps."""

import json

import jax
import pytest

from samjax import parallel
from samjax.train import objectives as objective
from samjax.train.state import Trainable
from samjax.train.objectives.unet import supervision_weights
from tiny_configs import fake_batch, tiny_config

NAMES = ("background", "body", "liver", "kidney", "bone", "lesion")


def test_supervision_weights():
    assert supervision_weights(1, True) == [1.0]
    assert supervision_weights(4, True) == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0.0])  # nnU-Net: the coarsest out
    assert supervision_weights(3, False) == [1.0, 0.0, 0.0]


def test_unet_trains_and_is_evaluated_like_sam(data_dir, tmp_path):
    cfg = tiny_config("unet", **{"optim.learning_rate": 1e-2, "optim.warmup_steps": 0, "total_steps": 100,
                                 "data.data_dir": data_dir})
    mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    obj = objective.get(cfg)
    data = objective.TrainData((), None, NAMES)
    trainable = Trainable(obj.build_model(cfg, data, log=lambda m: None), obj.trainable_filter(cfg), cfg, mesh,
                          obj.loss, log=lambda m: None)
    assert not jax.tree.leaves(trainable.frozen())  # a UNet trains every parameter
    batch = parallel.global_batch({k: v for k, v in fake_batch(cfg).items() if k in obj.batch_keys}, mesh)
    state = trainable.init_state()
    losses = []
    for _ in range(12):
        state, metrics = trainable.step_fn(state, trainable.frozen(), batch)
        losses.append(float(metrics["loss"]))
    assert {"dice", "ce"} <= set(metrics) and losses[-1] < 0.7 * losses[0], losses

    out = tmp_path / "eval"
    result = obj.evaluate(cfg, trainable, state.params, trainable.frozen(), mesh, data, str(out), "test",
                          log=lambda m: None)
    saved = json.load(open(out / "metrics.json"))
    assert saved["units"] == 50 and 0 <= result["mean_dice"] <= 1 and saved["mean_dice"] == result["mean_dice"]
    assert (out / "scores.csv").is_file() and len(saved["overlays"]) == 3
