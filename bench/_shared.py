"""What the benchmark scripts share: the median time of a call, and loading a config of ``configs/``."""

from __future__ import annotations

import importlib.util
import os
import statistics
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_seconds(fn, repeats: int) -> float:
    """The median wall time of ``repeats`` calls of ``fn()`` (which must wait for its own result)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_config(name: str, arg: str | None = None):
    """``configs/<name>.py``'s ``get_config(arg)``, as ``--config configs/<name>.py:<arg>`` gives it."""
    path = os.path.join(ROOT, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{name}_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def matmul_gflops(repeats: int = 5, dtype: str = "float32") -> float:
    """This machine's matrix-product rate, GFLOP/s: a jitted 4096x768 @ 768x3072 product (a ViT-B MLP's
    shape), the median of ``repeats``. The denominator of every "fraction of the limit" in ``bench/``."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((4096, 768), dtype)
    b = jnp.ones((768, 3072), dtype)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    seconds = median_seconds(lambda: f(a, b).block_until_ready(), repeats)
    return 2 * 4096 * 768 * 3072 / seconds / 1e9


# Dense bf16 peak of the cards a GPU session may get, in TFLOP/s (for model FLOPs utilization).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_tflops(device_kind: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k in device_kind), None)


def limit_gflops() -> tuple[float, str]:
    """The rate every "fraction of the limit" divides by, GFLOP/s, and what it is: on a CPU this machine's
    fp32 matrix-product rate measured now (:func:`matmul_gflops`); on a known card its dense bf16 peak
    times the devices; on another accelerator its measured bf16 matrix-product rate."""
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        return matmul_gflops(), "fp32 matmul measured in this run"
    peak = peak_tflops(device.device_kind)
    if peak:
        return peak * 1e3 * jax.device_count(), f"{device.device_kind} dense bf16 peak x {jax.device_count()}"
    return matmul_gflops(dtype="bfloat16"), "bf16 matmul measured in this run"


def xla_flops(jitted, *args, **kwargs) -> float:
    """The FLOPs XLA's cost analysis counts for one call of ``jitted(*args, **kwargs)`` (compiled once)."""
    cost = jitted.lower(*args, **kwargs).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
        cost = cost[0]
    return float(cost["flops"])


def meta_sam(model_type: str, seed: int = 0):
    """Meta's PyTorch SAM (``mobile_sam`` for vit_t) at 1024 with its default initialization drawn from
    ``seed``, in eval mode, or None when the package is missing; and the seconds it took to build."""
    try:
        import torch
        if model_type == "vit_t":
            from mobile_sam import sam_model_registry as registry
        else:
            from segment_anything import sam_model_registry as registry
    except ImportError:
        return None, None
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = registry[model_type]().eval()
    return model, time.perf_counter() - start


def same_weights(meta_model, model_type: str, path: str, dtype=None):
    """samjax's model holding ``meta_model``'s weights, through one ``.pth`` written at ``path`` and read by
    samjax's own checkpoint conversion (what a user does with Meta's released file)."""
    import torch

    import samjax

    torch.save(meta_model.state_dict(), path)
    return samjax.sam_model_registry[model_type](checkpoint=path, **({} if dtype is None else {"dtype": dtype}))
