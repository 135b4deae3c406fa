"""The study runner: a grid of training strategies (``configs/study.py``), each a ``train.py`` run evaluated on
the test split, and one comparison table.

    python -m samjax.study --config configs/study.py --workdir runs/study
    python -m samjax.study --config configs/study.py --workdir runs/study --only 'setup1/*' --only unet
    python -m samjax.study --config configs/study.py --workdir runs/study --table    # the table of what finished

Every run is a separate process, ``train.py --config <entry's config> --workdir <workdir>/<run> --config.*``,
its output in ``<run>/train.log``; an entry with ``evaluate`` (the zero-shot baselines) runs
``eval.py`` on its config's model as loaded instead, with those flags, into ``<run>/eval``. A run whose ``eval/metrics.json`` exists is finished and skipped; one
that was killed continues from its last checkpoint (the trainer resumes), so a study started again goes on
where it stopped. A failed run is reported with its log and the others go on (runs that start from it are
skipped); the exit status says whether all finished. On a cluster, give each job a slice of the grid with
``--only`` (shell patterns on run names) and the same ``--workdir``, then ``--table`` once. ``--set KEY=VALUE``
changes every run (refused, naming them, when some entry's config has no such field) and ``--set
PATTERN:KEY=VALUE`` only the runs matching the pattern; each says which runs it changed.

Written into ``--workdir``: ``study.csv`` (one row per run), ``study.md`` (one row per strategy and data
budget: mean and standard deviation over seeds of Dice, HD95 and NSD, trainable parameters, train time)
and ``study.png`` (mean Dice per row).
"""

from __future__ import annotations

if __name__ == "__main__":  # before JAX loads: transparent huge pages (samjax.utils.huge_pages)
    from samjax.utils import huge_pages

    huge_pages.reexec()

import argparse
import csv
import dataclasses
import fnmatch
import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT = os.path.join("eval", "metrics.json")


class StudyError(ValueError):
    """A bad study config or command line: one line naming the value and the fix."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the grid: ``group`` (its strategy), data budget and seed, config and overrides."""

    name: str
    group: str
    few_shot: int
    seed: int
    config: str
    overrides: tuple[tuple[str, object], ...]
    after: str = ""  # the run whose workdir is this run's init_checkpoint
    evaluate: tuple[str, ...] | None = None  # an evaluation only (zero-shot): eval.py's extra flags


def load_study(spec: str):
    """``path[:arg]`` -> the study config (``get_config(arg)`` of that file)."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise StudyError(f"--config {path} does not exist; e.g. --config configs/study.py")
    try:
        return _get_config(path, arg, "study_config"), os.path.dirname(os.path.abspath(path))
    except ValueError as e:
        raise StudyError(f"--config {spec}: {e}") from None


def expand(cfg, extra: dict | None = None) -> list[Run]:
    """The grid's runs in order: each entry x its data budgets x (seeds for few-shot budgets); ``extra``
    overrides every run (the command line's ``--set``)."""
    runs, names = [], set()
    for entry in cfg.runs:
        entry = dict(entry)
        for key in ("name", "config"):
            if not entry.get(key):
                raise StudyError(f"a study entry has no {key!r}: {entry}")
        if entry.get("after") and entry["after"] not in {r.group for r in runs}:
            raise StudyError(f"run {entry['name']}: after={entry['after']!r} names no earlier entry of the study")
        budgets = tuple(entry.get("few_shot", cfg.few_shot))
        for shots in budgets:
            for seed in (cfg.seeds if shots else cfg.seeds[:1]):
                suffix = "full" if not shots else f"{shots}shot-seed{seed}"
                name = entry["name"] if budgets == (0,) else f"{entry['name']}/{suffix}"
                if name in names:
                    raise StudyError(f"two runs of the study are named {name!r}")
                names.add(name)
                shorter = dict(cfg.get("few_shot_set", {})) if shots else {}
                overrides = {**dict(cfg.get("set", {})), **shorter, **dict(entry.get("set", {})), **dict(extra or {})}
                overrides.update({"data.few_shot": int(shots), "seed": int(seed)})
                evaluate = entry.get("evaluate")
                runs.append(Run(name, entry["name"], int(shots), int(seed), entry["config"],
                                tuple(sorted(overrides.items())), entry.get("after", ""),
                                None if evaluate is None else tuple(str(a) for a in evaluate)))
    return runs


def _get_config(path: str, arg: str, name: str):
    """``get_config(arg)`` of the config file ``path``, loaded as module ``name``."""
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def parse_set(text: str) -> tuple[str | None, str, str]:
    """``--set [PATTERN:]KEY=VALUE`` -> ``(pattern or None, key, value)``; PATTERN is a shell pattern of run or
    entry names (``'setup2/*'``)."""
    left, eq, value = text.partition("=")
    pattern, colon, key = left.rpartition(":")
    if not eq or not key.strip() or re.search(r"[^\w.]", key.strip()):
        raise StudyError(f"--set {text}: give KEY=VALUE or PATTERN:KEY=VALUE, e.g. --set data.name=liver or "
                         "--set 'setup2/*:optim.learning_rate=1e-4'")
    return (pattern if colon else None), key.strip(), value


def _config_has(config_dir: str, spec: str, key: str, cache: dict) -> bool:
    """Whether the config ``file[:arg]`` (relative to ``config_dir``) has the field ``key`` (dotted)."""
    if spec not in cache:
        file, _, arg = spec.partition(":")
        if ROOT not in sys.path:  # entry configs import the configs package
            sys.path.insert(0, ROOT)
        cache[spec] = _get_config(os.path.join(config_dir, file), arg, f"study_entry_{len(cache)}")
    node = cache[spec]
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


def apply_sets(runs: list[Run], sets: list[str], config_dir: str, log=print) -> list[Run]:
    """The command line's ``--set`` values on the runs they name (all, or those matching their pattern). A key
    that some touched run's config lacks is refused (train.py would fail on it), naming those runs; each
    ``--set`` says in one line which runs it changed."""
    cache: dict = {}
    for text in sets:
        pattern, key, value = parse_set(text)
        if key in ("data.few_shot", "seed"):
            raise StudyError(f"--set {text}: {key} is the study's own (its few_shot budgets and seeds); change them "
                             "in the study config")
        touched = [r for r in runs if pattern is None or fnmatch.fnmatch(r.name, pattern)
                   or fnmatch.fnmatch(r.group, pattern)]
        if not touched:
            raise StudyError(f"--set {text}: {pattern!r} matches no run; the entries are: "
                             f"{', '.join(dict.fromkeys(r.group for r in runs))}")
        lacking = list(dict.fromkeys(r.group for r in touched if not _config_has(config_dir, r.config, key, cache)))
        if lacking:
            raise StudyError(f"--set {text}: {', '.join(lacking[:4])}{' ...' if len(lacking) > 4 else ''} "
                             f"({len(lacking)} entr{'y' if len(lacking) == 1 else 'ies'}) have no {key} in their "
                             f"config; scope it to the entries it is meant for: --set 'PATTERN:{key}={value}'")
        names = {id(r) for r in touched}
        runs = [dataclasses.replace(r, overrides=tuple(sorted({**dict(r.overrides), key: value}.items())))
                if id(r) in names else r for r in runs]
        groups = list(dict.fromkeys(r.group for r in touched))
        log(f"--set {text}: {len(touched)} of {len(runs)} runs ({', '.join(groups[:6])}"
            f"{f' and {len(groups) - 6} more entries' if len(groups) > 6 else ''})")
    return runs


def command(run: Run, workdir: str, config_dir: str, pretrained: str | None) -> list[str]:
    file, _, arg = run.config.partition(":")
    config = os.path.join(config_dir, file) + (f":{arg}" if arg else "")
    if run.evaluate is not None:  # a model as loaded, evaluated without training (eval.py without --workdir)
        cmd = [sys.executable, os.path.join(ROOT, "eval.py"), "--config", config,
               "--output", os.path.join(run_dir(workdir, run), "eval"), *run.evaluate]
    else:
        cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--config", config, "--workdir", run_dir(workdir, run)]
    cmd += [f"--config.{k}={v}" for k, v in run.overrides]
    if pretrained:
        cmd.append(f"--config.init_checkpoint={pretrained}")
    return cmd


def run_dir(workdir: str, run: Run | str) -> str:
    return os.path.join(workdir, run.name if isinstance(run, Run) else run)


def finished(workdir: str, name: str) -> bool:
    return os.path.isfile(os.path.join(run_dir(workdir, name), RESULT))


def _pretrained_dir(workdir: str, runs: list[Run], run: Run) -> str | None:
    """The workdir of the (full-data) run of ``run.after``, or None."""
    if not run.after:
        return None
    source = [r for r in runs if r.group == run.after]
    return run_dir(workdir, source[0]) if source else None


def execute(run: Run, cmd: list[str], workdir: str) -> tuple[bool, str]:
    """Runs one training; returns (ok, message). Its output goes to ``<run>/train.log``, its wall time and
    trainable-parameter count (from the trainer's log) to ``<run>/study.json``."""
    out = run_dir(workdir, run)
    os.makedirs(out, exist_ok=True)
    log = os.path.join(out, "train.log")
    start = time.time()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    seconds = time.time() - start
    text = open(log, errors="replace").read()
    params = re.findall(r"trainable parameters: ([\d,]+) of", text)
    info_path = os.path.join(out, "study.json")
    info = json.load(open(info_path)) if os.path.isfile(info_path) else {"seconds": 0.0}
    info["seconds"] = float(info.get("seconds", 0.0)) + seconds  # a resumed run adds its parts
    if params:
        info["trainable_params"] = int(params[-1].replace(",", ""))
    info["command"] = cmd
    with open(info_path, "w") as f:
        json.dump(info, f, indent=2)
    if code == 0 and finished(workdir, run.name):
        return True, f"{run.name}: done in {seconds:.0f} s"
    last = [line for line in text.splitlines() if line.strip()][-1:] or ["(no output)"]
    return False, f"{run.name}: failed (exit {code}), see {log}: {last[0][:200]}"


def collect(workdir: str, runs: list[Run]) -> list[dict]:
    """One row per finished run: its strategy, budget, seed and scores."""
    rows = []
    for run in runs:
        if not finished(workdir, run.name):
            continue
        metrics = json.load(open(os.path.join(run_dir(workdir, run), RESULT)))
        info_path = os.path.join(run_dir(workdir, run), "study.json")
        info = json.load(open(info_path)) if os.path.isfile(info_path) else {}
        rows.append({"run": run.name, "strategy": run.group, "data": _budget(run.few_shot), "seed": run.seed,
                     "dice": metrics.get("mean_dice"), "hd95": metrics.get("mean_hd95"),
                     "nsd": metrics.get("mean_nsd"), "trainable_params": info.get("trainable_params"),
                     "train_seconds": info.get("seconds")})
    return rows


def _budget(shots: int) -> str:
    return "full" if not shots else f"{shots}-shot"


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values))


def summarize(rows: list[dict]) -> list[dict]:
    """One row per strategy and data budget, in the grid's order: means and standard deviations over seeds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["strategy"], r["data"]), []).append(r)
    out = []
    for (strategy, data), members in groups.items():
        row = {"strategy": strategy, "data": data, "runs": len(members)}
        for key in ("dice", "hd95", "nsd"):
            row[key], row[f"{key}_std"] = _mean_std([m[key] for m in members])
        row["trainable_params"] = members[0]["trainable_params"]
        row["train_seconds"], _ = _mean_std([m["train_seconds"] for m in members])
        out.append(row)
    return out


def _cell(mean, std, digits=3) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std else "")


def pivot_table(summary: list[dict]) -> str:
    """Markdown: one row per strategy, one column of mean Dice (± std over seeds) per data budget."""
    budgets = list(dict.fromkeys(s["data"] for s in summary))
    cells: dict[str, dict[str, str]] = {}
    for s in summary:
        if s["dice"] is not None:
            cells.setdefault(s["strategy"], {})[s["data"]] = _cell(s["dice"], s["dice_std"])
    if not cells:
        return ""
    lines = ["| test Dice | " + " | ".join(budgets) + " |", "|---|" + "---|" * len(budgets)]
    lines += [f"| {name} | " + " | ".join(row.get(b, "–") for b in budgets) + " |" for name, row in cells.items()]
    return "\n".join(lines) + "\n"


def write_table(workdir: str, runs: list[Run]) -> list[dict]:
    """``study.csv``, ``study.md`` and ``study.png`` from every finished run; returns the summary rows."""
    from samjax.evaluation import plots
    from samjax.utils.overlay import save_png

    rows = collect(workdir, runs)
    with open(os.path.join(workdir, "study.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["run", "strategy", "data", "seed", "dice", "hd95", "nsd",
                                               "trainable_params", "train_seconds"])
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows)
    lines = ["| strategy | data | runs | Dice | HD95 | NSD | trainable parameters | train time (s) |",
             "|---|---|---:|---|---|---|---:|---:|"]
    for s in summary:
        params = "–" if s["trainable_params"] is None else f"{s['trainable_params']:,}"
        seconds = "–" if s["train_seconds"] is None else f"{s['train_seconds']:.0f}"
        lines.append(f"| {s['strategy']} | {s['data']} | {s['runs']} | {_cell(s['dice'], s['dice_std'])} | "
                     f"{_cell(s['hd95'], s['hd95_std'], 2)} | {_cell(s['nsd'], s['nsd_std'])} | {params} | {seconds} |")
    missing = len(runs) - len(rows)
    note = f"\n{missing} of {len(runs)} runs not finished.\n" if missing else ""
    with open(os.path.join(workdir, "study.md"), "w") as f:
        f.write("\n".join(lines) + "\n" + note + "\n" + pivot_table(summary))
    scored = [s for s in summary if s["dice"] is not None]  # pretraining runs (MAE) have no Dice
    if scored:
        strategies = list(dict.fromkeys(s["strategy"] for s in scored))
        budgets = list(dict.fromkeys(s["data"] for s in scored))
        cell = {(s["strategy"], s["data"]): s for s in scored}
        values = {b: [cell[(g, b)]["dice"] if (g, b) in cell else None for g in strategies] for b in budgets}
        errors = {b: [cell[(g, b)]["dice_std"] if (g, b) in cell else None for g in strategies] for b in budgets}
        picture = plots.grouped_bar_plot(strategies, budgets, values, errors,
                                         f"mean test Dice per strategy: {' vs '.join(budgets)}",
                                         "Dice (mean ± std over seeds)", 0.0, 1.0, width=1200, height=500)
        save_png(picture, os.path.join(workdir, "study.png"))
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the study config, path[:arg] (configs/study.py)")
    p.add_argument("--workdir", required=True, help="where the runs and the table go")
    p.add_argument("--only", action="append", default=[], help="shell pattern of run names (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="[PATTERN:]KEY=VALUE",
                   help="a config override for every run, e.g. data.name=liver, or for the runs matching PATTERN, "
                   "e.g. 'setup2/*:optim.learning_rate=1e-4' (repeatable)")
    p.add_argument("--table", action="store_true", help="only write the table of the finished runs")
    p.add_argument("--dry-run", action="store_true", help="print the runs' commands, run nothing")
    args = p.parse_args(argv)
    try:
        cfg, config_dir = load_study(args.config)
        runs = apply_sets(expand(cfg), args.set, config_dir, log=lambda line: print(line, file=sys.stderr))
        if not os.path.isfile(os.path.join(ROOT, "train.py")):
            raise StudyError(f"{ROOT} has no train.py: run the study from a clone of samjax (pip install -e .)")
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    workdir = os.path.abspath(os.path.expanduser(args.workdir))
    os.makedirs(workdir, exist_ok=True)
    chosen = [r for r in runs if not args.only or any(fnmatch.fnmatch(r.name, pat) for pat in args.only)]
    if args.only and not chosen:
        print(f"error: --only {' '.join(args.only)} matches no run; the runs are: "
              f"{', '.join(r.name for r in runs)}", file=sys.stderr)
        return 2
    if args.dry_run:
        for run in chosen:
            print(" ".join(command(run, workdir, config_dir, _pretrained_dir(workdir, runs, run))))
        return 0
    failed = []
    if not args.table:
        from tqdm import tqdm

        bar = tqdm(chosen, desc="study", unit="run", dynamic_ncols=True, file=sys.stderr)
        for run in bar:
            bar.set_postfix_str(run.name)
            pretrained = _pretrained_dir(workdir, runs, run)
            cmd = command(run, workdir, config_dir, pretrained)
            if finished(workdir, run.name):
                bar.write(f"{run.name}: finished earlier, skipped")
                continue
            if pretrained and not finished(workdir, os.path.relpath(pretrained, workdir)):
                failed.append(run.name)
                bar.write(f"{run.name}: skipped, its pretraining {run.after} has not finished")
                continue
            ok, message = execute(run, cmd, workdir)
            bar.write(message)
            if not ok:
                failed.append(run.name)
    summary = write_table(workdir, runs)
    print(f"{len(summary)} row(s): {os.path.join(workdir, 'study.md')}, study.csv, study.png")
    if failed:
        print(f"error: {len(failed)} run(s) did not finish: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
