"""The words every command shares for the model it runs, in one place.

A training run is ``--workdir RUN`` with ``--checkpoint latest|best|STEP``; a SAM as Meta or Hugging Face
ship it (a ``.pth``, or a folder converted by ``convert_weights/``) is ``--sam FILE`` with ``--model-type``.
``eval.py``, ``python -m samjax.segment`` and ``python -m samjax.annotate`` read them alike. Older spellings
(``--checkpoint FILE`` for a SAM, annotate's ``--which``) still work, each with a one-line note naming the
new flag.
"""

from __future__ import annotations

import re
import sys

CHECKPOINT_WORDS = ("latest", "best")


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


def check_run_checkpoint(value: str) -> str | None:
    """A one-line complaint when ``value`` names no checkpoint of a run, else None."""
    if value in CHECKPOINT_WORDS or re.fullmatch(r"\d+", value or ""):
        return None
    return (f"--checkpoint {value!r}: a run's checkpoint is latest, best or a step number; a SAM's weights "
            "go to --sam FILE")


def run_or_sam(parser, workdir: str | None, checkpoint: str | None, sam: str | None, which: str | None = None
               ) -> tuple[str | None, str | None, str | None]:
    """``(workdir, checkpoint, sam)`` in the shared vocabulary: the run's checkpoint defaults to ``latest``; old
    spellings are mapped with a note; contradictions end in ``parser.error`` (one line, exit 2)."""
    if which is not None:
        note(f"--which is now --checkpoint (--checkpoint {which}); --which will go")
        if checkpoint is None:
            checkpoint = which
    if workdir is not None and sam is not None:
        parser.error("give --workdir RUN (a training run) or --sam FILE (a SAM's weights), not both")
    if workdir is None:
        if checkpoint is not None and sam is None and check_run_checkpoint(checkpoint) is not None:
            note(f"--checkpoint FILE for a SAM's weights is now --sam {checkpoint}; --checkpoint alone will go")
            return None, None, checkpoint
        if checkpoint is not None:
            parser.error(f"--checkpoint {checkpoint} picks a training run's checkpoint: give the run as --workdir RUN")
        return None, None, sam
    checkpoint = checkpoint or "latest"
    complaint = check_run_checkpoint(checkpoint)
    if complaint:
        parser.error(complaint)
    return workdir, checkpoint, None
