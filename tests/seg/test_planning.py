"""nnU-Net v2 planning parity: our fingerprint + 2d plan (radgan_jax.seg, jobs/seg_plan) against real nnunetv2.

The reference runs inside the tests: nnunetv2's own fingerprint extractor and ExperimentPlanner (the code behind
nnUNetv2_extract_fingerprint / nnUNetv2_plan_experiment) in a subprocess with nnUNet_raw/_preprocessed set to
tmp dirs, or in-process with those paths patched for the synthetic-fingerprint planner checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from radgan_jax.data.base import DataError
from radgan_jax.seg import planner
from radgan_jax.seg.raw_dataset import open_raw_dataset

REPO = Path(__file__).resolve().parents[2]

_REFERENCE_SCRIPT = """
import os, sys
raw, dataset_id, pre = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.environ.update(nnUNet_raw=raw, nnUNet_preprocessed=pre, nnUNet_results=pre + "_results")
from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset, plan_experiment_dataset
if __name__ == "__main__":
    extract_fingerprint_dataset(dataset_id, num_processes=2, verbose=False, show_progress_bar=False)
    plan_experiment_dataset(dataset_id)
"""


class NnUNetReference:
    """nnunetv2's fingerprint + plans of the raw dataset `dataset_dir`, computed in a subprocess started at
    construction (so our side can run meanwhile); `result()` waits and returns (fingerprint, plans)."""

    def __init__(self, dataset_dir: Path, tmp: Path):
        pytest.importorskip("nnunetv2")
        script = tmp / "nnunet_reference.py"
        script.write_text(_REFERENCE_SCRIPT)
        self.out = tmp / "nnUNet_preprocessed" / dataset_dir.name
        dataset_id = int(dataset_dir.name[len("Dataset"):len("Dataset") + 3])
        env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
        self.proc = subprocess.Popen([sys.executable, str(script), str(dataset_dir.parent), str(dataset_id),
                                      str(self.out.parent)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)

    def result(self) -> tuple[dict, dict]:
        log, _ = self.proc.communicate(timeout=900)
        assert self.proc.returncode == 0, log[-5000:]
        return (json.loads((self.out / "dataset_fingerprint.json").read_text()),
                json.loads((self.out / "nnUNetPlans.json").read_text()))


def assert_fingerprint_equal(ours: dict, ref: dict) -> None:
    assert np.allclose(ours["spacings"], ref["spacings"], rtol=1e-12)
    assert ours["shapes_after_crop"] == ref["shapes_after_crop"]
    assert ours["median_relative_size_after_cropping"] == pytest.approx(ref["median_relative_size_after_cropping"],
                                                                        rel=1e-12)
    props_o = ours["foreground_intensity_properties_per_channel"]
    props_r = ref["foreground_intensity_properties_per_channel"]
    assert sorted(props_o) == sorted(props_r)
    for c in props_r:
        assert sorted(props_o[c]) == sorted(props_r[c])
        for k, v in props_r[c].items():
            assert props_o[c][k] == pytest.approx(v, rel=1e-6, abs=1e-12), (c, k)


CONFIG_KEYS = ("batch_size", "patch_size", "median_image_size_in_voxels", "spacing", "normalization_schemes",
               "use_mask_for_norm", "batch_dice", "data_identifier", "preprocessor_name", "resampling_fn_data",
               "resampling_fn_seg", "resampling_fn_data_kwargs", "resampling_fn_seg_kwargs",
               "resampling_fn_probabilities", "resampling_fn_probabilities_kwargs")


def assert_plan_equal(ours: dict, ref: dict) -> None:
    """Our '2d' plan equals nnunetv2's, key by key (and the plans' top-level keys)."""
    ours = json.loads(json.dumps(ours))  # tuples -> lists, as in the JSON file
    for key in ("plans_name", "transpose_forward", "transpose_backward", "image_reader_writer",
                "experiment_planner_used", "label_manager", "original_median_shape_after_transp"):
        assert ours[key] == ref[key], key
    assert np.allclose(ours["original_median_spacing_after_transp"], ref["original_median_spacing_after_transp"])
    a, b = ours["configurations"]["2d"], ref["configurations"]["2d"]
    assert list(a) == list(b)  # same keys in the same order
    for key in CONFIG_KEYS:
        assert a[key] == pytest.approx(b[key]) if key in ("spacing", "median_image_size_in_voxels") \
            else a[key] == b[key], (key, a[key], b[key])
    assert a["architecture"] == b["architecture"]


# ---------------------------------------------------------------------------- acceptance: real datasets
def _run_job(dataset: str, out: Path, **overrides) -> None:
    from configs.seg.plan import get_config
    from radgan_jax.jobs import seg_plan

    config = get_config()
    config.dataset = dataset
    config.num_workers = 0
    config.progress = False
    for k, v in overrides.items():
        setattr(config, k, v)
    seg_plan.run(config, str(out))


@pytest.mark.slow  # ~20 s; planner rules vs nnunetv2 stay in the default suite (synthetic fingerprints)
def test_phantom_task_plan_matches_nnunetv2(tmp_path):
    """The job's built-in task (ct_abdomen phantoms in HU, nii.gz): fingerprint and 2d plan equal nnunetv2's;
    the preprocessed folder has one npz + json per case."""
    from configs.seg.plan import get_config
    from radgan_jax.jobs.seg_plan import write_builtin

    config = get_config()
    config.builtin_num, config.builtin_resolution, config.progress = 40, 128, False
    ref_raw = write_builtin(config, tmp_path / "ref_raw")  # the same phantoms, for nnunetv2 to read meanwhile
    reference = NnUNetReference(ref_raw, tmp_path)
    out = tmp_path / "plan"
    _run_job("", out, builtin_num=40, builtin_resolution=128)
    raw = next((out / "raw").glob("Dataset990_*"))
    ref_fp, ref_plans = reference.result()
    ours_fp = json.loads((out / "dataset_fingerprint.json").read_text())
    ours_plans = json.loads((out / "nnUNetPlans.json").read_text())
    assert_fingerprint_equal(ours_fp, ref_fp)
    assert_plan_equal(ours_plans, ref_plans)
    assert ours_plans["configurations"]["2d"]["normalization_schemes"] == ["CTNormalization"]
    assert json.loads((out / "dataset.json").read_text()) == json.loads((raw / "dataset.json").read_text())
    assert (raw / "dataset.json").read_text() == (ref_raw / "dataset.json").read_text()
    pre = out / "nnUNetPlans_2d"
    assert len(list(pre.glob("*.npz"))) == len(list(pre.glob("*.json"))) == 40
    with np.load(pre / "ct_abdomen_00000.npz") as f:
        assert f["data"].dtype == np.float32 and f["data"].shape == (1, 1, 128, 128)
        assert f["seg"].dtype == np.int8 and f["seg"].shape == (1, 1, 128, 128)
    props = json.loads((pre / "ct_abdomen_00000.json").read_text())
    assert set(props["class_locations"]) == {"1", "2", "3"}


@pytest.mark.slow
def test_cvc_clinicdb_plan_matches_nnunetv2(tmp_path, shared_dir):
    """All 612 CVC-ClinicDB frames, converted by the data_convert job (RGB png, channels R,G,B): our plan and
    fingerprint equal nnunetv2's (about 2 minutes on 2 cores)."""
    from configs.data.convert import get_config
    from radgan_jax.jobs import data_convert

    src = shared_dir / "data" / "CVC-ClinicDB"
    if not src.is_dir():
        pytest.skip(f"{src} not found")
    cfg = get_config()
    cfg.dataset, cfg.max_cases, cfg.progress, cfg.dataset_id = str(src), 0, False, 601
    data_convert.run(cfg, str(tmp_path / "convert"))
    raw = next((tmp_path / "convert" / "nnUNet_raw").glob("Dataset601_*"))
    reference = NnUNetReference(raw, tmp_path)
    out = tmp_path / "plan"
    _run_job(str(raw), out, preprocess=False)
    ref_fp, ref_plans = reference.result()
    ours_plans = json.loads((out / "nnUNetPlans.json").read_text())
    assert_fingerprint_equal(json.loads((out / "dataset_fingerprint.json").read_text()), ref_fp)
    assert_plan_equal(ours_plans, ref_plans)
    assert ours_plans["configurations"]["2d"]["normalization_schemes"] == ["ZScoreNormalization"] * 3


# --------------------------------------------------------------------- planner rules, synthetic fingerprints
def _synthetic(spacing_fn, shape_fn, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"spacings": [spacing_fn(rng) for _ in range(n)], "shapes_after_crop": [shape_fn(rng) for _ in range(n)],
            "foreground_intensity_properties_per_channel": {"0": {
                "mean": 1.0, "median": 1.0, "std": 2.0, "min": -3.0, "max": 5.0, "percentile_99_5": 4.5,
                "percentile_00_5": -2.5}},
            "median_relative_size_after_cropping": float(rng.uniform(0.5, 1.0))}


SYNTHETIC = {
    # very large images: the VRAM rule shrinks the 2048^2-area patch
    "large_2d": (lambda r: [999.0, 0.5, 0.5], lambda r: [1, int(r.integers(1500, 1700)), int(r.integers(1300, 1500))]),
    # anisotropic in-plane spacing: kernel 1 and no pooling on the coarse axis in the first stages
    "aniso_2d": (lambda r: [999.0, 3.0, 0.7], lambda r: [1, int(r.integers(100, 140)), int(r.integers(400, 520))]),
    # small, odd, mixed spacings: clipping to the median shape, 5% batch rule
    "mixed_2d": (lambda r: [999.0, float(r.uniform(0.6, 1.1)), float(r.uniform(0.6, 1.1))],
                 lambda r: [1, int(r.integers(40, 90)), int(r.integers(60, 75))]),
    # a 3D fingerprint: nnU-Net's 2d configuration plans the slices after the transpose
    "volume": (lambda r: [float(r.uniform(1.0, 1.6)), 5.0, float(r.uniform(0.7, 0.9))],
               lambda r: [int(r.integers(90, 130)), int(r.integers(20, 30)), int(r.integers(100, 130))]),
}


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_planner_matches_nnunetv2_on_synthetic_fingerprints(name, tmp_path, monkeypatch):
    pytest.importorskip("nnunetv2")
    from nnunetv2.experiment_planning.experiment_planners import default_experiment_planner as dep

    fingerprint = _synthetic(*SYNTHETIC[name], n=7, seed=len(name))
    dataset_name = "Dataset801_Synth"
    raw, pre = tmp_path / "raw" / dataset_name, tmp_path / "pre" / dataset_name
    for d in (raw / "imagesTr", raw / "labelsTr", pre):
        d.mkdir(parents=True)
    (raw / "imagesTr" / "c_0000.nii.gz").write_bytes(b"")  # a case name for determine_reader_writer; never read
    dataset_json = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 55,
                    "file_ending": ".nii.gz", "overwrite_image_reader_writer": "SimpleITKIO"}
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    (pre / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    monkeypatch.setattr(dep, "nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setattr(dep, "nnUNet_preprocessed", str(tmp_path / "pre"))
    ref = dep.ExperimentPlanner(dataset_name).plan_experiment()
    ours = planner.plans_dict(dataset_json, fingerprint, dataset_name, "SimpleITKIO")
    assert_plan_equal(ours, json.loads(json.dumps(ref)))
    if name == "large_2d":  # the VRAM rule did shrink the patch below the median shape
        cfg = ours["configurations"]["2d"]
        assert np.prod(cfg["patch_size"]) < 0.8 * np.prod(cfg["median_image_size_in_voxels"])
    if name == "aniso_2d":
        assert ours["configurations"]["2d"]["architecture"]["arch_kwargs"]["kernel_sizes"][0] == [1, 3]


def test_topology_and_vram_estimate_match_nnunetv2():
    """get_pool_and_conv_props and the feature-map estimate on a grid of spacings and patch sizes."""
    pytest.importorskip("nnunetv2")
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    rng = np.random.default_rng(0)
    for _ in range(4):
        spacing = [float(rng.choice([0.5, 0.8, 1.0, 2.5])), float(rng.choice([0.5, 0.8, 1.0, 3.0]))]
        patch = [int(rng.integers(20, 700)), int(rng.integers(20, 700))]
        ref = get_pool_and_conv_props(spacing, patch, 4, 999999)
        ours = planner.get_pool_and_conv_props(spacing, patch, 4, 999999)
        assert list(ours[0]) == list(ref[0]) and ours[1] == ref[1] and ours[2] == ref[2]
        assert tuple(ours[3]) == tuple(int(p) for p in ref[3]) and list(ours[4]) == list(ref[4])
        arch = planner._architecture(2, ours[1], ours[2], planner.PlannerSettings())
        for num_classes in (2 + _,):
            est_ref = ExperimentPlanner.static_estimate_VRAM_usage(
                ours[3], 3, num_classes, arch["network_class_name"], arch["arch_kwargs"],
                tuple(arch["_kw_requires_import"]))
            assert planner._estimate(ours[3], arch, num_classes) == int(est_ref)


# ----------------------------------------------------------------------------------------------- errors
def _tiny_dataset(root: Path) -> Path:
    from radgan_jax.data.base import Case
    from radgan_jax.data.nnunet_raw import write_nnunet_raw

    rng = np.random.default_rng(0)
    cases = [Case(f"c{i}", rng.integers(0, 255, (16, 20), dtype=np.uint8),
                  (rng.random((16, 20)) > 0.5).astype(np.uint8)) for i in range(3)]
    return write_nnunet_raw(cases, root, 7, "Tiny", {"background": 0, "fg": 1}, {"0": "gray"})


def test_errors_name_the_bad_file(tmp_path):
    folder = _tiny_dataset(tmp_path / "raw")
    ds = open_raw_dataset(folder)
    assert [c.id for c in ds.cases] == ["c0", "c1", "c2"] and ds.reader_writer == "NaturalImage2DIO"

    # a label whose shape differs from its image
    from PIL import Image

    Image.fromarray(np.zeros((8, 20), np.uint8)).save(folder / "labelsTr" / "c1.png")
    with pytest.raises(DataError, match=r"labelsTr/c1\.png: label shape \(8, 20\) != image shape \(16, 20\)"):
        ds.load("c1")
    with pytest.raises(SystemExit, match=r"seg_plan: .*labelsTr/c1\.png: label shape"):
        _run_job(str(folder), tmp_path / "out")

    # a missing label file
    (folder / "labelsTr" / "c1.png").unlink()
    with pytest.raises(DataError, match=r"labelsTr/c1\.png: missing label file"):
        open_raw_dataset(folder)

    # dataset.json without a required key
    ds_json = json.loads((folder / "dataset.json").read_text())
    del ds_json["file_ending"]
    (folder / "dataset.json").write_text(json.dumps(ds_json))
    with pytest.raises(DataError, match=r"dataset\.json: missing required keys \['file_ending'\]"):
        open_raw_dataset(folder)
    with pytest.raises(SystemExit, match=r"dataset\.json: missing required keys"):
        _run_job(str(folder), tmp_path / "out")
    with pytest.raises(SystemExit, match=r"set --config.dataset"):
        _run_job("", tmp_path / "out", builtin="")


@pytest.mark.slow
@pytest.mark.parametrize("name,dataset_id", [("CHAOS-MR-T2", 602), ("CVC-ClinicDB-tif-sample", 603)])
def test_other_shared_datasets_plan_matches_nnunetv2(tmp_path, shared_dir, name, dataset_id):
    """The other segmentation sets of ../shared/data, converted by data_convert: CHAOS MR T2 volumes (nii.gz;
    nnU-Net's 2d configuration plans their slices after its transpose) and the CVC tif frames."""
    from configs.data.convert import get_config
    from radgan_jax.jobs import data_convert

    src = shared_dir / "data" / name
    if not src.is_dir():
        pytest.skip(f"{src} not found")
    cfg = get_config()
    cfg.dataset, cfg.max_cases, cfg.progress, cfg.dataset_id = str(src), 0, False, dataset_id
    data_convert.run(cfg, str(tmp_path / "convert"))
    raw = next((tmp_path / "convert" / "nnUNet_raw").glob(f"Dataset{dataset_id}_*"))
    reference = NnUNetReference(raw, tmp_path)
    out = tmp_path / "plan"
    _run_job(str(raw), out, preprocess=False)
    ref_fp, ref_plans = reference.result()
    assert_fingerprint_equal(json.loads((out / "dataset_fingerprint.json").read_text()), ref_fp)
    assert_plan_equal(json.loads((out / "nnUNetPlans.json").read_text()), ref_plans)
