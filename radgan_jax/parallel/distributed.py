"""Multi-process start-up (`jax.distributed`), called by main.py when `config.distributed` is true.

On Cloud TPU VMs, GKE/xpk and SLURM, `jax.distributed.initialize()` with no arguments finds the coordinator,
process count and process id from the environment. Anywhere else (several processes on one machine, a
hand-rolled cluster) set JAX_COORDINATOR_ADDRESS=host:port (read by jax), JAX_NUM_PROCESSES and
JAX_PROCESS_ID (read here); `launch/local_multiprocess.sh` does exactly that. On CPU the processes talk
through gloo (jax's default CPU collectives).

Must run before anything touches a JAX backend (creating arrays, `jax.devices()`), which is why main.py
calls it before importing the job.
"""

from __future__ import annotations

import os

import jax
from absl import logging


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Idempotent wrapper around `jax.distributed.initialize`; logs this process's index and the count."""
    if jax.distributed.is_initialized():
        logging.info("jax.distributed already initialized (process %d of %d)",
                     jax.process_index(), jax.process_count())
        return
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    kwargs = {}
    if coordinator_address is not None:
        kwargs["coordinator_address"] = coordinator_address
    if num_processes is not None:
        kwargs["num_processes"] = num_processes
    if process_id is not None:
        kwargs["process_id"] = process_id
    jax.distributed.initialize(**kwargs)
    logging.info(
        "jax.distributed initialized: process %d of %d, %d local / %d global devices",
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
    )


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None
