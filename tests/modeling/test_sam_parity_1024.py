"""Parity with Meta's PyTorch SAM at full size: ViT-B at 1024, loaded from a ``.pth`` directly.

Also checks running a 1024 checkpoint at 256 against Meta's model built at 256 with its position
embeddings resized by PyTorch (bicubic absolute, linear relative), as medical fine-tuning does.
Tolerance as in test_sam_parity.py: max |samjax - Meta| / max |Meta| <= 1e-3 in fp32.
"""

import numpy as np
import pytest
import segment_anything
import torch.nn.functional as F

import samjax
from reference import TOL, assert_same_prediction, meta_sam_model, rel_err, sample_image


@pytest.fixture(scope="module")
def predictors_1024(meta_vit_b_1024):
    spec, meta, pth = meta_vit_b_1024
    ours = samjax.sam_model_registry["vit_b"](checkpoint=pth)
    assert ours.img_size == 1024
    image = sample_image(300, 400, seed=3)
    ref = segment_anything.SamPredictor(meta)
    ref.set_image(image)
    pred = samjax.SamPredictor(ours)
    pred.set_image(image)
    return pred, ref


def test_image_embedding_1024(predictors_1024):
    pred, ref = predictors_1024
    emb, ref_emb = pred.get_image_embedding(), ref.get_image_embedding().numpy()
    assert emb.shape == ref_emb.shape == (1, 256, 64, 64)
    assert rel_err(emb, ref_emb) <= TOL


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(point_coords=np.array([[200.0, 150.0], [50.0, 250.0]]), point_labels=np.array([1, 0])),
        dict(box=np.array([120.0, 60.0, 220.0, 160.0]), multimask_output=False),
        dict(box=np.array([100.0, 50.0, 300.0, 250.0]), point_coords=np.array([[200.0, 150.0]]),
             point_labels=np.array([1])),
    ],
    ids=["points", "box", "box_and_point"],
)
def test_prompts_1024(predictors_1024, kwargs):
    pred, ref = predictors_1024
    assert_same_prediction(pred.predict(**kwargs, return_logits=True), ref.predict(**kwargs, return_logits=True))


def test_mask_prompt_1024(predictors_1024):
    pred, ref = predictors_1024
    _, iou, low_res = ref.predict(point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1]))
    kwargs = dict(point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1]),
                  mask_input=low_res[np.argmax(iou)][None], multimask_output=False, return_logits=True)
    assert_same_prediction(pred.predict(**kwargs), ref.predict(**kwargs))


def test_checkpoint_at_another_image_size(meta_vit_b_1024):
    """A 1024 checkpoint built at 256 equals Meta's model at 256 with PyTorch-resized embeddings."""
    spec, meta, pth = meta_vit_b_1024
    small = spec.replace(image_size=256)
    ref_model = meta_sam_model(small, seed=0)
    state = {k: v.clone() for k, v in meta.state_dict().items()}
    pos = state["image_encoder.pos_embed"].permute(0, 3, 1, 2)
    state["image_encoder.pos_embed"] = F.interpolate(pos, size=(16, 16), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    for i in spec.encoder_global_attn_indexes:
        for axis in ("h", "w"):
            key = f"image_encoder.blocks.{i}.attn.rel_pos_{axis}"
            table = state[key].T[None]  # (1, head_dim, 127)
            state[key] = F.interpolate(table, size=31, mode="linear", align_corners=False)[0].T
    ref_model.load_state_dict(state)

    ours = samjax.sam_model_registry["vit_b"](checkpoint=pth, image_size=256)
    assert ours.img_size == 256
    image = sample_image(200, 150, seed=5)
    ref = segment_anything.SamPredictor(ref_model)
    ref.set_image(image)
    pred = samjax.SamPredictor(ours)
    pred.set_image(image)
    assert rel_err(pred.get_image_embedding(), ref.get_image_embedding().numpy()) <= TOL
    kwargs = dict(box=np.array([20.0, 30.0, 120.0, 150.0]), multimask_output=True, return_logits=True)
    assert_same_prediction(pred.predict(**kwargs), ref.predict(**kwargs))
