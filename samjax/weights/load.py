"""Reads any supported SAM checkpoint into one Meta-named ``{name: array}`` state dict.

Supported, detected from the path and the tensor names:

- Meta's / MobileSAM's ``.pth`` (read without PyTorch, see ``torch_pickle.py``);
- a ``.safetensors`` file in Meta's naming;
- a Hugging Face ``transformers`` ``SamModel`` folder (``config.json`` + ``model.safetensors``, or
  sharded with ``model.safetensors.index.json``), or one of its ``.safetensors`` files.
"""

from __future__ import annotations

import json
import os

import numpy as np

from samjax.weights import hf_sam
from samjax.weights.safetensors_file import load_safetensors
from samjax.errors import CheckpointError
from samjax.weights.torch_pickle import find_state_dict, load_pth


def _hf_folder_files(folder: str) -> list[str]:
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f).get("weight_map", {}).values()))
        return [os.path.join(folder, s) for s in shards]
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    if os.path.isfile(os.path.join(folder, "pytorch_model.bin")):
        return [os.path.join(folder, "pytorch_model.bin")]
    raise CheckpointError(
        f"{folder} is neither a samjax checkpoint (samjax.json) nor a Hugging Face SamModel folder "
        "(model.safetensors, model.safetensors.index.json or pytorch_model.bin)"
    )


def _check_hf_config(folder: str, state_dict: dict[str, np.ndarray]) -> None:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        vision = json.load(f).get("vision_config", {})
    spec = hf_sam.detect_spec(state_dict)
    for key, value in (("hidden_size", spec.encoder_embed_dim), ("num_hidden_layers", spec.encoder_depth)):
        if key in vision and int(vision[key]) != value:
            raise CheckpointError(f"{path} says {key}={vision[key]} but the weights have {value}")
    if "global_attn_indexes" in vision and tuple(vision["global_attn_indexes"]) != spec.encoder_global_attn_indexes:
        raise CheckpointError(
            f"{path}: global_attn_indexes {vision['global_attn_indexes']} differ from SAM {spec.name}'s "
            f"{list(spec.encoder_global_attn_indexes)}; samjax supports Meta's architectures only"
        )


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """Returns a Meta-named state dict and the detected format (``"meta"`` or ``"huggingface"``)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        state_dict = {}
        for file in _hf_folder_files(path):
            part = load_safetensors(file) if file.endswith(".safetensors") else find_state_dict(load_pth(file), file)
            state_dict.update(part)
        if not hf_sam.is_hf_state_dict(state_dict):
            raise CheckpointError(f"{path} holds no Hugging Face SamModel weights (no vision_encoder.* tensors)")
        _check_hf_config(path, state_dict)
    elif path.endswith(".safetensors"):
        state_dict = load_safetensors(path)
    else:
        state_dict = find_state_dict(load_pth(path), path)
    if hf_sam.is_hf_state_dict(state_dict):
        return hf_sam.hf_to_meta(state_dict, path), "huggingface"
    return state_dict, "meta"
