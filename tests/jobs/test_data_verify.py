"""mode=data_verify through the real command line: exit codes, printed/written report, quarantine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radgan_jax.jobs.data_verify import parse_reader_options


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("benign", "malignant"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / c / f"{c}_{i}.png")
    return root


def _verify(repo_root: Path, dataset: Path, workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{repo_root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    cmd = [sys.executable, "-m", "radgan_jax.main", "--config=configs/data/verify.py", f"--workdir={workdir}",
           f"--config.dataset={dataset}", *extra]
    return subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=120)


def test_clean_dataset_exits_zero_and_writes_reports(repo_root, tmp_path):
    r = _verify(repo_root, _dataset(tmp_path / "ds"), tmp_path / "out")  # format auto-detected
    assert r.returncode == 0, r.stderr
    assert "format: image_folder (detected)" in r.stdout and "items: 6, readable: 6" in r.stdout
    assert "problems: none" in r.stdout
    js = json.loads((tmp_path / "out" / "verify_report.json").read_text())
    assert js["ok"] and js["counts"]["per_class"] == {"0:benign": 3, "1:malignant": 3}
    assert "OK" in (tmp_path / "out" / "verify_report.txt").read_text()


def test_broken_dataset_fails_names_files_and_quarantine_fixes_it(repo_root, tmp_path):
    ds = _dataset(tmp_path / "ds")
    png = (ds / "benign" / "benign_1.png").read_bytes()
    (ds / "benign" / "benign_1.png").write_bytes(png[: len(png) // 2])           # truncated
    (ds / "malignant" / "notes.txt").write_text("reader notes")       # stray non-image file
    r = _verify(repo_root, ds, tmp_path / "out", "--config.format=image_folder")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "2 problem(s) left" in r.stderr
    assert "corrupt (1):\n    benign/benign_1.png" in r.stdout
    assert "not_image (1):\n    malignant/notes.txt" in r.stdout
    js = json.loads((tmp_path / "out" / "verify_report.json").read_text())
    assert {Path(p["path"]).name: p["kind"] for p in js["problems"]} == {"benign_1.png": "corrupt",
                                                                          "notes.txt": "not_image"}
    assert not js["ok"] and (ds / "benign" / "benign_1.png").exists()   # nothing moved without quarantine

    r = _verify(repo_root, ds, tmp_path / "out2", "--config.format=image_folder", "--config.quarantine=True")
    assert r.returncode == 0, r.stderr
    qdir = tmp_path / "out2" / "quarantine"
    assert f"quarantined 2 item(s), 2 path(s) moved to {qdir}" in r.stdout
    assert (qdir / "benign" / "benign_1.png").read_bytes() == png[: len(png) // 2]
    assert (qdir / "malignant" / "notes.txt").exists()
    assert not (ds / "benign" / "benign_1.png").exists()
    assert len((qdir / "quarantine.jsonl").read_text().splitlines()) == 2
    assert _verify(repo_root, ds, tmp_path / "out3", "--config.format=image_folder").returncode == 0


@pytest.mark.parametrize("folder, args, message", [
    ("does_not_exist", ("--config.format=image_folder",), "does_not_exist: dataset folder does not exist"),
    ("does_not_exist", ("--config.format=imagefolder",), "unknown dataset format 'imagefolder'"),
    ("empty", (), "empty: no known dataset layout found"),
])
def test_unusable_dataset_is_a_one_line_error(repo_root, tmp_path, folder, args, message):
    (tmp_path / "empty").mkdir()
    r = _verify(repo_root, tmp_path / folder, tmp_path / "out", *args)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("data_verify:")]
    assert len(errors) == 1 and message in errors[0], r.stderr


def test_parse_reader_options():
    assert parse_reader_options("product=ctmr, min=2,flag=True") == {"product": "ctmr", "min": 2, "flag": True}
    assert parse_reader_options("") == {}
    with pytest.raises(ValueError, match="key=value"):
        parse_reader_options("product")
