"""Segmentation metrics and the summary.json layout of nnU-Net v2 (nnunetv2/evaluation/evaluate_predictions.py).

Per case and label (or region = tuple of labels, the union of their masks), `compute_metrics` counts TP, FP,
FN, TN over the pixels not carrying `ignore_label` in the reference and derives Dice = 2TP / (2TP + FP + FN)
and IoU = TP / (TP + FP + FN), both NaN when TP + FP + FN == 0 (label absent from reference and prediction),
n_pred = TP + FP, n_ref = TP + FN. `summarize` (compute_metrics_on_folder's tail) gives `mean` per label
(np.nanmean over cases, so absent-absent cases do not count) and `foreground_mean`: the plain np.mean over the
labels' means except label 0 (NaN if some label is NaN in every case). The summary is
`{'metric_per_case': [{'reference_file', 'prediction_file', 'metrics': {label: {...}}}], 'mean': {label: {...}},
'foreground_mean': {...}}`, cases in sorted order of the prediction file names; the JSON form has str keys
('1', '(1, 2)') and sorted keys, as save_summary_json writes it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

LabelOrRegion = int | tuple[int, ...]
METRIC_KEYS = ("Dice", "IoU", "FP", "TP", "FN", "TN", "n_pred", "n_ref")  # nnU-Net's order


def region_or_label_to_mask(segmentation: np.ndarray, label_or_region: LabelOrRegion) -> np.ndarray:
    """Boolean mask of one label, or of the union of a region's labels (nnU-Net's function of this name)."""
    if np.isscalar(label_or_region):
        return segmentation == label_or_region
    return np.isin(segmentation, np.asarray(label_or_region))


def compute_tp_fp_fn_tn(mask_ref: np.ndarray, mask_pred: np.ndarray,
                        ignore_mask: np.ndarray | None = None) -> tuple[int, int, int, int]:
    use = np.ones_like(mask_ref, dtype=bool) if ignore_mask is None else ~ignore_mask
    tp = int(np.sum(mask_ref & mask_pred & use))
    fp = int(np.sum(~mask_ref & mask_pred & use))
    fn = int(np.sum(mask_ref & ~mask_pred & use))
    tn = int(np.sum(~mask_ref & ~mask_pred & use))
    return tp, fp, fn, tn


def compute_metrics(reference: np.ndarray, prediction: np.ndarray, labels_or_regions: Sequence[LabelOrRegion],
                    ignore_label: int | None = None, reference_file: str = "", prediction_file: str = "") -> dict:
    """One case: {'reference_file', 'prediction_file', 'metrics': {label: {Dice, IoU, FP, TP, FN, TN, n_pred,
    n_ref}}} as nnU-Net's compute_metrics (plain Python numbers; Dice/IoU NaN when TP + FP + FN == 0)."""
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"{prediction_file or 'prediction'}: shape {prediction.shape} != reference "
                         f"{reference_file or ''} shape {reference.shape}")
    ignore_mask = reference == ignore_label if ignore_label is not None else None
    metrics: dict[LabelOrRegion, dict] = {}
    for r in labels_or_regions:
        r = _norm_key(r)
        tp, fp, fn, tn = compute_tp_fp_fn_tn(region_or_label_to_mask(reference, r),
                                             region_or_label_to_mask(prediction, r), ignore_mask)
        if tp + fp + fn == 0:
            dice = iou = float("nan")
        else:
            dice, iou = 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)
        metrics[r] = {"Dice": dice, "IoU": iou, "FP": fp, "TP": tp, "FN": fn, "TN": tn,
                      "n_pred": fp + tp, "n_ref": fn + tp}
    return {"reference_file": reference_file, "prediction_file": prediction_file, "metrics": metrics}


def _nanmean(values: list[float]) -> float:
    with warnings.catch_warnings():  # all-NaN label: NaN, like nnU-Net (which also warns)
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(np.asarray(values, dtype=np.float64)))


def summarize(metric_per_case: Sequence[dict], labels_or_regions: Sequence[LabelOrRegion]) -> dict:
    """nnU-Net's summary: mean per label (nanmean over cases) and foreground_mean (mean over labels != 0)."""
    if not metric_per_case:
        raise ValueError("summarize needs at least one case")
    keys = [_norm_key(r) for r in labels_or_regions]
    metric_list = list(metric_per_case[0]["metrics"][keys[0]].keys())
    means = {r: {m: _nanmean([c["metrics"][r][m] for c in metric_per_case]) for m in metric_list} for r in keys}
    foreground = {m: float(np.mean([means[r][m] for r in keys if r != 0])) if any(r != 0 for r in keys)
                  else float("nan") for m in metric_list}
    return {"metric_per_case": list(metric_per_case), "mean": means, "foreground_mean": foreground}


def compute_metrics_on_cases(references: Mapping[str, np.ndarray], predictions: Mapping[str, np.ndarray],
                             labels_or_regions: Sequence[LabelOrRegion], ignore_label: int | None = None,
                             reference_files: Mapping[str, str] | None = None,
                             prediction_files: Mapping[str, str] | None = None) -> dict:
    """compute_metrics_on_folder on arrays: every predicted case (sorted by id) against its reference.
    A prediction without reference is an error naming it (nnU-Net would fail to open the file)."""
    missing = sorted(set(predictions) - set(references))
    if missing:
        raise ValueError(f"no reference for predicted case(s) {missing[:20]}")
    if not predictions:
        raise ValueError("no predictions to evaluate")
    reference_files, prediction_files = reference_files or {}, prediction_files or {}
    cases = [compute_metrics(references[c], predictions[c], labels_or_regions, ignore_label,
                             reference_files.get(c, c), prediction_files.get(c, c)) for c in sorted(predictions)]
    return summarize(cases, labels_or_regions)


def label_or_region_to_key(label_or_region: LabelOrRegion) -> str:
    return str(label_or_region)


def key_to_label_or_region(key: str) -> LabelOrRegion:
    try:
        return int(key)
    except ValueError:
        parts = key.replace("(", "").replace(")", "").split(",")
        return tuple(int(p) for p in parts if p.strip())


def _norm_key(r: object) -> LabelOrRegion:
    if isinstance(r, (list, tuple, np.ndarray)):
        return tuple(int(i) for i in r)
    return int(r)


def _plain(v: object) -> object:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def summary_to_json(summary: dict) -> dict:
    """JSON-ready copy with str label keys ('1', '(1, 2)'), as nnU-Net's save_summary_json converts them."""
    out = _plain({k: v for k, v in summary.items() if k not in ("mean", "metric_per_case")})
    out["mean"] = {label_or_region_to_key(k): _plain(v) for k, v in summary["mean"].items()}
    out["metric_per_case"] = [{**_plain({k: v for k, v in c.items() if k != "metrics"}),
                               "metrics": {label_or_region_to_key(k): _plain(v) for k, v in c["metrics"].items()}}
                              for c in summary["metric_per_case"]]
    return out


def summary_from_json(data: dict) -> dict:
    """Inverse of summary_to_json (nnU-Net's load_summary_json): label keys back to int / tuple."""
    out = dict(data)
    out["mean"] = {key_to_label_or_region(k): v for k, v in data["mean"].items()}
    out["metric_per_case"] = [{**c, "metrics": {key_to_label_or_region(k): v for k, v in c["metrics"].items()}}
                              for c in data["metric_per_case"]]
    return out


def save_summary_json(summary: dict, path: str | os.PathLike) -> Path:
    """summary.json as nnU-Net writes it (indent 4, sort_keys; NaN written as NaN like Python's json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary_to_json(summary), sort_keys=True, indent=4))
    return path


def load_summary_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        return summary_from_json(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{path}: not a readable summary.json: {e}") from e
