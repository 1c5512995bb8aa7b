"""Issue 6, acceptance 5: bad input stops seg_plan with one error naming the file and the problem before anything
is planned, preprocessed or trained, and nnunetv2's own verify_dataset_integrity refuses the same folders; a case
with an all-background mask and a declared label that occurs in no case go through plan, training and evaluation
the way nnU-Net v2 handles them.

nnU-Net v2 (2.8.1) for the empty cases:
  * fingerprint (DatasetFingerprintExtractor.collect_foreground_intensities): a case without foreground adds no
    intensity samples; planning goes on with the other cases (per-case parity: tests/seg/test_fingerprint.py).
  * preprocessing: class_locations of every label is empty for such a case.
  * nnUNetDataLoader.get_bbox: a forced-foreground position whose case has no foreground location falls back to a
    uniformly random crop ("case does not contain any foreground classes").
  * evaluation (evaluate_predictions.compute_metrics): Dice = NaN when TP + FP + FN == 0 (label absent from the
    reference and the prediction); the per-label mean is np.nanmean over cases (the NaN case does not count);
    foreground_mean is np.mean over the label means (NaN when one label is NaN in every case).
"""

from __future__ import annotations

import json
import math
import re
import types
from pathlib import Path

import numpy as np
import pytest

from radgan_jax.data.base import Case
from radgan_jax.data.nnunet_raw import write_nnunet_raw
from tests.seg.test_evaluate import _SerialPool

SIZE = 32
LABELS = {"background": 0, "a": 1, "b": 2}


# ------------------------------------------------------------------------------------------------- helpers
def _write(root: Path, ending: str, *, empty_case: bool = False, unused_label: bool = False) -> Path:
    """6 small 2D cases c0..c5 (labels 1 and 2 in each; c0 all background when `empty_case`; label 'c' = 3
    declared in dataset.json but never drawn when `unused_label`)."""
    rng = np.random.default_rng(0)
    cases = []
    for i in range(6):
        mask = np.zeros((SIZE, SIZE), np.uint8)
        if not (empty_case and i == 0):
            mask[4 + i:16 + i, 6:20] = 1
            mask[20:28, 10 + i:18 + i] = 2
        image = rng.normal(0.0, 1.0, (SIZE, SIZE)) + 2.0 * mask
        image = np.clip(image * 40 + 60, 0, 255).astype(np.uint8) if ending == ".png" else image.astype(np.float32)
        cases.append(Case(f"c{i}", image, mask, spacing=(1.0, 1.0)))
    labels = dict(LABELS, c=3) if unused_label else LABELS
    return write_nnunet_raw(cases, root, 7, "Bad", labels, {"0": "MR"}, file_ending=ending)


def _rewrite_label(path: Path, edit) -> None:
    if path.name.endswith(".png"):
        from PIL import Image

        Image.fromarray(np.ascontiguousarray(edit(np.array(Image.open(path))))).save(path)
    else:
        import nibabel as nib

        img = nib.load(str(path))
        data = np.ascontiguousarray(edit(np.asanyarray(img.dataobj).copy()))
        nib.save(nib.Nifti1Image(data, img.affine), str(path))


def _corrupt(folder: Path, how: str, ending: str) -> Path:
    """Breaks case c2 (or dataset.json) one way; returns the file the error must name."""
    label, image = folder / "labelsTr" / f"c2{ending}", folder / "imagesTr" / f"c2_0000{ending}"

    def bad_value(a):
        a[0, 0] = 5
        return a

    if how == "label_value":
        _rewrite_label(label, bad_value)
        return label
    if how == "size_mismatch":
        _rewrite_label(label, lambda a: a[:SIZE - 2])
        return label
    if how in ("unreadable_image", "unreadable_label"):
        path = image if how == "unreadable_image" else label
        path.write_bytes(path.read_bytes()[:40])  # truncated: header only
        return path
    key = how.removeprefix("missing_key_")
    ds = json.loads((folder / "dataset.json").read_text())
    del ds[key]
    (folder / "dataset.json").write_text(json.dumps(ds))
    return folder / "dataset.json"


def _plan(dataset: Path, out: Path, num_workers: int = 0) -> None:
    """seg_plan on `dataset`. nnU-Net draws 1e8 foreground intensity samples in total (~10 s of percentiles on 2
    cores); these tests do not check the statistics, so the fingerprint samples 10_000 per case."""
    from configs.seg import plan as plan_config
    from radgan_jax.jobs import seg_plan
    from radgan_jax.seg import fingerprint

    config = plan_config.get_config()
    config.dataset, config.num_workers, config.progress = str(dataset), num_workers, False
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fingerprint, "samples_per_case", lambda num_cases: 10_000)
        seg_plan.run(config, str(out))


def _nnunet(monkeypatch, tmp_path) -> types.SimpleNamespace:
    """nnunetv2's verify_dataset_integrity and evaluate_predictions, run serially in this process (skips the
    calling test when nnunetv2 is not installed)."""
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity")
    evaluate = pytest.importorskip("nnunetv2.evaluation.evaluate_predictions")
    serial = types.SimpleNamespace(get_context=lambda *a, **k: types.SimpleNamespace(Pool=_SerialPool))
    monkeypatch.setattr(verify, "multiprocessing", serial)
    monkeypatch.setattr(evaluate, "multiprocessing", serial)
    return types.SimpleNamespace(verify=verify.verify_dataset_integrity, evaluate=evaluate)


# ---------------------------------------------------------------------------------------------- bad input
PROBLEMS = {  # what our message must say after "seg_plan: <file>: "
    "label_value": r"mask holds label values \[5\] outside the declared set \[0, 1, 2\]",
    "size_mismatch": rf"label shape \(\d+, \d+\) != image shape \({SIZE}, {SIZE}\)",
    "unreadable_image": r"corrupt|not an image|truncated",
    "unreadable_label": r"corrupt|not an image|truncated",
}
CORRUPTIONS = [(how, e) for how in PROBLEMS for e in (".nii.gz", ".png")] + \
    [(f"missing_key_{k}", ".nii.gz") for k in ("channel_names", "labels", "numTraining", "file_ending")]


@pytest.mark.parametrize("how,ending", CORRUPTIONS)
def test_bad_input_stops_seg_plan_naming_the_file(tmp_path, monkeypatch, capsys, how, ending):
    folder = _write(tmp_path / "raw", ending)
    bad = _corrupt(folder, how, ending)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        _plan(folder, out)
    msg = str(e.value)
    assert msg.startswith(f"seg_plan: {bad}: "), msg
    problem = PROBLEMS.get(how, rf"missing required keys \['{how.removeprefix('missing_key_')}'\]")
    assert re.search(problem, msg[len(f"seg_plan: {bad}: "):]), msg
    assert "\n" not in msg
    assert sorted(p.name for p in out.iterdir()) == [], "nothing may be written before the check"

    # nnU-Net refuses the same folder (its messages: an assert, RuntimeError after printing the file, or the
    # reader's own exception -- a truncated png gives PIL's SyntaxError without the file name)
    nnunet = _nnunet(monkeypatch, tmp_path)
    capsys.readouterr()
    with pytest.raises(Exception) as ref:  # noqa: PT011 - nnunetv2 raises AssertionError/RuntimeError/reader errors
        nnunet.verify(str(folder), 1)
    printed = capsys.readouterr().out
    if how in ("label_value", "size_mismatch"):
        assert isinstance(ref.value, RuntimeError) and str(bad) in printed
    elif how.startswith("missing_key_"):
        assert isinstance(ref.value, AssertionError) and how.removeprefix("missing_key_") in str(ref.value)


def test_bad_input_with_worker_processes_still_names_the_file(tmp_path):
    folder = _write(tmp_path / "raw", ".nii.gz")
    bad = _corrupt(folder, "label_value", ".nii.gz")
    with pytest.raises(SystemExit, match=re.escape(f"seg_plan: {bad}: mask holds label values [5]")):
        _plan(folder, tmp_path / "out", num_workers=2)


# -------------------------------------------------------------------- empty case + label absent everywhere
@pytest.fixture(scope="module")
def empty_dataset(tmp_path_factory) -> tuple[Path, Path]:
    """Raw dataset with c0 all background and label 'c' (3) in no case, planned by seg_plan: (raw, plans)."""
    root = tmp_path_factory.mktemp("empty")
    folder = _write(root / "raw", ".nii.gz", empty_case=True, unused_label=True)
    _plan(folder, root / "plans")
    return folder, root / "plans"


def test_empty_case_and_unused_label_plan_and_sample_like_nnunet(empty_dataset, monkeypatch, tmp_path):
    pytest.importorskip("torch")
    nnunet = _nnunet(monkeypatch, tmp_path)
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from radgan_jax.seg.preprocessed import PreprocessedDataset
    from radgan_jax.seg.sampler import PatchSampler

    raw, plans = empty_dataset
    nnunet.verify(str(raw), 1)  # nnU-Net accepts the dataset (no exception)
    fingerprint = json.loads((plans / "dataset_fingerprint.json").read_text())
    stats = fingerprint["foreground_intensity_properties_per_channel"]["0"]
    assert all(math.isfinite(v) for v in stats.values())  # from the five cases with foreground
    ds = PreprocessedDataset(plans)
    assert ds.foreground_labels == [1, 2, 3] and ds.num_segmentation_heads == 4
    empty = ds.load("c0")
    assert not (empty.seg > 0).any() and {k: len(v) for k, v in empty.class_locations.items()} == {1: 0, 2: 0, 3: 0}
    assert len(ds.load("c1").class_locations[3]) == 0 and len(ds.load("c1").class_locations[1]) > 0

    # forced-foreground draws on the empty case fall back to a random crop, as nnUNetDataLoader does
    class _One:  # the two members nnUNetDataLoader uses
        identifiers = ["c0"]

        @staticmethod
        def load_case(key):
            return empty.data, empty.seg, None, {"class_locations": empty.class_locations}

    patch, final = (SIZE + 8, SIZE + 8), (SIZE, SIZE)  # crops stick out of the image: padding is exercised too
    lm = LabelManager(json.loads((plans / "dataset.json").read_text())["labels"], regions_class_order=None)
    ref = nnUNetDataLoader(_One(), 3, patch, final, lm, oversample_foreground_percent=0.33)
    ours = PatchSampler(ds.load, ["c0"], 3, patch, final, ds.foreground_labels)
    assert ours.forced_foreground(2)
    for seed in range(3):
        np.random.seed(seed)
        want = ref.generate_train_batch()
        data, seg, keys = ours.batch(np.random.RandomState(seed))
        np.testing.assert_array_equal(data, want["data"].numpy())
        np.testing.assert_array_equal(seg, want["target"].numpy())
        assert keys == ["c0"] * 3 and seg.max() <= 0


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")  # nnunetv2's nanmean of label 3
def test_empty_reference_dice_is_nan_and_excluded_like_nnunet(empty_dataset, monkeypatch, tmp_path):
    """Evaluation of the raw labels against themselves: the empty case has Dice NaN for every label, label 3 is
    NaN in every case; means are nanmeans (1.0, where counting the NaN case as 0 would give 5/6)."""
    nnunet = _nnunet(monkeypatch, tmp_path)
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from radgan_jax.seg import evaluate
    from radgan_jax.seg.raw_dataset import open_raw_dataset

    raw, _ = empty_dataset
    labels = [1, 2, 3]
    ref = nnunet.evaluate.compute_metrics_on_folder(str(raw / "labelsTr"), str(raw / "labelsTr"),
                                                    str(tmp_path / "s.json"), SimpleITKIO(), ".nii.gz", labels,
                                                    None, 1)
    rds = open_raw_dataset(raw)
    segs = {c.id: rds.load(c)[1][0, 0].astype(np.int16) for c in rds.cases}
    ours = evaluate.compute_metrics_on_cases(segs, segs, labels)
    for mine, theirs in zip(ours["metric_per_case"], ref["metric_per_case"]):
        for k in labels:
            a, b = mine["metrics"][k]["Dice"], theirs["metrics"][k]["Dice"]
            assert (math.isnan(a) and math.isnan(b)) or a == b, (theirs["reference_file"], k, a, b)
    empty = ours["metric_per_case"][0]
    assert all(math.isnan(empty["metrics"][k]["Dice"]) for k in labels)
    assert ours["mean"][1]["Dice"] == ref["mean"][1]["Dice"] == 1.0
    assert ours["mean"][2]["Dice"] == ref["mean"][2]["Dice"] == 1.0
    assert math.isnan(ours["mean"][3]["Dice"]) and math.isnan(ref["mean"][3]["Dice"])
    assert math.isnan(ours["foreground_mean"]["Dice"]) and math.isnan(ref["foreground_mean"]["Dice"])


@pytest.mark.slow  # ~70 s on 2 cores: compiles the train step, the val step and the sliding-window predictor
def test_empty_case_trains_and_validates(empty_dataset):
    """seg_train (fold 'all': the empty case is trained on and validated) runs one quick epoch and its final
    validation; the summary follows nnU-Net's NaN rules; a network predicting only background gives the empty
    case Dice NaN for every label."""
    import jax

    from configs.seg import train as train_config
    from radgan_jax.checkpoint import Checkpointer
    from radgan_jax.jobs import seg_train
    from radgan_jax.seg.preprocessed import PreprocessedDataset

    raw, plans = empty_dataset
    config = train_config.get_config()
    config.plans, config.fold, config.epochs, config.iterations_per_epoch, config.val_iterations = \
        str(plans), "all", 1, 2, 1
    config.batch_size = jax.device_count()  # the plan's 2 does not split over the 8 test devices
    config.augment, config.progress = False, False
    wd = plans.parent / "train"
    seg_train.run(config, str(wd))

    row = json.loads((wd / "training_log.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"]) and len(row["dice_per_class"]) == 3
    finite = [d for d in row["dice_per_class"] if math.isfinite(d)]
    assert (math.isnan(row["mean_fg_dice"]) and not finite) or row["mean_fg_dice"] == pytest.approx(np.mean(finite))
    summary = json.loads((wd / "validation" / "summary.json").read_text())
    _check_nan_rules(summary)

    # a network that predicts background everywhere: the empty case's Dice is NaN for every label
    with Checkpointer(wd / "checkpoint_final", max_to_keep=None) as ck:
        params = ck.restore()[0]["params"]
    ds = PreprocessedDataset(plans)
    head = max((k for k in params if k.startswith("decoder_seg_layers_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    params[head] = {"kernel": np.zeros_like(params[head]["kernel"]),
                    "bias": np.array([10.0, 0.0, 0.0, 0.0], np.float32)}
    bg = seg_train.final_validation(wd / "validation_bg", ds, ds.configuration, params, ds.case_ids, str(raw),
                                    True, False)
    by_case = {Path(c["reference_file"]).name: c["metrics"] for c in bg["metric_per_case"]}
    assert all(math.isnan(by_case["c0"][k]["Dice"]) for k in (1, 2, 3))
    assert all(by_case[f"c{i}"][k]["Dice"] == 0.0 for i in range(1, 6) for k in (1, 2))
    assert bg["mean"][1]["Dice"] == 0.0 and math.isnan(bg["mean"][3]["Dice"])


def _check_nan_rules(summary: dict) -> None:
    cases = summary["metric_per_case"]
    for k in ("1", "2", "3"):
        dice = []
        for c in cases:
            m = c["metrics"][k]
            empty_ref = m["n_ref"] == 0
            if empty_ref and m["n_pred"] == 0:
                assert math.isnan(m["Dice"]), (c["reference_file"], k)
            elif empty_ref:
                assert m["Dice"] == 0.0, (c["reference_file"], k)
            dice.append(m["Dice"])
        finite = [d for d in dice if math.isfinite(d)]
        mean = summary["mean"][k]["Dice"]
        assert (math.isnan(mean) and not finite) or mean == pytest.approx(np.mean(finite)), k
    empty = next(c for c in cases if c["reference_file"].endswith("c0"))
    assert all(empty["metrics"][k]["n_ref"] == 0 for k in ("1", "2", "3"))
    assert all(c["metrics"]["3"]["n_ref"] == 0 for c in cases)
    label_means = [summary["mean"][k]["Dice"] for k in ("1", "2", "3")]
    fg = summary["foreground_mean"]["Dice"]
    assert (math.isnan(fg) and any(math.isnan(v) for v in label_means)) or fg == pytest.approx(np.mean(label_means))
