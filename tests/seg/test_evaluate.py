"""Dice/IoU/summary against nnunetv2's compute_metrics_on_folder on a folder of PNG predictions/references."""

from __future__ import annotations

import json
import math
import types
from itertools import starmap

import numpy as np
import pytest
from PIL import Image

from radgan_jax.seg import evaluate as ev


class _SerialPool:
    """Stands in for multiprocessing's spawn Pool so nnU-Net's evaluation runs in this process."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __enter__(self) -> _SerialPool:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def starmap(self, fn, iterable):
        return list(starmap(fn, iterable))


def serial_multiprocessing() -> types.SimpleNamespace:
    return types.SimpleNamespace(get_context=lambda *a, **k: types.SimpleNamespace(Pool=_SerialPool))


def make_cases(rng: np.random.Generator, n: int = 6, shape=(24, 31)) -> tuple[dict, dict]:
    """References with labels 0..2 (+ ignore label 3 in some), noisy predictions; label 2 is absent from
    reference and prediction in case 0 (NaN Dice), present in the prediction only in case 1 (Dice 0)."""
    refs, preds = {}, {}
    for i in range(n):
        ref = np.zeros(shape, np.uint8)
        ref[3 + i:12 + i, 4:15] = 1
        if i >= 1:
            ref[14:20, 18 + i % 4:27] = 2 if i >= 2 else 0
        if i % 3 == 2:
            ref[0:2, :] = 3  # ignore label
        pred = ref.copy()
        pred[pred == 3] = 0
        flip = rng.random(shape) < 0.08
        pred[flip] = rng.integers(0, 3, shape)[flip]
        if i == 0:
            pred[pred == 2] = 0
        if i == 1:
            pred[20:23, 2:5] = 2
        refs[f"case_{i:03d}"], preds[f"case_{i:03d}"] = ref, pred
    return refs, preds


def write_pngs(folder, arrays: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for cid, a in arrays.items():
        Image.fromarray(a).save(folder / f"{cid}.png")


def assert_summary_equal(ours: dict, ref: dict, atol: float = 1e-6) -> None:
    assert set(ours) == set(ref) == {"metric_per_case", "mean", "foreground_mean"}

    def same(a, b, where):
        if isinstance(b, float) and math.isnan(b):
            assert isinstance(a, float) and math.isnan(a), where
        else:
            assert a == pytest.approx(b, abs=atol), where

    assert list(ours["mean"]) == list(ref["mean"])
    for k in ref["mean"]:
        assert list(ours["mean"][k]) == list(ref["mean"][k])
        for m, v in ref["mean"][k].items():
            same(ours["mean"][k][m], v, ("mean", k, m))
    for m, v in ref["foreground_mean"].items():
        same(ours["foreground_mean"][m], v, ("foreground_mean", m))
    assert len(ours["metric_per_case"]) == len(ref["metric_per_case"])
    for a, b in zip(ours["metric_per_case"], ref["metric_per_case"]):
        assert a["prediction_file"] == b["prediction_file"] and a["reference_file"] == b["reference_file"]
        for k in b["metrics"]:
            for m, v in b["metrics"][k].items():
                same(a["metrics"][k][m], v, (b["prediction_file"], k, m))


@pytest.mark.parametrize("labels,ignore", [([1, 2], None), ([0, 1, 2], 3), ([1, 2, (1, 2)], None)])
def test_summary_equals_nnunet_folder(tmp_path, monkeypatch, labels, ignore) -> None:
    evp = pytest.importorskip("nnunetv2.evaluation.evaluate_predictions")
    nio = pytest.importorskip("nnunetv2.imageio.natural_image_reader_writer")
    monkeypatch.setattr(evp, "multiprocessing", serial_multiprocessing())
    refs, preds = make_cases(np.random.default_rng(0))
    write_pngs(tmp_path / "ref", refs)
    write_pngs(tmp_path / "pred", preds)
    ref = evp.compute_metrics_on_folder(str(tmp_path / "ref"), str(tmp_path / "pred"), str(tmp_path / "s.json"),
                                        nio.NaturalImage2DIO(), ".png", labels, ignore, 1)
    names = {c: str(tmp_path / "ref" / f"{c}.png") for c in refs}, {c: str(tmp_path / "pred" / f"{c}.png")
                                                                      for c in preds}
    ours = ev.compute_metrics_on_cases(refs, preds, labels, ignore, *names)
    assert_summary_equal(ours, ref)
    assert math.isnan(ours["metric_per_case"][0]["metrics"][2]["Dice"])
    assert ours["metric_per_case"][1]["metrics"][2]["Dice"] == 0.0
    # the written summary.json round-trips and has nnU-Net's file layout (str keys, sorted)
    ev.save_summary_json(ours, tmp_path / "ours.json")
    mine, theirs = json.loads((tmp_path / "ours.json").read_text()), json.loads((tmp_path / "s.json").read_text())
    assert list(mine) == list(theirs) and list(mine["mean"]) == list(theirs["mean"])
    assert_summary_equal(ev.load_summary_json(tmp_path / "ours.json"), evp.load_summary_json(str(tmp_path / "s.json")))


def test_metrics_by_hand() -> None:
    ref = np.array([[0, 1, 1], [0, 2, 2]])
    pred = np.array([[1, 1, 0], [0, 2, 0]])
    m = ev.compute_metrics(ref, pred, [1, 2, 3])["metrics"]
    assert (m[1]["TP"], m[1]["FP"], m[1]["FN"], m[1]["TN"]) == (1, 1, 1, 3)
    assert m[1]["Dice"] == pytest.approx(0.5) and m[1]["IoU"] == pytest.approx(1 / 3)
    assert m[2]["Dice"] == pytest.approx(2 / 3) and m[2]["n_ref"] == 2 and m[2]["n_pred"] == 1
    assert math.isnan(m[3]["Dice"]) and m[3]["TN"] == 6
    s = ev.summarize([ev.compute_metrics(ref, pred, [1, 2])], [1, 2])
    assert s["foreground_mean"]["Dice"] == pytest.approx((0.5 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="no reference"):
        ev.compute_metrics_on_cases({}, {"x": pred}, [1])
    with pytest.raises(ValueError, match="shape"):
        ev.compute_metrics(ref, pred[:, :2], [1])
