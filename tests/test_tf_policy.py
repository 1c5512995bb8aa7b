"""The hot path never imports TensorFlow (README 'TensorFlow policy')."""

from __future__ import annotations

import subprocess
import sys

HOT_MODULES = ["radgan_jax.main", "radgan_jax.jobs.generate", "radgan_jax.models.stylegan_xl.generator",
               "radgan_jax.ops.filtered_lrelu", "radgan_jax.parallel.sharding", "radgan_jax.checkpoint",
               "radgan_jax.tools.convert_stylegan_xl", "radgan_jax.data.pipeline", "radgan_jax.data.preprocess",
               "radgan_jax.data.readers.cvc_clinicdb", "radgan_jax.data.readers.chaos"]


def test_hot_path_does_not_import_tensorflow(repo_root):
    code = ("import importlib, sys\n"
            f"for m in {HOT_MODULES!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'torch'))\n"
            "print(bad[:5]); sys.exit(1 if bad else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"TensorFlow/torch imported by the hot path: {r.stdout} {r.stderr[-2000:]}"
