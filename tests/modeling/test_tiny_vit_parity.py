"""Parity with MobileSAM's PyTorch code (``mobilesam-mirror``): ViT-T at 1024, all tensors random.

Loaded the way users load ``mobile_sam.pt`` (a ``.pth`` read without PyTorch), compared through the
predictors. Tolerance as for SAM: max |samjax - MobileSAM| / max |MobileSAM| <= 1e-3 in fp32.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from mobile_sam import SamPredictor as MobileSamPredictor
from mobile_sam import sam_model_registry as mobile_sam_registry

import samjax
import samjax.params
from reference import TOL, assert_same_prediction, randomize_, rel_err, sample_image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def mobile_sam(tmp_path_factory):
    model = mobile_sam_registry["vit_t"]()
    randomize_(model, seed=4)
    model.eval()
    path = tmp_path_factory.mktemp("mobile") / "mobile_sam_random.pt"
    torch.save(model.state_dict(), path)
    return model, str(path)


@pytest.fixture(scope="module")
def predictors(mobile_sam):
    model, path = mobile_sam
    ours = samjax.sam_model_registry["vit_t"](checkpoint=path)
    image = sample_image(240, 320, seed=9)
    ref = MobileSamPredictor(model)
    ref.set_image(image)
    pred = samjax.SamPredictor(ours)
    pred.set_image(image)
    return pred, ref


def test_image_embedding(predictors):
    pred, ref = predictors
    emb, ref_emb = pred.get_image_embedding(), ref.get_image_embedding().numpy()
    assert emb.shape == ref_emb.shape == (1, 256, 64, 64)
    assert rel_err(emb, ref_emb) <= TOL


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(point_coords=np.array([[160.0, 100.0], [20.0, 200.0]]), point_labels=np.array([1, 0])),
        dict(box=np.array([100.0, 60.0, 200.0, 140.0]), multimask_output=False),
        dict(box=np.array([50.0, 40.0, 300.0, 220.0]), point_coords=np.array([[160.0, 100.0]]),
             point_labels=np.array([1])),
    ],
    ids=["points", "box", "box_and_point"],
)
def test_prompts(predictors, kwargs):
    pred, ref = predictors
    assert_same_prediction(pred.predict(**kwargs, return_logits=True), ref.predict(**kwargs, return_logits=True))


def test_batch_norm_is_not_folded(mobile_sam):
    """Each Conv2d_BN keeps its own four batch-norm tensors (frozen statistics), one to one."""
    model, path = mobile_sam
    params = samjax.params.flat_params(samjax.sam_model_registry["vit_t"](checkpoint=path))
    bn = model.image_encoder.layers[1].blocks[0].local_conv.bn
    prefix = "image_encoder.layers.1.0.local_conv."
    np.testing.assert_array_equal(params[prefix + "bn_mean"], bn.running_mean.numpy())
    np.testing.assert_array_equal(params[prefix + "bn_var"], bn.running_var.numpy())
    np.testing.assert_array_equal(params[prefix + "bn_scale"], bn.weight.detach().numpy())


def test_convert_and_export_round_trip(mobile_sam, tmp_path):
    model, path = mobile_sam
    folder, exported = tmp_path / "vit_t", tmp_path / "back.pt"
    for script, args in [
        ("convert_sam.py", ["--checkpoint", path, "--model-type", "vit_t", "--output", str(folder)]),
        ("export_meta.py", ["--checkpoint", str(folder), "--output", str(exported)]),
    ]:
        done = subprocess.run([sys.executable, os.path.join(ROOT, "convert_weights", script), *args],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    rebuilt = mobile_sam_registry["vit_t"](checkpoint=str(exported))  # strict load: every key present
    original, back = model.state_dict(), rebuilt.state_dict()
    for key, value in original.items():
        if "num_batches_tracked" in key or key.startswith(("image_encoder.head", "image_encoder.norm_head")):
            continue  # unused by SAM; written back with neutral values
        assert torch.equal(back[key], value), key
    image = sample_image(100, 140, seed=2)
    outs = []
    for m in (model, rebuilt.eval()):
        p = MobileSamPredictor(m)
        p.set_image(image)
        outs.append(p.predict(box=np.array([10.0, 10.0, 120.0, 90.0]), return_logits=True))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
