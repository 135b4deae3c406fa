"""Reads ``.safetensors`` files into NumPy, validating the header against the file.

The format is an 8-byte little-endian header length, a JSON header ``{name: {dtype, shape,
data_offsets}}`` and the raw tensor bytes. It holds no code, but a damaged or hostile header can
still point outside the file or overlap tensors, so every entry is checked before it is read.
Implemented here (not with the ``safetensors`` package) to read bfloat16 into NumPy via ml_dtypes.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from samjax.errors import CheckpointError

try:
    from ml_dtypes import bfloat16 as _bfloat16
except ImportError:  # pragma: no cover
    _bfloat16 = None

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": _bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_MAX_HEADER = 100 * 1024 * 1024


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a ``.safetensors`` file as NumPy arrays (``__metadata__`` is skipped)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is not a safetensors file (shorter than its header length)")
        (n,) = struct.unpack("<Q", head)
        if n > min(_MAX_HEADER, size - 8):
            raise CheckpointError(f"{path} is not a safetensors file or is truncated (header of {n} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: unreadable safetensors header ({e})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: the safetensors header is not a table of tensors")
        data_start, data_len = 8 + n, size - 8 - n
        tensors, spans = {}, []
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = np.dtype(_DTYPES[info["dtype"]])
                shape = tuple(int(s) for s in info["shape"])
                begin, end = (int(o) for o in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry {info!r:.120}") from None
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if not 0 <= begin <= end <= data_len or end - begin != expected:
                raise CheckpointError(
                    f"{path}: tensor {name!r} {shape} {info['dtype']} spans bytes {begin}-{end} of {data_len}: "
                    "the file is truncated or corrupt"
                )
            spans.append((begin, end, name))
            f.seek(data_start + begin)
            tensors[name] = np.frombuffer(f.read(end - begin), dtype=dtype.newbyteorder("<")).reshape(shape)
        spans.sort()
        for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
            if begin_b < end_a:
                raise CheckpointError(f"{path}: tensors {a!r} and {b!r} overlap: the file is corrupt")
    return tensors
