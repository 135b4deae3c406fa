"""The device mesh and the logical-axis rules: the one place samjax decides how arrays are sharded.

The mesh has three axes: ``data`` (pure data parallelism), ``fsdp`` (data parallelism whose replicas
also split parameters and optimizer state, ZeRO-3 style) and ``tensor`` (attention heads and MLP
hidden units split across devices). Modules name the logical axes of their parameters (``embed``,
``heads``, ``mlp``; see ``samjax.modeling.common.with_axes``); ``RULES`` maps those names to mesh
axes. A dimension that does not divide by its mesh axes is replicated instead (tiny test models,
relative-position tables), and unnamed parameters are replicated. Batches are split over
``data`` x ``fsdp``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
RULES: dict[str, tuple[str, ...]] = {
    "batch": BATCH_AXES,
    "embed": ("fsdp",),
    "heads": ("tensor",),
    "mlp": ("tensor",),
}


def mesh_shape(num_devices: int, data: int = -1, fsdp: int = 1, tensor: int = 1) -> tuple[int, int, int]:
    """Resolves one ``-1`` entry to fill ``num_devices``; the product must equal the device count."""
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got data={data}, fsdp={fsdp}, tensor={tensor}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh axis sizes must be positive or -1, got data={data}, fsdp={fsdp}, tensor={tensor}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"{num_devices} devices cannot be split with fixed axes of product {known}")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs {math.prod(sizes)} "
                         f"devices, but {num_devices} are available")
    return tuple(sizes)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence | None = None) -> Mesh:
    """A ``(data, fsdp, tensor)`` mesh over all devices (of all hosts) with Auto axis types."""
    devices = list(devices) if devices is not None else jax.devices()
    shape = mesh_shape(len(devices), data, fsdp, tensor)
    device_array = np.asarray(devices).reshape(shape)
    if devices == jax.devices() and len(devices) > 1:
        try:
            from jax.experimental import mesh_utils

            device_array = mesh_utils.create_device_mesh(shape, devices)  # topology-aware on TPU/GPU pods
        except (ValueError, NotImplementedError, AssertionError):
            pass
    return Mesh(device_array, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)


def logical_to_spec(names: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh) -> P:
    """Logical axis names of one array -> its PartitionSpec on ``mesh`` (see the module docstring)."""
    if not names:
        return P()
    if len(names) != len(shape):
        raise ValueError(f"{len(names)} axis names {tuple(names)} for an array of shape {tuple(shape)}")
    used: set[str] = set()
    spec = []
    for name, size in zip(names, shape):
        axes = tuple(a for a in RULES.get(name, ()) if a not in used and mesh.shape[a] > 1) if name else ()
        if axes and size % math.prod(mesh.shape[a] for a in axes) == 0:
            used.update(axes)
            spec.append(axes if len(axes) > 1 else axes[0])
        else:
            spec.append(None)
    return P(*spec)


def variable_shardings(state, mesh: Mesh):
    """An ``nnx.State`` (of Variables) -> the same tree of ``NamedSharding``s, as a pure dict."""

    def one(v):
        if isinstance(v, nnx.Variable):
            names = v.get_metadata().get("out_sharding")
            return NamedSharding(mesh, logical_to_spec(names, v.shape, mesh))
        return NamedSharding(mesh, P())

    return nnx.to_pure_dict(jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """Leading axis over ``data`` x ``fsdp``, the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def batch_size_per_process(global_batch: int, mesh: Mesh) -> int:
    """Checks the global batch divides over the batch axes and the processes; the per-process part."""
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if global_batch % ways:
        raise ValueError(f"global batch {global_batch} must be a multiple of data x fsdp = {ways}")
    if global_batch % jax.process_count():
        raise ValueError(f"global batch {global_batch} must be a multiple of the {jax.process_count()} processes")
    return global_batch // jax.process_count()


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows of a batch -> global arrays sharded over the batch axes of ``mesh``."""
    return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), np.asarray(v))
            for k, v in local.items()}
