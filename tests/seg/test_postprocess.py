"""Keep-largest-component postprocessing and its decision rule against nnunetv2's determine_postprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from radgan_jax.seg import postprocess as pp
from tests.seg.test_evaluate import serial_multiprocessing, write_pngs


def _blob(a: np.ndarray, y: int, x: int, h: int, w: int, v: int) -> None:
    a[y:y + h, x:x + w] = v


def _cases(kind: str, rng: np.random.Generator, n: int = 5) -> tuple[dict, dict]:
    """'per_label': label 2's reference has two parts (keep-largest over all foreground hurts label 2) and the
    predictions have stray label-1 specks (keep-largest for label 1 alone helps).
    'all_fg': labels 1 and 2 touch (one foreground component) and both have stray specks: the global step helps."""
    refs, preds = {}, {}
    for i in range(n):
        ref = np.zeros((40, 48), np.uint8)
        _blob(ref, 5 + i, 5, 12, 14, 1)
        if kind == "per_label":
            _blob(ref, 25, 25, 8, 10, 2)
            _blob(ref, 4, 36, 5, 6, 2)  # second, smaller part of label 2
        else:
            _blob(ref, 5 + i, 19, 12, 9, 2)  # touches label 1
        pred = ref.copy()
        noise = rng.random(ref.shape) < 0.03
        pred[noise & (ref > 0)] = 0  # a few holes
        _blob(pred, 33, 2 + 3 * i, 2, 2, 1)  # stray label-1 speck
        if kind == "all_fg":
            _blob(pred, 30 + i % 3, 40, 3, 3, 2)  # stray label-2 speck
        refs[f"c{i}"], preds[f"c{i}"] = ref, pred
    return refs, preds


def _nnunet_determine(tmp_path, monkeypatch, refs, preds, labels: dict) -> tuple[list, list, dict, dict]:
    rcc = pytest.importorskip("nnunetv2.postprocessing.remove_connected_components")
    evp = pytest.importorskip("nnunetv2.evaluation.evaluate_predictions")
    monkeypatch.setattr(rcc, "multiprocessing", serial_multiprocessing())
    monkeypatch.setattr(evp, "multiprocessing", serial_multiprocessing())
    write_pngs(tmp_path / "ref", refs)
    write_pngs(tmp_path / "pred", preds)
    plans = {"image_reader_writer": "NaturalImage2DIO", "configurations": {}}
    dataset = {"labels": labels, "file_ending": ".png", "channel_names": {"0": "x"}, "numTraining": len(refs)}
    if any(isinstance(v, list) for v in labels.values()):
        dataset["regions_class_order"] = [1, 2]
    fns, kwargs = rcc.determine_postprocessing(str(tmp_path / "pred"), str(tmp_path / "ref"), plans, dataset, 1)
    report = json.loads((tmp_path / "pred" / "postprocessing.json").read_text())
    out = {c: np.asarray(Image.open(tmp_path / "pred" / "postprocessed" / f"{c}.png")) for c in preds}
    return [f.__name__ for f in fns], kwargs, report, out


@pytest.mark.parametrize("kind", ["per_label", "all_fg", "regions"])
def test_decision_and_output_equal_nnunet(tmp_path, monkeypatch, kind: str) -> None:
    refs, preds = _cases("all_fg" if kind == "regions" else kind, np.random.default_rng(0))
    labels = {"background": 0, "a": 1, "b": 2}
    regions = None
    if kind == "regions":  # region-based dataset: 'whole' = labels 1 and 2, 'core' = label 2
        labels = {"background": 0, "whole": [1, 2], "core": [2]}
        regions = [(1, 2), (2,)]
    names, kwargs, report, out = _nnunet_determine(tmp_path, monkeypatch, refs, preds, labels)
    steps, ours_report, ours_out = pp.determine_postprocessing(preds, refs, [1, 2], regions)
    expected_kwargs = {"per_label": [{"labels_or_regions": 1}], "all_fg": [{"labels_or_regions": [1, 2]}],
                       "regions": [{"labels_or_regions": [1, 2]}]}[kind]
    assert kwargs == expected_kwargs  # the constructed cases exercise the intended branch of the rule
    kwargs = [{k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()} for kw in kwargs]  # JSON form
    assert steps == {"postprocessing_fns": names, "postprocessing_kwargs": kwargs}
    assert set(ours_report) == set(report)
    assert ours_report["postprocessing_fns"] == report["postprocessing_fns"]
    assert ours_report["postprocessing_kwargs"] == report["postprocessing_kwargs"]
    for part in ("input_folder", "postprocessed"):
        assert list(ours_report[part]["mean"]) == list(report[part]["mean"])
        for key, metrics in report[part]["mean"].items():
            for m, v in metrics.items():
                assert ours_report[part]["mean"][key][m] == pytest.approx(v, abs=1e-6), (part, key, m)
        for m, v in report[part]["foreground_mean"].items():
            assert ours_report[part]["foreground_mean"][m] == pytest.approx(v, abs=1e-6)
    for c in preds:
        np.testing.assert_array_equal(ours_out[c], out[c])
        np.testing.assert_array_equal(pp.apply_postprocessing(preds[c], steps), out[c])
    # the JSON form round-trips
    pp.save_postprocessing(steps, tmp_path / "pp.json")
    assert pp.load_postprocessing(tmp_path / "pp.json") == steps


def test_keep_largest_matches_nnunet_incl_ties_and_regions() -> None:
    rcc = pytest.importorskip("nnunetv2.postprocessing.remove_connected_components")
    rng = np.random.default_rng(1)
    for _ in range(20):
        seg = (rng.random((1, 23, 29)) < 0.35).astype(np.uint8) * rng.integers(1, 4, (1, 23, 29)).astype(np.uint8)
        for lr in (1, [1, 2], (2, 3), [1, (2, 3)]):
            ref = rcc.remove_all_but_largest_component_from_segmentation(seg, lr)
            np.testing.assert_array_equal(pp.keep_largest_component(seg, lr), ref)
            np.testing.assert_array_equal(pp.keep_largest_component(seg[0], lr), ref[0])
    tie = np.zeros((5, 9), np.uint8)
    tie[1:3, 1:3] = 1
    tie[1:3, 6:8] = 1
    tie[4, 0] = 1
    tie[0, 4] = 1  # diagonal neighbour of nothing: a single pixel, removed
    out = pp.keep_largest_component(tie, 1)
    assert out[1:3, 1:3].all() and out[1:3, 6:8].all() and out.sum() == 8  # both 2x2 squares (tie) kept
    diag = np.eye(4, dtype=np.uint8)
    assert pp.keep_largest_component(diag, 1).sum() == 4  # full (8-)connectivity
    with pytest.raises(ValueError, match="unknown postprocessing"):
        pp.apply_postprocessing(tie, {"postprocessing_fns": ["x"], "postprocessing_kwargs": [{}]})
