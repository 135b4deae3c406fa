"""Test set-up: the reference helpers importable, CPU only, and one shared 1024 ViT-B reference."""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402


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
