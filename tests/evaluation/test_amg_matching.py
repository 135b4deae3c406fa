"""The automatic mask generator's masks matched to the labels, against hand-made masks."""

import numpy as np

from samjax.evaluation.amg_matching import match_to_classes


def test_each_mask_takes_its_majority_class_and_the_best_mask_wins_overlaps():
    label = np.zeros((8, 8), np.uint8)
    label[0:4, 0:4] = 1
    label[4:8, 4:8] = 2
    masks = np.zeros((4, 8, 8), bool)
    masks[0, 0:4, 0:5] = True   # 16 of class 1, 4 of background -> class 1 (its background pixels too)
    masks[1, 3:8, 3:8] = True   # 16 of class 2, 9 of background -> class 2
    masks[2, 0:8, 6:8] = True   # 4 of class 2, 12 of background -> dropped
    masks[3, 3:5, 3:5] = True   # 1 each of classes 1 and 2, 2 of background: background wins -> dropped
    pred = match_to_classes(masks, np.array([0.9, 0.8, 0.99, 0.95]), label, 3)
    expected = np.zeros((8, 8), np.int32)
    expected[3:8, 3:8] = 2
    expected[0:4, 0:5] = 1  # painted after mask 1 (higher score): the shared pixel (3, 3..4) is class 1
    np.testing.assert_array_equal(pred, expected)
    # the order of painting follows the scores: swap them and class 2 takes the shared pixels
    pred = match_to_classes(masks, np.array([0.8, 0.9, 0.99, 0.95]), label, 3)
    assert (pred[3, 3:5] == 2).all() and (pred[0:3, 0:5] == 1).all()
    assert not match_to_classes(masks[:0], np.zeros(0), label, 3).any()
