"""See what training will see: a grid of pipeline examples with labels, augmentations and prompts.

    python -m samjax.data.preview --data phantoms/labeled_128 --output preview.png
    python -m samjax.data.preview --data my_ct --data-dir ~/tensorflow_datasets --augment --prompts

Each tile is one example after augmentation and SAM's formatting, its label classes overlaid in
colour, and with ``--prompts`` the simulated box (yellow) and interior point (green) of each object.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from samjax.data import pipeline
from samjax.utils.overlay import draw_prompts, overlay_masks, save_png


def render(batch: dict, class_count: int, columns: int = 4) -> np.ndarray:
    """A batch (``image (B, S, S, 3)``, optional ``label``/prompts) -> one ``(rows*S, cols*S, 3)`` picture."""
    tiles = []
    for i in range(batch["image"].shape[0]):
        tile = batch["image"][i]
        if "label" in batch:
            tile = overlay_masks(tile, np.stack([batch["label"][i] == c for c in range(1, class_count)]))
        if "boxes" in batch:
            for k in np.flatnonzero(batch["object_valid"][i]):
                tile = draw_prompts(tile, batch["points"][i, k], batch["point_labels"][i, k], batch["boxes"][i, k])
        tiles.append(tile)
    s = tiles[0].shape[0]
    rows = -(-len(tiles) // columns)
    grid = np.zeros((rows * s, columns * s, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * s:(r + 1) * s, c * s:(c + 1) * s] = tile
    return grid


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m samjax.data.preview", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="phantoms/labeled_128", help="phantoms[/config], a built NAME, or its folder")
    p.add_argument("--data-dir", default=pipeline.DEFAULT_DATA_DIR)
    p.add_argument("--split", default="train")
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", action="store_true", help="apply the default augmentations")
    p.add_argument("--prompts", action="store_true", help="simulate a box and a point per class")
    p.add_argument("--output", default="preview.png")
    args = p.parse_args(argv)

    from samjax.data.augment import augmentations
    from samjax.data.prompts import SimulatePrompts

    try:
        source = pipeline.open_source(args.data, args.split, args.data_dir)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    labeled = bool(source.class_names) and "label" in source.records[0]
    ds = pipeline.train_dataset(
        [source], global_batch=args.count, image_size=args.image_size, seed=args.seed,
        augment=augmentations() if args.augment else (), labeled=labeled,
        prompts=SimulatePrompts(num_objects=max(1, len(source.class_names) - 1)) if args.prompts and labeled else None)
    save_png(render(ds[0], len(source.class_names)), args.output)
    print(f"wrote {args.output}: {args.count} examples of {args.data}/{args.split} ({len(source.records)} records, "
          f"classes {list(source.class_names)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
