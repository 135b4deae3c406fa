"""Prints the losses of 3 train steps of the tiny config on a given mesh, as JSON (run as a subprocess
with simulated CPU devices: ``python sharded_losses.py DATA FSDP TENSOR [DEVICES] [ENCODER,SCOPE,PEFT]``)."""

import json
import os
import sys

data, fsdp, tensor = (int(v) for v in sys.argv[1:4])
devices = int(sys.argv[4]) if len(sys.argv) > 4 else 8
grid = sys.argv[5] if len(sys.argv) > 5 else "vit_b,encoder_decoder,none"
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_strategy import fake_batch, tiny_config  # noqa: E402

from samjax import parallel  # noqa: E402
from samjax.train import strategy, supervised  # noqa: E402
from samjax.train.state import Trainable  # noqa: E402

cfg = tiny_config(grid, **{"model.drop_path": 0.1})
n = data * fsdp * tensor
mesh = parallel.make_mesh(data, fsdp, tensor, devices=jax.devices()[:n])
model = strategy.build_model(cfg, 6, log=lambda m: None)
trainable = Trainable(model, strategy.trainable_filter(cfg), cfg, mesh, supervised.loss_fn("auto"), log=lambda m: None)
state, frozen = trainable.init_state(), trainable.frozen()
out = []
for i in range(3):
    state, metrics = trainable.step_fn(state, frozen, parallel.global_batch(fake_batch(cfg, seed=i), mesh))
    out.append(float(metrics["loss"]))
specs = sorted({str(x.sharding.spec) for x in jax.tree.leaves(state.params)})
print(json.dumps({"losses": out, "specs": specs, "devices": len(jax.tree.leaves(state.params)[0].sharding.device_set),
                  "param_norm": float(np.sqrt(sum(float((np.asarray(x) ** 2).sum()) for x in jax.tree.leaves(state.params))))}))
