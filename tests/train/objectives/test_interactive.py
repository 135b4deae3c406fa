"""SAM's interactive training simulation: the round schedule, prompts padded to fixed shapes that
compute what Meta's prompts compute, and one jitted step that learns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax import parallel
from samjax.data.prompts import SimulatePrompts
from samjax.errors import ConfigError
from samjax.train import objectives as objective
from samjax.train.objectives.interactive import skipped_classes
from samjax.train.state import Trainable
from tiny_configs import fake_batch, tiny_config
from samjax.run import model as run_model
from samjax import interaction


def test_click_schedule():
    schedules = np.stack([np.asarray(interaction.click_schedule(jax.random.key(i), 8, 2)) for i in range(20)])
    assert schedules.shape == (20, 10)
    assert (schedules.sum(1) == 8).all() and not schedules[:, -1].any()  # 8 clicks; the last round has none
    assert len({int(np.flatnonzero(~s)[0]) for s in schedules}) > 3  # the other click-less round moves
    assert np.asarray(interaction.click_schedule(jax.random.key(0), 3, 0)).all()
    assert np.asarray(interaction.click_schedule(jax.random.key(0), 3, 1)).tolist() == [True, True, True, False]


@pytest.fixture(scope="module")
def tiny_sam():
    cfg = tiny_config("interactive")
    return cfg, run_model.build_model(cfg, None, log=lambda m: None)


def _objects(cfg, n=4, seed=0):
    raw = fake_batch(cfg, seed=seed)
    simulate = SimulatePrompts(num_objects=2, num_classes=6, full_masks=True)
    examples = [simulate.random_map({k: v[i] for k, v in raw.items()}, np.random.default_rng(i)) for i in range(n)]
    return {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in examples[0]}


def test_padded_prompts_compute_what_metas_prompts_compute(tiny_sam):
    cfg, model = tiny_sam
    batch = _objects(cfg)
    n = batch["object_valid"].size
    width = model.prompt_encoder.embed_dim
    emb = jnp.asarray(np.random.default_rng(1).normal(size=(n, 8, 8, width)), jnp.float32)
    pe, decoder = model.prompt_encoder, model.mask_decoder
    dense_pe = pe.get_dense_pe()
    point = batch["points"][:, :, 0].reshape(n, 1, 2)
    box = batch["boxes"].reshape(n, 4)
    valid = np.asarray(batch["object_valid"]).reshape(-1)

    as_points = interaction.decode(model, emb, *interaction.first_prompts(batch, jnp.zeros(n, bool), 9), None,
                                   jnp.float32)
    sparse, _, dense = pe(points=(point, jnp.ones((n, 1), jnp.int32)))  # Meta's: point + "not a point" pad
    meta_points = decoder.predict_masks(emb, dense_pe, sparse, dense)
    as_box = interaction.decode(model, emb, *interaction.first_prompts(batch, jnp.ones(n, bool), 9), None,
                                jnp.float32)
    sparse, _, dense = pe(boxes=box)
    meta_box = decoder.predict_masks(emb, dense_pe, sparse, dense)
    for ours, meta in ((as_points, meta_points), (as_box, meta_box)):
        for a, b in zip(ours, meta):
            np.testing.assert_allclose(np.asarray(a)[valid], np.asarray(b)[valid], atol=2e-5, rtol=1e-4)


def test_clicks_fill_slots_and_point_at_errors(tiny_sam):
    cfg, model = tiny_sam
    batch = _objects(cfg)
    n, size = batch["object_valid"].size, batch["object_masks"].shape[-1]
    emb = jnp.zeros((n, 8, 8, model.prompt_encoder.embed_dim))
    targets = batch["object_masks"].reshape(n, size, size)
    valid = jnp.ones((n, size, size), bool)
    prompts = interaction.first_prompts(batch, jnp.zeros(n, bool), 4)
    masks0, iou0, masks, ious, (coords, labels) = interaction.interact(
        model, emb, prompts, jnp.ones(n, bool), targets, valid, jax.random.key(0),
        jnp.array([True, False, True]), 2.0, "center", jnp.float32)
    assert masks0.shape == (n, 4, size, size) and masks.shape == (3, n, size, size) and ious.shape == (3, n)
    labels = np.asarray(labels)
    ok = np.asarray(batch["object_valid"]).reshape(-1)
    assert (labels[ok, 0] == 1).all() and (labels[ok, -1] == -1).all()  # first point, Meta's pad token
    assert (labels[:, 3] == -2).all()  # two click rounds fill slots 1 and 2 only
    assert set(np.unique(labels[ok, 1:3])) <= {0, 1, -2}


@pytest.mark.parametrize("full_res", [False, True], ids=["low_res", "full_res"])
def test_interactive_step_learns_on_one_batch(full_res):
    cfg = tiny_config("interactive", **{"optim.learning_rate": 3e-3, "total_steps": 100,
                                        "interactive.full_res": full_res})
    mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    obj = objective.get(cfg)
    data = objective.TrainData((), None, ("background", "body", "liver", "kidney", "bone", "lesion"))
    trainable = Trainable(obj.build_model(cfg, data, log=lambda m: None), obj.trainable_filter(cfg), cfg, mesh,
                          obj.loss, log=lambda m: None)
    batch = {k: np.asarray(v) for k, v in _objects(cfg, n=8).items() if k in obj.train_keys(cfg)}
    assert ("object_masks_full" in batch) == full_res  # the loss and clicks at the input resolution, or low-res
    batch = parallel.global_batch(batch, mesh)
    state, frozen = trainable.init_state(), trainable.frozen()
    losses = []
    for _ in range(15):
        state, metrics = trainable.step_fn(state, frozen, batch)
        losses.append(float(metrics["loss"]))
    assert {"focal", "dice", "iou", "first_round", "last_round"} <= set(metrics)
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses


def test_skip_classes_names_become_indices_and_unknown_names_fail():
    cfg = tiny_config("interactive")
    names = ("background", "body", "liver", "kidney", "bone", "lesion")
    assert skipped_classes(cfg, names) == ()
    cfg.interactive.skip_classes = "lesion, bone"
    assert skipped_classes(cfg, names) == (5, 4)
    cfg.interactive.skip_classes = "tumour"
    with pytest.raises(ConfigError, match="interactive.skip_classes names tumour, .*or to '' to make every class"):
        skipped_classes(cfg, names)
    cfg.interactive.update(skip_classes="lesion", objects="component")
    with pytest.raises(ConfigError, match="not 'component'"):
        objective.get(cfg).check(cfg)
