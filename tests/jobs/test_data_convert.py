"""`mode=data_convert` end to end: real subsets and small tmp datasets; a bad file is counted, never a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radgan_jax import jobs
from radgan_jax.data.preprocess import paper_resize
from radgan_jax.data.readers import open_dataset
from radgan_jax.data.readers.nnunet_raw import NnUNetRawReader
from radgan_jax.jobs.data_convert import parse_options, run

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "data" / "convert.py"


def get_config(**overrides):
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.progress = False
    config.update(overrides)
    return config


def report(workdir: Path) -> dict:
    return json.loads((workdir / "convert_report.json").read_text())


def make_polyp_dataset(root: Path, n: int = 6, bad: bool = True) -> Path:
    """CVC-ClinicDB layout (Original/N.png + Ground Truth/N.png); with `bad`, 3 is truncated, 5's mask is too small."""
    rng = np.random.default_rng(0)
    (root / "Original").mkdir(parents=True)
    (root / "Ground Truth").mkdir()
    for i in range(1, n + 1):
        Image.fromarray(rng.integers(0, 256, (36, 48, 3)).astype(np.uint8)).save(root / "Original" / f"{i}.png")
        mask = np.zeros((36, 48) if not (bad and i == 5) else (30, 48), np.uint8)
        mask[10:20, 12:30] = 255
        Image.fromarray(mask).save(root / "Ground Truth" / f"{i}.png")
    if bad:
        p = root / "Original" / "3.png"
        p.write_bytes(p.read_bytes()[:100])
    return root


def test_config_and_registry():
    assert "data_convert" in jobs.names() and jobs.get("data_convert") is run
    config = get_config()
    assert config.mode == "data_convert" and config.dataset is None and config.target == "nnunet"
    assert parse_options("label_map=original, n=3, f=0.5, x=true") == {"label_map": "original", "n": 3, "f": 0.5,
                                                                     "x": True}
    with pytest.raises(ValueError, match="set --config.dataset"):
        run(config, "/tmp/unused")


def test_real_cvc_subset_paper_resize(shared_dir, tmp_path):
    src = shared_dir / "data" / "CVC-ClinicDB"
    run(get_config(dataset=str(src), max_cases=4, resize="paper", dataset_id=101, dataset_name="CVC"), str(tmp_path))
    rep = report(tmp_path)
    assert rep["format"] == "cvc_clinicdb" and rep["converted"] == 4 and rep["bad_cases"] == 0
    folder = tmp_path / "nnUNet_raw" / "Dataset101_CVC"
    ds = json.loads((folder / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "polyp": 1} and ds["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    back = NnUNetRawReader(folder)
    items, problems = back.scan()
    assert problems == [] and [it.id for it in items] == ["1", "2", "3", "4"]
    source = open_dataset(src, "cvc_clinicdb")
    original = source.load(source.scan()[0][1])
    got = back.load(items[1])
    image, mask = paper_resize(original.image, original.mask, 512)   # paper: 512 x 512
    np.testing.assert_array_equal(got.image, image)
    np.testing.assert_array_equal(got.mask, mask)


def test_real_chaos_volume_to_2d_slices(shared_dir, tmp_path):
    run(get_config(dataset=str(shared_dir / "data" / "CHAOS-MR-T2"), max_cases=1, slices=True, dataset_id=102),
        str(tmp_path))
    assert report(tmp_path)["converted"] == 37                     # patient 1 has 37 axial slices (README)
    folder = tmp_path / "nnUNet_raw" / "Dataset102_chaos_nifti"
    ds = json.loads((folder / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "MR"} and ds["file_ending"] == ".nii.gz" and ds["numTraining"] == 37
    assert ds["labels"] == {"background": 0, "liver": 1, "kidney": 2}   # the paper's merged kidney label
    reader = NnUNetRawReader(folder)
    items, _ = reader.scan()
    case = reader.load(items[20])
    assert case.id == "1_z0020" and case.group == "1" and case.image.shape == (256, 256) and not case.is_volume
    np.testing.assert_allclose(case.spacing, (1.25, 1.25), rtol=1e-6)


def test_bad_files_are_counted_not_fatal(tmp_path):
    src = make_polyp_dataset(tmp_path / "polyps")
    work = tmp_path / "out"
    run(get_config(dataset=str(src), format="cvc_clinicdb"), str(work))
    rep = report(work)
    assert rep["items"] == 6 and rep["converted"] == 4 and rep["bad_cases"] == 2
    bad = {b["id"]: b for b in rep["bad"]}
    assert bad["3"]["kind"] == "corrupt" and bad["3"]["path"].endswith("Original/3.png")
    assert bad["5"]["kind"] == "size_mismatch" and bad["5"]["path"].endswith("Ground Truth/5.png")
    items, _ = NnUNetRawReader(work / "nnUNet_raw" / "Dataset500_cvc_clinicdb").scan()
    assert [it.id for it in items] == ["1", "2", "4", "6"]
    assert (src / "Original" / "3.png").exists()                   # without quarantine the dataset is untouched


def test_quarantine_moves_bad_cases_aside(tmp_path):
    src = make_polyp_dataset(tmp_path / "polyps")
    work = tmp_path / "out"
    run(get_config(dataset=str(src), quarantine=True), str(work))
    rep = report(work)
    assert rep["bad_cases"] == 2 and rep["quarantined"]
    assert not (src / "Original" / "3.png").exists() and not (src / "Ground Truth" / "5.png").exists()
    assert (work / "quarantine" / "Original" / "3.png").exists()
    lines = (work / "quarantine" / "quarantine.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == ["3", "5"]
    with pytest.raises(ValueError, match="inside the dataset"):
        run(get_config(dataset=str(src), quarantine=True, quarantine_dir=str(src / "q")), str(tmp_path / "o2"))


def test_image_folder_nnunet_error_and_tfds_target(tmp_path):
    src = tmp_path / "folders"
    rng = np.random.default_rng(1)
    for cls in ("benign", "malign"):
        (src / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 50)).astype(np.uint8)).save(src / cls / f"{i}.png")
    (src / "malign" / "2.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="needs a segmentation dataset"):
        run(get_config(dataset=str(src), format="image_folder"), str(tmp_path / "nn"))
    work = tmp_path / "gan"
    run(get_config(dataset=str(src), format="image_folder", target="tfds", resolutions="16,32",
                   dataset_name="toy"), str(work))
    rep = report(work)
    assert rep["converted"] == 5 and rep["bad_cases"] == 1 and rep["bad"][0]["id"] == "malign/2"
    assert sorted(rep["output"]) == ["16", "32"] and all(Path(p).is_dir() for p in rep["output"].values())


def test_cli_end_to_end(tmp_path):
    src = make_polyp_dataset(tmp_path / "polyps", n=3, bad=False)
    work = tmp_path / "out"
    cmd = [sys.executable, "-m", "radgan_jax.main", f"--config={CONFIG}", f"--workdir={work}",
           f"--config.dataset={src}", "--config.resize=64", "--config.dataset_id=7", "--config.dataset_name=Toy",
           "--config.progress=False"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=CONFIG.parents[2],
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert res.returncode == 0, res.stderr[-2000:]
    rep = report(work)
    assert rep["converted"] == 3 and rep["bad_cases"] == 0
    img = np.asarray(Image.open(work / "nnUNet_raw" / "Dataset007_Toy" / "imagesTr" / "1_0000.png"))
    assert img.shape == (64, 64, 3)
