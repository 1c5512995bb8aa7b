"""seg_evaluate: nnU-Net v2's evaluation of predictions, and of the 5-fold cross-validation with its postprocessing.

(a) nnUNetv2_evaluate_folder (nnunetv2/evaluation/evaluate_predictions.py, compute_metrics_on_folder2):
    python -m radgan_jax.main --config=configs/seg/evaluate.py --workdir=OUT --config.predictions=PRED_DIR \
        --config.reference=RAW_DATASET_DIR (or a labels folder)
    -> OUT/summary.json (metric_per_case, mean, foreground_mean) and OUT/dice.png (per-case Dice per label).
(b) the cross-validation result of nnUNetv2_find_best_configuration for the 2d configuration:
    python -m radgan_jax.main --config=configs/seg/evaluate.py --workdir=OUT \
        --config.cv_models=runs/fold0,runs/fold1,runs/fold2,runs/fold3,runs/fold4 --config.plans=PLANS_DIR
    Each fold's validation predictions (FOLD/validation/CASE<file_ending>, see save_validation_predictions) are
    gathered into OUT/crossval/ (accumulate_cv_results: a case predicted by two folds is an error) and evaluated
    against the raw labels -> OUT/summary.json; then determine_postprocessing
    (postprocessing/remove_connected_components.py) decides on keep-largest-component (all foreground at once,
    then per label; kept only where the mean Dice strictly improves) -> OUT/postprocessing.json (nnU-Net's
    postprocessing.json: the decided functions + kwargs and the Dice before/after; seg_predict reads it),
    OUT/postprocessed/CASE<file_ending> + summary.json, OUT/dice.png.
Labels, ignore label and file ending come from dataset.json: config.dataset_json, else PRED_DIR/dataset.json
(seg_predict writes it), PLANS_DIR/dataset.json, the reference raw dataset's.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

from radgan_jax.data.base import DataError
from radgan_jax.jobs.seg_predict import PLANS_NAMES, PredictError, is_natural_image, read_label, write_label
from radgan_jax.seg import evaluate, postprocess

VALIDATION_DIR = "validation"  # seg_train's final validation folder (nnU-Net: fold_X/validation)


class EvaluateError(ValueError):
    """A bad folder or config value; the message names it."""


def label_info(labels: Mapping[str, Any]) -> tuple[list[int], list | None, int | None]:
    """(foreground labels, foreground regions or None, ignore label) of dataset.json's labels (LabelManager)."""
    values = {k: v for k, v in labels.items() if k != "ignore"}
    flat = sorted({int(i) for v in values.values() for i in (v if isinstance(v, (list, tuple)) else [v])})
    regions = None
    if any(isinstance(v, (list, tuple)) and len(v) > 1 for v in values.values()):
        regions = [tuple(int(i) for i in v) if isinstance(v, (list, tuple)) else int(v) for v in values.values()]
        regions = [r for r in regions if not (r == 0 or (isinstance(r, tuple) and set(r) == {0}))]
    ignore = labels.get("ignore")
    return [i for i in flat if i != 0], regions, None if ignore is None else int(ignore)


def label_files(folder: str | Path, file_ending: str) -> dict[str, Path]:
    """case id -> file of every CASE<file_ending> directly in `folder` (nnU-Net's subfiles(suffix=...))."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluateError(f"folder {folder} does not exist")
    return {p.name[: -len(file_ending)]: p for p in sorted(folder.iterdir())
            if p.is_file() and p.name.endswith(file_ending)}


def reference_folder(reference: str | Path) -> Path:
    """A labels folder, or a raw dataset dir (-> its labelsTr)."""
    reference = Path(reference)
    if (reference / "dataset.json").is_file() and (reference / "labelsTr").is_dir():
        return reference / "labelsTr"
    if not reference.is_dir():
        raise EvaluateError(f"reference folder {reference} does not exist")
    return reference


def save_validation_predictions(folder: str | Path, predictions: Mapping[str, np.ndarray],
                                raw_dataset: str | Path) -> list[Path]:
    """Writes each validation case's predicted segmentation (raw geometry, (Y, X) or (Z, Y, X)) as
    FOLDER/CASE<file_ending>, like nnUNetTrainer.perform_actual_validation's export; NIfTI files take the
    geometry of the raw label file labelsTr/CASE<file_ending>. seg_evaluate's cv_models mode gathers them."""
    raw = Path(raw_dataset)
    try:
        ending = str(json.loads((raw / "dataset.json").read_text())["file_ending"])
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise EvaluateError(f"{raw / 'dataset.json'}: cannot read file_ending ({e})") from None
    out = []
    for cid, seg in predictions.items():
        ref = None if is_natural_image(ending) else raw / "labelsTr" / f"{cid}{ending}"
        if ref is not None and not ref.is_file():
            ref = raw / "imagesTr" / f"{cid}_0000{ending}"
        out.append(write_label(Path(folder) / f"{cid}{ending}", np.asarray(seg), ref))
    return out


def gather_cv_predictions(model_dirs: Sequence[str | Path], file_ending: str, out: str | Path) -> dict[str, str]:
    """accumulate_cv_results: copy every fold's validation/CASE<file_ending> into `out`; returns case -> fold dir."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    origin: dict[str, str] = {}
    for d in model_dirs:
        folder = Path(d) / VALIDATION_DIR
        if not folder.is_dir():
            raise EvaluateError(f"{folder}: missing (fold {d} has no final validation: train it with "
                                "final_validation=True)")
        files = label_files(folder, file_ending)
        if not files:
            raise EvaluateError(f"{folder}: no predicted segmentations CASE{file_ending} (seg_train must save them "
                                "with seg_evaluate.save_validation_predictions)")
        for cid, f in files.items():
            if cid in origin:
                raise EvaluateError(f"case {cid!r} is predicted by two folds: {origin[cid]} and {d} (the folds' "
                                    "validation sets must not overlap)")
            shutil.copy(f, out / f.name)
            origin[cid] = str(d)
    return origin


def evaluate_files(predictions: Mapping[str, Path], references: Mapping[str, Path], labels: Mapping[str, Any]
                   ) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """compute_metrics_on_folder on files: (summary, predicted arrays, reference arrays); a prediction without a
    reference file is an error naming it."""
    fg, regions, ignore = label_info(labels)
    missing = [str(p) for c, p in predictions.items() if c not in references]
    if missing:
        raise EvaluateError(f"no reference label file for prediction(s) {missing[:5]}")
    preds = {c: read_label(p) for c, p in predictions.items()}
    refs = {c: read_label(references[c]) for c in predictions}
    try:
        summary = evaluate.compute_metrics_on_cases(refs, preds, regions or fg, ignore,
                                                    {c: str(references[c]) for c in preds},
                                                    {c: str(p) for c, p in predictions.items()})
    except ValueError as e:
        raise EvaluateError(str(e)) from None
    return summary, preds, refs


def plot_case_dice(path: Path, summaries: Mapping[str, dict], labels: Mapping[str, Any], title: str) -> None:
    """Box + strip plot of per-case Dice, one group per label (and per summary when several are given)."""
    from radgan_jax.eval.stats import plot_dice

    names = {(tuple(v) if isinstance(v, list) else int(v)): k for k, v in labels.items() if k != "ignore"}
    groups: dict[str, list[float]] = {}
    for tag, summary in summaries.items():
        for key in summary["mean"]:
            name = names.get(key, str(key)) + (f" {tag}" if tag else "")
            groups[name] = [float(c["metrics"][key]["Dice"]) for c in summary["metric_per_case"]]
    plot_dice(path, groups, title)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EvaluateError(f"{path}: not readable JSON ({e})") from None


def _dataset_json(config: Any, folders: Sequence[Path | None]) -> tuple[dict, Path]:
    candidates = ([Path(config.dataset_json)] if config.dataset_json else []) + \
        [f / "dataset.json" for f in folders if f is not None]
    for c in candidates:
        if c.is_file():
            return _read_json(c), c
    raise EvaluateError(f"no dataset.json found (looked at {[str(c) for c in candidates]}): set "
                        "--config.dataset_json=FILE")


def _plans_dir(config: Any, model_dirs: Sequence[Path]) -> Path | None:
    if config.plans:
        return Path(config.plans)
    return next((d for d in model_dirs if any((d / n).is_file() for n in PLANS_NAMES)), None)


# --------------------------------------------------------------------------------------------------- job
def run(config: Any, workdir: str) -> None:
    try:
        if bool(config.cv_models) == bool(config.predictions):
            raise EvaluateError("set exactly one of --config.predictions=DIR (with --config.reference) and "
                                "--config.cv_models=FOLD_DIR,... (the seg_train workdirs of the folds)")
        if config.predictions:
            _evaluate_folder(config, Path(workdir))
        else:
            _cross_validation(config, Path(workdir))
    except (EvaluateError, PredictError, DataError) as e:
        raise SystemExit(f"seg_evaluate: {e}") from e


def _evaluate_folder(config: Any, wd: Path) -> None:
    pred_dir = Path(config.predictions)
    if not config.reference:
        raise EvaluateError("set --config.reference=RAW_DATASET_DIR or a folder of reference label files")
    ref_dir = reference_folder(config.reference)
    plans = Path(config.plans) if config.plans else None
    dataset, _ = _dataset_json(config, [pred_dir, plans, Path(config.reference), ref_dir.parent])
    ending = str(dataset["file_ending"])
    preds, refs = label_files(pred_dir, ending), label_files(ref_dir, ending)
    if not preds:
        raise EvaluateError(f"{pred_dir}: no predictions CASE{ending}")
    absent = sorted(set(refs) - set(preds))
    if absent and not config.chill:  # nnUNetv2_evaluate_folder without --chill
        raise EvaluateError(f"{len(absent)} reference case(s) of {ref_dir} have no prediction in {pred_dir} "
                            f"(first: {absent[0]}); set --config.chill=True to evaluate the predicted ones only")
    summary, _, _ = evaluate_files(preds, refs, dataset["labels"])
    wd.mkdir(parents=True, exist_ok=True)
    evaluate.save_summary_json(summary, wd / "summary.json")
    if config.plot:
        plot_case_dice(wd / "dice.png", {"": summary}, dataset["labels"], f"per-case Dice, {len(preds)} cases")
    logging.info("seg_evaluate: %d case(s), foreground mean Dice %.4f -> %s", len(preds),
                 summary["foreground_mean"]["Dice"], wd / "summary.json")


def _cross_validation(config: Any, wd: Path) -> None:
    model_dirs = [Path(m.strip()) for m in str(config.cv_models).split(",") if m.strip()]
    plans_dir = _plans_dir(config, model_dirs)
    if config.reference:
        ref_root = Path(config.reference)
    elif plans_dir is not None and (plans_dir / "raw_dataset.json").is_file():
        ref_root = Path(_read_json(plans_dir / "raw_dataset.json")["path"])
    else:
        raise EvaluateError("set --config.reference=RAW_DATASET_DIR (or --config.plans=PLANS_DIR, whose "
                            "raw_dataset.json names it)")
    ref_dir = reference_folder(ref_root)
    dataset, _ = _dataset_json(config, [plans_dir, ref_root, ref_dir.parent])
    ending = str(dataset["file_ending"])
    cv_dir = wd / "crossval"
    origin = gather_cv_predictions(model_dirs, ending, cv_dir)
    (cv_dir / "dataset.json").write_text(json.dumps(dataset, indent=4))
    plans_file = next((plans_dir / n for n in PLANS_NAMES if (plans_dir / n).is_file()), None) if plans_dir else None
    if plans_file is not None:
        shutil.copy(plans_file, cv_dir / "plans.json")
    (cv_dir / "case_folds.json").write_text(json.dumps(origin, indent=1, sort_keys=True))
    refs = label_files(ref_dir, ending)
    absent = sorted(set(refs) - set(origin))
    if absent:  # determine_postprocessing's warning
        logging.warning("%d reference case(s) have no cross-validation prediction (first: %s): postprocessing "
                        "should be determined on the entire dataset", len(absent), absent[0])
    summary, preds, references = evaluate_files(label_files(cv_dir, ending), refs, dataset["labels"])
    evaluate.save_summary_json(summary, cv_dir / "summary.json")
    shutil.copy(cv_dir / "summary.json", wd / "summary.json")
    logging.info("seg_evaluate: cross-validation of %d fold(s), %d case(s): foreground mean Dice %.4f",
                 len(model_dirs), len(preds), summary["foreground_mean"]["Dice"])
    summaries = {"": summary}
    if config.postprocessing:
        fg, regions, ignore = label_info(dataset["labels"])
        pp_regions = [r if isinstance(r, tuple) else (r,) for r in regions] if regions else None
        steps, report, post = postprocess.determine_postprocessing(preds, references, fg, pp_regions, ignore)
        (wd / "postprocessing.json").write_text(json.dumps(report, indent=4))
        pp_dir = wd / "postprocessed"
        if pp_dir.exists():
            shutil.rmtree(pp_dir)
        for cid, seg in post.items():
            ref = None if is_natural_image(ending) else refs[cid]
            write_label(pp_dir / f"{cid}{ending}", seg, ref)
        pp_summary = evaluate.compute_metrics_on_cases(references, post, regions or fg, ignore,
                                                       {c: str(refs[c]) for c in post},
                                                       {c: str(pp_dir / f"{c}{ending}") for c in post})
        evaluate.save_summary_json(pp_summary, pp_dir / "summary.json")
        summaries = {"": summary, "(pp)": pp_summary} if steps["postprocessing_fns"] else summaries
        logging.info("postprocessing: %s -> foreground mean Dice %.4f -> %.4f (%s)",
                     steps["postprocessing_kwargs"] or "none", report["input_folder"]["foreground_mean"]["Dice"],
                     report["postprocessed"]["foreground_mean"]["Dice"], wd / "postprocessing.json")
    if config.plot:
        plot_case_dice(wd / "dice.png", summaries, dataset["labels"],
                       f"cross-validation, per-case Dice ({len(preds)} cases)")


__all__ = ["EvaluateError", "evaluate_files", "gather_cv_predictions", "label_files", "label_info",
           "reference_folder", "run", "save_validation_predictions"]
