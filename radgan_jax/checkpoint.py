"""The one checkpoint wrapper every radgan_jax job uses (orbax `CheckpointManager` underneath).

Layout of `DIR/<step>/` (one orbax Composite checkpoint per step):
    <item>/     one orbax StandardSave pytree per named item ('params', 'ema', 'opt_state', 'rng', ...)
    metadata/   JSON: {'format', 'items', 'prng_keys', 'metadata': <the job's metadata dict>}
The job's metadata is plain JSON (tuples come back as lists); the generator stores its full constructor
kwargs there so a model can be rebuilt from the checkpoint alone.

Guarantees:
  * Atomic: orbax writes `<step>.orbax-checkpoint-tmp-*` and renames it when complete, so a crash never
    leaves a step `latest_step()` would pick; leftover tmp directories are ignored (and cleaned up).
  * Typed PRNG keys (`jax.random.key`) round-trip: they are stored as `jax.random.key_data` (uint32) and
    re-wrapped with their implementation on restore (recorded under 'prng_keys'). A restored key is a
    jax.Array even when the rest of the item is restored as numpy.
  * With `best_metric`, up to `max_to_keep` best checkpoints are kept *plus the `keep_latest` newest*, so
    resuming always works; `best_step()` picks by the metric.
  * Async saves (default): `save` returns after device->host copy; files are written in the background.
    Don't mutate numpy buffers passed to `save` until `wait()`. `restore` waits for pending saves.

Multi-host: every process calls `save`/`restore` with its (globally sharded) arrays; orbax coordinates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

META_ITEM = "metadata"  # reserved item name holding the JSON metadata
_FORMAT = 1
_ITEM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _path_parts(path: tuple[Any, ...]) -> list[str]:
    """Key path -> list of strings that is identical for dicts, dataclasses and their restored dicts."""
    out = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                out.append(str(getattr(k, attr)))
                break
        else:
            out.append(str(k))
    return out


def _is_typed_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _unwrap_keys(tree: Any) -> tuple[Any, list[list[Any]]]:
    """Replaces typed keys by their uint32 key data; returns the tree and [[path parts, impl], ...]."""
    found: list[list[Any]] = []

    def f(path, x):
        if _is_typed_key(x):
            found.append([_path_parts(path), str(jax.random.key_impl(x))])
            return jax.random.key_data(x)
        return x

    return jax.tree_util.tree_map_with_path(f, tree), found


def _key_data_target(x: Any) -> Any:
    """Abstract target for the key data of a typed-key target leaf, keeping its sharding."""
    if not _is_typed_key(x):
        return x
    data = jax.eval_shape(jax.random.key_data, x)
    return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=getattr(x, "sharding", None))


def _rewrap_keys(tree: Any, keys: list[list[Any]]) -> Any:
    impls = {tuple(parts): impl for parts, impl in keys}
    if not impls:
        return tree

    def f(path, x):
        impl = impls.get(tuple(_path_parts(path)))
        return x if impl is None else jax.random.wrap_key_data(x, impl=impl)

    return jax.tree_util.tree_map_with_path(f, tree)


def _host_placeholder(m: Any) -> Any:
    """Zero-memory numpy stand-in for a stored leaf: orbax then restores it as numpy, on the host."""
    if isinstance(m, ocp.metadata.StringMetadata):
        return ""
    if isinstance(m, ocp.metadata.ScalarMetadata):  # (a subclass of ArrayMetadata: test it first)
        return np.dtype(m.dtype).type(0).item()
    if isinstance(m, ocp.metadata.ArrayMetadata):
        return np.broadcast_to(np.zeros((), m.dtype), m.shape)
    raise TypeError(f"cannot restore a checkpoint leaf of type {type(m).__name__} to the host")


def _json_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return jax.tree.map(lambda v: float(v) if np.ndim(v) == 0 else np.asarray(v).tolist(), dict(metrics))


class Checkpointer:
    """Save/restore named pytrees + a JSON metadata dict per step. See the module docstring."""

    def __init__(
        self,
        directory: str | epath.PathLike,
        *,
        max_to_keep: int | None = 3,
        best_metric: str | None = None,
        best_mode: str = "min",
        async_save: bool = True,
        keep_latest: int = 1,
    ) -> None:
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be None (keep all) or >= 1, got {max_to_keep}")
        self.directory = epath.Path(directory)
        if "://" not in str(directory):  # orbax wants absolute paths; a relative CLI path means cwd-relative
            self.directory = self.directory.absolute()
        self.best_metric = best_metric
        best_fn = None if best_metric is None else (lambda m: float(m[best_metric]))
        policy: Any = None  # None: keep everything
        if max_to_keep is not None and best_fn is not None:
            policy = policies.AnyPreservationPolicy([
                policies.LatestN(n=keep_latest),  # never delete the checkpoint a restart resumes from
                policies.BestN(get_metric_fn=best_fn, reverse=best_mode == "min", n=max_to_keep),
            ])
        elif max_to_keep is not None:
            policy = policies.LatestN(n=max_to_keep)
        options = ocp.CheckpointManagerOptions(
            best_fn=best_fn,
            best_mode=best_mode,
            preservation_policy=policy,
            create=False,  # created on first save; a read-only user with a typo'd path creates nothing
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save,
        )
        self._mngr = ocp.CheckpointManager(self.directory, options=options)

    # ----------------------------------------------------------------------------------------- queries
    def latest_step(self) -> int | None:
        """Newest finished step, or None. Unfinished (tmp) saves are never reported."""
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def best_step(self) -> int | None:
        """Best step by `best_metric` (latest step when no best_metric was given)."""
        return self._mngr.best_step()

    def _resolve_step(self, step: int | None) -> int:
        self.wait()
        steps = self.all_steps()
        if not steps:
            why = "" if self.directory.exists() else " (the directory does not exist)"
            raise FileNotFoundError(f"no checkpoint found in {self.directory}{why}")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; available steps: {steps}"
            )
        return step

    def _read_meta(self, step: int) -> dict[str, Any]:
        if not (self.directory / str(step) / META_ITEM).exists():
            raise ValueError(
                f"{self.directory / str(step)} has no '{META_ITEM}' item: not a radgan_jax checkpoint "
                "(convert foreign checkpoints with radgan_jax.tools)"
            )
        restored = self._mngr.restore(step, args=ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()}))
        return restored[META_ITEM]

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """The job metadata of `step` (default latest) without reading any array."""
        return self._read_meta(self._resolve_step(step))["metadata"]

    def item_names(self, step: int | None = None) -> list[str]:
        return list(self._read_meta(self._resolve_step(step))["items"])

    # ----------------------------------------------------------------------------------------- save
    def save(
        self,
        step: int,
        items: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Saves `items` (name -> pytree of arrays) + `metadata` (JSON dict) as `step`.

        Returns False when orbax decides not to save (e.g. `step` is not newer than the latest); True when
        the save was started (it completes in the background when async; see `wait`).
        """
        if not items:
            raise ValueError("save() needs at least one item")
        for name in items:
            if name == META_ITEM or not isinstance(name, str) or not _ITEM_NAME.match(name):
                raise ValueError(
                    f"invalid item name {name!r}: use letters, digits, '_', '.', '-' (and not {META_ITEM!r})"
                )
        metadata = dict(metadata or {})
        try:
            json.dumps(metadata)
        except TypeError as e:  # fail here, not in orbax's background thread
            raise TypeError(f"checkpoint metadata must be JSON-serializable: {e}") from e
        if metrics is not None:
            metrics = _json_metrics(metrics)
            if self.best_metric is not None and self.best_metric not in metrics:
                raise KeyError(f"metrics {sorted(metrics)} lack best_metric {self.best_metric!r}")
        args, prng_keys = {}, {}
        for name, tree in items.items():
            tree, keys = _unwrap_keys(tree)
            if keys:
                prng_keys[name] = keys
            args[name] = ocp.args.StandardSave(tree)
        meta = {"format": _FORMAT, "items": sorted(items), "prng_keys": prng_keys, "metadata": metadata}
        args[META_ITEM] = ocp.args.JsonSave(meta)
        return self._mngr.save(step, args=ocp.args.Composite(**args), metrics=metrics, force=force)

    # ----------------------------------------------------------------------------------------- restore
    def restore(
        self, step: int | None = None, targets: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any], int]:
        """Restores `(items, metadata, step)`; `step=None` means the latest.

        targets: None restores every item as host numpy arrays. A dict restores only the items it names;
          each value is either None (that item as host numpy) or a pytree matching the saved one whose
          leaves are `jax.ShapeDtypeStruct`s (or arrays) with shardings: arrays are then restored directly
          onto the mesh. Typed-key leaves may be given as key-typed ShapeDtypeStructs.
        """
        step = self._resolve_step(step)
        meta = self._read_meta(step)
        held = list(meta["items"])
        wanted = list(targets) if targets is not None else held
        missing = [n for n in wanted if n not in held]
        if missing:
            raise KeyError(
                f"checkpoint {self.directory / str(step)} has no item(s) {missing}; it holds: {held}"
            )
        args = {}
        for name in wanted:
            target = None if targets is None else targets[name]
            if target is None:
                stored = ocp.StandardCheckpointHandler().metadata(self.directory / str(step) / name)
                target = jax.tree.map(_host_placeholder, stored.tree)
            else:
                target = jax.tree.map(_key_data_target, target)
            args[name] = ocp.args.StandardRestore(target)
        restored = self._mngr.restore(step, args=ocp.args.Composite(**args))
        prng_keys = meta.get("prng_keys", {})
        items = {name: _rewrap_keys(restored[name], prng_keys.get(name, [])) for name in wanted}
        return items, meta["metadata"], step

    # ----------------------------------------------------------------------------------------- lifetime
    def wait(self) -> None:
        """Blocks until pending async saves (and old-step deletions) are finished."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------- generator
GENERATOR_KIND = "stylegan_xl_generator"


def save_generator(
    directory: str | epath.PathLike,
    variables: Mapping[str, Any],
    spec: Any,
    *,
    step: int = 0,
    extra_metadata: Mapping[str, Any] | None = None,
) -> None:
    """Writes a generator checkpoint: one item per variable collection ('params', 'buffers', ...) and the
    full `GeneratorSpec` (`spec.to_dict()`) in the metadata, so `load_generator` needs nothing else."""
    metadata = {**dict(extra_metadata or {}), "kind": GENERATOR_KIND, "generator_spec": spec.to_dict()}
    with Checkpointer(directory, max_to_keep=None, async_save=False) as ck:
        ck.save(step, dict(variables), metadata=metadata, force=True)


def load_generator(
    directory: str | epath.PathLike, step: int | None = None
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(GeneratorSpec, variables as host numpy, metadata) of a checkpoint written by `save_generator`."""
    from radgan_jax.models.stylegan_xl.generator import GeneratorSpec  # keep checkpoint.py model-free

    with Checkpointer(directory, max_to_keep=None) as ck:
        meta = ck.metadata(step)
        if meta.get("kind") != GENERATOR_KIND or "generator_spec" not in meta:
            raise ValueError(
                f"{directory} is not a generator checkpoint (metadata kind={meta.get('kind')!r}); "
                "convert official weights with `python -m radgan_jax.tools.convert_stylegan_xl`"
            )
        variables, meta, _ = ck.restore(step)
    return GeneratorSpec.from_dict(meta["generator_spec"]), variables, meta
