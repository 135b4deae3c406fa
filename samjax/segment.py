"""Segments scans with a trained run or a SAM, into label maps in the input's geometry; or one image, as a demo.

    python -m samjax.segment --workdir runs/quickstart --input patient.nii.gz --output patient_seg.nii.gz
    python -m samjax.segment --workdir runs/quickstart --input scans/ --output labels/ --stats --preview
    python -m samjax.segment --workdir runs/box_run --input ct.nii.gz --prompts boxes.json --output seg.nii.gz
    python -m samjax.segment --sam sam_vit_b_01ec64.pth --input series_dir/ --prompts boxes.json --output o/

With ``--input`` (a 2D image, a NIfTI volume, a DICOM series folder, or a folder of these) every input
becomes a label map (``samjax.scans.segmenter``, ``samjax.scans.runner``): NIfTI over the input's voxels with its
affine for volumes, PNG for 2D images, values the run's class indices. ``--workdir`` takes the run's
config, classes and intensity handling (``--checkpoint best|latest|STEP`` picks the checkpoint); a run in
auto mode segments every class, a box / point / interactive run or a SAM (``--sam FILE``, Meta's ``.pth`` or
a converted folder, with ``--model-type``) needs ``--prompts`` (``samjax/scans/prompts.py``). Existing outputs are skipped unless ``--overwrite``.

The demo, without ``--input``:

    python -m samjax.segment --output overlay.png                       # built-in phantom, random weights
    python -m samjax.segment --sam sam_vit_b_01ec64.pth --image scan.png --box 40,60,200,220
    python -m samjax.segment --sam mobile_sam.pt --model-type vit_t --everything --output all.png

Without ``--image`` it segments the Shepp-Logan head phantom that ships with scikit-image. Without
``--sam`` the model has random weights (nothing can be downloaded here), so the mask shows the
pipeline works, not what SAM sees: pass Meta's ``.pth`` or a converted folder for real masks.
"""

from __future__ import annotations

if __name__ == "__main__":  # before JAX loads: transparent huge pages (samjax.utils.huge_pages)
    from samjax.utils import huge_pages

    huge_pages.reexec()

import argparse
import sys
import time

import numpy as np
from PIL import Image

from samjax.automatic_mask_generator import SamAutomaticMaskGenerator
from samjax.build_sam import sam_model_registry
from samjax.utils.overlay import draw_prompts, overlay_masks, save_png
from samjax.predictor import SamPredictor
from samjax.errors import CheckpointError

DEFAULT_BOX = (130, 90, 270, 310)  # the phantom's left ventricle region, in a 400x400 image


def load_image(path: str | None) -> np.ndarray:
    """An image file as uint8 grayscale or RGB.

    Palette and alpha images are converted to RGB / grayscale; 16-bit, integer and float images are
    scaled to 0-255 between their 0.5th and 99.5th intensity percentiles.
    """
    if path is None:
        from skimage.data import shepp_logan_phantom

        return (shepp_logan_phantom() * 255 + 0.5).astype(np.uint8)
    with Image.open(path) as im:
        if im.mode in ("P", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif im.mode == "LA":
            im = im.convert("L")
        arr = np.asarray(im)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        lo, hi = np.percentile(arr, (0.5, 99.5))
        arr = (np.clip((arr - lo) / max(hi - lo, 1e-12), 0, 1) * 255 + 0.5).astype(np.uint8)
    return arr


def _floats(text: str, n: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in n:
        raise argparse.ArgumentTypeError(f"{what} must be {' or '.join(map(str, n))} comma-separated numbers, got {text!r}")
    return values


def _point(text: str) -> list[float]:
    """``x,y[,label]``: the label, when given, must be exactly 0 or 1 (0.5 is no click SAM knows)."""
    values = _floats(text, (2, 3), "--point")
    if len(values) == 3 and values[2] not in (0.0, 1.0):
        raise argparse.ArgumentTypeError(f"--point {text}: the label {values[2]:g} must be 1 (foreground) or 0 "
                                         "(background)")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    scans = parser.add_argument_group("scans (with --input)")
    scans.add_argument("--input", help="2D image, NIfTI volume, DICOM series folder, or a folder of these")
    scans.add_argument("--workdir", help="a training run (its config, classes and preprocessing)")
    scans.add_argument("--prompts", help="JSON of boxes / points (samjax/scans/prompts.py); a folder of NAME.json "
                       "for a folder of inputs")
    scans.add_argument("--batch-size", type=int, default=None, help="slices per device call (default: the run's "
                       "eval batch)")
    scans.add_argument("--ct-window", type=lambda t: _floats(t, (2,), "--ct-window"), metavar="LEVEL,WIDTH",
                       help="CT window for a converted SAM (a run uses its data build's)")
    scans.add_argument("--axis", type=int, default=None, help="slicing axis for a converted SAM (default 2)")
    scans.add_argument("--stats", action="store_true", help="also write NAME.json: per-class volumes (mL) and "
                       "the model's mean confidence")
    scans.add_argument("--preview", action="store_true", help="also write NAME_preview.png: the label map over "
                       "its scan (the slice with the most labels)")
    scans.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    parser.add_argument("--image", help="PNG/JPEG/TIFF file (default: scikit-image's Shepp-Logan phantom)")
    parser.add_argument("--sam", help="a SAM: Meta's .pth or a converted samjax folder (demo default: random weights)")
    parser.add_argument("--checkpoint", help="with --workdir: the run's checkpoint, latest (default), best or a step")
    parser.add_argument("--model-type", default="vit_b", choices=sorted(sam_model_registry), help="the SAM of --sam")
    parser.add_argument("--image-size", type=int, default=None, help="encoder input size (default: the checkpoint's)")
    parser.add_argument("--box", type=lambda t: _floats(t, (4,), "--box"), help="x0,y0,x1,y1 in pixels")
    parser.add_argument("--point", action="append", default=[], type=_point,
                        help="x,y[,label] in pixels; label 1 foreground (default), 0 background; repeatable")
    parser.add_argument("--multimask", action="store_true", help="draw all three candidate masks")
    parser.add_argument("--everything", action="store_true",
                        help="segment everything (SamAutomaticMaskGenerator) instead of one prompt")
    parser.add_argument("--points-per-side", type=int, default=32, help="grid of --everything")
    parser.add_argument("--output", default=None, help="demo: the PNG to write (default overlay.png); scans: a "
                        "label map file (.nii.gz, .png) or a folder")
    args = parser.parse_args(argv)
    from samjax.cli_options import run_or_sam

    args.workdir, args.checkpoint, args.sam = run_or_sam(parser, args.workdir, args.checkpoint, args.sam)
    if args.input is not None or args.workdir is not None:
        return _segment_scans(args, parser)
    args.output = args.output or "overlay.png"

    try:
        image = load_image(args.image)
    except (OSError, ValueError) as e:
        print(f"error: cannot read image {args.image}: {e}", file=sys.stderr)
        return 1
    box = np.array(args.box) if args.box else None
    coords = labels = None
    if args.point:
        coords = np.array([p[:2] for p in args.point])
        labels = np.array([int(p[2]) if len(p) == 3 else 1 for p in args.point])  # _point checked 0 / 1
    if box is None and coords is None:
        h, w = image.shape[:2]
        box = np.array(DEFAULT_BOX) * np.array([w, h, w, h]) / 400.0 if args.image is None else np.array([0, 0, w, h])

    start = time.time()
    try:
        model = sam_model_registry[args.model_type](checkpoint=args.sam, image_size=args.image_size)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.sam is None:
        print("note: no --sam given, so the model has random weights and the mask is meaningless; "
              "pass Meta's sam_vit_b_01ec64.pth (or a converted folder) for real masks", file=sys.stderr)
    print(f"built SAM {args.model_type} at {model.img_size}x{model.img_size} in {time.time() - start:.1f}s")

    rgb = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image
    if args.everything:
        return _segment_everything(model, rgb, args)
    predictor = SamPredictor(model)
    try:
        start = time.time()
        predictor.set_image(image)
        predictor.features.block_until_ready()
        print(f"image {image.shape[1]}x{image.shape[0]} embedded in {time.time() - start:.1f}s")
        start = time.time()
        masks, scores, _ = predictor.predict(coords, labels, box, multimask_output=True)
    except (TypeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"masks predicted in {time.time() - start:.2f}s; predicted IoU {', '.join(f'{v:.3f}' for v in scores)}")
    chosen = masks if args.multimask else masks[np.argmax(scores)][None]
    picture = draw_prompts(overlay_masks(rgb, chosen), coords, labels, box)
    save_png(picture, args.output)
    areas = ", ".join(f"{int(m.sum())} px" for m in chosen)
    print(f"wrote {args.output} ({len(chosen)} mask(s): {areas})")
    return 0


def _segment_scans(args, parser) -> int:
    """``--input``: every input into a label map (see the module docstring)."""
    import os

    from samjax.scans.runner import run_inputs
    from samjax.scans.segmenter import Segmenter
    from samjax.errors import ConfigError, DataError

    from absl import logging

    logging.set_verbosity(logging.ERROR)  # Orbax's notes on opening a run read-only
    if args.input is None or args.output is None:
        parser.error("--input and --output are both needed to segment scans")
    if not os.path.exists(args.input):
        print(f"error: --input {args.input} does not exist", file=sys.stderr)
        return 1
    if args.workdir is None and args.sam is None:
        parser.error("give --workdir RUN (a trained run) or --sam FILE (a SAM's weights, with --prompts)")
    if args.axis is not None and args.axis not in (0, 1, 2):
        parser.error(f"--axis {args.axis} must be 0, 1 or 2")
    try:
        if args.workdir is not None:
            if args.ct_window or args.axis is not None:
                parser.error("--ct-window and --axis are a converted SAM's: a run uses its data build's")
            segmenter = Segmenter.from_workdir(args.workdir, args.checkpoint, args.batch_size)
        else:
            if args.prompts is None:
                parser.error("a converted SAM segments from prompts: give --prompts FILE.json")
            preprocessing = {"ct_window": args.ct_window, "axis": 2 if args.axis is None else args.axis}
            segmenter = Segmenter.from_checkpoint(args.sam, args.model_type, args.image_size, preprocessing,
                                                  args.batch_size or 8)
    except (ConfigError, CheckpointError, DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for note in segmenter.notes:
        print(note, file=sys.stderr)
    kind = "auto mode, every class" if segmenter.auto else "from prompts"
    print(f"model {segmenter.source} ({kind}); classes: {', '.join(segmenter.class_names[1:]) or 'as prompted'}")
    return run_inputs(segmenter, args.input, args.output, prompts=args.prompts, overwrite=args.overwrite,
                      stats=args.stats, preview=args.preview)


def _segment_everything(model, rgb: np.ndarray, args) -> int:
    generator = SamAutomaticMaskGenerator(model, points_per_side=args.points_per_side)
    start = time.time()
    records = generator.generate(rgb)
    print(f"segment everything: {len(records)} masks in {time.time() - start:.1f}s")
    records.sort(key=lambda r: r["area"], reverse=True)  # small masks drawn last, on top
    masks = np.stack([r["segmentation"] for r in records]) if records else np.zeros((0, *rgb.shape[:2]), bool)
    save_png(overlay_masks(rgb, masks), args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
