"""Acceptance 5 (slow, ~10 min each on 2 CPU cores): the GAN actually learns. The Frechet distance (EfficientNet-
Lite0 features) of G_ema falls by at least 30% from the untrained generator, on the built-in phantoms (the
quickstart exactly as the README runs it) and on real colonoscopy frames (CVC-ClinicDB/Original read as an image
folder, unlabeled -> one class, a 32 px stem) in the same budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _fd_history(workdir: Path) -> list[tuple[float, float]]:
    rows = [json.loads(line) for line in (workdir / "stats.jsonl").read_text().splitlines()]
    return [(r["kimg"], r["Metrics/fd_effnet"]) for r in rows if r.get("Metrics/fd_effnet") is not None]


def _train(repo_root: Path, workdir: Path, *overrides: str) -> list[tuple[float, float]]:
    env = dict(os.environ, PYTHONPATH=str(repo_root), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one device, as the README's command
    proc = subprocess.run([sys.executable, "-m", "radgan_jax.main", "--config=configs/quickstart.py",
                           f"--workdir={workdir}", "--config.progress=False", *overrides], cwd=repo_root, env=env,
                          timeout=3000, capture_output=True, text=True)
    assert proc.returncode == 0, f"training failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    history = _fd_history(workdir)
    assert len(history) >= 3 and history[0][0] == 0.0, history
    assert (workdir / "fd_curve.png").is_file() and (workdir / "generator").is_dir()
    assert sorted((workdir / "samples").glob("fakes*.png"))
    return history


def test_quickstart_fd_drops_30_percent(repo_root: Path, tmp_path: Path):
    history = _train(repo_root, tmp_path / "quickstart")
    start, end = history[0][1], history[-1][1]
    assert end <= 0.7 * start, f"FD {start:.1f} -> {end:.1f} ({history})"


def test_cvc_clinicdb_32px_fd_drops_30_percent(repo_root: Path, tmp_path: Path, shared_dir: Path):
    frames = shared_dir / "data" / "CVC-ClinicDB" / "Original"
    workdir = tmp_path / "cvc"
    history = _train(repo_root, workdir, f"--config.data.path={frames}", "--config.data.format=image_folder",
                     "--config.data.builtin=", "--config.model.c_dim=1", "--config.model.resolution=32",
                     "--config.model.stem_resolution=32", "--config.metrics.kid=True")
    start, end = history[0][1], history[-1][1]
    assert end <= 0.7 * start, f"FD {start:.1f} -> {end:.1f} ({history})"
    # KID on the same features at every evaluation (kid50k_full's estimator), with its own curve
    rows = [json.loads(line) for line in (workdir / "stats.jsonl").read_text().splitlines()]
    kids = [r["Metrics/kid_effnet"] for r in rows if r.get("Metrics/kid_effnet") is not None]
    assert len(kids) == len(history) and kids[-1] < kids[0], kids
    assert (workdir / "kid_curve.png").is_file()
