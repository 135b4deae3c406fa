"""Initial values: the host (NumPy) draws match the JAX initializers' distributions, and the key streams
give what ``nnx.Rngs`` gives."""

import jax
import numpy as np
import pytest
from flax import nnx

from samjax.build_sam import abstract_sam, build_sam_from_spec
from samjax.modeling import initializers as init
from samjax.modeling.keys import HostKeys, KeyStream
from tiny_sams import VIT

SHAPE = (3, 3, 96, 160)  # a conv kernel: fans 3*3*96 and 3*3*160, 138240 values (several host chunks below)


@pytest.mark.parametrize("make", [
    lambda: init.truncated_normal(0.02),
    lambda: init.normal(1.0),
    lambda: init.variance_scaling(2.0, "fan_in", "truncated_normal", in_axis=2, out_axis=3),
    lambda: init.variance_scaling(1.0, "fan_out", "normal", in_axis=2, out_axis=3),
    lambda: init.variance_scaling(1 / 3, "fan_avg", "uniform", in_axis=2, out_axis=3),
    lambda: init.variance_scaling(1 / 3, "fan_in", "uniform", in_axis=-2, out_axis=-1, batch_axis=(0,)),
], ids=["trunc", "normal", "vs_trunc_in", "vs_normal_out", "vs_uniform_avg", "vs_uniform_batch"])
def test_host_draws_follow_the_jax_distribution(make, monkeypatch, request):
    monkeypatch.setattr(init, "_CHUNK", 10000)  # many chunks on the pool
    f = make()
    host = f(HostKeys(7)(), SHAPE)
    ref = np.asarray(f(jax.random.key(7), SHAPE))
    assert host.shape == ref.shape and host.dtype == np.float32
    assert host.std() == pytest.approx(ref.std(), rel=0.02)
    assert abs(host.mean()) < 0.02 * ref.std()
    assert np.percentile(np.abs(host), 99) == pytest.approx(np.percentile(np.abs(ref), 99), rel=0.03)
    if request.node.callspec.id != "normal" and "vs_normal" not in request.node.callspec.id:
        assert np.abs(host).max() == pytest.approx(np.abs(ref).max(), rel=0.01)  # the truncation / uniform bound
    assert not np.array_equal(host, ref)


def test_host_draws_are_seeded_and_do_not_depend_on_chunking(monkeypatch):
    f = init.truncated_normal(1.0)
    a = f(HostKeys(3)(), (1000, 50))
    assert np.array_equal(a, f(HostKeys(3)(), (1000, 50)))
    assert not np.array_equal(a, f(HostKeys(4)(), (1000, 50)))
    stream = HostKeys(3)
    stream.params()
    assert not np.array_equal(a, f(stream.params(), (1000, 50)))  # the second draw of a stream differs
    assert np.abs(a).max() <= 2.0
    monkeypatch.setattr(init, "_POOL", __import__("concurrent.futures").futures.ThreadPoolExecutor(1))
    assert np.array_equal(a, f(HostKeys(3)(), (1000, 50)))  # one thread: the same values


def test_constants_and_fans():
    assert np.array_equal(init.ones_init(HostKeys(0)(), (2, 3)), np.ones((2, 3), np.float32))
    assert np.array_equal(np.asarray(init.zeros_init(jax.random.key(0), (4,))), np.zeros(4))
    assert init.fans((3, 3, 96, 160), 2, 3) == (864, 1440)
    assert init.fans((5, 64, 32), -2, -1, (0,)) == (64, 32)


def test_key_streams():
    """KeyStream hands out exactly nnx.Rngs' keys; a HostKeys build has the variables of a JAX-drawn one,
    on the device, random ones redrawn and constant ones equal."""
    rngs, stream = nnx.Rngs(5), KeyStream(5)
    for _ in range(4):
        assert np.array_equal(jax.random.key_data(rngs.params()), jax.random.key_data(stream.params()))
    ref = nnx.state(abstract_sam(VIT))
    host = nnx.state(build_sam_from_spec(VIT, rngs=HostKeys(5)))
    leaves = [jax.tree_util.tree_leaves_with_path(s) for s in (ref, host)]
    assert [p for p, _ in leaves[0]] == [p for p, _ in leaves[1]]
    for (path, r), (_, h) in zip(*leaves):
        assert isinstance(h, jax.Array) and h.shape == r.shape and h.dtype == r.dtype, path
    ones = [h for p, h in leaves[1] if "norm" in str(p) and "'scale'" in str(p)]
    kernels = [h for p, h in leaves[1] if "kernel" in str(p)]
    assert ones and all(np.array_equal(h, np.ones_like(h)) for h in ones)
    assert all(0 < float(np.std(h)) < 1 for h in kernels)
