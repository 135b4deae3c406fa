"""Two processes (one CPU device each, joined by jax.distributed over gloo) train with the losses of
one process: each host reads its slice of every global batch, and checkpoints are written jointly."""

import json
import os
import socket
import subprocess

import numpy as np

from train_runs import ROOT, env, losses, train_command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_losses_of_one(tmp_path, data_dir, uninterrupted):
    workdir = tmp_path / "two"
    address = f"localhost:{_free_port()}"
    procs = [subprocess.Popen(train_command(workdir, data_dir, f"--coordinator_address={address}",
                                            "--num_processes=2", f"--process_id={i}"),
                              cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "2 process(es), 2 cpu device(s)" in outputs[0][0]
    two = losses(workdir)
    assert sorted(two) == sorted(uninterrupted)
    np.testing.assert_allclose([two[s] for s in sorted(two)], [uninterrupted[s] for s in sorted(two)], rtol=1e-5)
    assert sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()) == [4, 6, 8]
    state = json.load(open(workdir / "config.json"))
    assert state["total_steps"] == 8
