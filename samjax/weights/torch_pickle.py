"""Reads PyTorch ``.pth`` checkpoints into NumPy without PyTorch and without running their code.

A ``.pth`` file is a zip archive holding a pickle (``data.pkl``) plus one raw byte record per tensor
storage. Unpickling an untrusted pickle can run arbitrary code, so this reader uses a restricted
unpickler: the only globals it resolves are an allow-list of tensor-rebuilding functions, storage
types and plain containers, each replaced by a NumPy implementation. Any other global (``os.system``,
``builtins.eval``, a user class...) stops the load with :class:`UnsafeCheckpointError` before anything
is called. Tensor bounds are checked against their storage, so a truncated file is an error, never
a silently wrong array.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from typing import Any

import numpy as np

try:  # bfloat16 for NumPy; ml_dtypes ships with jax
    from ml_dtypes import bfloat16 as _bfloat16
except ImportError:  # pragma: no cover
    _bfloat16 = None


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint asked to import or call something other than tensors and plain containers."""


_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": _bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A flat NumPy view of one storage record."""

    def __init__(self, array: np.ndarray):
        self.array = array


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused) -> np.ndarray:
    if not isinstance(storage, _Storage):
        raise CheckpointError("malformed checkpoint: a tensor is not backed by a storage record")
    flat = storage.array
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise CheckpointError(f"malformed checkpoint: tensor size {size} / stride {stride}")
    if 0 in size:
        return np.zeros(size, flat.dtype)
    last = int(storage_offset) + sum((n - 1) * s for n, s in zip(size, stride))
    if storage_offset < 0 or last >= flat.size:
        raise CheckpointError(
            f"tensor of shape {size} reaches element {last} of a storage of {flat.size}: "
            "the checkpoint is truncated or corrupt"
        )
    view = np.lib.stride_tricks.as_strided(
        flat[int(storage_offset) :], shape=size, strides=[s * flat.itemsize for s in stride], writeable=False
    )
    return np.array(view)


def _rebuild_parameter(data, *_unused):
    return data


def _numpy_scalar(dtype, data=None):
    return np.frombuffer(data, dtype=dtype)[0] if data is not None else dtype.type()


def _codecs_encode(obj, encoding="latin1"):
    return obj.encode(encoding) if isinstance(obj, str) else bytes(obj)


_ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: str, big_endian: bool):
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._path = path
        self._big_endian = big_endian
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES and _STORAGE_DTYPES[name] is not None:
            return _StorageType(name)
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise UnsafeCheckpointError(
            f"{self._path} asks to load '{module}.{name}', which is not a tensor or a plain container; "
            "refusing to run code from an untrusted checkpoint. If you trust this file, load it with "
            "torch.load and save only the state dict: torch.save(model.state_dict(), 'clean.pth')"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self._path}: unsupported persistent record {pid!r:.80}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self._path}: unsupported storage type {storage_type!r:.80}")
        key = str(key)
        if key not in self._storages:
            name = f"{self._prefix}data/{key}"
            try:
                raw = self._archive.read(name)
            except KeyError:
                raise CheckpointError(f"{self._path}: storage record '{name}' is missing (truncated file?)") from None
            except (zipfile.BadZipFile, OSError, EOFError) as e:  # CRC error, short read
                raise CheckpointError(f"{self._path}: storage record '{name}' is corrupt: {e}") from None
            dtype = np.dtype(storage_type.dtype).newbyteorder(">" if self._big_endian else "<")
            if len(raw) != int(numel) * dtype.itemsize:
                raise CheckpointError(
                    f"{self._path}: storage '{name}' holds {len(raw)} bytes, expected {int(numel)} x "
                    f"{dtype.itemsize}: the checkpoint is truncated or corrupt"
                )
            self._storages[key] = _Storage(np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("=")))
        return self._storages[key]


def load_pth(path: str | os.PathLike) -> Any:
    """Loads a PyTorch zip checkpoint with tensors as NumPy arrays, executing no code from it.

    Raises:
      FileNotFoundError: no such file.
      UnsafeCheckpointError: the pickle references anything outside the allow-list.
      CheckpointError: not a PyTorch zip checkpoint, truncated or corrupt.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(2)
        hint = (
            "it looks like PyTorch's legacy (pre-1.6) format, which cannot be read without running its "
            "pickle; re-save it with a current torch.save"
            if head[:1] == b"\x80"
            else "it is not a PyTorch checkpoint (or the file is truncated)"
        )
        raise CheckpointError(f"cannot read {path}: not a zip archive; {hint}")
    try:
        with zipfile.ZipFile(path) as archive:
            pkls = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pkls) != 1:
                raise CheckpointError(f"{path}: expected one data.pkl in the archive, found {len(pkls)}")
            prefix = pkls[0][: -len("data.pkl")]
            big_endian = False
            if f"{prefix}byteorder" in archive.namelist():
                big_endian = archive.read(f"{prefix}byteorder").strip() == b"big"
            data = archive.read(pkls[0])
            return _RestrictedUnpickler(data, archive, prefix, path, big_endian).load()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, pickle.UnpicklingError, ValueError, TypeError,
            IndexError, AttributeError, KeyError) as e:
        raise CheckpointError(f"cannot read {path}: the checkpoint is truncated or corrupt ({type(e).__name__}: {e})") from None


def find_state_dict(obj: Any, path: str = "checkpoint") -> dict[str, np.ndarray]:
    """The ``{name: array}`` state dict inside a loaded checkpoint.

    Accepts a bare state dict, or one wrapped under ``"model"`` or ``"state_dict"`` (training
    scripts save those), and strips a ``module.`` prefix left by ``DistributedDataParallel``.
    """
    if isinstance(obj, dict) and not any(isinstance(v, np.ndarray) for v in obj.values()):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                return find_state_dict(obj[key], path)
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path} holds no state dict (found {type(obj).__name__})")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors
