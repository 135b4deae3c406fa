"""The study runner on the tiny grid: every run trained and evaluated, a pretraining chained into its
fine-tuning, seeds aggregated into one table row, finished runs skipped when the study starts again, and a
bad command line answered in one line. (The UNet entry of the real grids is a config like the others:
tests/train/test_unet_baseline.py trains and evaluates it.)"""

import csv
import json
import os
import subprocess
import sys

import pytest

from samjax import study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "study.py")


def _study(workdir, *args, data_dir):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "samjax.study", "--config", f"{CONFIG}:tiny", "--workdir",
                           str(workdir), "--set", f"data.data_dir={data_dir}", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from samjax.data.builders import phantoms

    d = tmp_path_factory.mktemp("tfds")
    phantoms.build(str(d), "labeled_64")
    return str(d)


def test_the_grid():
    cfg, _ = study.load_study(f"{CONFIG}:tiny")
    runs = study.expand(cfg, {"data.data_dir": "/x"})
    assert [r.name for r in runs] == ["setup1/vit_b-decoder-none/5shot-seed0", "setup1/vit_b-decoder-none/5shot-seed1",
                                      "setup3/mae", "setup3/vit_b-decoder-none"]
    assert dict(runs[1].overrides)["data.few_shot"] == 5 and dict(runs[1].overrides)["seed"] == 1
    assert runs[3].after == "setup3/mae" and dict(runs[3].overrides)["data.data_dir"] == "/x"
    full, _ = study.load_study(CONFIG + ":full")
    runs = study.expand(full)  # 18 grid points + UNet, full data and 3 few-shot seeds; 3 zero-shot evaluations
    assert len(runs) == 19 * (1 + 3) + 3 and [r.name for r in runs if r.evaluate] == [
        "zero-shot/vit_t", "zero-shot/vit_b", "zero-shot/vit_h"]
    cmd = study.command(runs[-1], "/w", "/c", None)
    assert cmd[1].endswith("eval.py") and cmd[cmd.index("--output") + 1] == "/w/zero-shot/vit_h/eval"
    assert "--clicks" in cmd and "--config.train.mode=box" in cmd
    lines = []
    scoped = study.apply_sets(study.expand(cfg), ["setup3/*:optim.learning_rate=5e-4", "data.name=x"], os.path.dirname(CONFIG), lines.append)
    assert [dict(r.overrides).get("optim.learning_rate") for r in scoped] == [None, None, "5e-4", "5e-4"]
    assert all(dict(r.overrides)["data.name"] == "x" for r in scoped)
    assert lines == ["--set setup3/*:optim.learning_rate=5e-4: 2 of 4 runs (setup3/mae, setup3/vit_b-decoder-none)",
                     "--set data.name=x: 4 of 4 runs (setup1/vit_b-decoder-none, setup3/mae, setup3/vit_b-decoder-none)"]
    with pytest.raises(study.StudyError, match=r"setup1/vit_b-decoder-none, setup3/vit_b-decoder-none \(2 entries\) "
                       r"have no mae.mask_ratio in their config; scope it .*'PATTERN:mae.mask_ratio=0.5'"):
        study.apply_sets(study.expand(cfg), ["mae.mask_ratio=0.5"], os.path.dirname(CONFIG), lines.append)
    assert len(study.apply_sets(study.expand(cfg), ["setup3/mae:mae.mask_ratio=0.5"], os.path.dirname(CONFIG),
                                lines.append)) == 4
    for bad, message in [("seed=3", "the study's own"), ("nothing/*:seed=3", "the study's own"),
                         ("zzz/*:data.name=x", "matches no run"), ("data.name", "give KEY=VALUE")]:
        with pytest.raises(study.StudyError, match=message):
            study.apply_sets(study.expand(cfg), [bad], os.path.dirname(CONFIG), lines.append)
    with pytest.raises(study.StudyError, match="names no earlier entry"):
        cfg.runs[2]["after"] = "setup2/nothing"
        study.expand(cfg)


def test_study_runs_resumes_and_tabulates(tmp_path, data_dir):
    workdir = tmp_path / "study"
    result = _study(workdir, data_dir=data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(workdir / "study.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["setup1/vit_b-decoder-none/5shot-seed0",
                                        "setup1/vit_b-decoder-none/5shot-seed1", "setup3/mae",
                                        "setup3/vit_b-decoder-none"]
    mae = rows[2]
    assert mae["dice"] == ""  # MAE reports a reconstruction loss, no Dice
    for r in rows[:2] + rows[3:]:
        assert 0 <= float(r["dice"]) <= 1 and float(r["hd95"]) > 0 and int(r["trainable_params"]) > 0
    log = (workdir / "setup3" / "vit_b-decoder-none" / "train.log").read_text()
    assert f"loaded {workdir / 'setup3' / 'mae'}" in log  # the fine-tuning started from the MAE run
    table = (workdir / "study.md").read_text()
    assert "| setup1/vit_b-decoder-none | 5-shot | 2 |" in table and "| setup3/vit_b-decoder-none | full | 1 |" in table
    assert (workdir / "study.png").is_file()
    chained = workdir / "setup3" / "vit_b-decoder-none"
    first = json.load(open(chained / "study.json"))

    os.remove(chained / "eval" / "metrics.json")  # as if killed before its evaluation
    again = _study(workdir, data_dir=data_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished earlier, skipped") == 3 and "setup3/vit_b-decoder-none: done" in again.stdout
    assert json.load(open(chained / "study.json"))["seconds"] > first["seconds"]

    bad = _study(workdir, "--only", "setup9/*", data_dir=data_dir)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: --only setup9/* matches no run")


def test_pivot_table_puts_budgets_side_by_side():
    summary = [{"strategy": "setup1/a", "data": "full", "dice": 0.5, "dice_std": None},
               {"strategy": "setup1/a", "data": "5-shot", "dice": 0.25, "dice_std": 0.125},
               {"strategy": "mae", "data": "full", "dice": None, "dice_std": None},
               {"strategy": "unet", "data": "5-shot", "dice": 0.3, "dice_std": 0.0}]
    assert study.pivot_table(summary).splitlines() == [
        "| test Dice | full | 5-shot |", "|---|---|---|", "| setup1/a | 0.500 | 0.250 ± 0.125 |",
        "| unet | – | 0.300 |"]
