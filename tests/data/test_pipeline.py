"""The GAN input pipeline: content, deterministic per-epoch order, host shards, resume, xflip, no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from radgan_jax.checkpoint import Checkpointer
from radgan_jax.data.base import Case
from radgan_jax.data.pipeline import GanInputPipeline, epoch_order, record_at, to_global
from radgan_jax.data.preprocess import gan_preprocess
from radgan_jax.data.tfds_build import build_gan_datasets
from radgan_jax.parallel.mesh import make_mesh
from radgan_jax.parallel.sharding import batch_sharding, host_from_global

N = 30  # records; batches of 8 do not divide an epoch, so some batches straddle two epochs


@pytest.fixture(scope="module")
def gan_data(tmp_path_factory):
    rng = np.random.default_rng(1)
    cases = [Case(f"c{i}", rng.integers(0, 256, (20 + i % 4, 20, 3), dtype=np.uint8), label=i % 3)
             for i in range(N)]
    out = tmp_path_factory.mktemp("gan")
    build_gan_datasets(cases, out, name="syn", resolutions=[16, 32], class_names=["a", "b", "c"], progress=False)
    return out, cases


def pipe(data, res=16, **kw):
    kw = {"global_batch_size": 8, "seed": 3, "shard_index": 0, "shard_count": 1, **kw}
    return GanInputPipeline(data, res, **kw)


def indices(batches) -> np.ndarray:
    return np.concatenate([b["index"] for b in batches])


@pytest.mark.parametrize("res", [16, 32])
def test_batches_hold_the_preprocessed_images_labels_and_indices(gan_data, res):
    data, cases = gan_data
    b = next(pipe(data, res, xflip=True))
    assert b["image"].shape == (8, res, res, 3) and b["image"].dtype == np.uint8
    assert b["label"].dtype == np.int32 and b["index"].dtype == np.int64
    assert (b["index"] >= N).any()  # seed 3: the first batch has mirrored copies
    for img, label, index in zip(b["image"], b["label"], b["index"]):
        case = cases[index % N]
        want = gan_preprocess(case.image, res)
        np.testing.assert_array_equal(img, want[:, ::-1] if index >= N else want)
        assert label == case.label


def test_order_is_a_function_of_seed_and_epoch(gan_data):
    data, _ = gan_data
    got = indices(pipe(data, num_epochs=4))  # 120 positions = 15 batches of 8
    assert len(got) == 4 * N
    epochs = got.reshape(4, N)
    for e, order in enumerate(epochs):
        assert sorted(order) == list(range(N))  # each epoch: every record once
        np.testing.assert_array_equal(order, epoch_order(e, num_records=N, seed=3, xflip=False))
    assert len({tuple(o) for o in epochs}) == 4  # reshuffled every epoch
    np.testing.assert_array_equal(indices(pipe(data, num_epochs=4)), got)  # same (seed, epoch): same order
    assert not np.array_equal(indices(pipe(data, num_epochs=4, seed=4)), got)
    # (seed, epoch) is hashed: seed 3 epoch 1 is not seed 4 epoch 0
    assert not np.array_equal(epoch_order(1, num_records=N, seed=3, xflip=False),
                              epoch_order(0, num_records=N, seed=4, xflip=False))


@pytest.mark.parametrize("hosts,batch", [(2, 8), (3, 6)])
def test_host_shards_are_disjoint_and_complete(gan_data, hosts, batch):
    data, _ = gan_data
    shards = [list(pipe(data, global_batch_size=batch, shard_index=k, shard_count=hosts, num_epochs=2))
              for k in range(hosts)]
    assert len({len(s) for s in shards}) == 1  # every host runs the same number of steps
    assert shards[0][0]["image"].shape[0] == batch // hosts
    single = list(pipe(data, global_batch_size=batch, num_epochs=2))
    assert len(single) == len(shards[0])
    for b, one in enumerate(single):  # global batch b: the same examples in the same row order, any host count
        rows = np.concatenate([s[b]["index"] for s in shards])
        np.testing.assert_array_equal(rows, one["index"])
    every = np.concatenate([indices(s) for s in shards])
    assert sorted(every) == sorted(indices(single))
    assert set(indices(single)[:N].tolist()) == set(range(N))  # the first epoch is every record once


def test_resume_yields_exactly_the_remaining_batches(gan_data, tmp_path):
    data, _ = gan_data
    full = list(pipe(data, num_epochs=3))  # 11 batches; batch 3 = positions 24..31 straddles epochs 0/1
    for stop in (2, 3, 4):  # before, across and after the epoch boundary
        p = pipe(data, num_epochs=3)
        for _ in range(stop):
            next(p)
        state = json.loads(json.dumps(p.get_state()))
        step = stop
        with Checkpointer(tmp_path / "ck", async_save=False) as ck:
            ck.save(step, {"step": np.asarray(step)}, metadata={"input_pipeline": state})
        with Checkpointer(tmp_path / "ck") as ck:
            restored = ck.metadata(step)["input_pipeline"]
        q = pipe(data, num_epochs=3)
        q.set_state(restored)
        rest = list(q)
        assert len(rest) == len(full) - stop
        for a, b in zip(rest, full[stop:]):
            for k in ("image", "label", "index"):
                np.testing.assert_array_equal(a[k], b[k])


def test_resume_on_another_host_count_and_state_checks(gan_data):
    data, _ = gan_data
    p = pipe(data)
    next(p)
    next(p)
    state = p.get_state()
    want = next(p)["index"]
    halves = []
    for k in range(2):
        q = pipe(data, shard_index=k, shard_count=2)
        q.set_state(state)
        halves.append(next(q)["index"])
    assert sorted(np.concatenate(halves)) == sorted(want)
    with pytest.raises(ValueError, match="seed=3 but this pipeline has 4"):
        pipe(data, seed=4).set_state(state)
    with pytest.raises(ValueError, match="global_batch_size"):
        pipe(data, global_batch_size=16).set_state(state)


def test_xflip_doubles_the_dataset(gan_data):
    data, cases = gan_data
    p = pipe(data, xflip=True, global_batch_size=12, num_epochs=1)
    assert p.num_examples == 2 * N and len(p) == 5
    batches = list(p)
    got = indices(batches)
    assert sorted(got) == list(range(2 * N))
    for b in batches:
        for img, index in zip(b["image"], b["index"]):
            want = gan_preprocess(cases[index % N].image, 16)
            np.testing.assert_array_equal(img, want[:, ::-1] if index >= N else want)
    assert record_at(0, num_records=N, seed=3, xflip=True) == got[0]


def test_worker_processes_give_the_same_batches(gan_data):
    data, _ = gan_data
    want = list(pipe(data, num_epochs=1))
    p = pipe(data, num_epochs=1, worker_count=1)
    got = list(p)
    assert len(got) == len(want) == 3
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["index"], b["index"])


def test_to_global_assembles_the_batch_sharded_array(gan_data):
    data, _ = gan_data
    mesh = make_mesh()  # 8 fake CPU devices (conftest)
    local = next(pipe(data))
    g = to_global(mesh, local)
    assert g["image"].shape == (8, 16, 16, 3) and g["image"].dtype == np.uint8
    assert g["image"].sharding == batch_sharding(mesh, 4)
    for k in local:
        np.testing.assert_array_equal(host_from_global(g[k]), local[k])
    assert jax.device_count() == 8


def test_bad_arguments(gan_data):
    data, _ = gan_data
    with pytest.raises(ValueError, match="multiple of the 3 hosts"):
        pipe(data, shard_count=3)
    with pytest.raises(ValueError, match="shard_index 2"):
        pipe(data, shard_index=2, shard_count=2)
    with pytest.raises(ValueError, match="make no full global batch"):
        pipe(data, global_batch_size=64, num_epochs=1)


def test_reading_does_not_import_tensorflow(gan_data, repo_root):
    data, _ = gan_data
    code = ("import sys\n"
            "from radgan_jax.data.pipeline import GanInputPipeline\n"
            f"p = GanInputPipeline({str(data)!r}, 16, global_batch_size=8, seed=0, shard_index=0, shard_count=1)\n"
            "b = [next(p) for _ in range(3)]\n"
            "assert b[0]['image'].shape == (8, 16, 16, 3)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'torch'))\n"
            "print(bad[:5]); sys.exit(1 if bad else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"reading imported TensorFlow/torch: {r.stdout} {r.stderr[-2000:]}"
