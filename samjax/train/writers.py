"""What a training run shows and leaves on disk: metric lines, TensorBoard events, the config, a progress bar.

A run with ``--workdir runs/x`` gets::

    runs/x/metrics.jsonl              one JSON object per logged step: {"step": 120, "loss": 0.4132, ...}
    runs/x/tensorboard/train/events.* TensorBoard scalars (and images / text when written)
    runs/x/config.json                the run's config, json-dumped (values JSON cannot hold are written as str)

Conventions:

* Only the chief process (``jax.process_index() == 0``, passed in as ``is_chief``) writes; on every other
  process the writers are no-ops and create no files or folders.
* Non-finite numbers in ``metrics.jsonl`` are written as the JSON strings ``"nan"``, ``"inf"`` and ``"-inf"``
  (not bare ``NaN``, which is not JSON), so every line parses with any JSON reader and a NaN stays
  distinguishable from a missing value. :func:`read_metrics` turns them back into floats.
* Each line is flushed to the operating system as soon as it is written, so a crashed or killed process
  loses nothing it logged. That does not survive a power loss or kernel crash; pass ``fsync=True`` for that
  (one ``os.fsync`` per line).
* Resuming from step ``N`` (``resume_step=N``) first drops the earlier run's lines with ``step >= N``
  (rewritten through a temporary file and ``os.replace``, so the file is never half-written), then appends:
  each step appears once. TensorBoard gets a ``SessionLog.START`` event at step ``N``, which makes its loader
  discard the earlier run's points from ``N`` on.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import time
from typing import Any, Iterable, Mapping

import numpy as np

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
TENSORBOARD_DIR = "tensorboard"

_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the step and the bad terms."""

    def __init__(
        self,
        step: int,
        names: Iterable[str],
        values: Mapping[str, float] | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
    ):
        self.step = int(step)
        self.names = tuple(names)
        self.values = dict(values) if values is not None else {}
        self.checkpoint_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        terms = ", ".join(
            f"{name}={_format_float(self.values[name])}" if name in self.values else name for name in self.names
        )
        message = f"non-finite loss at step {self.step}: {terms}; the run stops here"
        if self.checkpoint_dir is not None:
            message += f"; the last good checkpoint is kept in {self.checkpoint_dir}"
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.step, self.names, self.values, self.checkpoint_dir))


# --------------------------------------------------------------------------------------------- values


def _to_number(name: str, value: Any) -> int | float:
    """A Python int (for bool/integer values) or float from a number, NumPy scalar or one-element array."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    array = np.asarray(value)  # also fetches a jax.Array from its device
    if array.size != 1:
        raise ValueError(f"metric {name!r} must be a scalar, got an array of shape {array.shape}")
    item = array.reshape(()).item()
    if isinstance(item, (bool, np.bool_)):
        return int(item)
    if isinstance(item, int):
        return item
    if isinstance(item, float):
        return item
    raise TypeError(f"metric {name!r} must be a real number, got {type(value).__name__} holding {item!r}")


def _json_number(x: int | float) -> int | float | str:
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def _format_float(x: Any) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:.4g}"


def format_value(name: str, value: Any) -> str:
    """One metric value, compactly: learning rates as 1.0e-04, integers as they are, the rest to 4 digits."""
    try:
        number = _to_number(name, value)
    except (TypeError, ValueError):
        return str(value)
    if isinstance(number, int):
        return str(number)
    lowered = name.lower()
    if (lowered == "lr" or "learning_rate" in lowered or lowered.endswith("_lr")) and math.isfinite(number):
        return f"{number:.1e}"
    return _format_float(number)


def _sanitize(value: Any) -> Any:
    """A JSON-ready copy of a config: mappings, sequences and numbers kept, anything else as str."""
    if hasattr(value, "to_dict") and callable(value.to_dict):  # ml_collections.ConfigDict and friends
        try:
            value = value.to_dict()
        except Exception:  # noqa: BLE001 - a config that cannot convert is written as its str
            return str(value)
    if isinstance(value, Mapping):
        return {str(k): _sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sanitize(v) for v in value]
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, (int, float)):
        return _json_number(value)
    if isinstance(value, (np.generic, np.ndarray)) and np.asarray(value).ndim == 0:
        item = np.asarray(value).item()
        if isinstance(item, (bool, int, float, str)):
            return _sanitize(item)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


# --------------------------------------------------------------------------------------------- log lines


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """One compact log line: ``step 120 | loss 0.4132 | dice 0.81 | lr 1.0e-04 | 3.2 steps/s``.

    ``step`` comes first when present; keys ending in ``_per_sec`` (``steps_per_sec``, ``images_per_sec``)
    come last as rates (``3.2 steps/s``); the others keep their order. Learning rates (``lr``, ``*_lr``,
    ``*learning_rate*``) are shown as ``1.0e-04``, integers as they are, other numbers to 4 significant digits.
    """
    parts: list[str] = []
    rates: list[str] = []
    if "step" in metrics:
        parts.append(f"step {format_value('step', metrics['step'])}")
    for name, value in metrics.items():
        if name == "step":
            continue
        if name.endswith("_per_sec"):
            unit = name[: -len("_per_sec")] or "items"
            try:
                rate = float(_to_number(name, value))
                text = f"{rate:.3g}" if math.isfinite(rate) else _format_float(rate)
            except (TypeError, ValueError):
                text = str(value)
            rates.append(f"{text} {unit}/s")
        else:
            parts.append(f"{name} {format_value(name, value)}")
    return " | ".join(parts + rates)


def check_finite(
    step: int, metrics: Mapping[str, Any], *, checkpoint_dir: str | os.PathLike | None = None
) -> None:
    """Raise :class:`NonFiniteLossError` naming ``step`` and every term of ``metrics`` that is NaN or inf.

    Values may be numbers, NumPy or JAX scalars (or arrays: one non-finite element is enough); anything that
    is not numeric is ignored. ``checkpoint_dir`` (e.g. ``<workdir>/checkpoints``), when given, is named in
    the message as where the last good checkpoint is kept.
    """
    bad: dict[str, float] = {}
    for name, value in metrics.items():
        if value is None or isinstance(value, (str, bytes)):
            continue
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if array.size and not np.all(np.isfinite(array)):
            flat = array.reshape(-1)
            bad[name] = float(flat[~np.isfinite(flat)][0])
    if bad:
        raise NonFiniteLossError(step, list(bad), bad, checkpoint_dir)


# --------------------------------------------------------------------------------------------- files


def _parse_step(line: str) -> int | None:
    """The step of one metrics line, or None for a line that is not a complete record (a crash mid-write)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("step"), int):
        return None
    return record["step"]


def _atomic_write_text(path: str, text: str) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _rewrite_metrics(path: str, keep_before: int | None) -> None:
    """Rewrite ``path`` keeping complete lines (with ``step < keep_before`` when given); atomic."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    kept = []
    for line in lines:
        step = _parse_step(line)
        if step is not None and (keep_before is None or step < keep_before):
            kept.append(line + "\n")
    _atomic_write_text(path, "".join(kept))


def _ends_with_partial_line(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (or of ``<workdir>/metrics.jsonl``), "nan"/"inf"/"-inf" as floats."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, METRICS_FILE)
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            records.append({k: _NONFINITE.get(v, v) if isinstance(v, str) else v for k, v in record.items()})
    return records


class MetricWriter:
    """Metrics of one run to ``<workdir>/metrics.jsonl`` and ``<workdir>/tensorboard/<subdir>``.

    Args:
      workdir: the run's folder; created if needed (by the chief only).
      is_chief: whether this process writes (``jax.process_index() == 0``); others do nothing.
      resume_step: when resuming from the checkpoint of step ``N``, drop ``metrics.jsonl`` lines with
        ``step >= N`` left by the earlier run and tell TensorBoard to discard its points from ``N`` on.
      subdir: TensorBoard run name under ``<workdir>/tensorboard``.
      filename: the JSON-lines file name under ``workdir``.
      fsync: also ``os.fsync`` each metrics line (survives power loss, not just a process crash).

    Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        is_chief: bool = True,
        resume_step: int | None = None,
        subdir: str = "train",
        filename: str = METRICS_FILE,
        fsync: bool = False,
    ):
        self.workdir = os.fspath(workdir)
        self.is_chief = bool(is_chief)
        self.metrics_path = os.path.join(self.workdir, filename)
        self.tensorboard_dir = os.path.join(self.workdir, TENSORBOARD_DIR, subdir)
        self.config_path = os.path.join(self.workdir, CONFIG_FILE)
        self._fsync = fsync
        self._file = None
        self._events = None
        self._closed = False
        if not self.is_chief:
            return

        os.makedirs(self.workdir, exist_ok=True)
        if os.path.exists(self.metrics_path):
            if resume_step is not None:
                _rewrite_metrics(self.metrics_path, int(resume_step))
            elif _ends_with_partial_line(self.metrics_path):
                _rewrite_metrics(self.metrics_path, None)  # drop a line cut short by a crash
        self._file = open(self.metrics_path, "a", encoding="utf-8")

        # Imported here so that non-chief processes and plain JSON use never load TensorBoard.
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event_pb2 = event_pb2
        self._events = EventFileWriter(self.tensorboard_dir)
        if resume_step is not None:
            start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            self._events.add_event(event_pb2.Event(wall_time=time.time(), step=int(resume_step), session_log=start))
            self._events.flush()

    # -- writing

    def _add_summary(self, step: int, values: list) -> None:
        from tensorboard.compat.proto import summary_pb2

        event = self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values))
        self._events.add_event(event)
        self._events.flush()

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append ``{"step": step, **metrics}`` to metrics.jsonl and write each metric as a TensorBoard scalar.

        Values: Python numbers, NumPy or JAX scalars (or one-element arrays). Integers (and bools) stay
        integers; everything else is written as a Python float (non-finite as "nan"/"inf"/"-inf").
        """
        if "step" in metrics:
            raise ValueError("'step' is the record's step; pass it as the step argument, not as a metric")
        if not self.is_chief:
            return
        self._check_open()
        numbers = {str(name): _to_number(str(name), value) for name, value in metrics.items()}
        record = {"step": int(step), **{name: _json_number(x) for name, x in numbers.items()}}
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())

        from tensorboard.compat.proto import summary_pb2

        values = [summary_pb2.Summary.Value(tag=name, simple_value=float(x)) for name, x in numbers.items()]
        self._add_summary(step, values)

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        """TensorBoard image summaries from uint8 arrays (H, W, 3) RGB; (H, W) / (H, W, 1) gray and
        (H, W, 4) RGBA are accepted too. PNG-encoded with Pillow."""
        if not self.is_chief:
            return
        self._check_open()
        from PIL import Image
        from tensorboard.compat.proto import summary_pb2

        values = []
        for name, image in images.items():
            array = np.asarray(image)
            if array.dtype != np.uint8:
                raise TypeError(f"image {name!r} must be uint8, got {array.dtype}")
            if array.ndim == 3 and array.shape[-1] == 1:
                array = array[..., 0]
            if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
                raise ValueError(f"image {name!r} must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {array.shape}")
            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, format="PNG")
            channels = 1 if array.ndim == 2 else array.shape[-1]
            encoded = summary_pb2.Summary.Image(
                height=array.shape[0], width=array.shape[1], colorspace=channels, encoded_image_string=buffer.getvalue()
            )
            values.append(summary_pb2.Summary.Value(tag=str(name), image=encoded))
        if values:
            self._add_summary(step, values)

    def write_text(self, step: int, texts: Mapping[str, str]) -> None:
        """TensorBoard text summaries (shown as Markdown in the Text tab)."""
        if not self.is_chief:
            return
        self._check_open()
        from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorboard.plugins.text import metadata as text_metadata

        values = []
        for name, text in texts.items():
            tensor = tensor_pb2.TensorProto(
                dtype=types_pb2.DT_STRING,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                string_val=[str(text).encode("utf-8")],
            )
            meta = text_metadata.create_summary_metadata(display_name=str(name), description="")
            values.append(summary_pb2.Summary.Value(tag=str(name), metadata=meta, tensor=tensor))
        if values:
            self._add_summary(step, values)

    def write_hparams(self, config: Any) -> None:
        """Write ``<workdir>/config.json`` (atomic) and the same JSON as TensorBoard text ``config`` at step 0.

        ``config`` is a mapping (or an ``ml_collections.ConfigDict``); nested mappings and lists are kept,
        values JSON cannot hold (paths, dtypes, objects) are written as their ``str``.
        """
        if not self.is_chief:
            return
        self._check_open()
        text = json.dumps(_sanitize(config), indent=2, allow_nan=False) + "\n"
        _atomic_write_text(self.config_path, text)
        self.write_text(0, {"config": "```json\n" + text + "```"})

    # -- lifetime

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("MetricWriter is closed")

    def flush(self) -> None:
        if self._file is not None and not self._closed:
            self._file.flush()
            self._events.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._file is not None:
            self._file.close()
        if self._events is not None:
            self._events.close()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
