"""8 simulated CPU devices give the losses of one device: data=2 x fsdp=2 x tensor=2 for fine-tuning,
data=2 x fsdp=4 for MAE and interactive steps; parameters really are split; the mesh arithmetic
and the logical-axis rules."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from samjax import parallel
from train_runs import env

HERE = os.path.dirname(os.path.abspath(__file__))


def sharded_runs(arg, *meshes):
    result = subprocess.run([sys.executable, os.path.join(HERE, "sharded_losses.py"), arg,
                             *(",".join(map(str, m)) for m in meshes)], capture_output=True, text=True, timeout=900,
                            env=env())
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    return [runs[",".join(map(str, m))] for m in meshes]


@pytest.mark.parametrize("arg,meshes", [
    ("vit_b,encoder_decoder,none", [(2, 2, 2)]),
    ("mae", [(2, 4, 1)]),
    ("interactive", [(2, 4, 1)]),
], ids=["finetune", "mae", "interactive"])
def test_sharded_losses_match_one_device(arg, meshes):
    one_device, *sharded = sharded_runs(arg, (1, 1, 1), *meshes)
    for mesh, run in zip(meshes, sharded):
        np.testing.assert_allclose(run["losses"], one_device["losses"], rtol=2e-5)
        np.testing.assert_allclose(run["param_norm"], one_device["param_norm"], rtol=2e-5)
        assert run["devices"] == 8
        assert any("fsdp" in s for s in run["specs"])  # parameters are split, not only replicated
        if mesh[2] > 1:
            assert any("tensor" in s for s in run["specs"])


def test_mesh_shape_fills_and_checks():
    assert parallel.mesh_shape(8, -1, 4, 1) == (2, 4, 1)
    assert parallel.mesh_shape(8, 2, -1, 2) == (2, 2, 2)
    with pytest.raises(ValueError, match="at most one"):
        parallel.mesh_shape(8, -1, -1, 1)
    with pytest.raises(ValueError, match="cannot be split"):
        parallel.mesh_shape(8, -1, 3, 1)
    with pytest.raises(ValueError, match="needs 4 devices, but 8"):
        parallel.mesh_shape(8, 2, 2, 1)


def test_logical_rules():
    class FakeMesh:
        shape = {"data": 2, "fsdp": 2, "tensor": 2}

    mesh = FakeMesh()
    assert parallel.logical_to_spec(("embed", "heads"), (64, 192), mesh) == P("fsdp", "tensor")
    assert parallel.logical_to_spec(("embed", "mlp"), (63, 128), mesh) == P(None, "tensor")  # 63 % 2: replicated
    assert parallel.logical_to_spec((None, None), (7, 16), mesh) == P(None, None)
    assert parallel.logical_to_spec(None, (7,), mesh) == P()
    assert parallel.logical_to_spec(("embed", "embed"), (64, 64), mesh) == P("fsdp", None)  # an axis is used once
    with pytest.raises(ValueError, match="axis names"):
        parallel.logical_to_spec(("embed",), (4, 4), mesh)
