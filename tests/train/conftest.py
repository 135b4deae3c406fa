"""Fixtures of the trainer's tests: the tiny phantoms data set and one uninterrupted reference run."""

import pytest

from train_runs import losses, run, train_command


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    from samjax.data.builders import phantoms

    d = tmp_path_factory.mktemp("tfds")
    phantoms.build(str(d), "labeled_64")
    return str(d)


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("straight")
    result = run(train_command(workdir, data_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return losses(workdir)
