"""Exports a samjax checkpoint folder back to a Meta-format ``.pth`` (needs PyTorch).

    python convert_weights/export_meta.py --checkpoint ckpt/sam_vit_b --output sam_vit_b_samjax.pth

The result loads in Meta's code, ``segment_anything.sam_model_registry["vit_b"](checkpoint=...)``,
and predicts the same masks. Meta's builder always makes a 1024x1024 model, so a checkpoint
trained at another image size only loads in Meta's code built at that size.
"""

from __future__ import annotations

import argparse
import sys

from samjax.checkpoint import load_sam
from samjax.model_spec import get_spec
from samjax.weights import meta_sam
from samjax.errors import CheckpointError


def export(checkpoint: str, output: str) -> dict:
    """Writes ``checkpoint``'s parameters as a Meta state dict to ``output``; returns a summary."""
    try:
        import torch
    except ImportError:
        raise SystemExit("exporting to PyTorch needs torch: pip install 'samjax[convert]'") from None
    meta, params = load_sam(checkpoint)
    spec = get_spec(meta["model_type"]).replace(image_size=int(meta["image_size"]))
    state_dict = {k: torch.from_numpy(v.copy()) for k, v in meta_sam.to_meta(params, spec).items()}
    torch.save(state_dict, output)
    return {"model_type": spec.name, "image_size": spec.image_size, "tensors": len(state_dict)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="samjax checkpoint folder")
    parser.add_argument("--output", required=True, help="the .pth file to write")
    args = parser.parse_args(argv)
    try:
        info = export(args.checkpoint, args.output)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"exported SAM {info['model_type']} (image size {info['image_size']}, {info['tensors']} tensors) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
