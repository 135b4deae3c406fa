"""The name map from Hugging Face ``transformers`` ``SamModel`` checkpoints to Meta's names.

Both are PyTorch layouts, so this is a pure renaming; the Meta table (``meta_sam.py``) then takes the
tensors to samjax. Each rule below rewrites one Meta name pattern to its Hugging Face spelling; the
table for a model is every Meta name of its variant passed through the rules, so a Hugging Face
tensor outside it is reported as unknown.
"""

from __future__ import annotations

import re

import numpy as np

from samjax.model_spec import SamSpec
from samjax.weights import meta_sam
from samjax.errors import CheckpointError

HF_PREFIX = "vision_encoder."
_TIED = "prompt_encoder.shared_embedding.positional_embedding"  # tied to shared_image_embedding

META_TO_HF = [
    (r"^image_encoder\.patch_embed\.proj\.", "vision_encoder.patch_embed.projection."),
    (r"^image_encoder\.pos_embed$", "vision_encoder.pos_embed"),
    (r"^image_encoder\.blocks\.(\d+)\.norm(\d)\.", r"vision_encoder.layers.\1.layer_norm\2."),
    (r"^image_encoder\.blocks\.(\d+)\.", r"vision_encoder.layers.\1."),
    (r"^image_encoder\.neck\.0\.", "vision_encoder.neck.conv1."),
    (r"^image_encoder\.neck\.1\.", "vision_encoder.neck.layer_norm1."),
    (r"^image_encoder\.neck\.2\.", "vision_encoder.neck.conv2."),
    (r"^image_encoder\.neck\.3\.", "vision_encoder.neck.layer_norm2."),
    (r"^prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$", "shared_image_embedding.positional_embedding"),
    (r"^prompt_encoder\.point_embeddings\.(\d)\.", r"prompt_encoder.point_embed.\1."),
    (r"^prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.norm(\d)\.", r"mask_decoder.transformer.layers.\1.layer_norm\2."),
    (r"^mask_decoder\.transformer\.norm_final_attn\.", "mask_decoder.transformer.layer_norm_final_attn."),
    (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    # SamFeedForward names its three linears proj_in, layers.0, proj_out.
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.0\.", r"\1.proj_in."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.1\.", r"\1.layers.0."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.2\.", r"\1.proj_out."),
]


def hf_name(meta_name: str) -> str:
    """The Hugging Face name of a Meta tensor name (the first matching rule applies)."""
    for pattern, replacement in META_TO_HF:
        new, n = re.subn(pattern, replacement, meta_name)
        if n:
            return new
    return meta_name


def is_hf_state_dict(state_dict: dict[str, np.ndarray]) -> bool:
    return any(k.startswith(HF_PREFIX) for k in state_dict)


def detect_spec(state_dict: dict[str, np.ndarray]) -> SamSpec:
    """The SAM variant and image size of a Hugging Face state dict, through Meta's detection."""
    probe = {}
    for meta in ("image_encoder.patch_embed.proj.weight", "image_encoder.pos_embed"):
        if hf_name(meta) in state_dict:
            probe[meta] = state_dict[hf_name(meta)]
    depth = {k.split(".")[2] for k in state_dict if k.startswith("vision_encoder.layers.")}
    probe.update({f"image_encoder.blocks.{i}.x": np.zeros(0) for i in depth})
    return meta_sam.detect_spec(probe)


def hf_to_meta(state_dict: dict[str, np.ndarray], source: str = "checkpoint") -> dict[str, np.ndarray]:
    """Renames a Hugging Face ``SamModel`` state dict to Meta's names (tensors unchanged).

    Unknown names are an error; the tied copy of the positional matrix must equal the original.
    """
    spec = detect_spec(state_dict)
    to_meta = {hf_name(r.meta): r.meta for r in meta_sam.name_table(spec)}
    state_dict = dict(state_dict)
    tied = state_dict.pop(_TIED, None)
    original = state_dict.get("shared_image_embedding.positional_embedding")
    if tied is not None and original is not None and not np.array_equal(tied, original):
        raise CheckpointError(f"{source}: {_TIED} differs from shared_image_embedding.positional_embedding")
    if tied is not None and original is None:
        state_dict["shared_image_embedding.positional_embedding"] = tied
    unknown = sorted(k for k in state_dict if k not in to_meta)
    if unknown:
        shown = "\n".join(f"  unexpected:  {k} {tuple(np.shape(state_dict[k]))}" for k in unknown[:20])
        raise CheckpointError(f"{source} has tensors that no SAM {spec.name} has:\n{shown}")
    return {to_meta[k]: v for k, v in state_dict.items()}
