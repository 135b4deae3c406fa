"""Scores per image and per restacked volume, their summary, the report's choices and its pictures."""

import math

import numpy as np
import pytest

from samjax.evaluation import plots
from samjax.evaluation.segmentation_scores import SegmentationScores, score_unit, summarize
from samjax.evaluation.surface_distance import hd95_and_nsd
from samjax.evaluation import report as eval_report

NAMES = ("background", "organ", "tumour")


def _maps():
    """Two slices of one case: the organ found twice (once 1 pixel short), the tumour missed on slice 1."""
    label = np.zeros((2, 10, 10), np.uint8)
    label[:, 2:6, 2:6] = 1
    label[1, 7:9, 7:9] = 2
    pred = label.copy()
    pred[0, 5, 5] = 0
    pred[1, 7:9, 7:9] = 0
    return pred, label


def test_score_unit_by_hand():
    pred, label = _maps()
    s = score_unit(pred[0], label[0], NAMES, (1.0, 1.0), 1.0)
    assert s["dice"][1] == pytest.approx(2 * 15 / 31) and s["iou"][1] == pytest.approx(15 / 16)
    assert math.isnan(s["dice"][0]) and math.isnan(s["dice"][2]) and math.isnan(s["hd95"][2])  # tumour absent
    s = score_unit(pred[1], label[1], NAMES, (1.0, 1.0), 1.0)
    assert s["dice"][2] == 0 and s["iou"][2] == 0 and s["nsd"][2] == 0
    assert s["hd95"][2] == pytest.approx(math.hypot(9, 9))  # missed: the image's diagonal


def test_per_image_and_per_volume():
    pred, label = _maps()
    images = SegmentationScores(NAMES, per="image", tolerance=1.0)
    volumes = SegmentationScores(NAMES, per="volume", tolerance=1.0, slice_spacing={"a": 3.0})
    for scores in (images, volumes):
        for i in (1, 0):  # out of order: the volume is stacked by slice index
            scores.add(pred[i], label[i], "a", i, (0.5, 0.5))
    rows = images.rows()
    assert [(r["unit"], r["class"]) for r in rows] == [("a/1", "organ"), ("a/1", "tumour"), ("a/0", "organ"),
                                                       ("a/0", "tumour")]
    assert rows[3]["dice"] is None and rows[1]["dice"] == 0.0
    (organ, tumour) = volumes.rows()
    assert organ["unit"] == "a" and organ["slices"] == 2 and volumes.notes == []
    assert organ["dice"] == pytest.approx(2 * 31 / 63)  # counts summed over the slices
    hd, nsd = hd95_and_nsd(pred == 1, label == 1, (3.0, 0.5, 0.5), 1.0)
    assert organ["hd95"] == pytest.approx(hd) and organ["nsd"] == pytest.approx(nsd)
    assert tumour["dice"] == 0 and tumour["hd95"] == pytest.approx(math.sqrt(3.0 ** 2 + 2 * 4.5 ** 2))
    unknown = SegmentationScores(NAMES, per="volume")
    for i in (0, 1):
        unknown.add(pred[i], label[i], "a", i, (0.5, 0.5))
    unknown.rows()
    assert unknown.notes and "unknown" in unknown.notes[0]


def test_summary_and_report_choices():
    rows = [{"unit": u, "slices": 1, "class": c, "dice": d, "iou": d, "hd95": 1.0, "nsd": d}
            for u, c, d in [("x", "organ", 0.9), ("x", "tumour", 0.5), ("y", "organ", 0.8), ("y", "tumour", None),
                            ("z", "organ", 0.1), ("z", "tumour", 0.3)]]
    s = summarize(rows, NAMES)
    assert s["metrics"]["organ"]["dice"]["mean"] == pytest.approx(0.6)
    assert s["metrics"]["tumour"]["dice"]["n"] == 2 and s["per_class"]["tumour"] == pytest.approx(0.4)
    assert s["mean_dice"] == pytest.approx(0.5)
    assert eval_report.pick_units(eval_report.unit_scores(rows)) == {"best": "y", "median": "x", "worst": "z"}
    table = eval_report.markdown_table(s)
    assert "| organ | 3 | 0.600 ± " in table and "**0.500**" in table


def test_pictures_are_drawn():
    box = plots.box_plot({"organ": [0.9, 0.8, 0.1], "tumour": [0.5, None, 0.3], "empty": []}, "Dice", "Dice")
    assert box.shape == (400, 640, 3) and box.dtype == np.uint8
    assert (box != 255).any(axis=-1).mean() > 0.02  # axes, boxes and labels, not a blank page
    line = plots.line_plot([1, 2, 3], {"a": [0.2, 0.5, 0.7]}, "t", "clicks", "Dice")
    assert line.shape == (400, 640, 3) and (line != 255).any(axis=-1).mean() > 0.01
    bars = [plots.bar_plot(["lora", "full"], [0.8, v], [0.05, 0.02], "Dice", "Dice") for v in (0.6, None)]
    assert bars[0].shape == bars[1].shape and bars[0].shape[1] == 720 and bars[0].dtype == np.uint8
    assert (bars[0] != 255).any(axis=-1).mean() > 0.02 and (bars[0] != bars[1]).any()  # None: no bar
    values = {"full": [0.9, 0.7, 0.8], "5-shot": [0.6, 0.4, 0.5]}
    grouped = plots.grouped_bar_plot(["a", "b", "c"], ["full", "5-shot"], values, {"full": [0.02, None, 0.01]},
                                     "t", "Dice", width=800, height=360)
    assert grouped.shape == (360, 800, 3) and grouped.dtype == np.uint8
    assert (grouped != 255).any(axis=-1).mean() > 0.02
    values["5-shot"][1] = None
    missing = plots.grouped_bar_plot(["a", "b", "c"], ["full", "5-shot"], values, {"full": [0.02, None, 0.01]},
                                     "t", "Dice", width=800, height=360)
    assert (grouped != missing).any()  # the missing bar is not drawn
