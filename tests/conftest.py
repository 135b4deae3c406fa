"""Test set-up: the reference helpers importable, CPU only, the longest files first, the tiny phantoms data set,
the trained runs several test files share (each trained once per session), and one shared 1024 ViT-B
reference."""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(__file__))

import shutil  # noqa: E402

import pytest  # noqa: E402

from train_runs import INTERACTIVE, losses, run, train_command, xla_flags  # noqa: E402

os.environ["XLA_FLAGS"] = xla_flags()  # compiled fast: see train_runs.FAST_COMPILE

# Transparent huge pages for XLA's temporary buffers (samjax.utils.huge_pages), as the commands re-execute with:
# glibc reads the tunable at a process's start, so the xdist workers and the commands the tests start get it.
from samjax.utils import huge_pages  # noqa: E402

if huge_pages.needed():
    os.environ["GLIBC_TUNABLES"] = huge_pages.environment()["GLIBC_TUNABLES"]


def _own_cpus() -> None:
    """Each xdist worker (and what it starts) gets its share of the CPUs: XLA and PyTorch size their thread
    pools to the CPUs a process may use, so two workers on two cores no longer run four busy threads."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= count:
        os.sched_setaffinity(0, cpus[int(worker.removeprefix("gw")) % count::count])


_own_cpus()

# The files that take minutes, longest first. ``--dist loadfile`` hands files to the workers in collection
# order once xdist's own reordering (files with the most tests first) is off, so starting with these keeps one
# long file from running alone at the end (longest job first).
LONGEST_FIRST = ("train/test_pretraining.py", "train/test_strategy.py", "train/test_resume.py",
                 "train/test_sharding.py", "test_study.py", "modeling/test_sam_parity.py",
                 "train/test_segment_scans.py", "convert_weights/test_convert_sam.py")
# Files that use a run another file's worker trains (``interactive_run``): last, so no worker waits for it.
LAST = ("annotate/test_trained.py",)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the collection order below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    root = os.path.dirname(__file__)

    def rank(item):
        path = os.path.relpath(str(item.path), root).replace(os.sep, "/")
        if path in LAST:
            return len(LONGEST_FIRST) + 1 + LAST.index(path)
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file and among the other files is kept


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The tiny labeled phantoms (``phantoms/labeled_64``), built once per worker."""
    from samjax.data.builders import phantoms

    d = tmp_path_factory.mktemp("tfds")
    phantoms.build(str(d), "labeled_64")
    return str(d)


def _shared_run(tmp_path_factory, worker_id, name: str, command: list, optimized: bool = False) -> object:
    """``command`` run once per session, not once per xdist worker: the first worker to ask trains it under a
    file lock in the directory the workers share, the others wait and reuse it."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    workdir = shared / name
    with FileLock(str(shared / f"{name}.lock")):
        if not (workdir / "eval" / "metrics.json").is_file():
            shutil.rmtree(workdir, ignore_errors=True)
            result = run([str(workdir) if part == "WORKDIR" else part for part in command], optimized=optimized)
            assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="session")
def straight_run(tmp_path_factory, data_dir, worker_id):
    """The tiny config (auto mode) trained for 8 steps without interruption, evaluated on the test split."""
    return _shared_run(tmp_path_factory, worker_id, "straight_run",
                       train_command("WORKDIR", data_dir, "--config.final_eval_split=test"))


@pytest.fixture(scope="session")
def uninterrupted(straight_run):
    return losses(straight_run)


@pytest.fixture(scope="session")
def interactive_run(tmp_path_factory, data_dir, worker_id):
    """The tiny interactive config trained from random weights (``train_runs.INTERACTIVE``), validated before and
    after, evaluated with clicks on the test split: the interactively trained model of several tests. Compiled
    optimized: its hundreds of steps run twice as fast."""
    command = train_command("WORKDIR", data_dir, *INTERACTIVE, arg="interactive")
    return _shared_run(tmp_path_factory, worker_id, "interactive_run", command, optimized=True)


@pytest.fixture(scope="session")
def meta_vit_b_1024(tmp_path_factory):
    """Meta's full-size ViT-B SAM (1024), every tensor random, and its state dict saved as a .pth."""
    import torch

    from reference import meta_sam_model
    from samjax.model_spec import get_spec

    spec = get_spec("vit_b")
    model = meta_sam_model(spec, seed=7)
    path = tmp_path_factory.mktemp("meta") / "sam_vit_b_random.pth"
    torch.save(model.state_dict(), path)
    return spec, model, str(path)
