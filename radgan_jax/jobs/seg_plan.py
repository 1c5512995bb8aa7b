"""`mode=seg_plan`: nnU-Net v2 fingerprint + 2d plan (+ preprocessing) of a raw dataset, as
`nnUNetv2_plan_and_preprocess -d ID -c 2d` (default ExperimentPlanner, plans 'nnUNetPlans') computes them.

    python -m radgan_jax.main --config=configs/seg/plan.py --workdir=OUT --config.dataset=RAW_DATASET_DIR

Writes into OUT (config.out or the workdir):
  dataset_fingerprint.json   nnU-Net's fingerprint (radgan_jax.seg.fingerprint)
  nnUNetPlans.json           nnU-Net's plans with the '2d' configuration (radgan_jax.seg.planner)
  dataset.json               copy of the raw dataset's
  nnUNetPlans_2d/CASE.npz    data float32 (C, 1, H, W), seg int8/int16 (1, 1, H, W)  [preprocess=True]
  nnUNetPlans_2d/CASE.json   properties: spacing, crop bbox, shapes, class_locations {label: [[c, z, y, x], ...]}
Without config.dataset, the built-in phantom task (config.builtin*) is first written to OUT/raw and planned.
A bad dataset stops the job with one line naming the file (SystemExit).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging
from tqdm import tqdm

from radgan_jax.data.base import DataError
from radgan_jax.seg import fingerprint as fp
from radgan_jax.seg.planner import PlannerSettings, plans_dict
from radgan_jax.seg.preprocessing import preprocess_case
from radgan_jax.seg.raw_dataset import RawDataset, open_raw_dataset

FINGERPRINT_FILE = "dataset_fingerprint.json"


# ------------------------------------------------------------------------------------------ built-in task
def _ct_hu(image: np.ndarray) -> np.ndarray:
    return (image * 400.0 - 160.0).astype(np.float32)  # the phantom's abdomen window L40/W400 undone -> HU


def _identity(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32)


def _rgb8(image: np.ndarray) -> np.ndarray:
    from radgan_jax.data.phantoms import to_uint8

    return to_uint8(image)


# phantom kind -> (dataset.json channel names, image transform): CT in HU (CTNormalization), MR floats
# (z-score), colour frames as 8-bit RGB png.
_BUILTIN_CHANNELS: dict[str, tuple[dict[str, str], Callable[[np.ndarray], np.ndarray]]] = {
    "ct_abdomen": ({"0": "CT"}, _ct_hu),
    "mr_abdomen": ({"0": "MR"}, _identity),
    "mr_spine": ({"0": "MR"}, _identity),
    "endoscopy": ({"0": "R", "1": "G", "2": "B"}, _rgb8),
}
PHANTOM_FOV_MM = 400.0  # nominal field of view of a phantom image: spacing = 400 mm / resolution


def write_builtin(config, raw_root: Path) -> Path:
    """Writes the phantom segmentation task to raw_root/Dataset<id>_Phantom_<kind>; returns its folder."""
    from radgan_jax.data.nnunet_raw import write_nnunet_raw
    from radgan_jax.data.phantoms import PHANTOM_KINDS, phantom_dataset

    kind = config.builtin_kind
    if kind not in _BUILTIN_CHANNELS:
        raise ValueError(f"builtin_kind must be one of {sorted(_BUILTIN_CHANNELS)}, got {kind!r}")
    channels, transform = _BUILTIN_CHANNELS[kind]
    res = int(config.builtin_resolution)
    labels = {("background" if v == 0 else n): int(v) for v, n in sorted(PHANTOM_KINDS[kind].label_names.items())}

    def cases():
        for case in phantom_dataset(kind, int(config.builtin_num), res):
            case.image = transform(case.image)
            case.spacing = (PHANTOM_FOV_MM / res,) * 2
            yield case

    return write_nnunet_raw(cases(), raw_root, int(config.builtin_dataset_id), f"Phantom_{kind}", labels, channels,
                            overwrite=True, progress=bool(config.progress))


# ------------------------------------------------------------------------------------------------ workers
_DATASETS: dict[str, RawDataset] = {}


def _dataset(root: str) -> RawDataset:
    if root not in _DATASETS:  # one listing per worker process
        _DATASETS[root] = open_raw_dataset(root)
    return _DATASETS[root]


def _fingerprint_case(root: str, index: int, num_samples: int) -> fp.CaseFingerprint:
    ds = _dataset(root)
    data, seg, props = ds.load(ds.cases[index])
    return fp.analyze_case(data, seg, props["spacing"], num_samples)


def _preprocess_case(root: str, index: int, plans: dict, out_dir: str) -> str:
    ds = _dataset(root)
    case = ds.cases[index]
    data, seg, props = ds.load(case)
    data, seg, props = preprocess_case(data, seg, props, plans, "2d", ds.labels)
    np.savez(Path(out_dir) / f"{case.id}.npz", data=data, seg=seg)
    (Path(out_dir) / f"{case.id}.json").write_text(json.dumps(to_jsonable(props)) + "\n")
    return case.id


def _map(fn: Callable[..., Any], args: list[tuple], num_workers: int, desc: str, progress: bool) -> Iterator[Any]:
    """fn(*a) for a in args, in order, in `num_workers` spawned processes (0: here), with a progress bar."""
    bar = tqdm(total=len(args), desc=desc, unit="case", disable=not progress)
    try:
        if num_workers <= 0:
            for a in args:
                yield fn(*a)
                bar.update()
            return
        with ProcessPoolExecutor(num_workers, mp_context=get_context("spawn")) as pool:
            for result in pool.map(fn, *zip(*args)):
                yield result
                bar.update()
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------- the job
def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays -> Python; dict keys -> str (a region key (1, 2) -> '1,2')."""
    if isinstance(obj, dict):
        return {(",".join(str(i) for i in k) if isinstance(k, tuple) else str(k)): to_jsonable(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def extract_fingerprint(ds: RawDataset, num_workers: int = 0, progress: bool = False) -> dict[str, Any]:
    """The dataset fingerprint of `ds` (cases in nnU-Net's order)."""
    n = fp.samples_per_case(len(ds.cases))
    args = [(str(ds.root), i, n) for i in range(len(ds.cases))]
    _DATASETS[str(ds.root)] = ds
    cases = list(_map(_fingerprint_case, args, num_workers, "fingerprint", progress))
    return fp.aggregate(cases, ds.num_channels)


def preprocess_dataset(ds: RawDataset, plans: dict, out_dir: Path, num_workers: int = 0,
                       progress: bool = False) -> list[str]:
    """DefaultPreprocessor.run for the '2d' configuration: one CASE.npz + CASE.json per case in out_dir."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    _DATASETS[str(ds.root)] = ds
    args = [(str(ds.root), i, plans, str(out_dir)) for i in range(len(ds.cases))]
    return list(_map(_preprocess_case, args, num_workers, "preprocess 2d", progress))


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(to_jsonable(obj), indent=4) + "\n")


def run(config, workdir: str) -> None:
    out = Path(config.out or workdir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if config.dataset:
            root = Path(config.dataset)
        elif config.builtin == "phantoms":
            root = write_builtin(config, out / "raw")
            logging.info("built-in phantom task written to %s", root)
        else:
            raise ValueError("seg_plan: set --config.dataset=RAW_DATASET_DIR (or --config.builtin=phantoms)")
        ds = open_raw_dataset(root)
        logging.info("%s: %d case(s), %d channel(s) %s, reader %s", ds.root, len(ds.cases), ds.num_channels,
                     ds.channel_names, ds.reader_writer)
        workers = int(config.num_workers)
        fingerprint = extract_fingerprint(ds, workers, bool(config.progress))
        _write_json(out / FINGERPRINT_FILE, fingerprint)
        settings = PlannerSettings(gpu_memory_target_gb=float(config.gpu_memory_target_gb),
                                   plans_name=str(config.plans_name))
        plans = plans_dict(ds.dataset_json, fingerprint, ds.name, ds.reader_writer, settings)
        _write_json(out / f"{settings.plans_name}.json", plans)
        shutil.copy(ds.root / "dataset.json", out / "dataset.json")
        _write_json(out / "raw_dataset.json", {"path": str(ds.root.resolve())})  # seg_train's validation references
        cfg = plans["configurations"]["2d"]
        logging.info("2d plan: patch %s, batch %d, %d stages, normalization %s", cfg["patch_size"],
                     cfg["batch_size"], cfg["architecture"]["arch_kwargs"]["n_stages"], cfg["normalization_schemes"])
        if config.preprocess:
            preprocess_dataset(ds, plans, out / cfg["data_identifier"], workers, bool(config.progress))
    except (DataError, ValueError) as e:
        raise SystemExit(f"seg_plan: {e}") from e
    logging.info("seg_plan: wrote %s", out)
