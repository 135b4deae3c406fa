"""A run killed with SIGKILL and started again with the same command continues exactly as an
uninterrupted run (same losses, bitwise on CPU); half-written checkpoints are never chosen. The
uninterrupted run also serves ``python eval.py --workdir RUN`` (same numbers as its final evaluation)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from samjax.checkpoint import latest_model_params
from samjax.errors import CheckpointError

from train_runs import ROOT, env, losses, run, train_command


def test_kill_and_resume_is_exact(tmp_path, data_dir, uninterrupted):
    workdir = tmp_path / "killed"
    proc = subprocess.Popen(train_command(workdir, data_dir), cwd=ROOT, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    metrics = workdir / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        # Kill in the middle: once step 5 is logged (a checkpoint at 2 or 4 exists or is being written).
        if metrics.is_file() and '"step": 5' in metrics.read_text():
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(losses(workdir))
    assert killed_at < 8

    result = run(train_command(workdir, data_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout
    resumed = losses(workdir)
    assert sorted(resumed) == list(range(1, 9))  # every step once: the killed run's tail was rewritten
    for step in range(1, 9):
        assert resumed[step] == uninterrupted[step], (step, resumed[step], uninterrupted[step])


def test_a_half_written_checkpoint_is_not_chosen(tmp_path, data_dir, uninterrupted):
    import shutil

    workdir = tmp_path / "partial"
    result = run(train_command(workdir, data_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoints = workdir / "checkpoints"
    shutil.rmtree(checkpoints / "8")
    # What a save interrupted at step 6 leaves: Orbax's temporary folder, half full.
    partial = checkpoints / "6.orbax-checkpoint-tmp-1234"
    os.rename(checkpoints / "6", partial)
    for f in sorted(partial.rglob("*"))[::2]:
        if f.is_file():
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    result = run(train_command(workdir, data_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{checkpoints}/4" in result.stdout
    assert losses(workdir) == uninterrupted


def test_non_finite_loss_stops_with_step_and_term(tmp_path, data_dir):
    workdir = tmp_path / "nan"
    result = run(train_command(workdir, data_dir, "--config.optim.learning_rate=1e30", "--config.optim.grad_clip_norm=0"))
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "non-finite loss at step" in message and "loss=" in message
    step = int(message.split("at step ")[1].split(":")[0])
    saved = [int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()]
    assert all(s < step for s in saved)  # nothing after the last good step is kept
    assert np.isfinite(list(losses(workdir).values())).all()


def test_resume_onto_another_mesh(tmp_path, straight_run, uninterrupted):
    """The straight run's checkpoint of step 4 (one device), resumed on 8 devices as data=2 x fsdp=4: the
    checkpoint reshards on load, and steps 5-8 give the losses of one device."""
    import shutil

    workdir = tmp_path / "remesh"
    shutil.copytree(straight_run, workdir)
    for step in ("6", "8"):
        shutil.rmtree(workdir / "checkpoints" / step)
    data_dir = json.load(open(workdir / "config.json"))["data"]["data_dir"]
    resumed = subprocess.run(train_command(workdir, data_dir, "--config.mesh.data=2", "--config.mesh.fsdp=4"),
                             cwd=ROOT, env=env(devices=8), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "mesh {'data': 2, 'fsdp': 4, 'tensor': 1}" in resumed.stdout
    assert f"resumed from {workdir / 'checkpoints' / '4'}" in resumed.stdout
    steps = losses(workdir)
    np.testing.assert_allclose([steps[s] for s in range(1, 9)], [uninterrupted[s] for s in range(1, 9)], rtol=1e-4)


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

    result = _eval(straight_run, "--clicks", "3")  # the click protocol needs SAM's own mask tokens
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("error: --clicks needs SAM's")
    result = run([sys.executable, os.path.join(ROOT, "eval.py")])
    assert result.returncode == 1 and result.stderr.strip() == (
        "error: give --workdir RUN (a training run), or a SAM as loaded: --sam FILE --config configs/<file>.py "
        "(its data) --output DIR")
    result = _eval(straight_run, "--checkpoint", "ckpt/sam_vit_b")  # the shared vocabulary: a SAM is --sam
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
        "error: --checkpoint 'ckpt/sam_vit_b': a run's checkpoint is latest, best or a step number; a SAM's weights "
        "go to --sam FILE")

    with pytest.raises(CheckpointError, match="no checkpoint of step 3; it has steps"):
        latest_model_params(straight_run, "3")  # eval.py prints it as one line (test_config_check: its form)
