"""The converter commands end to end: Meta .pth -> samjax folder -> Meta .pth, on a random 1024 ViT-B.

Each direction runs as the user would run it (a subprocess), and the result is checked by what it
computes: the converted folder loads without PyTorch into the same parameters as the .pth, and the
exported .pth loads in Meta's own ``sam_model_registry`` and predicts the same masks.
"""

import os
import subprocess
import sys

import numpy as np
import segment_anything
import torch

import samjax
from reference import sample_image
from samjax.params import flat_params

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_script(name, *args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "convert_weights", name), *args],
        capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def test_convert_and_export_round_trip(meta_vit_b_1024, tmp_path):
    spec, meta, pth = meta_vit_b_1024
    folder = tmp_path / "sam_vit_b"
    done = run_script("convert_sam.py", "--checkpoint", pth, "--model-type", "vit_b", "--output", str(folder))
    assert done.returncode == 0, done.stderr
    assert "converted SAM vit_b (meta format, image size 1024" in done.stdout
    assert (folder / "samjax.json").is_file()

    from_folder = flat_params(samjax.sam_model_registry["vit_b"](checkpoint=str(folder)))
    from_pth = flat_params(samjax.sam_model_registry["vit_b"](checkpoint=pth))
    assert from_folder.keys() == from_pth.keys()
    for name in from_pth:
        np.testing.assert_array_equal(np.asarray(from_folder[name]), np.asarray(from_pth[name]), err_msg=name)

    exported = tmp_path / "exported.pth"
    done = run_script("export_meta.py", "--checkpoint", str(folder), "--output", str(exported))
    assert done.returncode == 0, done.stderr
    original = meta.state_dict()
    reloaded = torch.load(exported, weights_only=True)
    assert reloaded.keys() == original.keys()
    for key in original:
        assert torch.equal(reloaded[key], original[key]), key

    # Meta's own builder loads the export and predicts what the original model predicts.
    rebuilt = segment_anything.sam_model_registry["vit_b"](checkpoint=str(exported)).eval()
    image = sample_image(120, 160, seed=11)
    kwargs = dict(box=np.array([30.0, 20.0, 110.0, 90.0]), multimask_output=True, return_logits=True)
    outputs = []
    for model in (meta, rebuilt):
        pred = segment_anything.SamPredictor(model)
        pred.set_image(image)
        outputs.append(pred.predict(**kwargs))
    for a, b in zip(*outputs):
        np.testing.assert_array_equal(a, b)


def test_convert_refuses_wrong_model_type(meta_vit_b_1024, tmp_path):
    _, _, pth = meta_vit_b_1024
    done = run_script("convert_sam.py", "--checkpoint", pth, "--model-type", "vit_l", "--output", str(tmp_path / "x"))
    assert done.returncode == 1
    assert "holds SAM vit_b" in done.stderr and "--model-type vit_b" in done.stderr
    assert not (tmp_path / "x").exists()


def test_convert_refuses_non_empty_output(meta_vit_b_1024, tmp_path):
    _, _, pth = meta_vit_b_1024
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("user data")
    done = run_script("convert_sam.py", "--checkpoint", pth, "--output", str(tmp_path / "out"))
    assert done.returncode == 1 and "not empty" in done.stderr
    assert (tmp_path / "out" / "keep.txt").read_text() == "user data"


def test_convert_reports_missing_unknown_and_misshaped_tensors(meta_vit_b_1024, tmp_path):
    _, meta, _ = meta_vit_b_1024
    state = dict(meta.state_dict())
    del state["image_encoder.blocks.3.attn.rel_pos_h"]
    state["image_encoder.blocks.3.attn.extra_scale"] = torch.ones(12)
    state["mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    path = tmp_path / "damaged.pth"
    torch.save(state, path)
    done = run_script("convert_sam.py", "--checkpoint", str(path), "--output", str(tmp_path / "out"))
    assert done.returncode == 1
    assert "missing:     image_encoder.blocks.3.attn.rel_pos_h (27, 64)" in done.stderr
    assert "unexpected:  image_encoder.blocks.3.attn.extra_scale (12,)" in done.stderr
    assert not (tmp_path / "out").exists()

    del state["image_encoder.blocks.3.attn.extra_scale"]
    state["image_encoder.blocks.3.attn.rel_pos_h"] = torch.zeros(27, 64)
    torch.save(state, path)
    done = run_script("convert_sam.py", "--checkpoint", str(path), "--output", str(tmp_path / "out"))
    assert done.returncode == 1
    assert "mask_decoder.iou_token.weight" in done.stderr and "(2, 256)" in done.stderr and "(1, 256)" in done.stderr
