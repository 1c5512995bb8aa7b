"""Acceptance 4: two processes (jax.distributed on 127.0.0.1, 4 CPU devices each) train together and end where
one process with 8 devices ends. Slow: three compilations of the training step on 2 cores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.train.test_gan_training import _final_state, _train_cmd

pytestmark = pytest.mark.slow


def test_two_processes_train_like_one(repo_root: Path, tmp_path: Path):
    total = 0.032  # 4 iterations of batch 8 (each process reads its own 4 rows per batch)
    args = _train_cmd(tmp_path / "mp", total)[3:]  # drop "python -m radgan_jax.main"
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(repo_root))
    env.pop("XLA_FLAGS", None)
    r = subprocess.run(["bash", "launch/local_multiprocess.sh", "2", "4", *args], cwd=repo_root, env=env,
                       capture_output=True, text=True, timeout=1500)
    logs = {p.name: p.read_text() for p in (tmp_path / "mp").glob("process_*.log")}
    assert r.returncode == 0, r.stderr + "\n".join(v[-3000:] for v in logs.values())
    assert "process 1 of 2, 4 local / 8 global devices" in logs["process_1.log"]

    single_env = dict(os.environ, PYTHONPATH=str(repo_root), JAX_PLATFORMS="cpu",
                      XLA_FLAGS="--xla_force_host_platform_device_count=8")
    subprocess.run(_train_cmd(tmp_path / "single", total), cwd=repo_root, env=single_env, check=True,
                   capture_output=True, timeout=1500)
    _compare(tmp_path / "mp", tmp_path / "single")
    assert (tmp_path / "mp" / "generator").is_dir()


def _compare(mp: Path, single: Path) -> None:
    """Same tolerances as the 8-vs-1-device test (docs/ARCHITECTURE.md): only the reduction order differs, and
    Adam with beta1 = 0 moves a weight by ~lr * sign(g) where |g| ~ eps, so a few elements differ by up to 2 lr per
    step while the losses agree closely. Measured (4 iterations): losses 1e-5 relative, mean |diff| 6e-7."""
    import json

    rows = [[json.loads(line) for line in (d / "stats.jsonl").read_text().splitlines()] for d in (mp, single)]
    assert [r["kimg"] for r in rows[0]] == [r["kimg"] for r in rows[1]]
    for a, b in zip(*rows):
        for k in ("Loss/D/loss", "Loss/G/loss", "Loss/scores/real", "Loss/scores/fake"):
            assert abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(b[k])), (k, a[k], b[k])
    step_m, multi = _final_state(mp)
    step_s, one = _final_state(single)
    assert step_m == step_s == 4 and multi.keys() == one.keys()
    for group, lr in (("['g_params']", 0.0025), ("['ema_params']", 0.0025), ("['d_params']", 0.002)):
        d = np.concatenate([np.abs(multi[k].astype(np.float64) - one[k]).ravel() for k in multi
                            if k.startswith(group)])
        assert d.mean() <= 1e-5 and (d > 1e-4).mean() < 0.01 and d.max() <= 2 * lr * step_m, (group, d.mean(),
                                                                                                (d > 1e-4).mean(),
                                                                                                d.max())
    for k in multi:
        if not np.issubdtype(multi[k].dtype, np.floating):
            np.testing.assert_array_equal(multi[k], one[k], err_msg=k)
