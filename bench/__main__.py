"""One command for every benchmark: each question's script, its result appended to BENCHMARKS.md.

    python -m bench                    # the CPU suite, every question at its documented size (~25 min, 2 cores)
    python -m bench --suite gpu        # the accelerator suite (bf16, fused attention, throughput, MFU)
    python -m bench --only train_step predictor_latency_vit_b
    python -m bench --list             # the questions and their commands
    python -m bench --no-write         # print, do not append

Each question is one script of ``bench/`` run in its own process (a benchmark never shares a compiled
program or a device with another); its last output is a JSON object, which is appended to the "Log"
section of BENCHMARKS.md with the date, the machine, the device and the exact command. A script that
fails is reported and the others still run; the exit status says whether all succeeded.
"""

from __future__ import annotations

if __name__ == "__main__":  # before JAX loads: transparent huge pages (samjax.utils.huge_pages)
    from samjax.utils import huge_pages

    huge_pages.reexec()

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_HEADER = "## Log (`python -m bench`)"

SUITES: dict[str, dict[str, str]] = {
    "cpu": {
        "predictor_latency_vit_b": "bench/predictor_latency.py --model-type vit_b --image-size 1024 --repeats 3",
        "predictor_latency_vit_t": "bench/predictor_latency.py --model-type vit_t --image-size 1024 --repeats 3",
        "train_step": "bench/train_step.py --model-type vit_b --image-size 256 --batch 2 --steps 5",
        "train_step_vit_t": "bench/train_step.py --model-type vit_t --image-size 1024 --batch 1 --steps 3",
        "train_profile": "bench/train_profile.py --model-type vit_b --image-size 256 --batch 2",
        "interactive_step": "bench/interactive_step.py --steps 24",
        "attention_profile": "bench/attention_profile.py --model-type vit_b --image-size 1024 --repeats 3",
        "step_memory_vit_h": "bench/step_memory.py --model-type vit_h --image-size 1024 --devices 8 --fsdp 8 "
                             "--per-device-batch 2 --remat --grid",
        "step_memory_mae_vit_h": "bench/step_memory.py --objective mae --model-type vit_h --image-size 1024 "
                                 "--devices 8 --fsdp 8 --per-device-batch 2 --remat",
        "pipeline_throughput": "bench/pipeline_throughput.py --image-size 1024 --workers 0 2",
        "phantoms_build": "bench/phantoms_build.py",
        "model_build": "bench/model_build.py --model-type vit_t vit_b vit_h --repeats 3",
    },
    "gpu": {
        "throughput_bf16": "bench/encoder_throughput.py --model-type vit_b vit_h --batch 8 --dtype bfloat16",
        "throughput_fp32": "bench/encoder_throughput.py --model-type vit_b --batch 8 --dtype float32",
        "train_step_vit_b_1024_bf16": "bench/train_step.py --model-type vit_b --image-size 1024 --batch 8 "
                                      "--dtype bfloat16 --steps 10 --skip-meta",
        "train_step_vit_b_1024_bf16_remat": "bench/train_step.py --model-type vit_b --image-size 1024 --batch 8 "
                                            "--dtype bfloat16 --remat --steps 10 --skip-meta",
        "predictor_latency_vit_b": "bench/predictor_latency.py --model-type vit_b --image-size 1024 --repeats 5 "
                                   "--skip-meta",
        "attention_profile": "bench/attention_profile.py --model-type vit_h --image-size 1024 --repeats 5",
    },
    # A tiny size: proves a script and this runner end to end (the tests run it); its numbers mean nothing.
    "smoke": {
        "encoder_throughput": "bench/encoder_throughput.py --model-type vit_t --image-size 64 --batch 1 "
                              "--repeats 1 --dtype bfloat16",
    },
}


def machine() -> str:
    cores = os.cpu_count()
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / 2**20
        memory = f", {mem:.0f} GiB"
    except (OSError, ValueError, IndexError):
        memory = ""
    return f"{platform.machine()}, {cores} cores{memory}"


def last_json(text: str):
    """The last JSON object a script printed (scripts may print progress lines before it)."""
    decoder = json.JSONDecoder()
    for start in reversed([i for i, ch in enumerate(text) if ch == "{"]):
        try:
            value, end = decoder.raw_decode(text[start:])
        except json.JSONDecodeError:
            continue
        if not text[start + end:].strip():
            return value
    return None


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(result: dict) -> str:
    """Scalars as one line, nested objects as two-column tables, lists of objects as tables."""
    scalars, blocks = [], []
    for key, value in result.items():
        if isinstance(value, dict):
            flat = {}
            for k, v in value.items():
                if isinstance(v, dict):
                    flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
                else:
                    flat[k] = v
            rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in flat.items())
            blocks.append(f"| {key} | |\n|---|---:|\n{rows}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            cols = list(dict.fromkeys(k for row in value for k in row))
            head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)
            body = "\n".join("| " + " | ".join(_fmt(row.get(c, "")) for c in cols) + " |" for row in value)
            blocks.append(f"{head}\n{body}")
        else:
            scalars.append(f"{key} = {_fmt(value)}")
    return "\n\n".join(([", ".join(scalars)] if scalars else []) + blocks)


def append(path: str, name: str, command: str, device: str, result: dict) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    where = " · ".join(x for x in (stamp, machine(), device) if x)
    section = (f"\n### {name} · {where}\n\n`python {command}`\n\n"
               f"{to_markdown(result)}\n")
    text = "# Benchmarks\n"
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    if LOG_HEADER not in text:
        text = text.rstrip("\n") + f"\n\n{LOG_HEADER}\n\nAppended by the benchmark command, newest last.\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.rstrip("\n") + "\n" + section)


def run(name: str, command: str, timeout: float | None) -> tuple[dict | None, str]:
    proc = subprocess.run([sys.executable, *shlex.split(command)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": ROOT})
    result = last_json(proc.stdout) if proc.returncode == 0 else None
    if result is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"{name}: failed (exit {proc.returncode}): {tail[0]}"
    return result, f"{name}: done"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="cpu", choices=sorted(SUITES))
    parser.add_argument("--only", nargs="+", default=None, help="question names (see --list)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print the results; do not touch BENCHMARKS.md")
    parser.add_argument("--output", default=os.path.join(ROOT, "BENCHMARKS.md"))
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per question")
    args = parser.parse_args(argv)
    suite = SUITES[args.suite]
    if args.list:
        for name, command in suite.items():
            print(f"{name}: python {command}")
        return 0
    names = args.only or list(suite)
    unknown = [n for n in names if n not in suite]
    if unknown:
        print(f"error: no question {', '.join(unknown)} in the {args.suite} suite; see python -m bench --list",
              file=sys.stderr)
        return 2
    failures = 0
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name}: python {suite[name]}", flush=True)
        try:
            result, message = run(name, suite[name], args.timeout)
        except subprocess.TimeoutExpired:
            result, message = None, f"{name}: stopped after {args.timeout:.0f} s"
        print(message, flush=True)
        if result is None:
            failures += 1
            continue
        print(json.dumps(result, indent=1))
        if not args.no_write:
            device = result.get("device", "")
            append(args.output, name, suite[name], str(device), result)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
