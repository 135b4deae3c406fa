"""Multi-host start-up: one process per host, joined by ``jax.distributed.initialize``.

Three ways a run learns it has several processes:

- explicit flags: ``--coordinator_address host:port --num_processes N --process_id i`` (any cluster,
  or several processes on one machine);
- the environments JAX detects by itself: Cloud TPU pods, SLURM (``srun``), Open MPI (``mpirun``);
- neither: a single process, nothing to initialize.

Must run before anything touches a JAX device. On CPU, collectives go through gloo.
"""

from __future__ import annotations

import os

import jax

_DETECTED_ENV = {
    "SLURM_NTASKS": "SLURM",
    "OMPI_COMM_WORLD_SIZE": "Open MPI",
}


def detected_cluster() -> str | None:
    """The multi-process environment JAX can initialize from by itself, if any."""
    for var, name in _DETECTED_ENV.items():
        if int(os.environ.get(var, "1") or 1) > 1:
            return name
    if os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0 or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "Cloud TPU"
    return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids=None) -> bool:
    """Joins the processes of the run; returns False for a single process. Idempotent."""
    if jax.distributed.is_initialized():
        return True
    explicit = coordinator_address is not None or (num_processes or 1) > 1
    if not explicit and detected_cluster() is None:
        return False
    if explicit and (coordinator_address is None or num_processes is None or process_id is None):
        raise ValueError("--coordinator_address, --num_processes and --process_id go together")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=int(num_processes),
                                   process_id=int(process_id), local_device_ids=local_device_ids)
    else:
        jax.distributed.initialize()
    return True
