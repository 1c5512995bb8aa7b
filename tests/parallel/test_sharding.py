"""radgan_jax.parallel: mesh from config, logical-axis rules, host-batch assembly, distributed init."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from radgan_jax.parallel import distributed, sharding
from radgan_jax.parallel.mesh import MESH_AXES, make_mesh, mesh_shape


def test_eight_cpu_devices():
    assert jax.device_count() == 8, "tests/conftest.py should force 8 host devices"


def test_default_and_minus_one_use_all_devices():
    for cfg in (None, {}, {"data": -1}, ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})):
        mesh = make_mesh(cfg)
        assert mesh.axis_names == MESH_AXES and dict(mesh.shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    mesh = make_mesh({"data": 2, "fsdp": -1})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1} and mesh.devices.size == 8
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"data": 3}, r"covers 3 devices, but there are 8"),
        ({"data": 3, "fsdp": -1}, r"does not divide the 8 available"),
        ({"data": -1, "fsdp": -1}, r"at most one axis may be -1"),
        ({"dta": 8}, r"unknown mesh axes \['dta'\].*valid axes"),
        ({"data": 0}, r"positive or -1"),
    ],
)
def test_bad_mesh_shapes_error_clearly(cfg, match):
    with pytest.raises(ValueError, match=match):
        make_mesh(cfg)


def test_mesh_shape_pure():
    assert mesh_shape({"data": 2, "fsdp": 2, "tensor": -1}, 16) == (2, 2, 4)


def test_logical_rules():
    mesh = make_mesh({"data": 2, "fsdp": 4})
    assert sharding.logical_spec(("batch", "height", "width", "channels"), mesh) == P(("data", "fsdp"), None,
                                                                                      None, None)
    assert sharding.logical_sharding(mesh, ("channels_in", "channels_out")).is_fully_replicated
    assert dict(sharding.LOGICAL_AXIS_RULES)["batch"] == ("data", "fsdp")
    with pytest.raises(KeyError, match="no rule; add it to LOGICAL_AXIS_RULES"):
        sharding.logical_spec(("batchh",))
    with pytest.raises(ValueError, match="used twice"):
        sharding.logical_spec(("batch", "batch"), mesh)


def test_batch_sharding_pad_and_replicated():
    mesh = make_mesh({"data": 4, "fsdp": 2})
    assert sharding.num_batch_shards(mesh) == 8
    assert [sharding.pad_to_multiple(n, mesh) for n in (0, 1, 8, 9, 17)] == [0, 8, 8, 16, 24]
    mesh_t = make_mesh({"data": 2, "tensor": 4})
    assert sharding.num_batch_shards(mesh_t) == 2 and sharding.pad_to_multiple(3, mesh_t) == 4
    s = sharding.batch_sharding(mesh, 4)
    assert s.spec == P(("data", "fsdp"), None, None, None)
    x = jax.device_put(jnp.zeros((16, 3)), sharding.batch_sharding(mesh, 2))
    assert x.addressable_shards[0].data.shape == (2, 3)


def test_shard_host_batch_values_and_sharding():
    mesh = make_mesh()
    local = {"image": np.arange(16 * 2 * 3, dtype=np.float32).reshape(16, 2, 3), "label": np.arange(16)}
    batch = sharding.shard_host_batch(mesh, local)
    img = batch["image"]
    assert isinstance(img, jax.Array) and img.shape == (16 * jax.process_count(), 2, 3)
    assert img.sharding.is_equivalent_to(sharding.batch_sharding(mesh, 3), 3)
    assert {s.data.shape for s in img.addressable_shards} == {(2, 2, 3)}
    np.testing.assert_array_equal(np.asarray(img), local["image"])
    np.testing.assert_array_equal(np.asarray(batch["label"]), local["label"])
    # each device holds its own rows, in order
    for shard in img.addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), local["image"][shard.index])
    with pytest.raises(ValueError, match="pad_to_multiple"):
        sharding.shard_host_batch(mesh, np.zeros((5, 2)))


def test_global_from_host_and_back():
    mesh = make_mesh({"data": 4, "fsdp": 2})
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    g = sharding.global_from_host(mesh, x)
    assert g.shape == x.shape and g.sharding.is_equivalent_to(sharding.batch_sharding(mesh, 2), 2)
    assert {s.data.shape for s in g.addressable_shards} == {(2, 3)}
    back = sharding.host_from_global(g * 2)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, x * 2)


def test_replicate_tree():
    mesh = make_mesh()
    tree = sharding.replicate_tree(mesh, {"w": np.ones((3, 3)), "b": [np.zeros(2)]})
    for x in jax.tree.leaves(tree):
        assert x.sharding.is_fully_replicated and len(x.addressable_shards) == 8


def test_distributed_initialize_is_idempotent(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: bool(calls))
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    distributed.initialize("localhost:1234", 1, 0)
    distributed.initialize("localhost:1234", 1, 0)
    assert calls == [{"coordinator_address": "localhost:1234", "num_processes": 1, "process_id": 0}]
