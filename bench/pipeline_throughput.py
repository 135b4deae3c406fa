"""Examples per second out of the training pipeline, and per host core: phantoms 256 -> SAM's 1024 input,
with the default augmentations and prompt simulation, in this process and with worker processes.

    python bench/pipeline_throughput.py [--image-size 1024] [--workers 0 2] [--batches 20]

Cores: the process's own with ``workers=0`` (1), else one per worker. ``cores_to_feed`` says how many
such cores keep one accelerator busy at the throughput targets of BENCHMARKS.md (200 img/s ViT-B,
50 img/s ViT-H), at the best examples/s per core measured.
"""

import argparse
import json
import os
import tempfile
import time

from samjax.data import pipeline
from samjax.data.augment import augmentations
from samjax.data.prompts import SimulatePrompts

TARGETS = {"vit_b_200_img_s": 200.0, "vit_h_50_img_s": 50.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as data_dir:
        source = pipeline.open_source("phantoms/labeled_256", "train", data_dir)
        ds = pipeline.train_dataset([source], global_batch=args.batch, image_size=args.image_size, seed=0,
                                    augment=augmentations(), prompts=SimulatePrompts(num_objects=5))
        for workers in args.workers:
            it = iter(pipeline.to_iterable(ds, workers=workers))
            next(it)  # start-up (worker processes) is not counted
            start = time.perf_counter()
            for _ in range(args.batches):
                next(it)
            rate = args.batches * args.batch / (time.perf_counter() - start)
            cores = max(1, workers)
            rows.append({"workers": workers, "examples_per_s": rate, "cores": cores, "per_core": rate / cores})
    best = max(r["per_core"] for r in rows)
    print(json.dumps({"image_size": args.image_size, "batch": args.batch, "host_cores": os.cpu_count(),
                      "rows": rows, "cores_to_feed": {k: round(v / best, 1) for k, v in TARGETS.items()}},
                     indent=1))


if __name__ == "__main__":
    main()
