"""Every sharding rule of radgan_jax, in one place (MaxText style).

Arrays are described with *logical* axis names ('batch', 'channels', ...). `LOGICAL_AXIS_RULES` maps each
logical name to mesh axes ('data', 'fsdp', 'tensor' from `mesh.py`) or None (replicated). Changing the
parallelism of a model means editing this table, never the model. The table is a tuple of
(logical, mesh_axes) pairs, the format `flax.linen.logical_axis_rules` / `nn.logical_to_mesh_sharding`
accept, so Flax modules annotated with `nn.with_logical_partitioning` use the same rules.

Today only the batch is sharded (data parallel + FSDP-style batch split); parameters are replicated.
To shard weights later, map e.g. 'mlp' -> 'tensor' or 'embed' -> 'fsdp' here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MeshAxes = str | tuple[str, ...] | None

LOGICAL_AXIS_RULES: tuple[tuple[str, MeshAxes], ...] = (
    # activations / data
    ("batch", ("data", "fsdp")),
    ("height", None),
    ("width", None),
    ("depth", None),  # 3D segmentation volumes
    ("channels", None),
    ("classes", None),
    ("ws", None),  # StyleGAN's per-layer w broadcast axis (num_ws)
    # parameters
    ("channels_in", None),
    ("channels_out", None),
    ("kernel_h", None),
    ("kernel_w", None),
    ("embed", None),
    ("mlp", None),
    ("heads", None),
    ("head_dim", None),
    ("vocab", None),  # class-embedding tables
)

_RULES: dict[str, MeshAxes] = dict(LOGICAL_AXIS_RULES)


def _present(mesh: Mesh | None, axes: MeshAxes) -> MeshAxes:
    """Drops mesh axes the mesh lacks, so rules stay valid on a mesh without e.g. 'tensor'."""
    if axes is None or mesh is None:
        return axes
    names = (axes,) if isinstance(axes, str) else axes
    kept = tuple(a for a in names if a in mesh.axis_names)
    return kept or None


def logical_spec(logical_axes: Sequence[str | None], mesh: Mesh | None = None) -> PartitionSpec:
    """PartitionSpec for an array whose dims carry `logical_axes` (None = explicitly replicated dim)."""
    spec, used = [], set()
    for name in logical_axes:
        if name is None:
            spec.append(None)
            continue
        if name not in _RULES:
            raise KeyError(
                f"logical axis {name!r} has no rule; add it to LOGICAL_AXIS_RULES in "
                f"radgan_jax/parallel/sharding.py (known: {', '.join(_RULES)})"
            )
        axes = _present(mesh, _RULES[name])
        for a in (axes,) if isinstance(axes, str) else axes or ():
            if a in used:
                raise ValueError(f"mesh axis {a!r} used twice in logical axes {tuple(logical_axes)}")
            used.add(a)
        spec.append(axes)
    return PartitionSpec(*spec)


def logical_sharding(mesh: Mesh, logical_axes: Sequence[str | None]) -> NamedSharding:
    """NamedSharding for an array whose dims carry `logical_axes`, under `LOGICAL_AXIS_RULES`."""
    return NamedSharding(mesh, logical_spec(logical_axes, mesh))


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading axis is 'batch' (sharded per the table), the other `ndim - 1` dims replicated."""
    if ndim < 1:
        raise ValueError(f"batch_sharding needs ndim >= 1, got {ndim}")
    return logical_sharding(mesh, ("batch",) + (None,) * (ndim - 1))


def num_batch_shards(mesh: Mesh) -> int:
    """How many ways the 'batch' axis is split on `mesh`."""
    axes = _present(mesh, _RULES["batch"])
    names = (axes,) if isinstance(axes, str) else axes or ()
    return int(np.prod([mesh.shape[a] for a in names], dtype=np.int64))


def pad_to_multiple(n: int, mesh: Mesh) -> int:
    """Smallest batch size >= n divisible by the number of batch shards (pad, run, then drop the tail)."""
    k = num_batch_shards(mesh)
    return -(-n // k) * k


def shard_host_batch(mesh: Mesh, local_batch: Any) -> Any:
    """Assembles a global batch-sharded `jax.Array` from this process's rows (a pytree of arrays).

    Each process passes its own slice (e.g. its share of a grain pipeline); the global leading size is
    `local_rows * jax.process_count()`. Works unchanged on one host and on a pod.
    """

    def one(x: Any) -> jax.Array:
        x = np.asarray(x)
        sharding = batch_sharding(mesh, x.ndim)
        local_shards = num_batch_shards(mesh) // max(1, jax.process_count())
        if local_shards and x.shape[0] % local_shards:
            raise ValueError(
                f"local batch of {x.shape[0]} rows does not split over this process's {local_shards} batch "
                f"shards; use pad_to_multiple()"
            )
        global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(one, local_batch)


def global_from_host(mesh: Mesh, x: Any) -> jax.Array:
    """Batch-sharded global array from a host array that every process holds *in full* (same values).

    Unlike `shard_host_batch` (each process brings its own rows), here each process already has the whole
    batch (e.g. latents derived from global seeds) and keeps only the rows its devices own.
    """
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, batch_sharding(mesh, x.ndim), lambda index: x[index])


def host_from_global(x: jax.Array) -> np.ndarray:
    """The full value of a (possibly multi-host sharded) array as numpy, on every process."""
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils  # only needed on multi-process runs

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def replicate_tree(mesh: Mesh, tree: Any) -> Any:
    """Puts every leaf of `tree` fully replicated on `mesh` (params for a data-parallel step).

    On multi-host, every process must pass the same values (e.g. params restored from one checkpoint).
    """
    return jax.device_put(tree, replicated(mesh))
