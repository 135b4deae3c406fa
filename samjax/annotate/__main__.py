"""Click to segment in the browser: ``python -m samjax.annotate --input SCAN (--workdir RUN | --checkpoint SAM)``.

    python -m samjax.annotate --input ct.nii.gz --workdir runs/interactive          # an interactively trained run
    python -m samjax.annotate --input ct.nii.gz --checkpoint ckpt/sam_vit_b --labels liver,kidney --ct-window 40,400
    python -m samjax.annotate --input xray.png --checkpoint mobile_sam.pt --model-type vit_t --port 8010

Serves the page on http://127.0.0.1:PORT/ (``samjax/annotate/server.py``): slices along any axis, window/level,
clicks inside (left) and outside (right or shift), boxes, undo, labels, save. The model must take prompts: a
box / point / interactive run, or a converted SAM. The label map goes to ``--output`` (default
``annotations/NAME.nii.gz``, ``.png`` for 2D) in the input's geometry; the work in progress is kept next to
it (``<output>.progress.json``) and comes back when the server is started again on the same output.
"""

from __future__ import annotations

import argparse
import os
import sys


def _pair(text: str) -> tuple[float, float]:
    try:
        level, width = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ct-window takes LEVEL,WIDTH, got {text!r}") from None
    return level, width


def main(argv: list[str] | None = None, serve: bool = True):
    """Parses, loads, and serves until interrupted; with ``serve=False`` returns the server (tests)."""
    parser = argparse.ArgumentParser(prog="python -m samjax.annotate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="a 2D image, a NIfTI volume or a DICOM series folder")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--workdir", help="a box / point / interactive training run")
    model.add_argument("--checkpoint", help="a converted SAM (or Meta .pth)")
    parser.add_argument("--which", default="latest", help="the run's checkpoint: latest, best or a step")
    parser.add_argument("--model-type", default="vit_b", help="the SAM of --checkpoint (vit_t, vit_b, vit_l, vit_h)")
    parser.add_argument("--labels", help="label names, comma-separated (default: the run's classes)")
    parser.add_argument("--ct-window", type=_pair, metavar="LEVEL,WIDTH", help="a SAM's input mapping (a run "
                        "uses its data build's)")
    parser.add_argument("--output", help="the label map to write (default annotations/NAME.nii.gz or .png)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8008)
    args = parser.parse_args(argv)

    from absl import logging

    logging.set_verbosity(logging.ERROR)
    from samjax.annotate.server import AnnotationServer
    from samjax.annotate.session import Annotation
    from samjax.errors import CheckpointError, ConfigError, DataError
    from samjax.scans import label_map_name, read_scan
    from samjax.segmenter import Segmenter

    try:
        if args.workdir:
            if args.ct_window:
                raise ConfigError("--ct-window is a SAM's: a run maps intensities as its data build did")
            segmenter = Segmenter.from_workdir(args.workdir, args.which)
        else:
            segmenter = Segmenter.from_checkpoint(args.checkpoint, args.model_type,
                                                  preprocessing={"ct_window": args.ct_window})
        if segmenter.auto:
            raise ConfigError(f"{args.workdir} was trained in auto mode (one mask per class, no prompts); annotate "
                              "with a box / point / interactive run or a SAM checkpoint")
        labels = tuple(segmenter.class_names)
        if args.labels:
            labels = ("background", *[name.strip() for name in args.labels.split(",") if name.strip()])
        if len(labels) < 2:
            labels = ("background", "object")
        scan = read_scan(args.input, channel=segmenter.preprocessing.get("channel"))
        output = args.output or os.path.join("annotations", label_map_name(scan))
        if scan.volume != (not output.lower().endswith(".png")):
            raise ConfigError(f"--output {output}: a {'volume' if scan.volume else '2D image'} is saved as "
                              f"{'NIfTI (.nii.gz)' if scan.volume else 'PNG'}")
        server = AnnotationServer(Annotation(scan, segmenter, output), labels, args.host, args.port)
    except (ConfigError, CheckpointError, DataError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not serve:
        return server
    print(f"annotating {scan.path} ({'x'.join(map(str, scan.array.shape))}); labels: {', '.join(labels[1:])}; "
          f"saves to {output}\nopen {server.url} in a browser (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
