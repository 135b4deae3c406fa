"""Build a training data set from your own files, once, offline.

    python -m samjax.data.build --source DIR --name NAME --data-dir OUT \\
        [--format auto|folder|nnunet] [--axis 2] [--ct-window LEVEL,WIDTH | --percentiles LO,HI] \\
        [--empty keep|drop|subsample] [--validation 0.1] [--test 0.0]

``DIR`` is ``images/`` + ``masks/`` of 2D files, or an nnU-Net/Decathlon folder of NIfTI volumes (see
``samjax.data.sources``). The result is ``OUT/medical_slices/NAME/1.0.0`` (TFDS array_record), read by
``samjax.data.pipeline``. The counts (volumes, slices, slices per class, empty slices) are printed and
stored in the data set's metadata. Any file that cannot be used stops the build with its name.
"""

from __future__ import annotations

import argparse
import sys

from samjax.errors import DataError


def _pair(text: str, flag: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{flag} takes two numbers separated by a comma, got {text!r}") from None
    return a, b


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m samjax.data.build", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="folder with images/+masks/ or imagesTr/+labelsTr/+dataset.json")
    p.add_argument("--name", required=True, help="name of the data set (letters, digits, underscores)")
    p.add_argument("--data-dir", required=True, help="TFDS data directory to write into")
    p.add_argument("--format", default="auto", choices=("auto", "folder", "nnunet"))
    p.add_argument("--axis", type=int, default=2, help="axis of 3D volumes to slice along (default 2)")
    p.add_argument("--channel", type=int, default=0, help="nnU-Net v2 channel file to use (default 0)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--ct-window", type=lambda t: _pair(t, "--ct-window"), metavar="LEVEL,WIDTH",
                       help="CT window in HU, e.g. 40,400 (abdomen)")
    group.add_argument("--percentiles", type=lambda t: _pair(t, "--percentiles"), metavar="LO,HI",
                       help="clip to these percentiles of each volume (MR), e.g. 0.5,99.5")
    p.add_argument("--empty", default="keep", choices=("keep", "drop", "subsample"),
                   help="slices without foreground: keep all, drop all, or keep one in --empty-every")
    p.add_argument("--empty-every", type=int, default=10)
    p.add_argument("--validation", type=float, default=0.1, help="fraction of cases held out for validation")
    p.add_argument("--test", type=float, default=0.0, help="fraction of cases held out for testing")
    p.add_argument("--seed", type=int, default=0, help="seed of the case split")
    p.add_argument("--unlabeled", action="store_true", help="images only (self-supervised pretraining)")
    p.add_argument("--overwrite", action="store_true", help="rebuild if the data set exists")
    args = p.parse_args(argv)
    if args.empty_every < 1:
        p.error("--empty-every must be at least 1")
    return args


def format_counts(metadata) -> str:
    """The counts of a build as a small table, one block per split."""
    lines = []
    for split, c in sorted(metadata["counts"].items()):
        lines.append(f"{split}: {c['volumes']} case(s), {c['slices']} slice(s), {c['empty_slices']} empty kept, "
                     f"{c['empty_slices_dropped']} empty dropped")
        for name in metadata["class_names"][1:]:
            lines.append(f"  {name:<20} {c['slices_per_class'].get(name, 0):>8} slice(s)")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from samjax.data.builders import medical_slices

    try:
        builder = medical_slices.build(
            args.source, args.name, args.data_dir, overwrite=args.overwrite, format=args.format,
            labeled=not args.unlabeled, channel=args.channel, axis=args.axis, ct_window=args.ct_window,
            percentiles=args.percentiles, empty=args.empty, empty_every=args.empty_every,
            validation_fraction=args.validation, test_fraction=args.test, seed=args.seed)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"built {builder.data_dir}")
    print(format_counts(builder.info.metadata))
    return 0


if __name__ == "__main__":
    sys.exit(main())
