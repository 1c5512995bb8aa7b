"""radgan_jax.rng: stable, purpose/step/host-separated key derivation."""

from __future__ import annotations

import subprocess
import sys
import zlib

import jax
import numpy as np
import pytest

from radgan_jax import rng


def bits(key):
    return np.asarray(jax.random.key_data(key)).tolist()


def test_deterministic_and_typed():
    k = rng.root_key(0)
    a = rng.derive(k, "noise", step=3, host=1)
    b = rng.derive(rng.root_key(0), "noise", step=3, host=1)
    assert jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)
    assert bits(a) == bits(b)


def test_purposes_steps_hosts_differ():
    k = rng.root_key(0)
    keys = [
        rng.derive(k, "noise"),
        rng.derive(k, "dropout"),
        rng.derive(k, "noise", step=0),
        rng.derive(k, "noise", step=1),
        rng.derive(k, "noise", host=0),
        rng.derive(k, "noise", host=1),
        rng.derive(k, "noise", step=5),
        rng.derive(k, "noise", host=5),  # same number as a step must not collide
        rng.derive(k, "noise", step=1, host=1),
        rng.derive(rng.root_key(1), "noise"),
    ]
    all_bits = [tuple(bits(x)) for x in keys]
    assert len(set(all_bits)) == len(all_bits)


def test_purpose_hash_is_crc32_and_stable_across_processes(repo_root):
    assert rng.purpose_hash("augment") == zlib.crc32(b"augment")
    code = "from radgan_jax import rng; print(rng.purpose_hash('augment'))"
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=repo_root, env={"PYTHONHASHSEED": seed, "JAX_PLATFORMS": "cpu"}).stdout.strip()
        for seed in ("1", "2")
    }
    assert outs == {str(zlib.crc32(b"augment"))}


def test_works_under_jit_with_traced_step_and_raw_keys():
    k = rng.root_key(3)
    jitted = jax.jit(lambda key, s: rng.derive(key, "noise", step=s))
    assert bits(jitted(k, 4)) == bits(rng.derive(k, "noise", step=4))
    raw = jax.random.PRNGKey(3)
    assert np.array_equal(rng.derive(raw, "noise"), jax.random.key_data(rng.derive(k, "noise")))


def test_host_key_uses_process_index():
    k = rng.root_key(0)
    assert bits(rng.host_key(k, "shuffle")) == bits(rng.derive(k, "shuffle", host=jax.process_index()))


def test_empty_purpose_rejected():
    with pytest.raises(ValueError):
        rng.derive(rng.root_key(0), "")
