"""The interactive evaluation protocol: NoC and the per-class means against hand-computed values, and one
batch through a tiny SAM whose clicks land where the protocol says and whose counts match its masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samjax.data.prompts import SimulatePrompts
from samjax.evaluation import clicks as click_eval
from tiny_configs import fake_batch, tiny_config
from samjax.run import model as run_model


def test_noc_is_the_first_click_reaching_the_iou_capped_at_n():
    iou = np.array([[0.5, 0.86, 0.91], [0.2, 0.3, 0.4], [0.95, 0.8, 0.99], [0.85, 0.84, 0.9]])
    np.testing.assert_array_equal(click_eval.clicks_to_reach(iou, 0.85), [2, 3, 1, 1])
    np.testing.assert_array_equal(click_eval.clicks_to_reach(iou, 0.90), [3, 3, 1, 3])


def test_click_scores_average_objects_per_class_then_classes():
    scores = click_eval.ClickScores(("background", "liver", "lesion"), num_clicks=2)
    # liver: two objects of 10 pixels; lesion: one of 4 pixels. Columns: box, 1 click, 2 clicks.
    scores.add([1, 2], intersection=[[5, 9, 10], [0, 2, 4]], pred_sum=[[5, 9, 10], [4, 4, 4]], target_sum=[10, 4])
    scores.add([1], intersection=[[10, 8, 9]], pred_sum=[[20, 8, 9]], target_sum=[10], images=[7])
    rows = scores.rows()  # objects.csv: one row per object, its image's index in the split (-1: not given)
    assert [(r["image"], r["class"]) for r in rows] == [(-1, "liver"), (-1, "lesion"), (7, "liver")]
    assert rows[2]["dice_box"] == pytest.approx(2 / 3) and rows[2]["dice_2"] == pytest.approx(18 / 19)
    s = scores.summary()
    liver, lesion = s["per_class"]["liver"], s["per_class"]["lesion"]
    assert liver["objects"] == 2 and lesion["objects"] == 1 and s["objects"] == 3
    # liver box: Dice (2*5/15, 2*10/30) -> 2/3; IoU (5/10, 10/20) -> 0.5
    assert liver["dice_box"] == pytest.approx(2 / 3) and liver["iou_box"] == pytest.approx(0.5)
    # liver IoU after 1 click: 0.9 and 0.8; after 2: 1.0 and 0.9 -> NoC@85 (1, 2), NoC@90 (1, 2)
    np.testing.assert_allclose(liver["iou_vs_clicks"], [0.85, 0.95])
    assert liver["noc85"] == pytest.approx(1.5) and liver["noc90"] == pytest.approx(1.5)
    # lesion: IoU 2/6 then 1 -> NoC 2 at both thresholds; its box predicted nothing of it
    np.testing.assert_allclose(lesion["iou_vs_clicks"], [1 / 3, 1.0])
    assert lesion["dice_box"] == 0.0 and lesion["noc90"] == 2.0 and lesion["reached90"] == 1.0
    assert s["noc90"] == pytest.approx((1.5 + 2.0) / 2)  # the mean over classes, not objects
    np.testing.assert_allclose(s["dice_vs_clicks"], [(np.mean([18 / 19, 16 / 18]) + 0.5) / 2,
                                                      (np.mean([1.0, 18 / 19]) + 1.0) / 2])
    values = click_eval.scalars(s)
    assert values["val_dice"] == pytest.approx(np.mean(s["dice_vs_clicks"])) and values["val_noc90"] == s["noc90"]


@pytest.fixture(scope="module")
def tiny_sam():
    cfg = tiny_config("interactive")
    return cfg, run_model.build_model(cfg, None, log=lambda m: None)


def test_protocol_clicks_at_errors_and_counts_its_masks(tiny_sam):
    cfg, model = tiny_sam
    raw = fake_batch(cfg, seed=3)
    simulate = SimulatePrompts(num_objects=2, num_classes=6, box_noise=0.0, full_masks=True)
    examples = [simulate.random_map({k: v[i] for k, v in raw.items()}, np.random.default_rng(i))
                for i in range(len(raw["image"]))]
    batch = {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in examples[0]}
    out = jax.jit(click_eval.click_protocol, static_argnums=2)(model, batch, 3)
    out = {k: np.asarray(v) for k, v in out.items()}
    full = np.asarray(batch["object_masks_full"]).reshape(-1, *batch["object_masks_full"].shape[2:])
    real = np.asarray(batch["object_valid"]).reshape(-1)
    n = real.size
    assert out["intersection"].shape == (n, 4) and out["first_last"].shape == (n, 2) + full.shape[1:]
    np.testing.assert_array_equal(out["target_sum"], full.sum((1, 2)))
    for column, mask in ((1, out["first_last"][:, 0]), (3, out["first_last"][:, 1])):
        np.testing.assert_array_equal(out["intersection"][:, column], (mask & full).sum((1, 2)))
        np.testing.assert_array_equal(out["pred_sum"][:, column], mask.sum((1, 2)))
    labels, coords = out["labels"], out["coords"]
    assert (labels[real, 0] == 1).all()
    col, row = np.floor(coords[real, 0]).astype(int).T
    assert full[real][np.arange(real.sum()), row, col].all()  # the first click is inside its object
    first, target = out["first_last"][real, 0], full[real]
    for i in range(real.sum()):  # the second click fixes an error of the first mask, labelled by the truth
        if labels[real][i, 1] < 0:
            assert (first[i] == target[i]).all()
            continue
        x, y = np.floor(coords[real][i, 1]).astype(int)
        assert first[i, y, x] != target[i, y, x] and labels[real][i, 1] == int(target[i, y, x])
