"""Test set-up: the reference helpers importable, CPU only, the longest files first, and one shared 1024
ViT-B reference."""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402

# The files that take minutes, longest first. ``--dist loadfile`` hands files to the workers in collection
# order once xdist's own reordering (files with the most tests first) is off, so starting with these keeps one
# long file from running alone at the end (longest job first).
LONGEST_FIRST = ("train/test_pretraining.py", "train/test_strategy.py", "train/test_resume.py",
                 "train/test_sharding.py", "test_study.py", "modeling/test_sam_parity.py",
                 "train/test_segment_scans.py", "convert_weights/test_convert_sam.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the collection order below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    root = os.path.dirname(__file__)

    def rank(item):
        path = os.path.relpath(str(item.path), root).replace(os.sep, "/")
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file and among the other files is kept


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
