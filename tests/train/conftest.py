"""Fixtures of the trainer's tests: the tiny phantoms data set and one uninterrupted reference run."""

import shutil

import pytest

from train_runs import losses, run, train_command


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    from samjax.data.builders import phantoms

    d = tmp_path_factory.mktemp("tfds")
    phantoms.build(str(d), "labeled_64")
    return str(d)


@pytest.fixture(scope="session")
def straight_run(tmp_path_factory, data_dir, worker_id):
    """The tiny config trained for 8 steps without interruption, evaluated on the test split at the end.

    Trained once per session, not once per xdist worker: the first worker to ask trains it under a file
    lock in the directory the workers share, the others wait and reuse it."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    workdir = shared / "straight_run"
    with FileLock(str(shared / "straight_run.lock")):
        if not (workdir / "eval" / "metrics.json").is_file():
            shutil.rmtree(workdir, ignore_errors=True)
            result = run(train_command(workdir, data_dir, "--config.final_eval_split=test"))
            assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="session")
def uninterrupted(straight_run):
    return losses(straight_run)
