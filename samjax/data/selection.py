"""Which data sets and classes a config names: ``data.name`` (several, mixed by ``data.weights``) and
``data.classes``; their training splits opened (``open_sources``), and any split opened once per process
(``open_cached``, which evaluation uses).
"""

from __future__ import annotations

import functools

from samjax.data import pipeline


def data_names(cfg) -> list[str]:
    """``data.name`` as a list: one name, or several separated by commas (mixed with ``data.weights``)."""
    value = cfg.data.name
    names = list(value) if isinstance(value, (list, tuple)) else str(value).split(",")
    return [n.strip() for n in names if n.strip()]


def data_weights(cfg) -> tuple[float, ...] | None:
    """``data.weights`` (``"1,3"`` or a list) as floats, or None for equal weights."""
    value = cfg.data.get("weights", "")
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    return tuple(float(v) for v in value) if value else None


def data_classes(cfg) -> tuple[str, ...]:
    """``data.classes``: the foreground classes kept (comma-separated names; empty: all)."""
    return tuple(c.strip() for c in str(cfg.data.get("classes", "") or "").split(",") if c.strip())


@functools.lru_cache(maxsize=8)
def open_cached(name: str, split: str, data_dir: str, classes: tuple[str, ...] = ()) -> pipeline.Source:
    return pipeline.open_source(name, split, data_dir, classes)


def class_names(sources) -> tuple[str, ...]:
    """The class names of mixed sources: the longest list any of them declares."""
    return tuple(max((s.class_names for s in sources), key=len))


def open_sources(cfg) -> list[pipeline.Source]:
    """The training split of every data set ``cfg`` names (``data.name``), classes kept as ``data.classes`` says."""
    return [pipeline.open_source(n, cfg.data.train_split, cfg.data.data_dir, data_classes(cfg)) for n in data_names(cfg)]
