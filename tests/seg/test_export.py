"""Logits -> raw-geometry segmentation equals nnunetv2's convert_predicted_logits_to_segmentation_with_correct_shape."""

from __future__ import annotations

import numpy as np
import pytest

from radgan_jax.seg.export import logits_to_raw_segmentation, overlay, side_by_side


def _plans(spacing):
    kw = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
    return {"transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "configurations": {"2d": {"spacing": spacing,
                                      "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                                      "resampling_fn_probabilities_kwargs": kw,
                                      "architecture": {"network_class_name": "PlainConvUNet", "arch_kwargs": {},
                                                       "_kw_requires_import": []}}}}


@pytest.mark.parametrize("spacing,pre_shape", [([1.0, 1.0], (1, 30, 40)), ([0.8, 1.25], (1, 37, 32))])
def test_matches_nnunet_export(spacing, pre_shape):
    pytest.importorskip("torch")
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

    rs = np.random.RandomState(0)
    logits = rs.randn(3, *pre_shape).astype(np.float32)
    props = {"spacing": [999.0, 1.0, 1.0], "shape_before_cropping": (1, 50, 60),
             "bbox_used_for_cropping": [[0, 1], [5, 35], [10, 50]],
             "shape_after_cropping_and_before_resampling": (1, 30, 40)}
    plans = _plans(spacing)
    ours = logits_to_raw_segmentation(logits, props, plans)

    class _PM(PlansManager):  # only what the export touches
        def __init__(self, p):
            self.plans = p

    cm = ConfigurationManager(plans["configurations"]["2d"])
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    lm = LabelManager({"background": 0, "a": 1, "b": 2}, regions_class_order=None)
    import torch

    want = convert_predicted_logits_to_segmentation_with_correct_shape(torch.from_numpy(logits), _PM(plans), cm, lm,
                                                                       dict(props))
    np.testing.assert_array_equal(ours, want)
    assert ours.shape == (1, 50, 60) and ours[:, :5].max() == 0


def test_overlay_colours_prediction_and_outlines_reference():
    img = np.linspace(0, 1, 20 * 30).reshape(20, 30)
    seg = np.zeros((20, 30), np.uint8)
    seg[5:10, 5:10] = 1
    ref = np.zeros_like(seg)
    ref[12:18, 20:28] = 2
    pic = overlay(img, seg, ref)
    assert pic.shape == (20, 30, 3) and pic.dtype == np.uint8
    assert pic[7, 7, 0] > pic[7, 7, 2]  # label 1 is red
    assert (pic[12, 20:28] == 255).all()  # reference outline in white
    assert side_by_side([pic, pic[:10]]).shape == (20, 64, 3)
