"""radgan_jax.checkpoint: round trips, retention, best-by-metric, mesh restore, crash safety, errors."""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radgan_jax.checkpoint import Checkpointer, load_generator, save_generator
from radgan_jax.parallel import mesh as mesh_lib
from radgan_jax.parallel import sharding


def make_items(seed=0):
    r = np.random.default_rng(seed)
    return {
        "params": {
            "mapping": {"fc0": {"weight": r.normal(size=(8, 4)).astype(np.float32),
                                "bias": np.zeros(4, np.float32)}},
            "w_avg": jnp.asarray(r.normal(size=(3, 4)), jnp.float32),
            "layers": [np.arange(5, dtype=np.int32), jnp.ones((2, 2), jnp.bfloat16)],
        },
        "rng": {"train": jax.random.key(seed), "batch": jax.random.split(jax.random.key(seed + 1), 4)},
        "state": {"step": np.int64(10 + seed)},
    }


METADATA = {"generator_kwargs": {"z_dim": 64, "c_dim": 3, "channels": [512, 256], "use_fp16": False},
            "name": "tiny"}


def assert_tree_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jax.dtypes.issubdtype(y.dtype, jax.dtypes.prng_key)
            assert jax.random.key_impl(x) == jax.random.key_impl(y)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_nested_tree_keys_and_metadata(tmp_path):
    items = make_items()
    with Checkpointer(tmp_path / "ck") as ck:
        assert ck.save(5, items, metadata=METADATA)
    # A fresh Checkpointer (as a new process would) restores everything as host arrays.
    with Checkpointer(tmp_path / "ck") as ck:
        restored, meta, step = ck.restore()
        assert step == 5 and ck.latest_step() == 5
        assert meta["generator_kwargs"]["channels"] == [512, 256] and meta == METADATA
        assert ck.metadata() == METADATA and ck.item_names() == ["params", "rng", "state"]
    assert_tree_equal(items, restored)
    assert isinstance(restored["params"]["mapping"]["fc0"]["weight"], np.ndarray)
    # Typed keys come back typed and keep producing the same random numbers.
    np.testing.assert_array_equal(jax.random.normal(items["rng"]["train"], (3,)),
                                  jax.random.normal(restored["rng"]["train"], (3,)))


def test_relative_directory_is_cwd_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    items = make_items()
    with Checkpointer("rel/ck", async_save=False) as ck:
        assert ck.save(1, items)
    assert (tmp_path / "rel" / "ck" / "1").is_dir()
    with Checkpointer("rel/ck") as ck:
        assert_tree_equal(items, ck.restore()[0])


def test_restore_subset_and_missing_item_lists_contents(tmp_path):
    with Checkpointer(tmp_path, async_save=False) as ck:
        ck.save(1, make_items())
        items, _, _ = ck.restore(targets={"params": None})
        assert list(items) == ["params"]
        held = r"has no item\(s\) \['ema'\]; it holds: \['params', 'rng', 'state'\]"
        with pytest.raises(KeyError, match=held):
            ck.restore(targets={"ema": None})


def test_latest_step_and_max_to_keep(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=2) as ck:
        for step in (1, 2, 3, 4):
            ck.save(step, make_items(step))
        ck.wait()
        assert ck.all_steps() == [3, 4] and ck.latest_step() == 4
        items, _, step = ck.restore()
        assert step == 4 and int(items["state"]["step"]) == 14
        _, _, step = ck.restore(3)
        assert step == 3
        with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 1 .*available steps: \[3, 4\]"):
            ck.restore(1)


@pytest.mark.parametrize("mode,best", [("min", 20), ("max", 30)])
def test_best_by_metric_keeps_best_and_latest(tmp_path, mode, best):
    fid = {10: 50.0, 20: 12.0, 30: 90.0, 40: 40.0, 50: 45.0}
    with Checkpointer(tmp_path, max_to_keep=1, best_metric="fid", best_mode=mode) as ck:
        for step, value in fid.items():
            ck.save(step, {"params": {"w": np.full(2, step, np.float32)}}, metrics={"fid": np.float32(value)})
        ck.wait()
        assert ck.best_step() == best
        assert ck.all_steps() == sorted({best, 50})  # the best one plus the latest (for resuming)
        items, _, _ = ck.restore(ck.best_step())
        assert items["params"]["w"][0] == best
    with Checkpointer(tmp_path, max_to_keep=1, best_metric="fid", best_mode=mode) as ck:
        assert ck.best_step() == best  # metrics are read back from disk


def test_metrics_must_contain_best_metric(tmp_path):
    with Checkpointer(tmp_path, best_metric="fid") as ck, pytest.raises(KeyError, match="fid"):
        ck.save(1, {"p": {"w": np.ones(2)}}, metrics={"loss": 1.0})


def test_restore_onto_mesh_with_shardings(tmp_path):
    assert jax.device_count() == 8
    mesh = mesh_lib.make_mesh({"data": -1})
    items = {"params": {"w": np.arange(32, dtype=np.float32).reshape(8, 4), "b": np.ones(3, np.float32)},
             "rng": {"key": jax.random.key(7)}}
    with Checkpointer(tmp_path) as ck:
        ck.save(0, items)
        batch = sharding.batch_sharding(mesh, 2)
        rep = sharding.replicated(mesh)
        targets = {
            "params": {"w": jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=batch),
                       "b": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=rep)},
            "rng": {"key": jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=rep)},
        }
        restored, _, _ = ck.restore(targets=targets)
    w = restored["params"]["w"]
    assert isinstance(w, jax.Array) and w.sharding.is_equivalent_to(batch, 2)
    assert len(w.addressable_shards) == 8 and w.addressable_shards[0].data.shape == (1, 4)
    np.testing.assert_array_equal(np.asarray(w), items["params"]["w"])
    assert restored["params"]["b"].sharding.is_fully_replicated
    np.testing.assert_array_equal(jax.random.key_data(restored["rng"]["key"]),
                                  jax.random.key_data(items["rng"]["key"]))


def test_leftover_tmp_directory_is_ignored(tmp_path):
    with Checkpointer(tmp_path, async_save=False) as ck:
        ck.save(1, make_items())
    # Simulate a crash mid-save of step 2: orbax's tmp dir exists, the rename never happened.
    crashed = tmp_path / "2.orbax-checkpoint-tmp-1700000000"
    shutil.copytree(tmp_path / "1", crashed)
    (crashed / "commit_success.txt").unlink(missing_ok=True)
    with Checkpointer(tmp_path) as ck:
        assert ck.latest_step() == 1 and ck.all_steps() == [1]
        _, _, step = ck.restore()
        assert step == 1


def test_empty_or_missing_directory_errors_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with Checkpointer(missing) as ck:
        assert ck.latest_step() is None
        with pytest.raises(FileNotFoundError, match=f"no checkpoint found in {missing}.*does not exist"):
            ck.restore()
    assert not missing.exists()  # reading never creates the directory
    (tmp_path / "empty").mkdir()
    with Checkpointer(tmp_path / "empty") as ck:
        with pytest.raises(FileNotFoundError, match="no checkpoint found"):
            ck.restore()


def test_bad_item_name_and_metadata(tmp_path):
    with Checkpointer(tmp_path) as ck:
        with pytest.raises(ValueError, match="invalid item name"):
            ck.save(1, {"metadata": {"w": np.ones(1)}})
        with pytest.raises(TypeError, match="JSON-serializable"):
            ck.save(1, {"p": {"w": np.ones(1)}}, metadata={"arr": np.ones(2)})


def test_generator_checkpoint_round_trip(tmp_path):
    from radgan_jax.models.stylegan_xl.builtin import builtin_generator

    spec, variables = builtin_generator("demo32", jax.random.key(0))
    save_generator(tmp_path / "g", variables, spec, extra_metadata={"source": "test"})
    spec2, variables2, meta = load_generator(tmp_path / "g")
    assert spec2 == spec and meta["source"] == "test"
    assert_tree_equal(jax.device_get(variables), variables2)
    with Checkpointer(tmp_path / "other") as ck:
        ck.save(0, {"params": {"w": np.ones(2)}})
    with pytest.raises(ValueError, match="not a generator checkpoint"):
        load_generator(tmp_path / "other")
