"""Time to build the built-in ``phantoms`` data set at its default size (500 slices of 256x256).

    python bench/phantoms_build.py [--config labeled_256]
"""

import argparse
import json
import tempfile
import time

from samjax.data.builders import phantoms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="labeled_256")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        start = time.perf_counter()
        builder = phantoms.build(data_dir, args.config)
        elapsed = time.perf_counter() - start
    counts = {s: builder.info.splits[s].num_examples for s in builder.info.splits}
    print(json.dumps({"data_set": f"phantoms/{args.config}", "examples": counts, "build_s": elapsed}, indent=1))


if __name__ == "__main__":
    main()
