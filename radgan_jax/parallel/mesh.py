"""Device mesh from the config.

The mesh always has the three axes `MESH_AXES = ('data', 'fsdp', 'tensor')` (sizes of 1 are free), so
sharding rules in `sharding.py` can name any of them whatever the run's parallelism. The config gives
the sizes; one of them may be -1, meaning "all remaining devices":

    config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1, 'tensor': 1})

Default (no config / empty): every device on 'data' — pure data parallelism, which is what generation
and small-GAN training want.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")


def mesh_shape(mesh_config: Mapping[str, int] | Any | None, num_devices: int) -> tuple[int, ...]:
    """Resolves the config's axis sizes (with at most one -1) against `num_devices`.

    Raises ValueError with the offending config when the sizes cannot tile the devices.
    """
    given = dict(mesh_config.items()) if mesh_config is not None else {}
    unknown = sorted(set(given) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"unknown mesh axes {unknown} in mesh config {given}; valid axes: {MESH_AXES}")
    if not given:
        given = {"data": -1}
    sizes = [int(given.get(a, 1)) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh config {given}: at most one axis may be -1 (all remaining devices)")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh config {given}: axis sizes must be positive or -1")
    fixed = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % fixed:
            raise ValueError(
                f"mesh config {given}: the fixed axes use {fixed} devices, which does not divide the "
                f"{num_devices} available devices"
            )
        sizes[sizes.index(-1)] = num_devices // fixed
    if math.prod(sizes) != num_devices:
        shape = dict(zip(MESH_AXES, sizes))
        raise ValueError(
            f"mesh config {given} -> shape {shape} covers {math.prod(sizes)} devices, but there are "
            f"{num_devices}; make the product equal the device count or set one axis to -1"
        )
    return tuple(sizes)


def make_mesh(
    mesh_config: Mapping[str, int] | Any | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A `Mesh` over `devices` (default: all global devices) with axes ('data', 'fsdp', 'tensor').

    Axes are `AxisType.Auto` (classic GSPMD propagation with `jax.jit(in_shardings=..., out_shardings=...)`);
    `jax.make_mesh`'s default in this JAX version is Explicit, which would require sharding-in-types
    annotations throughout the models.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_config, len(devices))
    try:
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)
    except (ValueError, NotImplementedError, AssertionError):
        # make_mesh wants topology-aware layouts; fall back to plain device order (odd slices, subsets).
        return Mesh(np.asarray(devices, dtype=object).reshape(shape), MESH_AXES,
                    axis_types=(AxisType.Auto,) * len(MESH_AXES))
