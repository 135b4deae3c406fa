"""Config errors are one line naming the field and the fix, found before anything is built; runs of any
length fit their warm-up; every config in configs/ passes with total_steps=1."""

import glob
import os
import re
import sys

import pytest

from samjax.errors import ConfigError
from samjax.train import config_check
from tiny_configs import ROOT, load_config, tiny_config
from train_runs import run, train_command


ARGS = {"finetune.py": [None, "vit_t,decoder,lora", "vit_h,encoder_decoder,adapter"], "mae.py": [None, "vit_h"],
        "interactive.py": [None, "vit_b"], "tiny.py": [None, "mae", "interactive", "unet"], "quickstart.py": [None],
        "unet.py": [None, "quickstart"]}
CONFIGS = [(os.path.basename(p), a) for p in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
           if not p.endswith(("__init__.py", "study.py")) for a in ARGS[os.path.basename(p)]]  # study: tests/test_study.py


@pytest.mark.parametrize("name,arg", CONFIGS, ids=[f"{n}:{a}" for n, a in CONFIGS])
def test_every_config_runs_one_step(name, arg):
    cfg = load_config(name, arg, total_steps=1)
    lines = []
    config_check.check(cfg, device_count=1, process_count=1, log=lines.append, data=True)
    assert cfg.optim.warmup_steps == 0
    assert all(line.count("\n") == 0 for line in lines)


def test_a_long_warmup_is_shortened_and_said():
    cfg = tiny_config(**{"total_steps": 40, "optim.warmup_steps": 50})
    lines = []
    config_check.check(cfg, log=lines.append, data=False)
    assert cfg.optim.warmup_steps == 4
    assert lines == ["optim.warmup_steps=50 does not fit in total_steps=40: warming up for 4 steps instead"]


BAD = [
    ({"model.encoder": "vit_x"}, "model.encoder='vit_x' is not known; use one of vit_b"),
    ({"train.scope": "everything"}, "train.scope='everything' is not known"),
    ({"train.peft": "prefix"}, "train.peft='prefix' is not known; use one of none, adapter, lora"),
    ({"train.mode": "scribble"}, "train.mode='scribble' is not known"),
    ({"data.global_batch": 0}, "data.global_batch=0 must be an integer >= 1"),
    ({"data.global_batch": 6, "mesh.data": 4}, "mesh.data=4, mesh.fsdp=1, mesh.tensor=1"),
    ({"mesh.fsdp": 3}, "mesh.data=-1, mesh.fsdp=3"),
    ({"total_steps": 0}, "total_steps=0 must be an integer >= 1"),
    ({"data.name": "no_such_set"}, "data.name: no built data set 'no_such_set'"),
    ({"data.name": "phantoms/labeled_99"}, "'phantoms/labeled_99' is not a phantoms config"),
    ({"final_eval_split": "none"}, "final_eval_split='none': phantoms/labeled_64 has the splits train, validation, test"),
    ({"data.eval_split": "val"}, "data.eval_split='val': phantoms/labeled_64 has the splits train, validation, test"),
    ({"data.name": "phantoms/labeled_64,phantoms/unlabeled_64", "data.weights": "1"}, "data.weights='1' must be 2"),
    ({"init_checkpoint": "/no/such/checkpoint.pth"}, "init_checkpoint='/no/such/checkpoint.pth' does not exist"),
    ({"data.image_size": 60}, "data.image_size=60 must be a positive multiple of 8"),
    ({"optim.learning_rate": -1.0}, "optim: learning_rate must be"),
    ({"objective": "dino"}, "objective='dino' is not an objective"),
    ({"model.overrides.no_such_field": 3}, "model.overrides has unknown field(s) no_such_field"),
]


@pytest.mark.parametrize("changes,message", BAD, ids=[next(iter(c)) for c, _ in BAD])
def test_bad_values_name_the_field(changes, message, data_dir):
    cfg = tiny_config(**{"data.data_dir": data_dir}, **changes)
    with pytest.raises(ConfigError) as e:
        config_check.check(cfg, device_count=1, process_count=1, log=lambda m: None)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_objective_fields_are_checked():
    cases = [("mae", "mae.mask_ratio", 1.0, "mae.mask_ratio=1.0 must be between 0 and 1"),
             ("mae", "mae.decoder_heads", 5, "mae.decoder_dim=32 must be a multiple of 4 and of mae.decoder_heads=5"),
             ("interactive", "interactive.box_probability", 2.0, "interactive.box_probability=2.0 must be in [0, 1]"),
             ("interactive", "interactive.click_rounds", -1, "interactive.click_rounds=-1 must be >= 0"),
             ("interactive", "interactive.objects", "organ", "interactive.objects='organ' must be one of class, filled"),
             ("unet", "model.unet.features", (8,), "model.unet.features=(8,) must be two or more positive widths"),
             ("unet", "data.image_size", 66, "data.image_size=66 must be a multiple of 4"),
             ("unet", "train.mode", "box", "the UNet baseline takes no prompts")]
    for arg, key, value, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            config_check.check(tiny_config(arg, **{key: value}), log=lambda m: None, data=False)


def test_train_and_eval_commands_print_one_line(tmp_path, data_dir):
    result = run(train_command(tmp_path / "bad", data_dir, "--config.data.global_batch=0"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == ("error: data.global_batch=0 must be an integer >= 1")
    assert not (tmp_path / "bad").exists()  # found before anything was built or written
    result = run(train_command(tmp_path / "bad", data_dir, "--config.model.no_such_field=3"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: --config.model.no_such_field: the config has no field 'no_such_field'")
    result = run([sys.executable, os.path.join(ROOT, "eval.py"), "--config", os.path.join(ROOT, "configs", "tiny.py"),
                  "--workdir", str(tmp_path / "nothing")])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "is not a training run" in result.stderr.strip().splitlines()[-1]
    result = run([sys.executable, os.path.join(ROOT, "eval.py"), "--config", os.path.join(ROOT, "configs", "tiny.py"),
                  "--sam", "sam_vit_b.pth", "--model-type", "vit_b", "--output", str(tmp_path / "zero")])
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
        "error: sam_vit_b.pth is a SAM: it has no class heads, so train.mode=auto would score random ones; evaluate "
        "it from prompts: --config.train.mode=box (or point), with --clicks N for the click protocol")
