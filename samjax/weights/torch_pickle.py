"""Reads PyTorch ``.pth`` checkpoints into NumPy without PyTorch and without running their code.

A ``.pth`` file is a zip archive holding a pickle (``data.pkl``) plus one raw byte record per tensor
storage. Unpickling an untrusted pickle can run arbitrary code, so this reader uses a restricted,
pure-Python unpickler:

- the only globals it resolves are an allow-list of tensor-rebuilding functions, storage types,
  numeric dtypes and plain containers, each replaced by a NumPy implementation that checks its
  arguments; any other global (``os.system``, ``builtins.eval``, a user class...) stops the load with
  :class:`UnsafeCheckpointError` before anything is called;
- ``BUILD`` (``__setstate__``) is honoured only for dicts and NumPy arrays and dtypes made here, so
  no object's internals can be rewritten;
- storages are opaque tokens; tensors must lie inside them, records must be stored uncompressed at
  their declared size, and no tensor may be larger than its storage, so a small hostile file cannot
  allocate more than it holds and a truncated file is an error, never a wrong array.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from typing import Any

import numpy as np

from samjax.errors import CheckpointError, UnsafeCheckpointError

try:  # bfloat16 for NumPy; ml_dtypes ships with jax
    from ml_dtypes import bfloat16 as _bfloat16
except ImportError:  # pragma: no cover
    _bfloat16 = None

__all__ = ["CheckpointError", "UnsafeCheckpointError", "find_state_dict", "load_pth"]

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
    "UntypedStorage": np.uint8,
}
_TORCH_DTYPES = {  # torch.<name> as pickled by _rebuild_tensor_v3
    "float32": np.float32, "float64": np.float64, "float16": np.float16, "bfloat16": _bfloat16,
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
    "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
}
_MAX_PICKLE_BYTES = 256 * 1024 * 1024


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class _TorchDtype:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class _StorageRef:
    """An opaque handle to a storage record; the bytes stay inside the unpickler."""

    __slots__ = ("key",)

    def __init__(self, key: str):
        self.key = key


class _TensorType:
    """Stands for ``torch.Tensor`` / ``torch.nn.Parameter`` classes in ``_rebuild_from_type_v2``."""


class _Unpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcode table can be restricted
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: str, big_endian: bool):
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._path = path
        self._big_endian = big_endian
        self._storages: dict[str, np.ndarray] = {}
        self._globals = {
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_tensor_v3"): self._rebuild_tensor_v3,
            ("torch._utils", "_rebuild_parameter"): _first,
            ("torch._utils", "_rebuild_parameter_with_state"): _first,
            ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
            ("torch", "Tensor"): _TensorType,
            ("torch.nn.parameter", "Parameter"): _TensorType,
            ("torch", "Size"): _size,
            ("torch", "device"): str,
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
            ("_codecs", "encode"): _codecs_encode,
            ("numpy", "dtype"): _numeric_dtype,
            ("numpy.core.multiarray", "scalar"): _numpy_scalar,
            ("numpy._core.multiarray", "scalar"): _numpy_scalar,
            ("numpy.core.multiarray", "_reconstruct"): _ndarray_placeholder,
            ("numpy._core.multiarray", "_reconstruct"): _ndarray_placeholder,
            ("numpy", "ndarray"): np.ndarray,
        }

    def find_class(self, module: str, name: str) -> Any:
        if module in ("torch", "torch.storage") and _STORAGE_DTYPES.get(name) is not None:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and _TORCH_DTYPES.get(name) is not None:
            return _TorchDtype(_TORCH_DTYPES[name])
        if (module, name) in self._globals:
            return self._globals[(module, name)]
        raise UnsafeCheckpointError(
            f"{self._path} asks to load '{module}.{name}', which is not a tensor or a plain container; "
            "refusing to run code from an untrusted checkpoint. If you trust this file, load it with "
            "torch.load and save only the state dict: torch.save(model.state_dict(), 'clean.pth')"
        )

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, _NdarrayPlaceholder):
            self.stack[-1] = inst.build(state)
        elif isinstance(inst, np.dtype):
            pass  # byte order and flags of a numeric dtype made by _numeric_dtype: nothing to restore
        elif isinstance(inst, dict) and (state is None or isinstance(state, dict)):
            pass  # OrderedDict's attributes (state_dict._metadata) are not needed
        else:
            raise UnsafeCheckpointError(
                f"{self._path} asks to set the state of a {type(inst).__name__}; refusing (malicious or unsupported)"
            )

    dispatch[pickle.BUILD[0]] = load_build

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self._path}: unsupported persistent record {pid!r:.80}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{self._path}: malformed storage record {pid!r:.80}")
        key = str(key)
        if key not in self._storages:
            dtype = storage_type.dtype.newbyteorder(">" if self._big_endian else "<")
            raw = self._read_record(f"{self._prefix}data/{key}", numel * dtype.itemsize)
            self._storages[key] = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
        return _StorageRef(key)

    def _read_record(self, name: str, expected: int) -> bytes:
        try:
            info = self._archive.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self._path}: storage record '{name}' is missing (truncated file?)") from None
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != expected:
            raise CheckpointError(
                f"{self._path}: storage '{name}' holds {info.file_size} bytes (compression {info.compress_type}), "
                f"expected {expected} stored bytes: the checkpoint is truncated or corrupt"
            )
        try:
            return self._archive.read(name)
        except (zipfile.BadZipFile, OSError, EOFError) as e:  # CRC error, short read
            raise CheckpointError(f"{self._path}: storage record '{name}' is corrupt: {e}") from None

    def _rebuild_tensor(self, storage, storage_offset, size, stride, *_unused) -> np.ndarray:
        if not isinstance(storage, _StorageRef):
            raise CheckpointError(f"{self._path}: a tensor is not backed by a storage record")
        return _view(self._storages[storage.key], storage_offset, size, stride)

    def _rebuild_tensor_v3(self, storage, storage_offset, size, stride, requires_grad, hooks, dtype, *_unused):
        if not isinstance(storage, _StorageRef) or not isinstance(dtype, _TorchDtype):
            raise CheckpointError(f"{self._path}: malformed tensor record")
        raw = self._storages[storage.key]
        if raw.dtype != np.uint8 or raw.size % dtype.dtype.itemsize:
            raise CheckpointError(f"{self._path}: storage does not hold whole {dtype.dtype} elements")
        flat = raw.view(dtype.dtype.newbyteorder(">" if self._big_endian else "<")).astype(dtype.dtype)
        return _view(flat, storage_offset, size, stride)


def _view(flat: np.ndarray, storage_offset, size, stride) -> np.ndarray:
    """``flat[offset + sum(i_k * stride_k)]`` over ``size``, checked to stay inside ``flat``."""
    try:
        offset = int(storage_offset)
        size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    except (TypeError, ValueError):
        raise CheckpointError("malformed checkpoint: tensor size or stride is not a list of integers") from None
    if flat.ndim != 1 or len(size) != len(stride) or min((*size, *stride, offset), default=0) < 0:
        raise CheckpointError(f"malformed checkpoint: tensor size {size}, stride {stride}, offset {offset}")
    count = int(np.prod(size, dtype=np.int64)) if size else 1
    if count == 0:
        return np.zeros(size, flat.dtype)
    if count > flat.size:
        raise CheckpointError(
            f"tensor of shape {size} has more elements than its storage ({flat.size}): the checkpoint is "
            "truncated or corrupt (or holds an expanded, stride-0 tensor: save tensor.contiguous() instead)"
        )
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise CheckpointError(
            f"tensor of shape {size} reaches element {last} of a storage of {flat.size}: "
            "the checkpoint is truncated or corrupt"
        )
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size, strides=[s * flat.itemsize for s in stride], writeable=False
    )
    return np.array(view)


def _first(data, *_unused):
    return data


def _rebuild_from_type(func, new_type, args, state=None):
    if new_type is not _TensorType or not callable(func):
        raise UnsafeCheckpointError("checkpoint rebuilds a tensor subclass; refusing")
    return func(*args)


def _size(*args):
    return tuple(int(v) for v in (args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args))


def _codecs_encode(obj, encoding="latin1"):
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError("malformed checkpoint: unexpected byte-string record")
    return obj.encode("latin1")


def _numeric_dtype(obj, *_flags) -> np.dtype:
    """``numpy.dtype(...)`` for plain numbers only (no object, structured or void types)."""
    try:
        dtype = np.dtype(obj) if isinstance(obj, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biufc" or dtype.fields is not None:
        raise UnsafeCheckpointError(f"checkpoint asks for numpy dtype {obj!r:.40}; only numeric dtypes are allowed")
    return dtype


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or dtype.hasobject or dtype.fields:
        raise UnsafeCheckpointError("checkpoint builds a numpy scalar of a non-numeric dtype; refusing")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise CheckpointError("malformed checkpoint: numpy scalar of the wrong size")
    return np.frombuffer(data, dtype=dtype)[0]


class _NdarrayPlaceholder:
    """``numpy.core.multiarray._reconstruct``'s empty array, completed only by a checked ``BUILD``."""

    def build(self, state) -> np.ndarray:
        try:
            _version, shape, dtype, fortran, raw = state
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise CheckpointError("malformed checkpoint: numpy array record") from None
        if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(raw, bytes):
            raise UnsafeCheckpointError("checkpoint holds a numpy array of a non-numeric dtype; refusing")
        if len(raw) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise CheckpointError("malformed checkpoint: numpy array data of the wrong size")
        return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def _ndarray_placeholder(cls, shape, dtype_code):
    if cls is not np.ndarray:
        raise UnsafeCheckpointError("checkpoint reconstructs an ndarray subclass; refusing")
    return _NdarrayPlaceholder()


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
            if archive.getinfo(pkls[0]).file_size > _MAX_PICKLE_BYTES:
                raise CheckpointError(f"{path}: data.pkl is implausibly large for a state dict")
            prefix = pkls[0][: -len("data.pkl")]
            big_endian = False
            if f"{prefix}byteorder" in archive.namelist():
                big_endian = archive.read(f"{prefix}byteorder").strip() == b"big"
            data = archive.read(pkls[0])
            return _Unpickler(data, archive, prefix, path, big_endian).load()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, pickle.UnpicklingError, ValueError, TypeError,
            IndexError, AttributeError, KeyError, OverflowError, RecursionError, MemoryError) as e:
        raise CheckpointError(f"cannot read {path}: the checkpoint is truncated or corrupt ({type(e).__name__}: {e})") from None


def find_state_dict(obj: Any, path: str = "checkpoint") -> dict[str, np.ndarray]:
    """The ``{name: array}`` state dict inside a loaded checkpoint.

    Accepts a bare state dict, or one wrapped under ``"model"`` or ``"state_dict"`` (training
    scripts save those), and strips a ``module.`` prefix left by ``DistributedDataParallel``.
    """
    if isinstance(obj, dict):
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
