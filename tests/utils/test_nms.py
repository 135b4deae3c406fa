"""Device-side box operations against torchvision's NMS and Meta's AMG helpers."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from segment_anything.utils import amg as meta_amg
from torchvision.ops import nms as tv_nms

from samjax.utils.nms import box_near_crop_edge, mask_to_box, nms, stability_score


@pytest.mark.parametrize("n,threshold", [(1, 0.5), (7, 0.5), (64, 0.3), (300, 0.7), (300, 0.0)])
def test_nms_matches_torchvision(n, threshold):
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 100, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 40, (n, 2))], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    scores[: n // 3] = scores[n // 3 : 2 * (n // 3)]  # ties: the stable order decides
    ref = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).numpy()
    np.testing.assert_array_equal(nms(boxes, scores, threshold), ref)


def test_nms_of_nothing():
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


def test_mask_to_box_matches_meta():
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 30, 40), bool)
    masks[0, 3:9, 5:21] = True
    masks[1, 0, 0] = True
    masks[2, 29, 39] = True
    masks[3] = rng.uniform(size=(30, 40)) > 0.97
    masks[4, 10:12, :] = True  # 5: empty
    ref = meta_amg.batched_mask_to_box(torch.from_numpy(masks)).numpy()
    np.testing.assert_array_equal(np.asarray(mask_to_box(jnp.asarray(masks))), ref)


def test_stability_score_matches_meta():
    logits = np.random.default_rng(1).normal(0, 3, (5, 20, 24)).astype(np.float32)
    logits[4] = -10.0  # empty union: NaN in both
    ref = meta_amg.calculate_stability_score(torch.from_numpy(logits), 0.0, 1.0).numpy()
    got = np.asarray(stability_score(jnp.asarray(logits), 0.0, 1.0))
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    assert np.isnan(got[4]) and 0 < got[0] < 1


def test_box_near_crop_edge_matches_meta():
    rng = np.random.default_rng(2)
    boxes = rng.integers(0, 200, (50, 4))
    boxes[:, 2:] = boxes[:, :2] + rng.integers(1, 150, (50, 2))
    crop, orig = [100, 50, 400, 300], [0, 0, 400, 500]
    ref = meta_amg.is_box_near_crop_edge(torch.from_numpy(boxes), crop, orig).numpy()
    got = np.asarray(box_near_crop_edge(jnp.asarray(boxes), np.array(crop), np.array(orig)))
    np.testing.assert_array_equal(got, ref)
    assert 0 < ref.sum() < len(ref)
