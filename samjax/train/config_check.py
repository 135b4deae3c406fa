"""A run's config checked before any data is built or program compiled: one line per problem.

``check(cfg, ...)`` raises ``samjax.errors.ConfigError`` whose message names the field, the value and
the fix (``train.py`` and ``eval.py`` print it as one line, no traceback). It also fits what can be
fitted: a warm-up longer than the run is shortened, and says so.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import tensorflow_datasets as tfds

from samjax import parallel
from samjax.data import pipeline, selection
from samjax.data.builders.phantoms import Phantoms, split_sizes
from samjax.errors import ConfigError
from samjax.model_spec import SPECS, SamSpec
from samjax.modeling.attention import IMPLEMENTATIONS
from samjax.run import model as run_model
from samjax.run.model import PEFTS, SCOPES
from samjax.train import objectives, optim
from samjax.train.optim import OPTIMIZERS, SCHEDULES
from samjax.train.state import DTYPES

MODES = ("auto", "box", "point")
WARMUP_FRACTION = 10  # a warm-up that does not fit becomes total_steps // 10


def _int(cfg, field: str, minimum: int, hint: str = "") -> int:
    node, *rest = field.split(".")
    value = cfg[node]
    for part in rest:
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{field}={value!r} must be an integer >= {minimum}{hint}")
    return value


def _one_of(field: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{field}={value!r} is not known; use one of {', '.join(map(str, choices))}")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing for ``train.py`` / ``eval.py`` (``app.run(main, flags_parser=parse_flags)``),
    with an override of a field the config does not have as one line instead of a traceback."""
    from absl import app

    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as e:
        field = str(e).strip("\"'")
        given = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.") and field in a]
        raise SystemExit(f"error: {given[0] if given else field}: the config has no field {field!r}; "
                         "see the config file's get_config for its fields") from None


def fit_warmup(cfg, log: Callable = print) -> None:
    """Shortens ``optim.warmup_steps`` to ``total_steps // 10`` when it does not fit in the run."""
    total, warmup = int(cfg.total_steps), int(cfg.optim.get("warmup_steps", 0) or 0)
    if cfg.optim.get("schedule", "cosine") != "constant" and warmup >= total:
        cfg.optim.warmup_steps = total // WARMUP_FRACTION
        log(f"optim.warmup_steps={warmup} does not fit in total_steps={total}: warming up for "
            f"{cfg.optim.warmup_steps} steps instead")


def _splits(name: str, data_dir: str) -> tuple[str, ...]:
    """The splits of the data set ``name`` (a phantoms config's from its sizes, a built one's from its info)."""
    if name == pipeline.PHANTOMS or name.startswith(pipeline.PHANTOMS + "/"):
        configs = {c.name: c for c in Phantoms.BUILDER_CONFIGS}
        config = configs.get(name.partition("/")[2] or "labeled_256")
        if config is None:
            raise ConfigError(f"data.name: {name!r} is not a phantoms config; use phantoms/ + one of "
                              f"{', '.join(configs)}")
        return tuple(split_sizes(config))
    try:
        folder = pipeline._built_folder(name, data_dir)
    except FileNotFoundError as e:
        raise ConfigError(f"data.name: {e}") from None
    return tuple(tfds.builder_from_directory(folder).info.splits)


def check_data(cfg) -> None:
    """Every data set named in ``data.name`` exists (or is a built-in phantoms config) and has the splits the
    run reads: ``data.train_split``, and ``data.eval_split`` and ``final_eval_split`` of the evaluation set."""
    names = selection.data_names(cfg)
    if not names:
        raise ConfigError("data.name is empty; name a built data set, e.g. --config.data.name=phantoms/labeled_128")
    data_dir = os.path.expanduser(cfg.data.data_dir)
    eval_name = cfg.data.get("eval_name", "") or names[0]
    wanted = {name: [("data.train_split", cfg.data.train_split)] for name in names}
    wanted.setdefault(eval_name, []).extend(
        [("data.eval_split", cfg.data.eval_split), ("final_eval_split", cfg.get("final_eval_split", ""))])
    for name, fields in wanted.items():
        splits = _splits(name, data_dir)
        for field, split in fields:
            if split and split not in splits:
                raise ConfigError(f"{field}={split!r}: {name} has the splits {', '.join(splits)}"
                                  + ("; set it to '' to skip the final evaluation" if field == "final_eval_split" else ""))
    weights = selection.data_weights(cfg)
    if weights is not None and (len(weights) != len(names) or min(weights) <= 0):
        raise ConfigError(f"data.weights={cfg.data.weights!r} must be {len(names)} positive number(s), one per "
                          f"data set in data.name, comma-separated")


def check_checkpoint(cfg) -> None:
    path = cfg.get("init_checkpoint", "")
    if not path:
        return
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise ConfigError(f"init_checkpoint={cfg.init_checkpoint!r} does not exist; give a converted SAM folder, "
                          "a Meta .pth / .safetensors file, or a training workdir")
    if os.path.isdir(os.path.join(path, "checkpoints")):
        steps = [d for d in os.listdir(os.path.join(path, "checkpoints")) if d.isdigit()]
        if not steps:
            raise ConfigError(f"init_checkpoint={cfg.init_checkpoint!r} is a training workdir with no finished "
                              "checkpoint yet; let its run save one")
    which = str(cfg.get("init_checkpoint_which", "latest"))
    if not which.isdigit():
        _one_of("init_checkpoint_which", which, ("latest", "best"))


def check_model(cfg) -> SamSpec:
    _one_of("model.encoder", cfg.model.encoder, tuple(SPECS))
    _one_of("model.dtype", cfg.model.dtype, tuple(DTYPES))
    _one_of("model.attention", cfg.model.get("attention", "auto"), IMPLEMENTATIONS)
    fields = {f.name for f in dataclasses.fields(SamSpec)}
    unknown = sorted(set(dict(cfg.model.get("overrides", {}) or {})) - fields)
    if unknown:
        raise ConfigError(f"model.overrides has unknown field(s) {', '.join(unknown)}; SamSpec has "
                          f"{', '.join(sorted(fields - {'name'}))}")
    if not 0.0 <= float(cfg.model.drop_path) < 1.0:
        raise ConfigError(f"model.drop_path={cfg.model.drop_path} must be in [0, 1)")

    spec = run_model.model_spec(cfg)
    if spec.encoder == "tiny_vit" and spec.image_size % 64:
        raise ConfigError(f"data.image_size={spec.image_size} must be a positive multiple of 64 for vit_t")
    return spec


def check_mesh_and_batch(cfg, device_count: int, process_count: int) -> None:
    m = cfg.mesh
    try:
        data, fsdp, _ = parallel.mesh_shape(device_count, int(m.data), int(m.fsdp), int(m.tensor))
    except ValueError as e:
        raise ConfigError(f"mesh.data={m.data}, mesh.fsdp={m.fsdp}, mesh.tensor={m.tensor}: {e}; the product must "
                          f"be the {device_count} device(s) (-1 fills one axis)") from None
    batch = _int(cfg, "data.global_batch", 1)
    ways = data * fsdp
    if batch % ways or batch % process_count:
        need = max(ways, process_count)
        raise ConfigError(f"data.global_batch={batch} must be a multiple of mesh data x fsdp = {ways} and of the "
                          f"{process_count} process(es); try --config.data.global_batch={-(-batch // need) * need}")
    accum = _int(cfg, "train.grad_accum_steps", 1)
    if batch % accum:
        raise ConfigError(f"train.grad_accum_steps={accum} must divide data.global_batch={batch}")
    _int(cfg, "data.eval_batch", 1)
    _int(cfg, "data.few_shot", 0, " (0: all training images)")
    _int(cfg, "data.workers", 0)


def check_optim(cfg) -> None:
    o = cfg.optim
    _one_of("optim.optimizer", o.get("optimizer", "adamw"), tuple(OPTIMIZERS))
    _one_of("optim.schedule", o.get("schedule", "cosine"), tuple(SCHEDULES))
    try:
        optim.make_schedule(dict(o), total_steps=int(cfg.total_steps))
    except ValueError as e:
        raise ConfigError(f"optim: {e}") from None
    for field, low, high in (("weight_decay", 0.0, None), ("grad_clip_norm", 0.0, None), ("layer_decay", 1e-12, 1.0)):
        value = o.get(field, None)
        if value is not None and (float(value) < low or (high is not None and float(value) > high)):
            bound = f"in ({low:g}, {high:g}]" if high is not None else f">= {low:g}"
            raise ConfigError(f"optim.{field}={value} must be {bound}")


def check(cfg, device_count: int = 1, process_count: int = 1, log: Callable = print, data: bool = True) -> None:
    """Checks ``cfg`` (see the module docstring); ``data=False`` skips the data sets' existence."""
    objective = objectives.get(cfg)
    _int(cfg, "total_steps", 1, "; --config.total_steps=N runs N steps")
    for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        _int(cfg, field, 1)
    _int(cfg, "eval_every_steps", 0, " (0: no validation during training)")
    _int(cfg, "seed", 0)
    if objective.name == "finetune":
        _one_of("train.mode", cfg.train.mode, MODES)
    _one_of("train.scope", cfg.train.scope, SCOPES)
    _one_of("train.peft", cfg.train.peft, PEFTS)
    if cfg.train.mode != "auto" or objective.name == "interactive":
        _int(cfg, "train.num_objects", 1)
    if objective.uses_sam:
        check_model(cfg)
    objective.check(cfg)
    fit_warmup(cfg, log)
    check_optim(cfg)
    check_mesh_and_batch(cfg, device_count, process_count)
    check_checkpoint(cfg)
    if data:
        check_data(cfg)
