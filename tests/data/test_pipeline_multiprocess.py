"""Two jax.distributed processes (127.0.0.1, 4 CPU devices each) read disjoint shards that make up the epoch."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np

from radgan_jax.data.base import Case
from radgan_jax.data.tfds_build import build_gan_datasets

N = 24  # records; xflip doubles them to 48 examples = 3 global batches of 16 per epoch
WORKER = Path(__file__).with_name("mp_pipeline_worker.py")


def run_two_processes(repo_root: Path, data: Path, out: Path) -> list[dict[str, np.ndarray]]:
    port = random.randint(20000, 40000)
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=str(repo_root))
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(port), "2", str(i), str(data), str(out / f"{i}.npz")],
                              cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert all(p.returncode == 0 for p in procs), "\n----\n".join(log[-3000:] for log in logs)
    return [dict(np.load(out / f"{i}.npz")) for i in range(2)]


def test_two_hosts_read_disjoint_shards_that_make_the_epoch(repo_root: Path, tmp_path: Path):
    rng = np.random.default_rng(0)
    cases = [Case(f"c{i}", rng.integers(0, 256, (16, 16), dtype=np.uint8), label=i % 2) for i in range(N)]
    build_gan_datasets(cases, tmp_path / "data", name="mp", resolutions=[16], class_names=["a", "b"], xflip=True,
                       progress=False)
    (tmp_path / "run1").mkdir()
    (tmp_path / "run2").mkdir()
    first = run_two_processes(repo_root, tmp_path / "data", tmp_path / "run1")
    assert first[0]["devices"].tolist() == [4, 8]
    idx = [r["index"].reshape(-1) for r in first]  # 4 local batches of 8 = 32 positions per host
    epoch = [i[: 3 * 8] for i in idx]  # the first 3 global batches are exactly epoch 0 (48 examples)
    assert not set(epoch[0]) & set(epoch[1])
    assert sorted(np.concatenate(epoch)) == list(range(2 * N))
    for r in first:
        np.testing.assert_array_equal(r["label"], r["index"] % N % 2)
    second = run_two_processes(repo_root, tmp_path / "data", tmp_path / "run2")
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a["index"], b["index"])
