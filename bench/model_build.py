"""How long building a randomly initialized SAM takes: samjax against Meta's PyTorch builder, same process.

    python bench/model_build.py --model-type vit_b vit_h --repeats 3

Reported per model: the first samjax build of the process (``first``: JAX's start-up and any compilation
included), the median of ``repeats`` later builds, the same two for PyTorch (``segment_anything``,
MobileSAM's ``mobile_sam`` for vit_t), their ratios (PyTorch / samjax, above 1: samjax faster), and the
abstract build that loading a checkpoint starts from (shapes only). samjax draws the initial values with
NumPy on the host (``samjax.modeling.keys.HostKeys``); ``--jax-keys`` times the JAX-drawn build instead,
which compiles each initializer (the form before the host draws).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from flax import nnx  # noqa: E402

from _shared import median_seconds  # noqa: E402
from samjax.build_sam import abstract_sam, build_sam_from_spec  # noqa: E402
from samjax.model_spec import get_spec  # noqa: E402
from samjax.modeling.keys import HostKeys  # noqa: E402


def timed(fn) -> float:
    """Seconds of one ``fn()`` whose result is ready (the previous result collected first, untimed)."""
    gc.collect()
    start = time.perf_counter()
    out = fn()
    if isinstance(out, nnx.Module):
        jax.block_until_ready(nnx.state(out))
    return time.perf_counter() - start


def torch_builder(model_type: str):
    try:
        if model_type == "vit_t":
            from mobile_sam import sam_model_registry
        else:
            from segment_anything import sam_model_registry
    except ImportError:
        return None
    return lambda: sam_model_registry[model_type]()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-type", nargs="+", default=["vit_b"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--jax-keys", action="store_true", help="draw with JAX (nnx.Rngs) instead of NumPy")
    args = p.parse_args(argv)
    results = {}
    for model_type in args.model_type:
        spec = get_spec(model_type)
        keys = (lambda seed: nnx.Rngs(seed)) if args.jax_keys else HostKeys

        def build(seed=[0]):  # a new seed each time: nothing is reused between builds
            seed[0] += 1
            return build_sam_from_spec(spec, rngs=keys(seed[0]))

        row = {"samjax_first_s": timed(build)}
        row["samjax_s"] = median_seconds(lambda: timed(build), args.repeats)
        row["abstract_s"] = median_seconds(lambda: timed(lambda: abstract_sam(spec)), args.repeats)
        torch_build = torch_builder(model_type)
        if torch_build is not None:
            row["pytorch_first_s"] = timed(torch_build)
            row["pytorch_s"] = median_seconds(lambda: timed(torch_build), args.repeats)
            row["ratio_first"] = row["pytorch_first_s"] / row["samjax_first_s"]
            row["ratio"] = row["pytorch_s"] / row["samjax_s"]
        results[model_type] = {k: round(v, 3) for k, v in row.items()}
        print(model_type, results[model_type], flush=True)
    out = {"draws": "jax" if args.jax_keys else "numpy", **results}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
