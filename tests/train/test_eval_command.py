"""``python eval.py --workdir RUN``: the run's own config, the same numbers and files as the trainer's final
evaluation, another checkpoint or unit on request, one line for a bad value."""

import json
import os
import sys

from train_runs import ROOT, run


def _eval(workdir, *extra):
    return run([sys.executable, os.path.join(ROOT, "eval.py"), "--workdir", str(workdir), *extra])


def test_eval_reproduces_the_final_evaluation(straight_run, tmp_path):
    final = json.load(open(straight_run / "eval" / "metrics.json"))
    assert {"scores.csv", "scores.md", "dice_boxplot.png", *final["overlays"]} <= set(os.listdir(straight_run / "eval"))
    result = _eval(straight_run, "--output", str(tmp_path / "again"))
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.load(open(tmp_path / "again" / "metrics.json"))
    for key in ("mean_dice", "mean_iou", "mean_hd95", "mean_nsd", "per_class"):
        assert again[key] == final[key], key
    assert (tmp_path / "again" / "scores.csv").read_text() == (straight_run / "eval" / "scores.csv").read_text()

    result = _eval(straight_run, "--checkpoint", "6", "--per", "volume", "--split", "validation", "--overlays", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    other = json.load(open(straight_run / "eval_validation" / "metrics.json"))
    assert other["split"] == "validation" and other["per"] == "volume" and other["overlays"] == []

    result = _eval(straight_run, "--checkpoint", "3")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "no checkpoint of step 3" in result.stderr
