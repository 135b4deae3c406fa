"""The safe ``.pth`` reader against attacks that stay inside its allow-list (object dtypes, state
rewrites, stride-0 blow-ups, compressed records) and with what training scripts save beside weights."""

import io
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch

from samjax.weights.torch_pickle import CheckpointError, UnsafeCheckpointError, find_state_dict, load_pth


# --- hardening: attacks that stay inside the allow-list --------------------------------------
class _Marker:
    """Pickled as a persistent storage record of four float32 values."""


def _pickle_with_storage(obj, protocol=2) -> bytes:
    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, _Marker):
                return ("storage", torch.FloatStorage, "0", "cpu", 4)
            return None

    buf = io.BytesIO()
    P(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def _archive(path, pkl: bytes, record: bytes = np.arange(4, dtype=np.float32).tobytes(), compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr(zipfile.ZipInfo("archive/data/0"), record, compress_type=compress)
        z.writestr("archive/version", "3\n")
    return path


class _Reduce:
    def __init__(self, *reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def test_object_dtype_is_refused(tmp_path):
    """A structured dtype carrying an object field would let bytes become pointers."""
    path = _archive(tmp_path / "dtype.pth", pickle.dumps({"x": np.dtype([("a", "O")])}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="only numeric dtypes"):
        load_pth(path)


def test_build_on_a_storage_is_refused(tmp_path):
    import torch._utils

    attack = _Reduce(torch._utils._rebuild_parameter, (_Marker(),), {"array": "anything"})
    path = _archive(tmp_path / "build.pth", _pickle_with_storage({"w": attack}))
    with pytest.raises(UnsafeCheckpointError, match="set the state"):
        load_pth(path)


def test_stride_zero_blow_up_is_refused(tmp_path):
    import torch._utils

    huge = _Reduce(torch._utils._rebuild_tensor_v2, (_Marker(), 0, (10**8,), (0,), False, OrderedDict()))
    path = _archive(tmp_path / "expand.pth", _pickle_with_storage({"w": huge}))
    with pytest.raises(CheckpointError, match="more elements than its storage"):
        load_pth(path)


def test_codecs_encode_of_a_number_is_refused(tmp_path):
    import _codecs

    path = _archive(tmp_path / "codecs.pth", pickle.dumps({"x": _Reduce(_codecs.encode, (10**9,))}, protocol=2))
    with pytest.raises(CheckpointError, match="unexpected byte-string"):
        load_pth(path)


def test_compressed_storage_record_is_refused(tmp_path):
    import torch._utils

    t = _Reduce(torch._utils._rebuild_tensor_v2, (_Marker(), 0, (4,), (1,), False, OrderedDict()))
    path = _archive(tmp_path / "zip.pth", _pickle_with_storage({"w": t}), compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="expected 16 stored bytes"):
        load_pth(path)


def test_training_checkpoint_with_numpy_and_torch_values(tmp_path):
    """What training scripts save next to the weights loads too (and only the tensors are used)."""
    state = {
        "model": {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "u": torch.tensor([1, 2], dtype=torch.uint16)},
        "best": np.array([0.5, 0.25]),
        "epoch": np.int64(7),
        "shape": torch.Size([2, 3]),
        "device": torch.device("cpu"),
    }
    torch.save(state, tmp_path / "train.pth")
    loaded = load_pth(tmp_path / "train.pth")
    np.testing.assert_array_equal(loaded["model"]["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(loaded["model"]["u"], np.array([1, 2], np.uint16))
    np.testing.assert_array_equal(loaded["best"], [0.5, 0.25])
    assert loaded["epoch"] == 7 and loaded["shape"] == (2, 3) and loaded["device"] == "cpu"
    assert set(find_state_dict(loaded)) == {"w", "u"}
