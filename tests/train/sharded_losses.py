"""Prints, as one JSON line, the losses of 3 train steps of the tiny config on each given mesh (run as a
subprocess with 8 simulated CPU devices): ``python sharded_losses.py CONFIG_ARG DATA,FSDP,TENSOR ...``,
``CONFIG_ARG`` being ``configs/tiny.py``'s argument (a grid point ``encoder,scope,peft``, ``mae`` or
``interactive``). A mesh of one device uses the first device only."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from train_runs import xla_flags  # noqa: E402

os.environ["XLA_FLAGS"] = xla_flags(devices=8)
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_configs import fake_batch, tiny_config  # noqa: E402

from samjax import parallel  # noqa: E402
from samjax.data.prompts import SimulatePrompts  # noqa: E402
from samjax.train import objectives as objective  # noqa: E402
from samjax.train.state import Trainable  # noqa: E402

CLASSES = ("background", "body", "liver", "kidney", "bone", "lesion")


def batch(cfg, obj, seed):
    raw = fake_batch(cfg, seed=seed)
    if obj.name == "interactive":
        simulate = SimulatePrompts(num_objects=int(cfg.train.num_objects), num_classes=len(CLASSES), full_masks=True)
        rows = [simulate.random_map({k: v[i] for k, v in raw.items()}, np.random.default_rng(seed * 100 + i))
                for i in range(len(raw["image"]))]
        raw = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    return {k: v for k, v in raw.items() if k in obj.train_keys(cfg)}


def losses_on(arg, data, fsdp, tensor):
    short = {"interactive.click_rounds": 2, "interactive.no_click_rounds": 1} if arg == "interactive" else {}
    cfg = tiny_config(arg, **{"model.drop_path": 0.1, **short})  # rounds: 2 clicks, the last none
    n = data * fsdp * tensor
    mesh = parallel.make_mesh(data, fsdp, tensor, devices=jax.devices()[:n])
    obj = objective.get(cfg)
    model = obj.build_model(cfg, objective.TrainData((), None, CLASSES), log=lambda m: None)
    trainable = Trainable(model, obj.trainable_filter(cfg), cfg, mesh, obj.loss, log=lambda m: None)
    state, frozen = trainable.init_state(), trainable.frozen()
    out = []
    for i in range(3):
        state, metrics = trainable.step_fn(state, frozen, parallel.global_batch(batch(cfg, obj, i), mesh))
        out.append(float(metrics["loss"]))
    leaves = jax.tree.leaves(state.params)
    return {"losses": out, "specs": sorted({str(x.sharding.spec) for x in leaves}),
            "devices": len(leaves[0].sharding.device_set),
            "param_norm": float(np.sqrt(sum(float((np.asarray(x) ** 2).sum()) for x in leaves)))}


if __name__ == "__main__":
    arg = sys.argv[1]
    meshes = [tuple(int(v) for v in m.split(",")) for m in sys.argv[2:]]
    print(json.dumps({",".join(map(str, m)): losses_on(arg, *m) for m in meshes}))
