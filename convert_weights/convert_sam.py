"""Converts a SAM checkpoint to a samjax checkpoint folder (Orbax), once.

    python convert_weights/convert_sam.py --checkpoint sam_vit_b_01ec64.pth --model-type vit_b --output ckpt/sam_vit_b
    python convert_weights/convert_sam.py --checkpoint mobile_sam.pt --model-type vit_t --output ckpt/mobile_sam
    python convert_weights/convert_sam.py --checkpoint hf/sam-vit-base --output ckpt/sam_vit_b_hf

Accepted: Meta's and MobileSAM's ``.pth``, ``.safetensors`` in Meta's naming, and Hugging Face
``SamModel`` folders (``config.json`` + ``model.safetensors``); the format is detected. A ``.pth``
is read without PyTorch and without running any of its pickled code. Every tensor goes
through the explicit name table of ``samjax/weights/meta_sam.py``; unknown, missing or wrongly shaped
tensors are listed by name and shape and the command fails. Load the result with
``samjax.sam_model_registry["vit_b"](checkpoint="ckpt/sam_vit_b")``: no PyTorch needed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from samjax.build_sam import convert_meta_state_dict
from samjax.checkpoint import save_sam
from samjax.model_spec import SPECS, get_spec
from samjax.weights.load import read_state_dict
from samjax.errors import CheckpointError


def convert(checkpoint: str, output: str, model_type: str | None = None) -> dict:
    """Converts ``checkpoint`` into the folder ``output``; returns what was written."""
    state_dict, source_format = read_state_dict(checkpoint)
    spec, params = convert_meta_state_dict(state_dict, checkpoint)
    if model_type is not None and get_spec(model_type).name != spec.name:
        raise CheckpointError(f"{checkpoint} holds SAM {spec.name}, not {model_type}; pass --model-type {spec.name}")
    save_sam(output, params, spec.name, spec.image_size, source=os.path.basename(os.path.normpath(checkpoint)),
             source_format=source_format)
    return {
        "format": source_format,
        "model_type": spec.name,
        "image_size": spec.image_size,
        "tensors": len(params),
        "parameters": int(sum(np.size(v) for v in params.values())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True,
                        help="Meta/MobileSAM .pth, .safetensors, or a Hugging Face SamModel folder")
    parser.add_argument("--model-type", choices=sorted([*SPECS, "default"]), default=None,
                        help="expected variant; detected from the tensors when omitted")
    parser.add_argument("--output", required=True, help="new folder for the samjax checkpoint")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        info = convert(args.checkpoint, args.output, args.model_type)
    except (CheckpointError, FileNotFoundError, FileExistsError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"converted SAM {info['model_type']} ({info['format']} format, image size {info['image_size']}, {info['tensors']} tensors, "
        f"{info['parameters'] / 1e6:.1f}M parameters) to {args.output} in {time.time() - start:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
