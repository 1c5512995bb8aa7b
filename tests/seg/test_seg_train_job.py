"""seg_train end to end on a small built-in phantom task: learns, writes its pictures, and a kill -9 mid-training
followed by a rerun of the same command ends bit-identical to an uninterrupted run (acceptance 4)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # ~70 s; the default suite's seg checks are per component


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    env.pop("XLA_FLAGS", None)
    return env


@pytest.fixture(scope="module")
def plans_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plans")
    subprocess.run([sys.executable, "-m", "radgan_jax.main", "--config=configs/seg/plan.py", f"--workdir={out}",
                    "--config.num_workers=0", "--config.progress=False", "--config.builtin_num=12",
                    "--config.builtin_resolution=64"], cwd=REPO, env=_env(out / "cache"), check=True,
                   capture_output=True, timeout=600)
    return out


def _cmd(plans: Path, workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "radgan_jax.main", "--config=configs/seg/train.py", f"--config.plans={plans}",
            f"--workdir={workdir}", "--config.epochs=4", "--config.iterations_per_epoch=3",
            "--config.val_iterations=1", "--config.progress=False", *extra]


def _final_params(workdir: Path) -> dict[str, np.ndarray]:
    import jax

    from radgan_jax.checkpoint import Checkpointer

    with Checkpointer(workdir / "checkpoints", max_to_keep=None) as ck:
        items, meta, step = ck.restore()
    assert step == 4 and meta["epoch"] == 4
    flat = jax.tree_util.tree_flatten_with_path(items["seg_state"])[0]
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in flat}


def test_kill_9_then_rerun_is_bit_identical(plans_dir, tmp_path):
    env = _env(plans_dir / "cache")
    ref = tmp_path / "ref"
    subprocess.run(_cmd(plans_dir, ref), cwd=REPO, env=env, check=True, capture_output=True, timeout=900)
    rows = [json.loads(line) for line in (ref / "training_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3] and rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert (ref / "progress.png").is_file() and (ref / "checkpoint_best").is_dir()
    summary = json.loads((ref / "validation" / "summary.json").read_text())
    assert 0.0 <= summary["foreground_mean"]["Dice"] <= 1.0
    assert sorted((ref / "validation" / "overlays").glob("*.png"))

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(plans_dir, killed, "--config.final_validation=False"), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = int(np.random.default_rng(int(time.time())).integers(1, 3))  # after epoch 1 or 2's checkpoint
    ck_dir, deadline = killed / "checkpoints", time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        done = [int(p.name) for p in ck_dir.glob("*") if p.name.isdigit()] if ck_dir.exists() else []
        if done and max(done) >= target:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run(_cmd(plans_dir, killed, "--config.final_validation=False"), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from" in rerun.stderr
    a, b = _final_params(ref), _final_params(killed)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k} differs after kill -9 + rerun")
    log_b = [json.loads(line) for line in (killed / "training_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log_b] == [0, 1, 2, 3]
    assert [r["train_loss"] for r in log_b] == [r["train_loss"] for r in rows]
