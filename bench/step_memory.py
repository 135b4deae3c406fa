"""Memory per device of the jitted training step, by the compiled program's own accounting.

    python bench/step_memory.py --model-type vit_h --image-size 1024 --devices 8 --fsdp 8 --per-device-batch 2 \
        --remat --grid

Nothing is allocated or run: the model is built abstractly (``nnx.eval_shape``), the step is lowered
on a mesh of ``--devices`` devices (simulated CPU devices when the host has fewer) and compiled, and
XLA's ``memory_analysis()`` of the per-device program gives its arguments (trainable parameters,
optimizer state, frozen parameters, the batch), outputs (aliased to the donated arguments) and
temporaries (activations, gradients). Peak per device = arguments + outputs - aliased + temporaries.
``--grid`` runs the study's 6 scope x PEFT configurations of the encoder (auto mode, fp32 masters);
``--objective mae`` the MAE pretraining step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from _shared import load_config


def _parse():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-type", default="vit_h")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--devices", type=int, default=8, help="simulated CPU devices when the host has fewer")
    parser.add_argument("--fsdp", type=int, default=8)
    parser.add_argument("--tensor", type=int, default=1)
    parser.add_argument("--per-device-batch", type=int, default=2)
    parser.add_argument("--remat", action="store_true")
    parser.add_argument("--dtype", default="float32", help="compute dtype (float32 | bfloat16); masters stay fp32")
    parser.add_argument("--grid", action="store_true", help="the 6 scope x PEFT configurations")
    parser.add_argument("--scope", default="encoder_decoder")
    parser.add_argument("--peft", default="none")
    parser.add_argument("--objective", default="finetune", help="finetune | mae")
    return parser.parse_args()


def measure(args, scope: str, peft: str) -> dict:
    import jax
    import numpy as np
    from flax import nnx

    from samjax import parallel
    from samjax.train import objectives
    from samjax.train.objectives import TrainData
    from samjax.train.state import Trainable

    if args.objective == "mae":
        cfg = load_config("mae", args.model_type)
    else:
        cfg = load_config("finetune", f"{args.model_type},{scope},{peft}")
    n = jax.device_count()
    cfg.data.image_size = args.image_size
    cfg.data.global_batch = args.per_device_batch * n
    cfg.model.remat = args.remat
    cfg.model.dtype = args.dtype
    cfg.init_checkpoint = ""
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = -1, args.fsdp, args.tensor
    objective = objectives.get(cfg)
    mesh = parallel.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    data = TrainData(sources=(), weights=None, class_names=("background", "organ"))
    model = nnx.eval_shape(lambda: objective.build_model(cfg, data, log=lambda *_: None))
    trainable = Trainable(model, objective.trainable_filter(cfg), cfg, mesh, objective.loss, log=lambda *_: None)
    frozen = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                          trainable._host_frozen, trainable.frozen_shardings)
    s, b = args.image_size, cfg.data.global_batch
    sharding = parallel.batch_sharding(mesh)
    shapes = {"image": ((b, s, s, 3), np.uint8), "valid": ((b, s, s), np.bool_)}
    if args.objective != "mae":
        shapes["low_res_label"] = ((b, s // 4, s // 4), np.int32)
    batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for k, (shape, dtype) in shapes.items()}
    start = time.perf_counter()
    compiled = trainable.step_fn.lower(trainable.abstract_state(), frozen, batch).compile()
    stats = compiled.memory_analysis()
    gib = 2.0**30
    arguments, outputs = stats.argument_size_in_bytes / gib, stats.output_size_in_bytes / gib
    alias, temp = stats.alias_size_in_bytes / gib, stats.temp_size_in_bytes / gib
    return {"scope": scope, "peft": peft, "trainable_params": trainable.param_count,
            "frozen_params": trainable.frozen_count, "arguments_gib": arguments, "outputs_gib": outputs,
            "aliased_gib": alias, "temporaries_gib": temp, "peak_gib": arguments + outputs - alias + temp,
            "compile_s": time.perf_counter() - start}


def main() -> None:
    args = _parse()
    if "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    import jax

    if jax.device_count() < args.devices:
        raise SystemExit(f"error: {jax.device_count()} devices, --devices={args.devices} asked")
    grid = [(scope, peft) for scope in ("decoder", "encoder_decoder") for peft in ("none", "adapter", "lora")]
    runs = grid if args.grid else [(args.scope, args.peft)]
    rows = []
    for scope, peft in runs:
        row = measure(args, scope, peft)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"device": str(jax.devices()[0].device_kind), "devices": jax.device_count(),
                      "model_type": args.model_type, "image_size": args.image_size, "fsdp": args.fsdp,
                      "per_device_batch": args.per_device_batch, "remat": args.remat, "dtype": args.dtype,
                      "objective": args.objective, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
