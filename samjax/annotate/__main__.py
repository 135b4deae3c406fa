"""Click to segment in the browser: ``python -m samjax.annotate --input SCAN (--workdir RUN | --sam SAM)``.

    python -m samjax.annotate --input ct.nii.gz --workdir runs/interactive          # an interactively trained run
    python -m samjax.annotate --input ct.nii.gz --sam ckpt/sam_vit_b --labels liver,kidney --ct-window 40,400
    python -m samjax.annotate --input scans/ --workdir runs/interactive --checkpoint best --propose runs/quickstart
    python -m samjax.annotate --input xray.png --sam mobile_sam.pt --model-type vit_t --port 8010

Serves the page on http://127.0.0.1:PORT/ (``samjax/annotate/server.py``): slices along any axis, window/level,
clicks inside (left) and outside (right or shift), boxes, undo, labels, save. The model must take prompts: a
box / point / interactive run, or a converted SAM; ``--propose`` adds an auto-mode run whose class maps the page
proposes for a whole slice at once. The label map goes to ``--output`` (default ``annotations/NAME.nii.gz``,
``.png`` for 2D; a folder for a folder of inputs, one label map each) in the input's geometry; the work in
progress is kept next to it (``<output>.progress.json``) and comes back when the server is started again.

The server answers only its own page (``samjax/annotate/guard.py``): requests naming another host, cross-site
or non-JSON posts and oversized bodies are refused. With ``--host`` other than a loopback address (the page
then reaches the network) or with ``--token``, every request needs the random token in the printed URL.
"""

from __future__ import annotations

if __name__ == "__main__":  # before JAX loads: transparent huge pages (samjax.utils.huge_pages)
    from samjax.utils import huge_pages

    huge_pages.reexec()

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
    parser.add_argument("--input", required=True, help="a 2D image, a NIfTI volume, a DICOM series folder, or a "
                        "folder of these")
    parser.add_argument("--workdir", help="a box / point / interactive training run")
    parser.add_argument("--checkpoint", help="the run's checkpoint: latest (default), best or a step")
    parser.add_argument("--sam", help="a SAM instead of a run: Meta's .pth or a converted folder")
    parser.add_argument("--model-type", default="vit_b", help="the SAM of --sam (vit_t, vit_b, vit_l, vit_h)")
    parser.add_argument("--which", help=argparse.SUPPRESS)  # the old name of --checkpoint
    parser.add_argument("--propose", metavar="RUN", help="an auto-mode run whose class maps the page can propose")
    parser.add_argument("--labels", help="label names, comma-separated (default: the run's classes)")
    parser.add_argument("--ct-window", type=_pair, metavar="LEVEL,WIDTH", help="a SAM's input mapping (a run "
                        "uses its data build's)")
    parser.add_argument("--output", help="the label map to write (default annotations/NAME.nii.gz or .png); a "
                        "folder for a folder of inputs (default annotations/)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8008)
    parser.add_argument("--token", action="store_true", help="require the printed URL's token on a loopback "
                        "address too (always required on others)")
    args = parser.parse_args(argv)
    from samjax.cli_options import run_or_sam

    args.workdir, args.checkpoint, args.sam = run_or_sam(parser, args.workdir, args.checkpoint, args.sam,
                                                         args.which)
    if args.workdir is None and args.sam is None:
        parser.error("give the model: --workdir RUN (a box / point / interactive run) or --sam FILE (a SAM)")

    from absl import logging

    logging.set_verbosity(logging.ERROR)
    from samjax.annotate.server import AnnotationServer
    from samjax.annotate.workspace import Workspace
    from samjax.errors import CheckpointError, ConfigError, DataError
    from samjax.scans.segmenter import Segmenter

    try:
        if args.workdir:
            if args.ct_window:
                raise ConfigError("--ct-window is a SAM's: a run maps intensities as its data build did")
            segmenter = Segmenter.from_workdir(args.workdir, args.checkpoint)
        else:
            segmenter = Segmenter.from_checkpoint(args.sam, args.model_type,
                                                  preprocessing={"ct_window": args.ct_window})
        if segmenter.auto:
            raise ConfigError(f"{args.workdir} was trained in auto mode (one mask per class, no prompts); annotate "
                              "with a box / point / interactive run or a SAM checkpoint, and give the auto-mode "
                              f"run as --propose {args.workdir}")
        proposer = _proposer(args.propose) if args.propose else None
        labels = _labels(args.labels, segmenter, proposer)
        proposal_labels = None
        if proposer is not None:
            proposal_labels = {c: labels.index(name) for c, name in enumerate(proposer.class_names) if c}
        workspace = Workspace(args.input, segmenter, args.output, proposer, proposal_labels)
        scan = workspace.open_first().scan
        server = AnnotationServer(workspace, labels, args.host, args.port, token=True if args.token else None)
    except (ConfigError, CheckpointError, DataError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not serve:
        return server
    what, where = f"{scan.path} ({'x'.join(map(str, scan.array.shape))})", workspace.current.output
    if not workspace.single:
        what, where = f"{len(workspace.inputs)} inputs of {args.input}", workspace.output + os.sep
    print(f"annotating {what}; labels: {', '.join(labels[1:])}; saves to {where}\nopen {server.page_url} in a "
          "browser (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _proposer(workdir: str):
    """The auto-mode run of ``--propose`` (a ``Segmenter``); a ``ConfigError`` when it takes prompts."""
    from samjax.errors import ConfigError
    from samjax.scans.segmenter import Segmenter

    proposer = Segmenter.from_workdir(workdir, "latest")
    if not proposer.auto:
        raise ConfigError(f"--propose {workdir} takes prompts; --propose needs an auto-mode run (one mask per "
                          "class), such as configs/quickstart.py's")
    return proposer


def _labels(text: str | None, segmenter, proposer) -> tuple[str, ...]:
    """The page's labels, background first: ``--labels``, else the proposer's or the prompted run's classes.
    Every class the proposer finds must be one of them (it is saved as that label)."""
    from samjax.errors import ConfigError

    labels = tuple((proposer or segmenter).class_names)
    if text:
        labels = ("background", *[name.strip() for name in text.split(",") if name.strip()])
    if len(labels) < 2:
        labels = ("background", "object")
    if len(labels) > 256:
        raise ConfigError(f"--labels: {len(labels) - 1} labels, but a label map holds at most 255")
    missing = [name for name in (proposer.class_names[1:] if proposer else ()) if name not in labels]
    if missing:
        raise ConfigError(f"--labels lacks {', '.join(missing)}, classes the --propose run segments; add them")
    return labels


if __name__ == "__main__":
    sys.exit(main())
