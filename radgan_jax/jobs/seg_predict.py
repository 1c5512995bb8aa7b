"""seg_predict: nnUNetv2_predict for seg_train models (nnunetv2/inference/predict_from_raw_data.py, nnUNetPredictor).

    python -m radgan_jax.main --config=configs/seg/predict.py --workdir=OUT --config.input=RAW/imagesTs \
        --config.models=runs/fold0,runs/fold1 [--config.plans=PLANS_DIR] [--config.postprocessing=PP.json]

Per case of `input` (files CASE_XXXX<file_ending>, one per channel; one RGB(A) png holds all colour channels):
read it as nnU-Net's image reader does, preprocess (DefaultPreprocessor.run_case, no seg), sliding-window logits
of every fold (Gaussian weighting, mirroring TTA), fold ensemble, export to the input's geometry
(export_prediction_from_logits), optional postprocessing (apply_postprocessing_to_folder), write into OUT:
  CASE<file_ending>   the label image (png: uint8; nii.gz: the input image's affine/header, uint8)
  CASE.npz, CASE.json probabilities [K, Z, Y, X] float32 + properties (save_probabilities; nnU-Net: .npz + .pkl)
  plans.json, dataset.json, predict_args.json   as nnU-Net's output folder (its predict_from_raw_data_args.json)
  overlays/CASE.png   prediction over the image (volumes: the slice with the most foreground)
Fold ensembling as nnUNetv2_predict: the folds' logits are averaged (float16, fold after fold); the option
ensemble='probabilities' averages the exported softmax probabilities instead (nnUNetv2_ensemble's rule).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from radgan_jax.data.base import DataError
from radgan_jax.data.io import read_image, read_nifti
from radgan_jax.seg import export, inference
from radgan_jax.seg.postprocess import apply_postprocessing, load_postprocessing
from radgan_jax.seg.preprocessing import RESAMPLING_FNS, preprocess_case
from radgan_jax.seg.raw_dataset import OUT_OF_PLANE_FACTOR, PNG_SPACING

CHECKPOINT_DIRS = {"final": "checkpoint_final", "best": "checkpoint_best"}
PLANS_NAMES = ("plans.json", "nnUNetPlans.json")  # nnU-Net model folder / seg_plan output
NATURAL_IMAGE_ENDINGS = (".png", ".bmp", ".tif")   # NaturalImage2DIO; everything else goes through nibabel


class PredictError(ValueError):
    """A bad input folder, model dir or plans; the message names the file or folder."""


# ------------------------------------------------------------------------------------------- label/image I/O
def is_natural_image(file_ending: str) -> bool:
    return file_ending.lower() in NATURAL_IMAGE_ENDINGS


def list_input_cases(folder: str | Path, file_ending: str, num_channels: int) -> dict[str, list[Path]]:
    """case id -> channel files, as nnU-Net's create_lists_from_splitted_dataset_folder; a case missing a channel
    file is an error naming that file (nnU-Net would fail reading it)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PredictError(f"input folder {folder} does not exist")
    pat = re.compile(r"^(.+)_(\d{4})" + re.escape(file_ending) + "$")
    found: dict[str, dict[int, Path]] = {}
    for p in sorted(folder.iterdir()):
        if m := pat.match(p.name):
            found.setdefault(m.group(1), {})[int(m.group(2))] = p
    if not found:
        raise PredictError(f"{folder}: no images named CASE_XXXX{file_ending} (the dataset's file_ending)")
    out = {}
    for cid in sorted(found):
        ch = found[cid]
        if is_natural_image(file_ending) and num_channels in (3, 4) and set(ch) == {0}:
            out[cid] = [ch[0]]  # one RGB(A) file holds every colour channel (NaturalImage2DIO)
            continue
        missing = [c for c in range(num_channels) if c not in ch]
        if missing:
            raise PredictError(f"{folder / f'{cid}_{missing[0]:04d}{file_ending}'}: missing channel file(s) {missing} "
                               f"of case {cid!r} (dataset.json declares {num_channels} channel(s))")
        extra = sorted(set(ch) - set(range(num_channels)))
        if extra:
            raise PredictError(f"{ch[extra[0]]}: channel {extra[0]} not declared in dataset.json "
                               f"({num_channels} channel(s))")
        out[cid] = [ch[c] for c in range(num_channels)]
    return out


def _read_array(path: Path, file_ending: str) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """nnU-Net's axis order: png (H, W[, C]); NIfTI stored (X, Y[, Z]) -> (Y, X) / (Z, Y, X), spacing reversed."""
    if is_natural_image(file_ending):
        return read_image(path), None
    data, zooms, _ = read_nifti(path)
    if data.ndim not in (2, 3):
        raise DataError(path, f"expected a 2D or 3D NIfTI image, found shape {data.shape}", "corrupt")
    return np.ascontiguousarray(data.T), tuple(zooms[::-1])


def read_case(files: Sequence[Path], file_ending: str, num_channels: int) -> tuple[np.ndarray, dict[str, Any]]:
    """(data float32 (C, Z, Y, X), properties {'spacing'}) as NaturalImage2DIO / SimpleITKIO read_images return
    them (radgan_jax.seg.raw_dataset.RawDataset.load does the same for a raw dataset's imagesTr)."""
    arrays, spacings = zip(*(_read_array(Path(f), file_ending) for f in files), strict=True)
    if len(files) == 1 and is_natural_image(file_ending) and num_channels in (3, 4):
        if arrays[0].ndim != 3 or arrays[0].shape[-1] != num_channels:
            raise PredictError(f"{files[0]}: expected a {num_channels}-channel image, found shape {arrays[0].shape}")
        data = np.moveaxis(arrays[0], -1, 0)[:, None]
        return data.astype(np.float32), {"spacing": list(PNG_SPACING)}
    for f, a in zip(files, arrays, strict=True):
        if a.shape != arrays[0].shape or (is_natural_image(file_ending) and a.ndim != 2):
            raise PredictError(f"{f}: shape {a.shape} (channel files must be single-channel and the shape of "
                               f"{Path(files[0]).name}: {arrays[0].shape})")
    data = np.stack(arrays).astype(np.float32)
    if is_natural_image(file_ending):
        return data[:, None], {"spacing": list(PNG_SPACING)}
    sp = [abs(float(s)) for s in spacings[0]]
    if data.ndim == 3:  # 2D NIfTI: SimpleITKIO's fake out-of-plane spacing
        return data[:, None], {"spacing": [OUT_OF_PLANE_FACTOR * max(sp), *sp]}
    return data, {"spacing": sp}


def read_label(path: str | Path) -> np.ndarray:
    """A label image in nnU-Net's axis order (png (H, W); NIfTI (Y, X) or (Z, Y, X)), integer typed."""
    path = Path(path)
    ending = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    arr, _ = _read_array(path, ending)
    if is_natural_image(ending) and arr.ndim != 2:
        raise PredictError(f"{path}: a label image must be single-channel, found shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.array_equal(arr, np.round(arr)):
            raise PredictError(f"{path}: label image holds non-integer values")
        arr = arr.astype(np.int32)
    return arr


def write_label(path: str | Path, seg: np.ndarray, reference_file: str | Path | None = None) -> Path:
    """Writes a segmentation (nnU-Net order (Z, Y, X), Z = 1 for 2D) as the reader/writer of its file ending does:
    png/bmp/tif via Pillow (2D, uint8, uint16 above 254); NIfTI with the affine and header of `reference_file`
    (the case's image: same geometry, as SimpleITKIO.write_seg copies spacing/origin/direction)."""
    path = Path(path)
    seg = np.asarray(seg)
    seg = seg.astype(np.uint8 if seg.size == 0 or seg.max() < 255 else np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_natural_image(path.suffix) and not path.name.endswith(".nii.gz"):
        from PIL import Image

        if seg.ndim == 3 and seg.shape[0] == 1:
            seg = seg[0]
        if seg.ndim != 2:
            raise PredictError(f"{path}: a {path.suffix} label image must be 2D, got shape {seg.shape}")
        Image.fromarray(np.ascontiguousarray(seg)).save(path)
        return path
    import nibabel as nib

    affine, header = np.eye(4), None
    if reference_file is not None:
        ref = nib.load(str(reference_file))
        affine, header = ref.affine, ref.header.copy()
        want = tuple(int(s) for s in ref.shape[::-1])
        if seg.shape != want:
            squeeze = tuple(s for s in seg.shape if s != 1) == tuple(s for s in want if s != 1)
            if not squeeze:  # only singleton axes may differ: (1, Y, X) or (Y, X) for a 2D image
                raise PredictError(f"{path}: segmentation shape {seg.shape} does not fit {reference_file} "
                                   f"(stored {ref.shape}, i.e. {want} in nnU-Net's order)")
            seg = seg.reshape(want)
    img = nib.Nifti1Image(np.ascontiguousarray(seg.T), affine, header)
    img.header.set_data_dtype(seg.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    nib.save(img, str(path))
    return path


# -------------------------------------------------------------------------------------------- plans, models
def read_plans(folder: str | Path) -> tuple[dict, dict]:
    """(plans, dataset.json) of a seg_plan output or an nnU-Net-style model folder (plans.json + dataset.json)."""
    folder = Path(folder)
    plans_file = next((folder / n for n in PLANS_NAMES if (folder / n).is_file()), None)
    if plans_file is None or not (folder / "dataset.json").is_file():
        raise PredictError(f"{folder}: needs {' or '.join(PLANS_NAMES)} and dataset.json (a seg_plan output dir)")
    try:
        return json.loads(plans_file.read_text()), json.loads((folder / "dataset.json").read_text())
    except json.JSONDecodeError as e:
        raise PredictError(f"{folder}: unreadable plans/dataset.json ({e})") from None


def resolve_plans(plans: str, model_dirs: Sequence[Path]) -> tuple[dict, dict, Path]:
    """config.plans, else the first model dir when it holds plans.json + dataset.json (nnU-Net's model folder
    layout); models whose own plans.json differs from the one used are refused."""
    if plans:
        source = Path(plans)
    elif any((model_dirs[0] / n).is_file() for n in PLANS_NAMES):
        source = model_dirs[0]
    else:
        raise PredictError(f"{model_dirs[0]} records no plans (plans.json): set --config.plans=PLANS_DIR (the "
                           "seg_plan output the models were trained on)")
    plan, dataset = read_plans(source)
    for d in model_dirs:
        own = next((d / n for n in PLANS_NAMES if (d / n).is_file()), None)
        if own is not None and json.loads(own.read_text()).get("configurations") != plan.get("configurations"):
            raise PredictError(f"models trained on different plans: {own} differs from {source}")
    return plan, dataset, source


def load_params(model_dir: str | Path, checkpoint: str = "final") -> Any:
    """The U-Net params seg_train saved in MODEL_DIR/checkpoint_final or checkpoint_best (host numpy)."""
    from radgan_jax.checkpoint import Checkpointer

    if checkpoint not in CHECKPOINT_DIRS:
        raise PredictError(f"checkpoint must be one of {sorted(CHECKPOINT_DIRS)}, got {checkpoint!r}")
    path = Path(model_dir) / CHECKPOINT_DIRS[checkpoint]
    if not Path(model_dir).is_dir():
        raise PredictError(f"model dir {model_dir} does not exist")
    if not path.is_dir():
        raise PredictError(f"{path}: missing (model dir {model_dir} has no {checkpoint} checkpoint; seg_train writes "
                           "checkpoint_final at the end of training, checkpoint_best on each new best EMA Dice)")
    with Checkpointer(path, max_to_keep=None) as ck:
        if ck.latest_step() is None:
            raise PredictError(f"{path}: holds no checkpoint step")
        items, _, _ = ck.restore()
    if "params" not in items:
        raise PredictError(f"{path}: no 'params' item (found {sorted(items)})")
    return items["params"]


def check_params(params_list: Sequence[Any], model_dirs: Sequence[Path], module: Any, plans_source: Path) -> None:
    """Every fold's params must have the tree and shapes of the plan's network (else: different plans)."""
    from radgan_jax.models.unet import dummy_input

    expected = jax.eval_shape(module.init, jax.random.key(0), dummy_input(module))["params"]
    want = jax.tree_util.tree_structure(expected), [x.shape for x in jax.tree.leaves(expected)]
    for d, p in zip(model_dirs, params_list, strict=True):
        got = jax.tree_util.tree_structure(p), [np.shape(x) for x in jax.tree.leaves(p)]
        if got != want:
            raise PredictError(f"model {d} does not fit the network of the plans in {plans_source} (parameter "
                               "tree/shapes differ): models trained on different plans?")


# ------------------------------------------------------------------------------------------------- export
def raw_probabilities(logits: np.ndarray, properties: Mapping[str, Any], plans: Mapping[str, Any],
                      configuration: str = "2d") -> np.ndarray:
    """logits [K, Z, Y, X] (preprocessed geometry) -> softmax probabilities [K, ...] in the raw geometry:
    convert_predicted_logits_to_segmentation_with_correct_shape(return_probabilities=True): resample, softmax,
    revert cropping (background probability 1 outside the crop), transpose back."""
    cfg = plans["configurations"][configuration]
    tf, tb = list(plans["transpose_forward"]), list(plans["transpose_backward"])
    spacing_t = [properties["spacing"][i] for i in tf]
    target = [int(s) for s in properties["shape_after_cropping_and_before_resampling"]]
    current = list(cfg["spacing"]) if len(cfg["spacing"]) == len(target) else [spacing_t[0], *cfg["spacing"]]
    x = np.asarray(logits, np.float32)
    if list(x.shape[1:]) != target:
        x = RESAMPLING_FNS[cfg["resampling_fn_probabilities"]](x, target, current, spacing_t,
                                                               **cfg["resampling_fn_probabilities_kwargs"])
    probs = np.asarray(inference.logits_to_probabilities(np.moveaxis(x, 0, -1)))
    full = np.zeros((probs.shape[-1], *[int(s) for s in properties["shape_before_cropping"]]), np.float32)
    full[0] = 1
    bbox = properties["bbox_used_for_cropping"]
    full[(slice(None), *(slice(int(a), int(b)) for a, b in bbox))] = np.moveaxis(probs, -1, 0)
    return full.transpose([0, *[i + 1 for i in tb]])


def segmentation_from_probabilities(probs: np.ndarray) -> np.ndarray:
    """LabelManager.convert_probabilities_to_segmentation (no regions): argmax over classes."""
    return np.argmax(probs, axis=0).astype(np.uint8 if probs.shape[0] < 256 else np.uint16)


def overlay_picture(data: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """RGB overlay of data (C, Z, Y, X) and seg (Z, Y, X): the slice with the most foreground."""
    z = int(np.argmax((seg > 0).reshape(seg.shape[0], -1).sum(1))) if seg.ndim == 3 else 0
    return export.overlay(np.moveaxis(data[:, z], 0, -1), seg[z] if seg.ndim == 3 else seg)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    return obj


# --------------------------------------------------------------------------------------------------- job
def run(config: Any, workdir: str) -> None:
    try:
        _run(config, Path(workdir))
    except (PredictError, DataError) as e:
        raise SystemExit(f"seg_predict: {e}") from e


def _run(config: Any, wd: Path) -> None:
    from PIL import Image
    from tqdm import tqdm

    from radgan_jax.models.unet import unet_from_plan

    model_dirs = [Path(m.strip()) for m in str(config.models).split(",") if m.strip()]
    if not model_dirs:
        raise PredictError("set --config.models=FOLD_DIR[,FOLD_DIR...] (seg_train workdirs)")
    if not config.input:
        raise PredictError("set --config.input=FOLDER (images named CASE_XXXX<file_ending>)")
    if config.ensemble not in ("logits", "probabilities"):
        raise PredictError(f"ensemble must be 'logits' (nnUNetv2_predict) or 'probabilities', got {config.ensemble!r}")
    plans, dataset, plans_source = resolve_plans(str(config.plans), model_dirs)
    plan = plans["configurations"]["2d"]
    ending, n_channels = str(dataset["file_ending"]), len(dataset["channel_names"])
    labels = dict(dataset["labels"])
    n_heads = len([v for k, v in labels.items() if k not in ("background", "ignore")]) + 1
    cases = list_input_cases(config.input, ending, n_channels)
    steps = None
    if config.postprocessing:
        try:
            steps = load_postprocessing(config.postprocessing)
        except ValueError as e:
            raise PredictError(str(e)) from None
    params_list = [load_params(d, str(config.checkpoint)) for d in model_dirs]
    module = unet_from_plan(plan, n_channels, n_heads, deep_supervision=False)
    check_params(params_list, model_dirs, module, plans_source)
    params_list = [jax.device_put(p) for p in params_list]

    wd.mkdir(parents=True, exist_ok=True)
    (wd / "plans.json").write_text(json.dumps(plans, indent=4))
    (wd / "dataset.json").write_text(json.dumps(dataset, indent=4))
    (wd / "predict_args.json").write_text(json.dumps({**config.to_dict(), "plans_source": str(plans_source)},
                                                     indent=4, default=str))
    if config.overlays:
        (wd / "overlays").mkdir(exist_ok=True)
    apply_fn = lambda p, x: module.apply({"params": p}, x)  # noqa: E731 - one object: compiled once per shape
    kw = dict(tile_step_size=float(config.step_size), mirror_axes=inference.DEFAULT_MIRROR_AXES_2D if config.tta
              else None, batch_size=int(config.tile_batch), accumulate_dtype=str(config.accumulate_dtype))
    logging.info("seg_predict: %d case(s) from %s, %d fold(s) (%s), TTA %s, plans %s", len(cases), config.input,
                 len(model_dirs), config.checkpoint, bool(config.tta), plans_source)
    for cid, files in tqdm(cases.items(), desc="seg_predict", unit="case", disable=not config.progress):
        data, props = read_case(files, ending, n_channels)
        pdata, _, pprops = preprocess_case(data, None, props, plans, "2d", labels)
        image = np.moveaxis(pdata, 0, -1)  # (C, Z, H, W) -> (Z, H, W, C): every slice on its own
        fold_logits = [inference.predict_sliding_window(apply_fn, p, image, plan["patch_size"], **kw)
                       for p in params_list]
        probs = None
        if config.ensemble == "probabilities":
            probs = inference.average_probabilities(
                [raw_probabilities(np.moveaxis(np.asarray(lg), -1, 0), pprops, plans) for lg in fold_logits])
        else:
            logits = np.moveaxis(np.asarray(inference.ensemble_fold_logits(fold_logits)), -1, 0)
            if config.save_probabilities:
                probs = raw_probabilities(logits, pprops, plans)
            else:
                seg = export.logits_to_raw_segmentation(logits, pprops, plans)
        if probs is not None:
            seg = segmentation_from_probabilities(probs)
        if steps is not None:
            seg = apply_postprocessing(seg, steps)
        write_label(wd / f"{cid}{ending}", seg, None if is_natural_image(ending) else files[0])
        if config.save_probabilities:
            np.savez_compressed(wd / f"{cid}.npz", probabilities=probs)
            (wd / f"{cid}.json").write_text(json.dumps(_jsonable(pprops), indent=1))
        if config.overlays:
            Image.fromarray(overlay_picture(data, seg)).save(wd / "overlays" / f"{cid}.png")
    if steps is not None:
        shutil.copy(config.postprocessing, wd / "postprocessing.json")
    logging.info("seg_predict: %d prediction(s) in %s", len(cases), wd)


__all__ = ["PredictError", "list_input_cases", "load_params", "raw_probabilities", "read_case", "read_label",
           "read_plans", "resolve_plans", "run", "write_label"]
