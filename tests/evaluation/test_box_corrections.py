"""The CVPR 2025 challenge's counting: where a correction goes, the areas under the steps, the per-image means
(end to end through eval.py in tests/train/test_pretraining.py)."""

import numpy as np
from scipy import integrate

from samjax.evaluation.box_corrections import area_under_steps, correction_click, summarize


def test_correction_goes_to_the_innermost_pixel_of_the_largest_error_component():
    truth = np.zeros((24, 24), bool)
    truth[2:12, 2:12] = True
    pred = truth.copy()
    pred[2:12, 2:6] = False  # missed: a 10x4 strip (40 pixels)
    pred[16:23, 14:21] = True  # spilled: a 7x7 square (49 pixels), the largest component
    x, y, label = correction_click(pred, truth)
    assert (x, y, label) == (17.5, 19.5, 0)  # its centre (row 19, col 17), a background click
    pred[16:23, 14:21] = False
    assert correction_click(pred, truth) == (3.5, 3.5, 1)  # the strip: 2 deep from row 3 on, first row-major
    assert correction_click(truth, truth) is None


def test_missed_and_spilled_pixels_touching_are_one_component():
    truth = np.zeros((20, 20), bool)
    truth[0:10] = True
    pred = np.zeros_like(truth)
    pred[10:12] = True  # a 2-row spill under a 10-row miss: one 12-row error component
    x, y, label = correction_click(pred, truth)
    assert label == 1 and y < 10  # its innermost pixel lies in the miss


def test_areas_and_means_as_the_challenge_counts_them():
    values = [0.2, 0.5, 0.6, 0.65, 0.7]
    assert np.isclose(area_under_steps(values), integrate.cumulative_trapezoid(values, np.arange(5))[-1])
    # two images: the first with two classes, the second with one; steps: box + 2 corrections
    images = [(np.array([1, 2]), np.array([[0.5, 0.7, 0.9], [0.1, 0.3, 0.5]]),
               np.array([[0.6, 0.8, 1.0], [0.0, 0.0, 0.4]])),
              (np.array([1]), np.array([[0.4, 0.6, 0.6]]), np.array([[0.5, 0.5, 0.7]]))]
    out = summarize(images, ("background", "a", "b"), corrections=2)
    np.testing.assert_allclose(out["dsc_vs_steps"], [(0.3 + 0.4) / 2, (0.5 + 0.6) / 2, (0.7 + 0.6) / 2])
    np.testing.assert_allclose(out["dsc_auc"], ((0.5 + 0.7) / 2 + (0.6 + 0.6) / 2) / 2)
    np.testing.assert_allclose(out["final_nsd"], (0.7 + 0.7) / 2)
    np.testing.assert_allclose(out["per_class"]["a"]["dsc_vs_steps"], [0.45, 0.65, 0.75])
    assert out["images"] == 2 and out["per_class"]["b"]["objects"] == 1
