"""Runs of ``train.py`` on the tiny config in subprocesses, shared by the trainer's tests."""

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def train_command(workdir, data_dir, *extra):
    return [sys.executable, os.path.join(ROOT, "train.py"), "--config", os.path.join(ROOT, "configs", "tiny.py"),
            "--workdir", str(workdir), f"--config.data.data_dir={data_dir}", "--config.total_steps=8",
            "--config.checkpoint_every_steps=2", *extra]


def losses(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def env():
    """CPU, and one compilation cache for all the runs of the session (they compile the same programs)."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": CACHE,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


CACHE = tempfile.mkdtemp(prefix="samjax-test-xla-")


def run(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600, **kw)
