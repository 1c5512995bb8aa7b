"""seg_predict and seg_evaluate jobs end to end: a tiny phantom plan (ct_abdomen, nii.gz) with two folds of U-Net
params (nnU-Net init, saved as seg_train saves them), and crafted png predictions for the evaluation and the
postprocessing decision, which is compared with nnunetv2's determine_postprocessing run on the same folders."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from radgan_jax.checkpoint import Checkpointer
from radgan_jax.jobs import seg_evaluate, seg_predict
from radgan_jax.models.unet import init_unet, unet_from_plan
from radgan_jax.seg import inference
from radgan_jax.seg.postprocess import KEEP_LARGEST, keep_largest_component, save_postprocessing
from radgan_jax.seg.preprocessing import preprocess_case
from tests.seg.test_evaluate import serial_multiprocessing


def _save_fold(folder: Path, params, which: str = "checkpoint_final") -> Path:
    """What seg_train._save_params writes: orbax item {'params': ...}, metadata {'epoch'}."""
    with Checkpointer(folder / which, max_to_keep=1, async_save=False) as ck:
        ck.save(1, {"params": params}, metadata={"epoch": 1}, force=True)
    return folder


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    from configs.seg.plan import get_config
    from radgan_jax.jobs import seg_plan

    root = tmp_path_factory.mktemp("seg_pe")
    config = get_config()
    config.num_workers, config.progress, config.builtin_num, config.builtin_resolution = 0, False, 4, 32
    seg_plan.run(config, str(root / "plans"))
    plans = json.loads((root / "plans" / "nnUNetPlans.json").read_text())
    dataset = json.loads((root / "plans" / "dataset.json").read_text())
    module = unet_from_plan(plans["configurations"]["2d"], 1, 4, deep_supervision=False)
    params = [init_unet(module, jax.random.key(i))["params"] for i in range(2)]
    folds = [_save_fold(root / f"fold{i}", p) for i, p in enumerate(params)]
    raw = next((root / "plans" / "raw").glob("Dataset*"))
    return types.SimpleNamespace(root=root, plans_dir=root / "plans", raw=raw, plans=plans, dataset=dataset,
                                 module=module, params=params, folds=folds)


def _predict_config(task, **kw):
    from configs.seg.predict import get_config

    config = get_config()
    config.input, config.plans, config.progress = str(task.raw / "imagesTr"), str(task.plans_dir), False
    config.models = ",".join(str(f) for f in task.folds)
    for k, v in kw.items():
        setattr(config, k, v)
    return config


@pytest.fixture(scope="module")
def predicted(task) -> Path:
    out = task.root / "pred"
    seg_predict.run(_predict_config(task, save_probabilities=True), str(out))
    return out


def _fold_logits(task, case_id: str) -> tuple[list[np.ndarray], dict]:
    """Each fold's sliding-window logits [K, Z, H, W] of one case, computed here with the library."""
    files = sorted((task.raw / "imagesTr").glob(f"{case_id}_*.nii.gz"))
    data, props = seg_predict.read_case(files, ".nii.gz", 1)
    pdata, _, pprops = preprocess_case(data, None, props, task.plans, "2d", task.dataset["labels"])
    apply_fn = lambda p, x: task.module.apply({"params": p}, x)  # noqa: E731
    patch = task.plans["configurations"]["2d"]["patch_size"]
    logits = [inference.predict_sliding_window(apply_fn, p, np.moveaxis(pdata, 0, -1), patch) for p in task.params]
    return logits, pprops


# ------------------------------------------------------------------------------------------------ predict
def test_predict_writes_label_images_in_input_geometry(task, predicted):
    import nibabel as nib

    inputs = sorted((task.raw / "imagesTr").glob("*_0000.nii.gz"))
    assert len(inputs) == 4
    for f in inputs:
        cid = f.name[:-len("_0000.nii.gz")]
        src, out = nib.load(str(f)), nib.load(str(predicted / f"{cid}.nii.gz"))
        assert out.shape == src.shape and np.allclose(out.affine, src.affine)
        seg = np.asarray(out.dataobj)
        assert seg.dtype == np.uint8 and set(np.unique(seg)) <= {0, 1, 2, 3}
        probs = np.load(predicted / f"{cid}.npz")["probabilities"]
        assert probs.shape == (4, 1, *src.shape[::-1]) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
        np.testing.assert_array_equal(np.argmax(probs, 0)[0], seg.T)  # seg = argmax of the probabilities
        assert (predicted / "overlays" / f"{cid}.png").is_file()
    assert json.loads((predicted / "plans.json").read_text()) == task.plans
    assert json.loads((predicted / "dataset.json").read_text()) == task.dataset


def test_fold_ensemble_equals_nnunet_rule(task, predicted, tmp_path):
    """Default ensemble = nnUNetv2_predict: logits averaged (ensemble_fold_logits), then exported; the
    'probabilities' option = nnUNetv2_ensemble: the folds' exported probabilities averaged. The second run also
    applies a postprocessing.json (keep the largest liver component)."""
    cid = "ct_abdomen_00000"
    logits, pprops = _fold_logits(task, cid)
    mean_logits = np.asarray(inference.ensemble_fold_logits(logits))
    manual = ((np.asarray(logits[0], np.float32) + np.asarray(logits[1], np.float32)) / 2)
    np.testing.assert_allclose(mean_logits.astype(np.float32), manual, atol=2e-3, rtol=2e-3)  # float16 sums
    expected = seg_predict.raw_probabilities(np.moveaxis(mean_logits, -1, 0), pprops, task.plans)
    np.testing.assert_allclose(np.load(predicted / f"{cid}.npz")["probabilities"], expected, atol=1e-6)

    pp = save_postprocessing({"postprocessing_fns": [KEEP_LARGEST],
                              "postprocessing_kwargs": [{"labels_or_regions": 1}]}, tmp_path / "pp.json")
    out = tmp_path / "pred_prob"
    seg_predict.run(_predict_config(task, ensemble="probabilities", save_probabilities=True, overlays=False,
                                    postprocessing=str(pp)), str(out))
    per_fold = [seg_predict.raw_probabilities(np.moveaxis(np.asarray(lg), -1, 0), pprops, task.plans)
                for lg in logits]
    probs = np.load(out / f"{cid}.npz")["probabilities"]
    np.testing.assert_allclose(probs, (per_fold[0] + per_fold[1]) / 2, atol=1e-6)
    seg = seg_predict.read_label(out / f"{cid}.nii.gz")
    np.testing.assert_array_equal(seg, keep_largest_component(np.argmax(probs, 0)[0], 1))
    assert (out / "postprocessing.json").is_file() and not (out / "overlays").exists()


def test_predict_errors_name_the_bad_file(task, tmp_path):
    bad_in = tmp_path / "in"
    bad_in.mkdir()
    shutil.copy(task.raw / "imagesTr" / "ct_abdomen_00000_0000.nii.gz", bad_in / "ct_abdomen_00000_0001.nii.gz")
    with pytest.raises(SystemExit, match=r"ct_abdomen_00000_0000\.nii\.gz: missing channel"):
        seg_predict.run(_predict_config(task, input=str(bad_in)), str(tmp_path / "o1"))
    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(SystemExit, match=r"empty_model/checkpoint_final: missing"):
        seg_predict.run(_predict_config(task, models=f"{task.folds[0]},{empty}"), str(tmp_path / "o2"))
    with pytest.raises(SystemExit, match=r"fold0/checkpoint_best: missing"):
        seg_predict.run(_predict_config(task, checkpoint="best"), str(tmp_path / "o3"))
    other = jax.tree.map(np.asarray, task.params[0])
    other["decoder_seg_layers_0"]["kernel"] = np.zeros((1, 1, 32, 3), np.float32)  # a 3-label plan's head
    _save_fold(tmp_path / "other", other)
    with pytest.raises(SystemExit, match=r"model .*other does not fit .*different plans"):
        seg_predict.run(_predict_config(task, models=f"{task.folds[0]},{tmp_path / 'other'}"), str(tmp_path / "o4"))
    with pytest.raises(SystemExit, match="set --config.plans"):
        seg_predict.run(_predict_config(task, plans=""), str(tmp_path / "o5"))
    # a model dir laid out as nnU-Net's (plans.json + dataset.json) supplies the plans; others must agree
    a, b = tmp_path / "ma", tmp_path / "mb"
    for d in (a, b):
        d.mkdir()
        shutil.copy(task.plans_dir / "nnUNetPlans.json", d / "plans.json")
        shutil.copy(task.plans_dir / "dataset.json", d / "dataset.json")
    plans, dataset, source = seg_predict.resolve_plans("", [a, b])
    assert source == a and plans == task.plans and dataset == task.dataset
    changed = json.loads((b / "plans.json").read_text())
    changed["configurations"]["2d"]["patch_size"] = [16, 16]
    (b / "plans.json").write_text(json.dumps(changed))
    with pytest.raises(seg_predict.PredictError, match="different plans: .*mb/plans.json"):
        seg_predict.resolve_plans("", [a, b])


def test_read_case_png_channels(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 255, (6, 7, 3), dtype=np.uint8)
    (tmp_path / "rgb").mkdir()
    (tmp_path / "grey").mkdir()
    Image.fromarray(rgb).save(tmp_path / "rgb" / "a_0000.png")
    for c in range(2):
        Image.fromarray(rgb[..., c]).save(tmp_path / "grey" / f"b_{c:04d}.png")
    cases = seg_predict.list_input_cases(tmp_path / "rgb", ".png", 3)
    data, props = seg_predict.read_case(cases["a"], ".png", 3)
    assert data.shape == (3, 1, 6, 7) and props["spacing"] == [999.0, 1.0, 1.0]
    np.testing.assert_array_equal(data[:, 0], np.moveaxis(rgb, -1, 0))
    grey, _ = seg_predict.read_case(seg_predict.list_input_cases(tmp_path / "grey", ".png", 2)["b"], ".png", 2)
    np.testing.assert_array_equal(grey[:, 0], np.moveaxis(rgb[..., :2], -1, 0))


# ----------------------------------------------------------------------------------------------- evaluate
def _rect(a: np.ndarray, y: int, x: int, h: int, w: int, v: int) -> None:
    a[y:y + h, x:x + w] = v


@pytest.fixture(scope="module")
def png_task(tmp_path_factory):
    """6 png cases: label 1 a 10x10 square, label 2 a 6x8 bar. Predictions: label 1 right plus a 2x2 stray speck
    (keep-largest for label 1 helps), label 2 split in two by a missing column (keep-largest of label 2 hurts,
    and keep-largest over all foreground would delete label 2)."""
    from radgan_jax.data.base import Case
    from radgan_jax.data.nnunet_raw import write_nnunet_raw

    root = tmp_path_factory.mktemp("png_task")
    refs, preds, cases = {}, {}, []
    for i in range(6):
        ref = np.zeros((32, 40), np.uint8)
        _rect(ref, 4 + i, 4, 10, 10, 1)
        _rect(ref, 20, 20, 6, 8, 2)
        pred = ref.copy()
        _rect(pred, 28, 2 + 4 * i, 2, 2, 1)
        pred[20:26, 22 + i % 3] = 0
        image = (ref * 60 + 20).astype(np.uint8)
        cases.append(Case(f"c{i}", image, ref, spacing=(1.0, 1.0)))
        refs[f"c{i}"], preds[f"c{i}"] = ref, pred
    raw = write_nnunet_raw(cases, root / "raw", 7, "Toy", {"background": 0, "a": 1, "b": 2}, {"0": "x"})
    return types.SimpleNamespace(root=root, raw=raw, refs=refs, preds=preds)


def _expected_dice(refs: dict, preds: dict, label: int) -> float:
    d = [2 * np.sum((r == label) & (p == label)) / (np.sum(r == label) + np.sum(p == label))
         for r, p in ((refs[c], preds[c]) for c in refs)]
    return float(np.mean(d))


def _evaluate_config(**kw):
    from configs.seg.evaluate import get_config

    config = get_config()
    for k, v in kw.items():
        setattr(config, k, v)
    return config


def test_evaluate_folder_known_dice(png_task, tmp_path):
    pred_dir = tmp_path / "pred"
    seg_evaluate.save_validation_predictions(pred_dir, png_task.preds, png_task.raw)
    seg_evaluate.run(_evaluate_config(predictions=str(pred_dir), reference=str(png_task.raw)), str(tmp_path / "ev"))
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    d1, d2 = (_expected_dice(png_task.refs, png_task.preds, k) for k in (1, 2))
    assert d1 == pytest.approx(200 / 204) and d2 == pytest.approx(84 / 90)
    assert summary["mean"]["1"]["Dice"] == pytest.approx(d1) and summary["mean"]["2"]["Dice"] == pytest.approx(d2)
    assert summary["foreground_mean"]["Dice"] == pytest.approx((d1 + d2) / 2)
    assert len(summary["metric_per_case"]) == 6 and (tmp_path / "ev" / "dice.png").is_file()
    (pred_dir / "c5.png").unlink()
    with pytest.raises(SystemExit, match="have no prediction"):
        seg_evaluate.run(_evaluate_config(predictions=str(pred_dir), reference=str(png_task.raw)), str(tmp_path / "e2"))
    seg_evaluate.run(_evaluate_config(predictions=str(pred_dir), reference=str(png_task.raw / "labelsTr"),
                                      dataset_json=str(png_task.raw / "dataset.json"), chill=True),
                     str(tmp_path / "e3"))
    assert len(json.loads((tmp_path / "e3" / "summary.json").read_text())["metric_per_case"]) == 5


def _nnunet_determine(monkeypatch, folder: Path, ref: Path, plans: dict, dataset: dict) -> tuple[list, list, dict]:
    """nnunetv2's determine_postprocessing on a copy of `folder` (in this process)."""
    rcc = pytest.importorskip("nnunetv2.postprocessing.remove_connected_components")
    evp = pytest.importorskip("nnunetv2.evaluation.evaluate_predictions")
    monkeypatch.setattr(rcc, "multiprocessing", serial_multiprocessing())
    monkeypatch.setattr(evp, "multiprocessing", serial_multiprocessing())
    work = folder.parent / "nnunet_pp"
    shutil.copytree(folder, work)
    (work / "summary.json").unlink()
    fns, kwargs = rcc.determine_postprocessing(str(work), str(ref), plans, dataset, 1)
    return [f.__name__ for f in fns], kwargs, json.loads((work / "postprocessing.json").read_text())


def _assert_report_equal(ours: dict, ref: dict) -> None:
    assert ours["postprocessing_fns"] == ref["postprocessing_fns"]
    assert ours["postprocessing_kwargs"] == ref["postprocessing_kwargs"]
    for part in ("input_folder", "postprocessed"):
        assert ours[part]["foreground_mean"]["Dice"] == pytest.approx(ref[part]["foreground_mean"]["Dice"], abs=1e-9)
        for k, m in ref[part]["mean"].items():
            assert ours[part]["mean"][k]["Dice"] == pytest.approx(m["Dice"], abs=1e-9, nan_ok=True), (part, k)


def test_cv_gather_and_postprocessing_decision_match_nnunet(png_task, tmp_path, monkeypatch):
    folds = [tmp_path / "fold0", tmp_path / "fold1"]
    ids = sorted(png_task.preds)
    for k, fold in enumerate(folds):  # each fold predicted half of the cases (its validation set)
        part = {c: png_task.preds[c] for c in ids[k * 3:(k + 1) * 3]}
        seg_evaluate.save_validation_predictions(fold / "validation", part, png_task.raw)
    wd = tmp_path / "cv"
    seg_evaluate.run(_evaluate_config(cv_models=",".join(map(str, folds)), reference=str(png_task.raw)), str(wd))
    assert sorted(p.name for p in (wd / "crossval").glob("*.png")) == [f"{c}.png" for c in ids]
    assert json.loads((wd / "crossval" / "case_folds.json").read_text())["c4"] == str(folds[1])
    report = json.loads((wd / "postprocessing.json").read_text())
    assert report["postprocessing_fns"] == [KEEP_LARGEST]
    assert report["postprocessing_kwargs"] == [{"labels_or_regions": 1}]  # label 1 only: all-fg / label 2 hurt
    before = json.loads((wd / "summary.json").read_text())["foreground_mean"]["Dice"]
    after = json.loads((wd / "postprocessed" / "summary.json").read_text())
    assert after["foreground_mean"]["Dice"] > before and after["mean"]["1"]["Dice"] == pytest.approx(1.0)
    assert before == pytest.approx((_expected_dice(png_task.refs, png_task.preds, 1)
                                    + _expected_dice(png_task.refs, png_task.preds, 2)) / 2)
    assert (wd / "dice.png").is_file() and len(list((wd / "postprocessed").glob("*.png"))) == 6

    plans = {"image_reader_writer": "NaturalImage2DIO", "configurations": {}}
    dataset = json.loads((png_task.raw / "dataset.json").read_text())
    names, kwargs, ref_report = _nnunet_determine(monkeypatch, wd / "crossval", png_task.raw / "labelsTr", plans,
                                                  dataset)
    assert names == [KEEP_LARGEST] and kwargs == [{"labels_or_regions": 1}]
    _assert_report_equal(report, ref_report)

    seg_evaluate.save_validation_predictions(folds[1] / "validation", {"c0": png_task.preds["c0"]}, png_task.raw)
    with pytest.raises(SystemExit, match="'c0' is predicted by two folds"):
        seg_evaluate.run(_evaluate_config(cv_models=",".join(map(str, folds)), reference=str(png_task.raw)),
                         str(tmp_path / "cv2"))


def test_cv_on_nifti_predictions_matches_nnunet(task, predicted, tmp_path, monkeypatch):
    """nii.gz validation output of two folds (the reference labels with the random-weight ensemble's predictions
    pasted into a band of rows: stray components of every label): gather, evaluate, postprocessing decision and
    the Dice before/after equal nnunetv2's on the same files; the written files keep the raw geometry."""
    ids = sorted(p.name[:-len(".nii.gz")] for p in predicted.glob("ct_abdomen_*.nii.gz"))
    folds = [tmp_path / "f0", tmp_path / "f1"]
    for k, fold in enumerate(folds):
        preds = {}
        for c in ids[k::2]:
            pred = seg_predict.read_label(task.raw / "labelsTr" / f"{c}.nii.gz").copy()
            noise = seg_predict.read_label(predicted / f"{c}.nii.gz")
            band = slice(2, 6)
            pred[band] = np.where(noise[band] > 0, noise[band], pred[band])
            preds[c] = pred
        seg_evaluate.save_validation_predictions(fold / "validation", preds, task.raw)
    wd = tmp_path / "cv"
    seg_evaluate.run(_evaluate_config(cv_models=",".join(map(str, folds)), plans=str(task.plans_dir)), str(wd))
    import nibabel as nib

    for c in ids:  # same geometry as the raw labels
        a, b = nib.load(str(wd / "postprocessed" / f"{c}.nii.gz")), nib.load(str(task.raw / "labelsTr" / f"{c}.nii.gz"))
        assert a.shape == b.shape and np.allclose(a.affine, b.affine)
    report = json.loads((wd / "postprocessing.json").read_text())
    assert report["postprocessing_fns"]  # the stray components make keep-largest worthwhile somewhere
    _, _, ref_report = _nnunet_determine(monkeypatch, wd / "crossval", task.raw / "labelsTr", task.plans,
                                         task.dataset)
    _assert_report_equal(report, ref_report)


# ------------------------------------------------------------------------------------- nnU-Net's predictor
def _torch_state_dict(params, net) -> dict:
    """Our params as the state_dict of nnU-Net's torch PlainConvUNet `net` (the inverse of
    models.unet.variables_from_torch_state_dict; torch's alias keys follow from loading into the net)."""
    import torch

    from radgan_jax.models.unet import torch_name

    sd = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = tuple(p.key for p in path)
        key, w = torch_name(names), np.asarray(leaf, np.float32)
        if w.ndim > 1:
            w = np.moveaxis(w, (-2, -1), (0, 1)) if "transpconvs" in key else np.moveaxis(w, (-1, -2), (0, 1))
        sd[key] = torch.from_numpy(np.array(w))
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert not unexpected and all(".all_modules." in k or k.startswith("decoder.encoder.") for k in missing)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.slow  # ~25 s: nnunetv2's predictor (torch, CPU) on the same 4 cases
def test_predict_matches_nnunet_predictor(task, predicted, tmp_path):
    """nnUNetPredictor.predict_from_files_sequential with the same two folds (weights converted to torch), TTA,
    step 0.5, save_probabilities: same files, probabilities equal up to float16 accumulation, same labels."""
    torch = pytest.importorskip("torch")
    pfr = pytest.importorskip("nnunetv2.inference.predict_from_raw_data")
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    torch.set_num_threads(2)
    arch = task.plans["configurations"]["2d"]["architecture"]
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 1, 4,
                                 allow_init=True, deep_supervision=False).eval()
    state_dicts = [_torch_state_dict(p, net) for p in task.params]
    manager = PlansManager(task.plans)
    predictor = pfr.nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                    perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(net, manager, manager.get_configuration("2d"), state_dicts, task.dataset,
                                    "nnUNetTrainer", (0, 1))
    out = tmp_path / "nnunet"
    out.mkdir()
    inputs = sorted((task.raw / "imagesTr").glob("*_0000.nii.gz"))  # lists: its folder scan forks a Pool
    predictor.predict_from_files_sequential([[str(f)] for f in inputs],
                                            [str(out / f.name[:-len("_0000.nii.gz")]) for f in inputs],
                                            save_probabilities=True)
    theirs = sorted(p.name for p in out.glob("*.nii.gz"))
    assert theirs == sorted(p.name for p in predicted.glob("*.nii.gz")) and len(theirs) == 4
    agree = []
    for name in theirs:
        cid = name[:-len(".nii.gz")]
        p_ref = np.load(out / f"{cid}.npz")["probabilities"]
        p_ours = np.load(predicted / f"{cid}.npz")["probabilities"]
        assert p_ours.shape == p_ref.shape
        np.testing.assert_allclose(p_ours, p_ref, atol=1e-3)  # measured: 1.2e-4 (float16 accumulation)
        s_ref, s_ours = seg_predict.read_label(out / name), seg_predict.read_label(predicted / name)
        agree.append(np.mean(s_ref == s_ours))
    assert min(agree) > 0.999, agree  # measured: identical
