"""The commands' shared words: a run is --workdir with --checkpoint latest|best|STEP, a SAM is --sam; the old
spellings still work with a one-line note, contradictions and values that would be reinterpreted end in one line."""

import argparse

import pytest

from samjax import segment
from samjax.cli_options import run_or_sam


def _parser():
    parser = argparse.ArgumentParser(prog="cmd")
    parser.exit_on_error = False
    return parser


@pytest.mark.parametrize("given, expected, note", [
    (("runs/a", None, None, None), ("runs/a", "latest", None), ""),
    (("runs/a", "best", None, None), ("runs/a", "best", None), ""),
    (("runs/a", None, None, "800"), ("runs/a", "800", None), "--which is now --checkpoint (--checkpoint 800)"),
    ((None, None, "ckpt/sam_vit_b", None), (None, None, "ckpt/sam_vit_b"), ""),
    ((None, "sam_vit_b.pth", None, None), (None, None, "sam_vit_b.pth"),
     "--checkpoint FILE for a SAM's weights is now --sam sam_vit_b.pth"),
    ((None, None, None, None), (None, None, None), ""),
])
def test_runs_and_sams_are_named_alike(given, expected, note, capsys):
    assert run_or_sam(_parser(), *given) == expected
    err = capsys.readouterr().err
    assert (note in err and err.startswith("note: ") and err.count("\n") == 1) if note else err == ""


@pytest.mark.parametrize("given, message", [
    (("runs/a", None, "sam.pth", None), "give --workdir RUN (a training run) or --sam FILE"),
    (("runs/a", "sam.pth", None, None), "--checkpoint 'sam.pth': a run's checkpoint is latest, best or a step"),
    ((None, "best", None, None), "--checkpoint best picks a training run's checkpoint"),
    ((None, "best", "sam.pth", None), "--checkpoint best picks a training run's checkpoint"),
])
def test_contradictions_end_in_one_line(given, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_or_sam(_parser(), *given)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and message in err[-1]


def test_a_point_label_must_be_0_or_1(capsys):
    with pytest.raises(SystemExit):
        segment.main(["--point", "30,40,0.5"])
    assert "--point 30,40,0.5: the label 0.5 must be 1 (foreground) or 0 (background)" in capsys.readouterr().err
    assert segment._point("30,40,0") == [30.0, 40.0, 0.0] and segment._point("30,40") == [30.0, 40.0]
