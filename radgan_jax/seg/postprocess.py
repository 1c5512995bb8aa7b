"""nnU-Net v2's postprocessing: keep the largest connected component, and the rule that decides whether to.

nnunetv2/postprocessing/remove_connected_components.py:
  * `remove_all_but_largest_component_from_segmentation(seg, labels_or_regions)`: the union mask of the given
    labels/regions is split into connected components with full connectivity (skimage `label` with
    connectivity=None, via acvl_utils: 8-neighbours in 2D, 26 in 3D); every component whose size equals the
    maximum is kept (ties keep all of them), the other pixels of the mask become background (0).
  * `determine_postprocessing` on the cross-validation predictions:
      1. keep-largest over all foreground labels at once; adopt it if the foreground-mean Dice strictly improves
         AND no label's/region's mean Dice gets strictly worse.
      2. only with more than one label/region: for each in dataset.json order, keep-largest for that one alone,
         applied on top of the current best predictions; adopt it if its mean Dice strictly improves.
    Output: postprocessing.pkl = (functions, kwargs) and postprocessing.json with the Dice before/after.
Here the steps are plain JSON (`{"postprocessing_fns": [name], "postprocessing_kwargs": [{...}]}`: the pickle's
content, readable), and `determine_postprocessing` works on arrays, not folders; its report has the keys of
nnU-Net's postprocessing.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from radgan_jax.seg.evaluate import LabelOrRegion, compute_metrics_on_cases, region_or_label_to_mask, summary_to_json

KEEP_LARGEST = "remove_all_but_largest_component_from_segmentation"  # nnU-Net's function name, kept in the JSON


def remove_all_but_largest_component(mask: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest connected component(s) of `mask` (full connectivity; ties all kept)."""
    mask = np.asarray(mask, dtype=bool)
    labeled, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if n == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(labeled.ravel())[1:]
    keep = np.flatnonzero(sizes == sizes.max()) + 1
    return np.isin(labeled, keep)


def _as_list(labels_or_regions: object) -> list[LabelOrRegion]:
    """kwargs as nnU-Net passes them: one label/region, or a list of them (JSON lists of lists -> tuples)."""
    if not isinstance(labels_or_regions, list):
        labels_or_regions = [labels_or_regions]
    return [tuple(int(i) for i in r) if isinstance(r, (list, tuple)) else int(r) for r in labels_or_regions]


def keep_largest_component(segmentation: np.ndarray, labels_or_regions: LabelOrRegion | list,
                           background_label: int = 0) -> np.ndarray:
    """nnU-Net's `remove_all_but_largest_component_from_segmentation`: returns a new array."""
    segmentation = np.asarray(segmentation)
    mask = np.zeros(segmentation.shape, dtype=bool)
    for r in _as_list(labels_or_regions):
        mask |= region_or_label_to_mask(segmentation, r)
    out = segmentation.copy()
    out[mask & ~remove_all_but_largest_component(mask)] = background_label
    return out


def apply_postprocessing(segmentation: np.ndarray, steps: Mapping) -> np.ndarray:
    """Apply `steps` ({'postprocessing_fns': [...], 'postprocessing_kwargs': [...]}) in order."""
    fns, kwargs = steps.get("postprocessing_fns", []), steps.get("postprocessing_kwargs", [])
    if len(fns) != len(kwargs):
        raise ValueError(f"postprocessing steps: {len(fns)} functions but {len(kwargs)} kwargs")
    for name, kw in zip(fns, kwargs):
        if name != KEEP_LARGEST:
            raise ValueError(f"unknown postprocessing function {name!r}; known: {KEEP_LARGEST!r}")
        segmentation = keep_largest_component(segmentation, **kw)
    return segmentation


def _dice(summary: dict, key: LabelOrRegion | None = None) -> float:
    return summary["foreground_mean"]["Dice"] if key is None else summary["mean"][key]["Dice"]


def determine_postprocessing(predictions: Mapping[str, np.ndarray], references: Mapping[str, np.ndarray],
                             foreground_labels: Sequence[int],
                             regions: Sequence[tuple[int, ...]] | None = None,
                             ignore_label: int | None = None) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """nnU-Net's decision rule on cross-validation predictions (case id -> label map).

    `foreground_labels`: the dataset's labels without background (LabelManager.foreground_labels); `regions`:
    the foreground regions for region-based datasets (evaluated instead of the labels, as nnU-Net does).
    Returns (steps, report, postprocessed predictions); steps is the JSON form of postprocessing.pkl, report has
    the content of nnU-Net's postprocessing.json.
    """
    fg = [int(x) for x in foreground_labels]
    evaluated: list[LabelOrRegion] = [tuple(int(i) for i in r) for r in regions] if regions else list(fg)

    def evaluate(preds: Mapping[str, np.ndarray]) -> dict:
        return compute_metrics_on_cases(references, preds, evaluated, ignore_label)

    fns: list[str] = []
    kwargs: list[dict] = []
    baseline = evaluate(predictions)
    current, current_summary = dict(predictions), baseline

    # 1. all foreground at once (kwargs: the foreground labels, also for region-based datasets)
    kw = {"labels_or_regions": list(fg)}
    trial = {c: keep_largest_component(s, **kw) for c, s in predictions.items()}
    trial_summary = evaluate(trial)
    accept = _dice(trial_summary) > _dice(baseline)
    if accept and any(_dice(trial_summary, k) < _dice(baseline, k) for k in trial_summary["mean"]):
        accept = False  # defensive: no single class may get worse
    if accept:
        fns.append(KEEP_LARGEST)
        kwargs.append(kw)
        current, current_summary = trial, trial_summary

    # 2. one label/region at a time, on top of the current best
    if len(evaluated) > 1:
        for r in evaluated:
            kw = {"labels_or_regions": list(r) if isinstance(r, tuple) else r}
            trial = {c: keep_largest_component(s, **kw) for c, s in current.items()}
            trial_summary = evaluate(trial)
            if _dice(trial_summary, r) > _dice(current_summary, r):
                fns.append(KEEP_LARGEST)
                kwargs.append(kw)
                current, current_summary = trial, trial_summary

    base_json, final_json = summary_to_json(baseline), summary_to_json(current_summary)
    report = {
        "input_folder": {k: base_json[k] for k in ("foreground_mean", "mean")},
        "postprocessed": {k: final_json[k] for k in ("foreground_mean", "mean")},
        "postprocessing_fns": list(fns),
        "postprocessing_kwargs": [dict(k) for k in kwargs],
    }
    return {"postprocessing_fns": fns, "postprocessing_kwargs": kwargs}, report, current


def save_postprocessing(steps: Mapping, path: str | os.PathLike) -> Path:
    """postprocessing steps as JSON (our readable replacement of postprocessing.pkl)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"postprocessing_fns": list(steps["postprocessing_fns"]),
                                "postprocessing_kwargs": list(steps["postprocessing_kwargs"])}, indent=4))
    return path


def load_postprocessing(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        steps = {"postprocessing_fns": list(data["postprocessing_fns"]),
                 "postprocessing_kwargs": list(data["postprocessing_kwargs"])}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a postprocessing JSON ({{'postprocessing_fns', 'postprocessing_kwargs'}}): "
                         f"{e}") from e
    for name in steps["postprocessing_fns"]:
        if name != KEEP_LARGEST:
            raise ValueError(f"{path}: unknown postprocessing function {name!r}")
    return steps
