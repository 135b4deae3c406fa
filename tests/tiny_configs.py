"""Tiny configs and batches the tests of training and evaluation share: ``configs/<name>``'s ``get_config``
with dotted-key changes, ``configs/tiny.py``'s sizes, and a random batch with square labels."""

import importlib.util
import os

import numpy as np

from samjax.run import model as run_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name, arg=None, **changes):
    """``configs/<name>``'s ``get_config(arg)`` with dotted-key ``changes`` applied."""
    import sys

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", name))
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, ROOT)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(ROOT)
    cfg = module.get_config(arg)
    for key, value in changes.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def tiny_config(arg="vit_b,encoder_decoder,none", **changes):
    return load_config("tiny.py", arg, **changes)


def fake_batch(cfg, num_classes=6, seed=0):
    rng = np.random.default_rng(seed)
    b, s = cfg.data.global_batch, cfg.data.image_size
    label = np.zeros((b, s, s), np.uint8)
    for i in range(b):
        y, x = rng.integers(4, s // 2, 2)
        label[i, y:y + s // 3, x:x + s // 3] = rng.integers(1, num_classes)
    low = run_model.model_spec(cfg, num_classes).low_res_size
    step = s // low
    return {"image": rng.integers(0, 255, (b, s, s, 3), np.uint8), "valid": np.ones((b, s, s), bool),
            "label": label, "low_res_label": label[:, step // 2::step, step // 2::step]}
