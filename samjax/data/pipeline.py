"""Grain input pipelines: one deterministic global order of examples, sliced per host.

Training (``train_dataset``): each data set is (optionally) cut to a few-shot subset of whole cases,
shuffled by seed and repeated (reshuffled every epoch); several data sets are mixed with weights;
augmentations, SAM's formatting and prompt simulation run as Grain transforms whose randomness is a
function of the seed and the example's position in that global order. Only then is the order cut
per host: host ``p`` of ``n`` takes its ``batch/n`` slice of every global batch. So one process and
several processes see the same global batches, and the iterator's state (a position) is all a
checkpoint needs to resume exactly (``iterator.get_state()`` / Orbax's ``grain.checkpoint``).

Evaluation (``eval_dataset``): every example once, in order, padded to whole global batches with
``weight`` 0 examples, sliced per host the same way.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds

from samjax.data.sam_format import SamFormat
from samjax.errors import DataError

PHANTOMS = "phantoms"
DEFAULT_DATA_DIR = os.path.join("~", "tensorflow_datasets")


@dataclasses.dataclass(frozen=True)
class Source:
    """An opened split: random-access records, class names, the case id of every record, the slice
    spacing (mm between slices) of the 3D cases whose build recorded it, and how the build made its
    uint8 slices (``preprocessing``: ``axis``, ``channel``, ``ct_window``, ``percentiles``; empty for
    data sets built as uint8 slices, such as the phantoms)."""

    records: Sequence
    class_names: tuple[str, ...]
    case_ids: tuple[str, ...]
    name: str
    split: str
    slice_spacing: dict = dataclasses.field(default_factory=dict)
    preprocessing: dict = dataclasses.field(default_factory=dict)


def open_source(name: str, split: str, data_dir: str = DEFAULT_DATA_DIR, classes: Sequence[str] = ()) -> Source:
    """Opens ``split`` of a built data set.

    ``name``: ``phantoms`` or ``phantoms/<config>`` (built on first use: the embedded default data),
    ``NAME`` or ``medical_slices/NAME`` (built by ``python -m samjax.data.build`` into ``data_dir``),
    or the path of a built data set folder. ``classes``: keep only these foreground classes (numbered
    1.. in this order); the others become background (:func:`select_classes`).
    """
    data_dir = os.path.expanduser(data_dir)
    if name == PHANTOMS or name.startswith(PHANTOMS + "/"):
        from samjax.data.builders import phantoms

        builder = phantoms.build(data_dir, name.partition("/")[2] or "labeled_256")
    else:
        builder = tfds.builder_from_directory(_built_folder(name, data_dir))
    if split not in builder.info.splits:
        raise DataError(f"{name} has no split {split!r}; it has {sorted(builder.info.splits)}")
    records = builder.as_data_source(split=split)
    class_names = tuple(builder.info.metadata.get("class_names", ()))
    counts = (builder.info.metadata.get("counts") or {}).get(split) or {}
    source = Source(records, class_names, _case_ids(builder, split, len(records)), name, split,
                    dict(counts.get("slice_spacing") or {}), dict(builder.info.metadata.get("preprocessing") or {}))
    return select_classes(source, classes) if classes else source


class _Relabel:
    """Random-access records whose ``label`` goes through a lookup table."""

    def __init__(self, records, table: np.ndarray):
        self._records, self._table = records, table

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index):
        record = dict(self._records[index])
        if "label" in record:
            record["label"] = self._table[np.asarray(record["label"])]
        return record


def select_classes(source: Source, classes: Sequence[str]) -> Source:
    """``source`` with only ``classes`` as foreground, renumbered 1.. in the given order; every other
    class becomes background (the study's held-out structures: pretrain on some, fine-tune on others)."""
    missing = [c for c in classes if c not in source.class_names[1:]]
    if missing or len(set(classes)) != len(classes):
        raise DataError(f"data.classes={','.join(classes)}: {source.name} has the classes "
                         f"{','.join(source.class_names[1:])}; name each at most once")
    table = np.zeros(max(256, len(source.class_names)), np.uint8)
    for new, name in enumerate(classes, start=1):
        table[source.class_names.index(name)] = new
    names = (source.class_names[0], *classes)
    return dataclasses.replace(source, records=_Relabel(source.records, table), class_names=names)


class _Head:
    """The first ``n`` records of a random-access source."""

    def __init__(self, records, n: int):
        self._records, self._n = records, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index):
        if not -self._n <= index < self._n:
            raise IndexError(index)
        return self._records[index % self._n]


def head(source: Source, n: int) -> Source:
    """``source`` cut to its first ``n`` records (quick validation during training)."""
    return dataclasses.replace(source, records=_Head(source.records, n), case_ids=source.case_ids[:n])


def _built_folder(name: str, data_dir: str) -> str:
    candidates = [name, os.path.join(data_dir, name), os.path.join(data_dir, "medical_slices", name)]
    for path in candidates:
        path = os.path.expanduser(path)
        if os.path.isfile(os.path.join(path, "dataset_info.json")):
            return path
        if os.path.isdir(path):
            versions = sorted(v for v in os.listdir(path) if os.path.isfile(os.path.join(path, v, "dataset_info.json")))
            if versions:
                return os.path.join(path, versions[-1])
    raise FileNotFoundError(
        f"no built data set {name!r} in {data_dir} (looked in {candidates}); build it with "
        f"python -m samjax.data.build --source DIR --name {name} --data-dir {data_dir}")


def _case_ids(builder, split: str, n: int) -> tuple[str, ...]:
    """The volume id of every record (read without decoding images); one case per record otherwise."""
    features = builder.info.features
    if "case" not in features:
        return tuple(str(i) for i in range(n))
    skip = {k: tfds.decode.SkipDecoding() for k in ("image", "label") if k in features}
    records = builder.as_data_source(split=split, decoders=skip)
    out = []
    for start in range(0, n, 1024):
        batch = records.__getitems__(range(start, min(n, start + 1024)))
        out.extend(r["case"].decode() if isinstance(r["case"], bytes) else str(r["case"]) for r in batch)
    return tuple(out)


def few_shot_indices(case_ids: Sequence[str], n: int, seed: int) -> np.ndarray:
    """Record indices of ``n`` whole cases (images or volumes) picked by ``seed``, in record order."""
    cases = sorted(set(case_ids))
    if not 1 <= n <= len(cases):
        raise ValueError(f"few-shot size must be between 1 and the {len(cases)} case(s) available, got {n}")
    chosen = {cases[i] for i in np.random.default_rng(seed).permutation(len(cases))[:n]}
    return np.array([i for i, c in enumerate(case_ids) if c in chosen], np.int64)


class _Gather(grain.MapDataset):
    """``parent[indices[i]]``: a fixed subset of records."""

    def __init__(self, parent: grain.MapDataset, indices: np.ndarray):
        super().__init__(parent)
        self._indices = np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[int(self._indices[index % len(self._indices)])]


class _HostSlice(grain.MapDataset):
    """Host ``process`` of ``count``: element ``j`` is row ``j % b`` of its slice of global batch ``j // b``."""

    def __init__(self, parent: grain.MapDataset, global_batch: int, process: int, count: int):
        super().__init__(parent)
        if global_batch % count:
            raise ValueError(f"global batch {global_batch} must be a multiple of the {count} processes")
        self._local = global_batch // count
        self._global, self._process = global_batch, process
        self._length = len(parent) // global_batch * self._local

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        step, row = divmod(index, self._local)
        return self._parent[step * self._global + self._process * self._local + row]


@dataclasses.dataclass(frozen=True)
class Standardize(grain.transforms.Map):
    """Records of any built data set -> ``image`` (+ ``label``) and, if ``keep_ids``, ``case``, ``slice`` and
    ``spacing`` (mm per pixel, ``(1, 1)`` for data sets that record none)."""

    labeled: bool = True
    keep_ids: bool = False

    def map(self, record: dict) -> dict:
        out = {"image": np.asarray(record["image"])}
        if self.labeled:
            if "label" not in record:
                raise ValueError("this data set has no labels; it can only be used for self-supervised pretraining")
            out["label"] = np.asarray(record["label"])
        if self.keep_ids:
            case = record.get("case", record.get("seed", ""))
            out["case"] = case.decode() if isinstance(case, bytes) else str(case)
            out["slice"] = np.int32(record.get("slice", 0))
            out["spacing"] = np.asarray(record.get("spacing", (1.0, 1.0)), np.float32).reshape(2)
        return out


def _mark_flags_parsed():
    """Grain's worker processes read absl flags; mark them parsed when the caller did not use absl.app."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def to_iterable(ds: grain.MapDataset, workers: int = 0, prefetch: int = 2) -> grain.IterDataset:
    """A MapDataset -> an IterDataset read by ``workers`` processes (0: in this process)."""
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, prefetch), prefetch_buffer_size=prefetch))
    if workers > 0:
        _mark_flags_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return it


def train_dataset(sources: Sequence[Source], *, global_batch: int, image_size: int, seed: int,
                  weights: Sequence[float] | None = None, few_shot: int | None = None,
                  augment: Sequence[grain.transforms.RandomMap] = (), prompts=None, labeled: bool = True,
                  process_index: int = 0, process_count: int = 1,
                  low_res_size: int | None = None) -> grain.MapDataset:
    """The infinite training stream of this host, batched: ``global_batch / process_count`` per batch.

    Each batch is a dict of arrays with a leading batch axis: ``image`` uint8 ``(b, S, S, 3)``,
    ``valid`` ``(b, S, S)``, ``input_size``/``original_size`` ``(b, 2)``, with labels ``label``
    ``(b, S, S)`` and ``low_res_label`` ``(b, L, L)`` (``low_res_size``, default S/4), plus the keys
    ``prompts`` adds.
    """
    if weights is not None and len(weights) != len(sources):
        raise ValueError(f"{len(weights)} weights for {len(sources)} data sets")
    streams = []
    for k, src in enumerate(sources):
        ds = grain.MapDataset.source(src.records)
        if few_shot is not None:
            ds = _Gather(ds, few_shot_indices(src.case_ids, few_shot, seed))
        ds = ds.seed(seed + 7919 * k).shuffle().repeat()
        streams.append(ds.map(Standardize(labeled=labeled)))
    ds = streams[0] if len(streams) == 1 else grain.MapDataset.mix(streams, weights)
    ds = ds.seed(seed)
    for t in augment:
        ds = ds.random_map(t)
    ds = ds.map(SamFormat(image_size, low_res_size))
    if prompts is not None:
        ds = ds.random_map(prompts)
    ds = _HostSlice(ds, global_batch, process_index, process_count)
    return ds.batch(global_batch // process_count, drop_remainder=True)


def eval_dataset(source: Source, *, global_batch: int, image_size: int, labeled: bool = True,
                 process_index: int = 0, process_count: int = 1, low_res_size: int | None = None,
                 prompts=None, seed: int = 0) -> grain.MapDataset:
    """Every record once, in order, as this host's batches; ``weight`` is 0 on padding examples.

    ``prompts`` (a ``SimulatePrompts``) adds simulated prompts, the same ones for every call with ``seed``.
    """
    n = len(source.records)
    total = -(-n // global_batch) * global_batch
    ds = grain.MapDataset.source(source.records).map(Standardize(labeled=labeled, keep_ids=True))
    ds = ds.map(SamFormat(image_size, low_res_size))
    if prompts is not None:
        ds = ds.seed(seed).random_map(prompts)
    ds = _Gather(ds, np.minimum(np.arange(total), n - 1)).map_with_index(_Weight(n))
    ds = _HostSlice(ds, global_batch, process_index, process_count)
    return ds.batch(global_batch // process_count, drop_remainder=True)


@dataclasses.dataclass(frozen=True)
class _Weight(grain.transforms.MapWithIndex):
    count: int

    def map_with_index(self, index: int, element: dict) -> dict:
        return {**element, "weight": np.float32(index < self.count)}


def steps_per_epoch(source: Source, global_batch: int, few_shot: int | None = None, seed: int = 0) -> int:
    """Global batches in one pass over ``source`` (or its few-shot subset), at least 1."""
    n = len(few_shot_indices(source.case_ids, few_shot, seed)) if few_shot else len(source.records)
    return max(1, n // global_batch)
