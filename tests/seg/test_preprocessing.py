"""Reading, normalization and DefaultPreprocessor parity with nnunetv2 (computed in the test, in-process).

Two small raw datasets written by our writer: 2-channel (CT + MR) 2D NIfTI phantoms with zero padding and a
different spacing per case (so cropping, use_mask_for_norm and resampling all happen), and RGB png phantoms.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from radgan_jax.data.base import Case
from radgan_jax.data.nnunet_raw import write_nnunet_raw
from radgan_jax.data.phantoms import render, to_uint8
from radgan_jax.seg import fingerprint as fp
from radgan_jax.seg import normalization, preprocessing
from radgan_jax.seg.planner import plans_dict
from radgan_jax.seg.raw_dataset import open_raw_dataset

LABELS = {"background": 0, "liver": 1, "kidney": 2, "lesion": 3}
SPACINGS = [(0.8, 0.8), (1.0, 0.75), (0.6, 1.1), (0.9, 0.9), (1.3, 0.7), (0.75, 0.8)]


def _padded_cases():
    rng = np.random.default_rng(1)
    for i, spacing in enumerate(SPACINGS):
        case = render("ct_abdomen", seed=i, resolution=48, variant="lesion" if i % 2 else "normal")
        h, w = 80 + 4 * i, 72 + 3 * i
        y, x = int(rng.integers(0, h - 48)), int(rng.integers(0, w - 48))
        image = np.zeros((h, w, 2), np.float32)
        image[y:y + 48, x:x + 48, 0] = case.image * 400 - 160          # CT channel, HU
        image[y:y + 48, x:x + 48, 1] = case.image * 900 + 30 + rng.normal(0, 5, (48, 48))  # MR-like channel
        mask = np.zeros((h, w), np.uint8)
        mask[y:y + 48, x:x + 48] = case.mask
        yield Case(f"pad{i:02d}", image, mask, spacing=spacing)


def _rgb_cases():
    for i in range(4):
        case = render("endoscopy", seed=i, resolution=40 + 4 * i)
        yield Case(f"rgb{i}", to_uint8(case.image), case.mask)


@pytest.fixture(scope="module")
def nifti_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    return write_nnunet_raw(_padded_cases(), root, 11, "Padded", LABELS, {"0": "CT", "1": "MR"},
                            file_ending=".nii.gz")


@pytest.fixture(scope="module")
def png_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw_png")
    channels = {str(i): "rgb_to_0_1" for i in range(3)}
    return write_nnunet_raw(_rgb_cases(), root, 12, "Rgb", {"background": 0, "polyp": 1}, channels)


def _plans(folder: Path) -> dict:
    """Our plans for a dataset (fingerprint with few samples: both preprocessors get the same plan)."""
    ds = open_raw_dataset(folder)
    cases = []
    for c in ds.cases:
        data, seg, props = ds.load(c)
        cases.append(fp.analyze_case(data, seg, props["spacing"], 2000))
    plans = plans_dict(ds.dataset_json, fp.aggregate(cases, ds.num_channels), ds.name, ds.reader_writer)
    return json.loads(json.dumps(plans))


@pytest.mark.parametrize("which", ["nifti", "png"])
def test_reading_matches_nnunet_readers(which, nifti_dataset, png_dataset):
    pytest.importorskip("nnunetv2")
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    folder = nifti_dataset if which == "nifti" else png_dataset
    ds = open_raw_dataset(folder)
    io = {"SimpleITKIO": SimpleITKIO, "NaturalImage2DIO": NaturalImage2DIO}[ds.reader_writer]()
    for case in ds.cases:
        data, seg, props = ds.load(case)
        ref_data, ref_props = io.read_images([str(p) for p in case.image_files])
        ref_seg, _ = io.read_seg(str(case.label_file))
        assert data.dtype == ref_data.dtype == np.float32 and np.array_equal(data, ref_data)
        assert np.array_equal(seg, ref_seg)
        assert np.allclose(props["spacing"], ref_props["spacing"], rtol=1e-12)
    assert data.shape[:2] == ((2, 1) if which == "nifti" else (3, 1))


@pytest.mark.parametrize("which", ["nifti", "png"])
def test_preprocess_case_matches_default_preprocessor(which, nifti_dataset, png_dataset):
    pytest.importorskip("nnunetv2")
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = nifti_dataset if which == "nifti" else png_dataset
    ds = open_raw_dataset(folder)
    plans = _plans(folder)
    cfg = plans["configurations"]["2d"]
    if which == "nifti":  # the dataset was built so that all of this happens
        assert cfg["normalization_schemes"] == ["CTNormalization", "ZScoreNormalization"]
        assert cfg["use_mask_for_norm"] == [False, True]
    else:
        assert cfg["normalization_schemes"] == ["RGBTo01Normalization"] * 3
    pm = PlansManager(plans)
    ref_pre = DefaultPreprocessor(verbose=False)
    resampled = 0
    for case in ds.cases:
        data, seg, props = ds.load(case)
        ours = preprocessing.preprocess_case(data, seg, props, plans, "2d", ds.labels)
        ref = ref_pre.run_case([str(p) for p in case.image_files], str(case.label_file), pm,
                               pm.get_configuration("2d"), ds.dataset_json)
        assert ours[0].shape == ref[0].shape and ours[0].dtype == np.float32
        np.testing.assert_allclose(ours[0], ref[0], rtol=0, atol=1e-4)
        assert ours[1].dtype == ref[1].dtype and np.array_equal(ours[1], ref[1])
        for key in ("bbox_used_for_cropping", "shape_before_cropping", "shape_after_cropping_and_before_resampling"):
            assert np.array_equal(np.array(ours[2][key]), np.array(ref[2][key])), key
        assert set(ours[2]["class_locations"]) == set(ref[2]["class_locations"])
        for k, v in ref[2]["class_locations"].items():
            assert np.array_equal(np.asarray(ours[2]["class_locations"][k]).reshape(-1, 4),
                                  np.asarray(v).reshape(-1, 4)), k
        resampled += ours[0].shape[2:] != tuple(ours[2]["shape_after_cropping_and_before_resampling"][1:])
    if which == "nifti":
        assert resampled >= 4  # most cases were resampled to the median spacing


def test_normalization_schemes_match_nnunet():
    pytest.importorskip("nnunetv2")
    from nnunetv2.preprocessing.normalization import default_normalization_schemes as ref
    from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme

    rng = np.random.default_rng(3)
    image = (rng.normal(40, 120, (1, 37, 29))).astype(np.float32)
    seg = np.where(rng.random((1, 37, 29)) > 0.3, 0, -1).astype(np.int8)
    props = {"mean": 35.5, "std": 80.25, "percentile_00_5": -150.0, "percentile_99_5": 220.0}
    for name in normalization.SCHEMES:
        for use_mask in (False, True):
            img = np.clip(image, 0, 255) if name == "RGBTo01Normalization" else image
            ours = normalization.get_scheme(name)(use_mask, props).run(img.copy(), seg)
            theirs = getattr(ref, name)(use_mask_for_norm=use_mask, intensityproperties=props).run(img.copy(), seg)
            assert ours.dtype == theirs.dtype == np.float32 and np.array_equal(ours, theirs), (name, use_mask)
            assert normalization.get_scheme(name).leaves_outside_at_zero == \
                getattr(ref, name).leaves_pixels_outside_mask_at_zero_if_use_mask_for_norm_is_true
    for channel in ("CT", "ct", "MR", "R", "rgb_to_0_1", "noNorm", "zscore", "rescale_to_0_1", "T2"):
        assert normalization.scheme_for_channel(channel).name == get_normalization_scheme(channel).__name__
    with pytest.raises(KeyError, match="unknown normalization scheme 'Foo'; known: CTNormalization"):
        normalization.get_scheme("Foo")


def test_resampling_and_crop_match_nnunet():
    """resize / resize_segmentation (incl. ties and 4-label junctions), crop_to_nonzero and class locations."""
    pytest.importorskip("nnunetv2")
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape

    rng = np.random.default_rng(5)
    for shape, new, spacing, new_spacing in [((1, 1, 23, 31), (1, 40, 17), (999, 1, 1), (999, 0.6, 1.8)),
                                            ((2, 1, 16, 16), (1, 32, 32), (999, 1, 1), (999, 0.5, 0.5)),
                                            ((1, 5, 20, 22), (9, 26, 15), (1, 1, 1), (0.6, 0.8, 1.4)),
                                            ((1, 4, 18, 20), (7, 25, 30), (4, 1, 1), (2.2, 0.7, 0.7))]:
        data = rng.normal(size=shape).astype(np.float32)
        seg = np.kron(rng.integers(0, 4, (shape[0], shape[1], shape[2] // 2 + 1, shape[3] // 2 + 1)),
                      np.ones((1, 1, 2, 2)))[..., :shape[2], :shape[3]].astype(np.float32)
        for order_z in (0, 1):
            kw = {"order": 3, "order_z": order_z, "force_separate_z": None}
            ours = preprocessing.resample_data_or_seg_to_shape(data, new, spacing, new_spacing, False, **kw)
            theirs = resample_data_or_seg_to_shape(data, new, spacing, new_spacing, False, **kw)
            assert np.array_equal(ours, theirs)
            kw["order"] = 1
            ours = preprocessing.resample_data_or_seg_to_shape(seg, new, spacing, new_spacing, True, **kw)
            theirs = resample_data_or_seg_to_shape(seg, new, spacing, new_spacing, True, **kw)
            assert np.array_equal(ours, theirs)

    data = np.zeros((2, 1, 30, 40), np.float32)
    data[0, 0, 5:20, 8:30] = rng.normal(size=(15, 22))
    data[1, 0, 12:25, 3:10] = 1.0
    seg = (rng.random((1, 1, 30, 40)) > 0.6).astype(np.float32)
    for s in (seg, None):
        ours = preprocessing.crop_to_nonzero(data, None if s is None else s.copy())
        theirs = crop_to_nonzero(data, None if s is None else s.copy())
        assert np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1], theirs[1])
        assert ours[1].dtype == theirs[1].dtype and ours[2] == [list(map(int, b)) for b in theirs[2]]

    big = rng.integers(0, 3, (1, 1, 300, 250)).astype(np.float32)
    for classes in ([1, 2], [2, 5, (1, 2)]):
        ours = preprocessing.sample_foreground_locations(big, classes)
        theirs = DefaultPreprocessor._sample_foreground_locations(big, classes)
        for k, v in theirs.items():
            assert np.array_equal(np.asarray(ours[k]).reshape(-1, 4), np.asarray(v).reshape(-1, 4)), k
