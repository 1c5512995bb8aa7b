"""The one way radgan_jax derives random keys.

Why one helper:
  * No global RNG state. Every random draw comes from the run's root key (`config.seed`) folded with a
    *purpose* string ("dropout", "augment", "noise/synthesis"), optionally the training step and the host.
    Two code paths never share bits by accident, and adding a new random consumer never shifts the
    numbers an existing one sees (unlike splitting a key in sequence).
  * Reproducible across restarts and machines: same config + same mesh => same bits. The purpose is
    hashed with `zlib.crc32`, which is stable across processes; Python's `hash(str)` is salted per
    process (PYTHONHASHSEED) and would give every host and every restart different keys.
  * Step and host are folded in behind their own tags, so `derive(k, p, step=5)` never equals
    `derive(k, p, host=5)`.

Keys may be typed (`jax.random.key`) or legacy uint32 `PRNGKey`s; both work and the result has the same
kind. `step` may be a traced integer, so `derive` is usable inside `jax.jit`.
"""

from __future__ import annotations

import zlib

import jax

# Distinct domain tags for the optional fold-ins (crc32 of fixed strings, computed once).
_STEP_TAG = zlib.crc32(b"radgan_jax/step")
_HOST_TAG = zlib.crc32(b"radgan_jax/host")


def purpose_hash(purpose: str) -> int:
    """Stable 32-bit hash of `purpose` (same value in every process, every run)."""
    if not isinstance(purpose, str) or not purpose:
        raise ValueError(f"purpose must be a non-empty string, got {purpose!r}")
    return zlib.crc32(purpose.encode("utf-8"))


def root_key(seed: int) -> jax.Array:
    """Typed root key for a run; everything else is `derive`d from it."""
    return jax.random.key(seed)


def derive(
    key: jax.Array,
    purpose: str,
    *,
    step: int | jax.Array | None = None,
    host: int | None = None,
) -> jax.Array:
    """Key for `purpose` (then `step`, then `host`), via `jax.random.fold_in`.

    `step=None` and `step=0` give different keys (0 is folded in, None is not); same for `host`.
    """
    key = jax.random.fold_in(key, purpose_hash(purpose))
    if step is not None:
        key = jax.random.fold_in(jax.random.fold_in(key, _STEP_TAG), step)
    if host is not None:
        key = jax.random.fold_in(jax.random.fold_in(key, _HOST_TAG), host)
    return key


def host_key(key: jax.Array, purpose: str, *, step: int | jax.Array | None = None) -> jax.Array:
    """Key that differs per host (`jax.process_index()`): per-host data shuffling, host-side augmentation."""
    return derive(key, purpose, step=step, host=jax.process_index())
