"""Hugging Face checkpoints: a ``transformers.SamModel`` folder, all tensors random, loads into samjax
and computes what ``SamModel`` computes (ViT-B at a 256 image); Meta-named ``.safetensors`` too.
Tolerance as for Meta's weights: max |samjax - HF| / max |HF| <= 1e-3 in fp32.
"""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import SamConfig, SamModel

import samjax
from reference import TOL, meta_sam_model, randomize_, rel_err
from samjax.model_spec import get_spec
from samjax.params import flat_params
from samjax.weights.hf_sam import hf_name
from samjax.weights.meta_sam import name_table
from samjax.weights.torch_pickle import CheckpointError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    config = SamConfig(
        vision_config=dict(image_size=256),
        prompt_encoder_config=dict(image_size=256, image_embedding_size=16),
    )
    model = SamModel(config)
    randomize_(model, seed=6)
    model.eval()
    # keep the tied copy equal, as transformers does when it saves
    model.prompt_encoder.shared_embedding.positional_embedding = model.shared_image_embedding.positional_embedding
    folder = tmp_path_factory.mktemp("hf") / "sam-vit-base-random"
    model.save_pretrained(folder)
    return model, str(folder)


def test_table_covers_every_hf_tensor():
    with torch.device("meta"):
        names = set(SamModel(SamConfig()).state_dict())
    names.discard("prompt_encoder.shared_embedding.positional_embedding")  # tied
    assert {hf_name(r.meta) for r in name_table(get_spec("vit_b"))} == names


def _hf_forward(model, pixels, **prompts):
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2), **prompts)
    return out.pred_masks[:, 0].numpy(), out.iou_scores[:, 0].numpy()


def _samjax_forward(sam, pixels, points=None, boxes=None, multimask_output=True):
    emb = sam.image_encoder(jnp.asarray(pixels))
    sparse, sparse_mask, dense = sam.prompt_encoder(points, boxes, None)
    return sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output, sparse_mask)


@pytest.mark.parametrize("prompt", ["points", "box", "box_and_points"])
def test_hf_folder_parity(hf_model, prompt):
    model, folder = hf_model
    sam = samjax.sam_model_registry["vit_b"](checkpoint=folder)
    assert sam.img_size == 256
    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(1, 256, 256, 3)).astype(np.float32)
    coords = np.array([[[40.0, 60.0], [200.0, 100.5]]], np.float32)
    labels = np.array([[1, 0]])
    box = np.array([[30.0, 20.0, 180.0, 150.0]], np.float32)
    hf_prompts, ours_prompts = {}, {}
    if "points" in prompt:
        hf_prompts.update(input_points=torch.from_numpy(coords)[:, None], input_labels=torch.from_numpy(labels)[:, None])
        ours_prompts["points"] = (jnp.asarray(coords), jnp.asarray(labels))
    if "box" in prompt:
        hf_prompts["input_boxes"] = torch.from_numpy(box)[:, None]
        ours_prompts["boxes"] = jnp.asarray(box)
    ref_masks, ref_iou = _hf_forward(model, pixels, **hf_prompts)
    masks, iou = _samjax_forward(sam, pixels, **ours_prompts)
    assert masks.shape == ref_masks.shape == (1, 3, 64, 64)
    assert rel_err(masks, ref_masks) <= TOL
    assert rel_err(iou, ref_iou) <= TOL


def test_hf_folder_converts(hf_model, tmp_path):
    model, folder = hf_model
    out = tmp_path / "converted"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "convert_weights", "convert_sam.py"),
                           "--checkpoint", folder, "--output", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "SAM vit_b (huggingface format, image size 256" in done.stdout
    a = flat_params(samjax.sam_model_registry["vit_b"](checkpoint=str(out)))
    b = flat_params(samjax.sam_model_registry["vit_b"](checkpoint=folder))
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)
    qkv = model.vision_encoder.layers[3].attn.qkv.weight.detach().numpy()
    np.testing.assert_array_equal(np.asarray(a["image_encoder.blocks.3.attn.qkv.kernel"]), qkv.T)


def test_hf_config_disagreeing_with_weights(hf_model, tmp_path):
    _, folder = hf_model
    broken = tmp_path / "broken"
    broken.mkdir()
    os.symlink(os.path.join(folder, "model.safetensors"), broken / "model.safetensors")
    config = json.load(open(os.path.join(folder, "config.json")))
    config["vision_config"]["num_hidden_layers"] = 24
    json.dump(config, open(broken / "config.json", "w"))
    with pytest.raises(CheckpointError, match="num_hidden_layers=24 but the weights have 12"):
        samjax.sam_model_registry["vit_b"](checkpoint=str(broken))


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="neither a samjax checkpoint"):
        samjax.sam_model_registry["vit_b"](checkpoint=str(tmp_path))


def test_meta_named_safetensors(tmp_path):
    from safetensors.torch import save_file

    spec = get_spec("vit_b").replace(image_size=64)
    meta = meta_sam_model(spec, seed=8)
    path = tmp_path / "sam.safetensors"
    save_file({k: v.contiguous() for k, v in meta.state_dict().items()}, str(path))
    torch.save(meta.state_dict(), tmp_path / "sam.pth")
    a = flat_params(samjax.sam_model_registry["vit_b"](checkpoint=str(path)))
    b = flat_params(samjax.sam_model_registry["vit_b"](checkpoint=str(tmp_path / "sam.pth")))
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


@pytest.mark.parametrize("damage", ["truncated", "bad_header", "overlap"])
def test_damaged_safetensors(tmp_path, damage):
    from safetensors.torch import save_file

    path = tmp_path / "t.safetensors"
    save_file({"a": torch.ones(4, 4), "b": torch.zeros(8)}, str(path))
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    if damage == "truncated":
        raw = raw[:-10]
    elif damage == "bad_header":
        raw[8:12] = b"\xff\xfe{{"
    else:
        header = json.loads(raw[8 : 8 + n])
        header["b"]["data_offsets"] = [0, 32]
        text = json.dumps(header).encode().ljust(n)[:n]
        raw[8 : 8 + n] = text
    path.write_bytes(bytes(raw))
    from samjax.weights.safetensors_file import load_safetensors

    with pytest.raises(CheckpointError, match="truncated or corrupt|unreadable|overlap"):
        load_safetensors(path)
