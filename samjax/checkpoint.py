"""Converted SAM checkpoints on disk: the one place samjax calls Orbax.

A converted checkpoint is a folder::

    DIR/samjax.json   {"format": "samjax-sam", "version": 1, "model_type": "vit_b", "image_size": 1024, ...}
    DIR/params/       Orbax (OCDBT + Zarr) tree of float32 arrays, nested by module path

``samjax.json`` is written last, so a folder without it is an interrupted conversion and is refused.
Loading needs no PyTorch.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np
import orbax.checkpoint as ocp

from samjax.errors import CheckpointError

FORMAT = "samjax-sam"
VERSION = 1
META_FILE = "samjax.json"


def _nest(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, META_FILE))


def save_sam(path: str | os.PathLike, params: Mapping[str, Any], model_type: str, image_size: int, **info) -> None:
    """Writes flat params and their model description to the folder ``path`` (which must not exist)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and os.listdir(path):
        raise FileExistsError(f"{path} exists and is not empty; choose a new output folder")
    os.makedirs(path, exist_ok=True)
    tree = _nest({k: np.asarray(v, np.float32) for k, v in params.items()})
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(path, "params"), tree)
        ckptr.wait_until_finished()
    meta = {"format": FORMAT, "version": VERSION, "model_type": model_type, "image_size": int(image_size), **info}
    tmp = os.path.join(path, META_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, os.path.join(path, META_FILE))


def read_meta(path: str | os.PathLike) -> dict:
    """The ``samjax.json`` of a converted checkpoint, validated."""
    path = os.fspath(path)
    meta_path = os.path.join(path, META_FILE)
    if not os.path.isfile(meta_path):
        raise CheckpointError(
            f"{path} is not a samjax checkpoint folder (no {META_FILE}); it may be an interrupted "
            "conversion: convert again with convert_weights/convert_sam.py"
        )
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path} is unreadable: {e}") from None
    if meta.get("format") != FORMAT or not isinstance(meta.get("model_type"), str):
        raise CheckpointError(f"{meta_path} does not describe a samjax SAM checkpoint")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer samjax (format version {meta['version']})")
    return meta


def load_sam(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Reads a converted checkpoint: its ``samjax.json`` and its flat params as NumPy arrays."""
    path = os.path.abspath(os.fspath(path))
    meta = read_meta(path)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            tree = ckptr.restore(os.path.join(path, "params"))
    except Exception as e:  # Orbax raises many types for damaged folders
        raise CheckpointError(f"cannot restore the parameters in {path}/params: {type(e).__name__}: {e}") from None
    return meta, {k: np.asarray(v) for k, v in _flatten(tree).items()}
