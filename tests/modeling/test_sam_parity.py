"""Parity with Meta's PyTorch SAM (vit_b, vit_l, vit_h at a 256 image), all weights random.

Tolerance: fp32, max |samjax - Meta| / max |Meta| <= 1e-3 on image embeddings, low-resolution mask
logits, full-resolution logits and IoU predictions; thresholded masks must agree wherever Meta's
logit is farther than that tolerance from the threshold.
"""

import numpy as np
import pytest
import segment_anything
import torch

import samjax
from reference import TOL, assert_same_prediction, meta_sam_model, rel_err, sample_image, samjax_from_meta
from samjax.model_spec import get_spec

IMAGE_SIZE = 256


@pytest.fixture(scope="module", params=["vit_b", "vit_l", "vit_h"])
def predictors(request):
    spec = get_spec(request.param).replace(image_size=IMAGE_SIZE)
    torch.manual_seed(0)
    meta = meta_sam_model(spec, seed=1)
    ours = samjax_from_meta(meta, spec)
    image = sample_image()
    ref = segment_anything.SamPredictor(meta)
    ref.set_image(image)
    pred = samjax.SamPredictor(ours)
    pred.set_image(image)
    yield pred, ref
    del meta, ours, ref, pred


def test_image_embedding(predictors):
    pred, ref = predictors
    emb = pred.get_image_embedding()
    ref_emb = ref.get_image_embedding().numpy()
    assert emb.shape == ref_emb.shape == (1, 256, IMAGE_SIZE // 16, IMAGE_SIZE // 16)
    assert rel_err(emb, ref_emb) <= TOL
    assert np.std(ref_emb) > 0.1  # random weights give a non-trivial embedding


CASES = {
    "one_point_multimask": dict(point_coords=np.array([[120.0, 60.0]]), point_labels=np.array([1]), multimask_output=True),
    "fg_bg_points_single": dict(
        point_coords=np.array([[100.0, 70.0], [30.0, 150.0]]), point_labels=np.array([1, 0]), multimask_output=False
    ),
    "five_points_multimask": dict(
        point_coords=np.array([[10.0, 10.0], [200.0, 30.0], [120.5, 90.25], [239.0, 179.0], [0.0, 179.0]]),
        point_labels=np.array([1, 0, 1, 1, 0]),
        multimask_output=True,
    ),
    "box_single": dict(box=np.array([70.0, 40.0, 130.0, 100.0]), multimask_output=False),
    "box_multimask": dict(box=np.array([0.0, 0.0, 240.0, 180.0]), multimask_output=True),
    "box_and_points": dict(
        box=np.array([60.0, 30.0, 150.0, 110.0]),
        point_coords=np.array([[100.0, 70.0], [65.0, 35.0]]),
        point_labels=np.array([1, 0]),
        multimask_output=True,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_prompts(predictors, case):
    pred, ref = predictors
    kwargs = CASES[case]
    ours = pred.predict(**kwargs, return_logits=True)
    theirs = ref.predict(**kwargs, return_logits=True)
    assert_same_prediction(ours, theirs)


@pytest.mark.parametrize("multimask", [False, True])
def test_mask_prompt(predictors, multimask):
    """A mask prompt: the previous low-res logits fed back with a new point, as in interactive use."""
    pred, ref = predictors
    first = ref.predict(point_coords=np.array([[120.0, 60.0]]), point_labels=np.array([1]), multimask_output=True)
    mask_input = first[2][np.argmax(first[1])][None]
    kwargs = dict(
        point_coords=np.array([[120.0, 60.0], [90.0, 100.0]]),
        point_labels=np.array([1, 1]),
        mask_input=mask_input,
        multimask_output=multimask,
        return_logits=True,
    )
    assert_same_prediction(pred.predict(**kwargs), ref.predict(**kwargs))
    box_only = dict(box=np.array([50.0, 20.0, 200.0, 160.0]), mask_input=mask_input, return_logits=True)
    assert_same_prediction(pred.predict(**box_only), ref.predict(**box_only))


def test_thresholded_masks(predictors):
    pred, ref = predictors
    kwargs = dict(box=np.array([70.0, 40.0, 130.0, 100.0]), multimask_output=True)
    masks, _, _ = pred.predict(**kwargs)
    logits, _, _ = pred.predict(**kwargs, return_logits=True)
    ref_logits, _, _ = ref.predict(**kwargs, return_logits=True)
    assert masks.dtype == bool and masks.shape == (3, 180, 240)
    np.testing.assert_array_equal(masks, logits > 0.0)
    decisive = np.abs(ref_logits) > TOL * np.abs(ref_logits).max()
    np.testing.assert_array_equal(masks[decisive], (ref_logits > 0)[decisive])


def test_batched_prompts(predictors):
    """Three box+point prompt sets in one call (padded to a bucket of 4) equal Meta's batched call."""
    pred, ref = predictors
    boxes = np.array([[70.0, 40.0, 130.0, 100.0], [0.0, 0.0, 120.0, 90.0], [100.0, 100.0, 239.0, 179.0]])
    coords = np.array([[[100.0, 70.0]], [[50.0, 50.0]], [[150.0, 150.0]]])
    labels = np.ones((3, 1), np.int64)
    masks, iou, low_res = pred.predict_batch(coords, labels, boxes, multimask_output=False, return_logits=True)

    t = ref.transform
    with torch.no_grad():
        ref_masks, ref_iou, ref_low_res = ref.predict_torch(
            torch.as_tensor(t.apply_coords(coords, ref.original_size), dtype=torch.float),
            torch.as_tensor(labels, dtype=torch.int),
            torch.as_tensor(t.apply_boxes(boxes, ref.original_size), dtype=torch.float),
            multimask_output=False,
            return_logits=True,
        )
    assert_same_prediction((masks, iou, low_res), (ref_masks.numpy(), ref_iou.numpy(), ref_low_res.numpy()))
    for i in range(3):  # each row equals the same prompt asked alone
        single = pred.predict(coords[i], labels[i], boxes[i], multimask_output=False, return_logits=True)
        assert rel_err(single[2], low_res[i]) <= 1e-5
