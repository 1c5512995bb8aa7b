"""Two cooperating processes (jax.distributed on 127.0.0.1, 4 CPU devices each) = one process with 8."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from radgan_jax.configs_common import generate_config
from radgan_jax.jobs import generate


def test_two_processes_generate_what_one_process_does(repo_root: Path, tmp_path: Path):
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(repo_root))
    env.pop("XLA_FLAGS", None)  # the launcher sets 4 devices per process
    args = ["--config=configs/demo.py", f"--workdir={tmp_path / 'mp'}", "--config.seeds=0-5",
            "--config.classes=1,2", "--config.batch_size=8"]
    r = subprocess.run(["bash", "launch/local_multiprocess.sh", "2", "4", *args], cwd=repo_root, env=env,
                       capture_output=True, text=True, timeout=600)
    logs = {p.name: p.read_text() for p in (tmp_path / "mp").glob("process_*.log")}
    assert r.returncode == 0, r.stderr + "\n".join(logs.values())
    assert "process 1 of 2, 4 local / 8 global devices" in logs["process_1.log"]
    multi = np.load(tmp_path / "mp" / "images.npz")

    config = generate_config()
    config.update(builtin="demo32", seeds="0-5", classes="1,2", batch_size=8)
    generate.run(config, str(tmp_path / "single"))  # this process: 8 devices (conftest)
    single = np.load(tmp_path / "single" / "images.npz")
    assert multi["images"].shape == (12, 32, 32, 3)
    np.testing.assert_array_equal(multi["label"], single["label"])
    np.testing.assert_allclose(multi["images"], single["images"], atol=1e-6, rtol=0)
