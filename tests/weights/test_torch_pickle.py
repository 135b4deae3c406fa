"""The safe ``.pth`` reader: every dtype and tensor layout torch.save writes, and every way a file
can be hostile or broken (code-running pickles, truncation, corruption, wrong formats)."""

import builtins
import os
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch

import samjax
from samjax.weights.torch_pickle import CheckpointError, UnsafeCheckpointError, find_state_dict, load_pth


# --- well-formed checkpoints -----------------------------------------------------------------
def _torch_tensors():
    gen = torch.Generator().manual_seed(0)
    shared = torch.randn(40, generator=gen)
    return OrderedDict(
        f32=torch.randn(3, 5, generator=gen),
        f64=torch.randn(4, generator=gen, dtype=torch.float64),
        f16=torch.randn(2, 3, 4, generator=gen).half(),
        bf16=torch.randn(7, 3, generator=gen).bfloat16(),
        i64=torch.arange(-6, 6, dtype=torch.int64).reshape(3, 4),
        i32=torch.tensor([1, -2, 2**31 - 1], dtype=torch.int32),
        u8=torch.tensor([0, 7, 255], dtype=torch.uint8),
        boolean=torch.tensor([[True, False, True], [False, False, True]]),
        transposed=torch.randn(4, 6, generator=gen).t(),  # non-contiguous, strides (1, 6)
        strided=torch.randn(5, 8, generator=gen)[::2, 1::3],  # non-unit strides and an offset
        view_a=shared[5:17].view(3, 4),  # both views share one storage record, at different offsets
        view_b=shared[30:],
        scalar=torch.tensor(3.25),
        empty=torch.zeros(0, 4),
        empty_view=shared[3:3],
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tensors = _torch_tensors()
    path = tmp_path_factory.mktemp("pth") / "sd.pth"
    torch.save(tensors, path)
    return path, tensors


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.float().numpy()
    return t.numpy()


def test_load_pth_matches_torch_values(saved):
    path, tensors = saved
    # the fixture really exercises the layouts it claims to
    assert not tensors["transposed"].is_contiguous() and tensors["strided"].storage_offset() == 1
    assert tensors["view_a"].untyped_storage().data_ptr() == tensors["view_b"].untyped_storage().data_ptr()
    assert tensors["view_a"].storage_offset() == 5 and tensors["view_b"].storage_offset() == 30
    loaded = load_pth(path)
    assert isinstance(loaded, dict) and list(loaded) == list(tensors)
    for name, t in tensors.items():
        got = loaded[name]
        assert isinstance(got, np.ndarray), name
        assert got.shape == tuple(t.shape), name
        if t.dtype == torch.bfloat16:
            assert str(got.dtype) == "bfloat16", name
            np.testing.assert_array_equal(got.astype(np.float32), _as_numpy(t), err_msg=name)
        else:
            assert got.dtype == _as_numpy(t).dtype, name
            np.testing.assert_array_equal(got, _as_numpy(t), err_msg=name)


def test_loaded_arrays_are_independent_copies(saved):
    """Views of one storage come back as separate arrays: writing one leaves the other alone."""
    path, tensors = saved
    loaded = load_pth(path)
    loaded["view_a"][...] = 0
    np.testing.assert_array_equal(loaded["view_b"], tensors["view_b"].numpy())
    assert loaded["view_a"].flags.writeable


def test_parameters_and_nested_containers(tmp_path):
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(3, 2, generator=gen)
    obj = {
        "model": {"layer.weight": torch.nn.Parameter(w.clone()), "layer.bias": torch.zeros(3)},
        "epoch": 7,
        "lr": [0.1, 0.01],
        "name": "run",
    }
    torch.save(obj, tmp_path / "ckpt.pth")
    loaded = load_pth(tmp_path / "ckpt.pth")
    assert loaded["epoch"] == 7 and loaded["lr"] == [0.1, 0.01] and loaded["name"] == "run"
    np.testing.assert_array_equal(loaded["model"]["layer.weight"], w.numpy())
    np.testing.assert_array_equal(loaded["model"]["layer.bias"], np.zeros(3, np.float32))


def test_real_module_state_dict(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(5, 2))
    torch.save(net.state_dict(), tmp_path / "net.pth")
    loaded = load_pth(tmp_path / "net.pth")
    ref = net.state_dict()
    assert set(loaded) == set(ref)
    assert loaded["1.num_batches_tracked"].dtype == np.int64
    for k, v in ref.items():
        np.testing.assert_array_equal(loaded[k], v.numpy(), err_msg=k)


# --- find_state_dict --------------------------------------------------------------------------
SD = {"a.weight": np.ones((2, 2), np.float32), "a.bias": np.zeros(2, np.float32)}


@pytest.mark.parametrize(
    "wrapped",
    [
        SD,
        {"model": SD, "epoch": 3},
        {"state_dict": SD, "optimizer": {"lr": 0.1}},
        {"model_state_dict": SD},
        {"module.a.weight": SD["a.weight"], "module.a.bias": SD["a.bias"]},
        {"model": {"module.a.weight": SD["a.weight"], "module.a.bias": SD["a.bias"]}},
    ],
    ids=["bare", "model", "state_dict", "model_state_dict", "module_prefix", "model_and_module_prefix"],
)
def test_find_state_dict_unwraps(wrapped):
    found = find_state_dict(wrapped)
    assert set(found) == {"a.weight", "a.bias"}
    np.testing.assert_array_equal(found["a.weight"], SD["a.weight"])
    np.testing.assert_array_equal(found["a.bias"], SD["a.bias"])


def test_find_state_dict_keeps_partial_module_prefix():
    """Only a prefix that every tensor carries is DataParallel's; a lone module.* name is kept."""
    sd = {"module.x": np.ones(1), "y": np.zeros(1)}
    assert set(find_state_dict(sd)) == {"module.x", "y"}


def test_find_state_dict_from_real_torch_save(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    ddp_like = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"epoch": 1, "model": ddp_like}, tmp_path / "train.pth")
    found = find_state_dict(load_pth(tmp_path / "train.pth"))
    assert set(found) == {"weight", "bias"}
    np.testing.assert_array_equal(found["weight"], net.weight.detach().numpy())


@pytest.mark.parametrize("obj", [[np.ones(2)], {}, {"epoch": 3, "name": "x"}, np.ones(3)], ids=["list", "empty", "no_tensors", "array"])
def test_find_state_dict_rejects_non_state_dicts(obj):
    with pytest.raises(CheckpointError, match="holds no"):
        find_state_dict(obj, "my.pth")


# --- malicious pickles -------------------------------------------------------------------------
class _Payload:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _write_torch_zip(path, payload_bytes: bytes) -> None:
    """A zip in torch.save's layout whose data.pkl is ``payload_bytes``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", payload_bytes)
        z.writestr("archive/version", "3\n")
        z.writestr("archive/byteorder", "little")


def _malicious_payloads(sentinel):
    """name -> (object to pickle, the global its pickle names: 'module.name' at protocol >= 3)."""
    touch = f"touch {sentinel}"
    py = f"open({str(sentinel)!r}, 'w').write('pwned')"
    system = f"{os.system.__module__}.system"  # posix.system on Linux
    return {
        "os.system": (_Payload(os.system, touch), system),
        "builtins.exec": (_Payload(builtins.exec, py), "builtins.exec"),
        "builtins.eval": (_Payload(builtins.eval, py), "builtins.eval"),
        # the payload hidden inside an otherwise ordinary dict
        "nested": ({"w": 1.5, "x": [1, "a", _Payload(os.system, touch)]}, system),
    }


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "builtins.eval", "nested"])
def test_malicious_zip_checkpoint_runs_nothing(tmp_path, kind, protocol):
    sentinel = tmp_path / "SENTINEL"
    payload, global_name = _malicious_payloads(sentinel)[kind]
    if protocol < 3:  # Python 2 compatible pickles spell builtins as __builtin__
        global_name = global_name.replace("builtins.", "__builtin__.")
    data = pickle.dumps(payload, protocol=protocol)
    module, name = global_name.split(".")
    assert module.encode() in data and name.encode() in data  # the pickle really names that global
    path = tmp_path / "evil.pth"
    _write_torch_zip(path, data)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_pth(path)
    msg = str(info.value)
    assert f"'{global_name}'" in msg
    assert "refusing" in msg and str(path) in msg
    assert isinstance(info.value, CheckpointError)
    assert not sentinel.exists()


def test_malicious_payload_is_live(tmp_path):
    """Control: the same pickle, loaded with the plain unpickler, does run its code."""
    sentinel = tmp_path / "SENTINEL"
    payload, _ = _malicious_payloads(sentinel)["builtins.exec"]
    pickle.loads(pickle.dumps(payload, protocol=2))
    assert sentinel.exists()


def test_malicious_through_sam_model_registry(tmp_path):
    sentinel = tmp_path / "SENTINEL"
    payload, global_name = _malicious_payloads(sentinel)["os.system"]
    path = tmp_path / "sam_vit_b_evil.pth"
    _write_torch_zip(path, pickle.dumps(payload, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=f"'{global_name}'"):
        samjax.sam_model_registry["vit_b"](checkpoint=path)
    with pytest.raises(UnsafeCheckpointError, match=f"'{global_name}'"):
        samjax.build_sam("vit_b", checkpoint=str(path), image_size=64)
    assert not sentinel.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_legacy_raw_pickle_is_refused_without_running(tmp_path, protocol):
    sentinel = tmp_path / "SENTINEL"
    payload, _ = _malicious_payloads(sentinel)["os.system"]
    path = tmp_path / "legacy.pth"
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(CheckpointError) as info:
        load_pth(path)
    msg = str(info.value)
    assert "not a zip archive" in msg and "legacy" in msg
    assert not sentinel.exists()
    with pytest.raises(CheckpointError, match="legacy"):
        samjax.sam_model_registry["vit_b"](checkpoint=str(path))
    assert not sentinel.exists()


def test_real_legacy_torch_save_is_refused(tmp_path):
    path = tmp_path / "old.pth"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy"):
        load_pth(path)


def test_unknown_class_global_is_refused(tmp_path):
    """Not only callables: any class outside the allow-list (e.g. a user's nn.Module) is refused."""
    path = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UnsafeCheckpointError, match="torch.nn.modules.linear.Linear"):
        load_pth(path)


# --- broken files ------------------------------------------------------------------------------
@pytest.fixture()
def good_file(tmp_path):
    gen = torch.Generator().manual_seed(3)
    sd = {"w": torch.randn(64, 64, generator=gen), "b": torch.arange(1000, dtype=torch.float32)}
    path = tmp_path / "good.pth"
    torch.save(sd, path)
    assert set(load_pth(path)) == {"w", "b"}  # control: intact, it loads
    return path, sd


def test_truncated_file(good_file, tmp_path):
    path, _ = good_file
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_pth(cut)
    msg = str(info.value)
    assert str(cut) in msg and "truncated" in msg


def test_corrupted_storage_bytes(good_file, tmp_path):
    path, sd = good_file
    data = bytearray(path.read_bytes())
    record = sd["b"].numpy().tobytes()
    at = bytes(data).find(record)
    assert at > 0
    data[at + 100 : at + 104] = b"\xde\xad\xbe\xef"
    bad = tmp_path / "crc.pth"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        load_pth(bad)
    msg = str(info.value)
    assert "corrupt" in msg and "data/" in msg and "CRC" in msg


def test_storage_record_missing(good_file, tmp_path):
    path, _ = good_file
    bad = tmp_path / "missing_record.pth"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        names = src.namelist()
        dropped = [n for n in names if "/data/" in n and not n.split("/")[-1].startswith(".")][0]
        for n in names:
            if n != dropped:
                dst.writestr(n, src.read(n))
    with pytest.raises(CheckpointError, match="is missing"):
        load_pth(bad)


def test_storage_record_too_short(good_file, tmp_path):
    """A consistent zip whose storage record holds fewer bytes than the pickle says."""
    path, _ = good_file
    bad = tmp_path / "short_record.pth"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for n in src.namelist():
            raw = src.read(n)
            if "/data/" in n and not n.split("/")[-1].startswith("."):
                raw = raw[: len(raw) - 8]
            dst.writestr(n, raw)
    with pytest.raises(CheckpointError) as info:
        load_pth(bad)
    assert "truncated or corrupt" in str(info.value) and "bytes" in str(info.value)


def test_tensor_beyond_its_storage(tmp_path):
    """A hand-made pickle whose tensor claims more elements than its storage holds."""

    class Rebuild:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (_Persist(), 0, (10,), (1,), False, OrderedDict()))

    class _Persist:
        pass

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Persist):
                return ("storage", torch.FloatStorage, "0", "cpu", 4)
            return None

    import io

    buf = io.BytesIO()
    P(buf, protocol=2).dump({"t": Rebuild()})
    path = tmp_path / "oob.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/data/0", np.arange(4, dtype=np.float32).tobytes())
        z.writestr("archive/version", "3\n")
    with pytest.raises(CheckpointError) as info:
        load_pth(path)
    assert "(10,)" in str(info.value) and "truncated or corrupt" in str(info.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        load_pth(path)
    assert "not a zip archive" in str(info.value) and "not a PyTorch checkpoint" in str(info.value)


def test_random_bytes_file(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert data[:1] != b"\x80"
    path = tmp_path / "noise.pth"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        load_pth(path)
    assert "not a zip archive" in str(info.value) and "not a PyTorch checkpoint" in str(info.value)


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="data.pkl"):
        load_pth(path)


def test_garbage_data_pkl(tmp_path):
    path = tmp_path / "garbage.pth"
    _write_torch_zip(path, b"\x80\x02this is not a pickle")
    with pytest.raises(CheckpointError) as info:
        load_pth(path)
    assert "truncated or corrupt" in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pth(path)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        samjax.sam_model_registry["vit_b"](checkpoint=str(path))
