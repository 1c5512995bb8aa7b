"""radgan_jax.main: config loading, overrides, mode dispatch and their error messages."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import ml_collections
import pytest

from radgan_jax import jobs
from radgan_jax.main import explain_bad_override

CONFIG = textwrap.dedent(
    """
    import ml_collections

    def get_config(arg=None):
        c = ml_collections.ConfigDict()
        c.mode = "print_config"
        c.seed = 0
        c.variant = arg or "default"
        c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
        return c
    """
)


def run_main(tmp_path, repo_root, *args):
    cfg = tmp_path / "tiny.py"
    cfg.write_text(CONFIG)
    cmd = [sys.executable, "-m", "radgan_jax.main", *[a.replace("CFG", str(cfg)) for a in args]]
    return subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=120)


def test_print_config_applies_arg_and_overrides(tmp_path, repo_root):
    r = run_main(tmp_path, repo_root, "--config=CFG:big", f"--workdir={tmp_path}/w", "--config.seed=7",
                 "--config.mesh.fsdp=2")
    assert r.returncode == 0, r.stderr
    assert "seed: 7" in r.stdout and "variant: big" in r.stdout and "fsdp: 2" in r.stdout


def test_unknown_mode_lists_registered_modes(tmp_path, repo_root):
    r = run_main(tmp_path, repo_root, "--config=CFG", f"--workdir={tmp_path}/w", "--config.mode=trian_gan")
    assert r.returncode != 0
    assert "unknown mode 'trian_gan'" in r.stderr
    for name in ("generate", "print_config"):
        assert name in r.stderr


def test_misspelled_override_names_key_and_lists_valid_keys(tmp_path, repo_root):
    r = run_main(tmp_path, repo_root, "--config=CFG", f"--workdir={tmp_path}/w", "--config.sede=3")
    assert r.returncode != 0
    assert "'sede'" in r.stderr
    assert "mesh, mode, seed, variant" in r.stderr
    assert "Traceback" not in r.stderr


def test_misspelled_nested_override_lists_keys_at_that_level(tmp_path, repo_root):
    r = run_main(tmp_path, repo_root, "--config=CFG", f"--workdir={tmp_path}/w", "--config.mesh.dta=2")
    assert r.returncode != 0
    assert "no key 'dta' in config.mesh" in r.stderr and "data, fsdp" in r.stderr


def test_workdir_is_required(tmp_path, repo_root):
    r = run_main(tmp_path, repo_root, "--config=CFG")
    assert r.returncode != 0 and "workdir" in r.stderr


def test_missing_config_file_is_reported(tmp_path, repo_root):
    r = run_main(tmp_path, repo_root, f"--config={tmp_path}/nope.py", f"--workdir={tmp_path}/w")
    assert r.returncode != 0 and "nope.py" in r.stderr


def test_explain_bad_override():
    c = ml_collections.ConfigDict({"a": 1, "sub": {"x": 2, "y": 3}})
    assert explain_bad_override(c, "sub.x") is None
    assert "Valid keys at that level: x, y" in explain_bad_override(c, "sub.z")
    assert "is a int" in explain_bad_override(c, "a.b")


def test_registry_lookup_and_errors():
    assert {"generate", "print_config"} <= set(jobs.names())
    assert callable(jobs.get("print_config"))
    with pytest.raises(KeyError, match="registered modes: .*print_config"):
        jobs.get("no_such_mode")


def test_register_decorator_and_duplicate():
    @jobs.register("_test_job")
    def run(config, workdir):
        return None

    try:
        assert jobs.get("_test_job") is run and "_test_job" in jobs.names()
        with pytest.raises(ValueError, match="registered twice"):
            jobs.register("_test_job")(lambda config, workdir: None)
    finally:
        jobs._REGISTRY.pop("_test_job")
