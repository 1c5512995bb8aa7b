"""nnU-Net v2's default experiment planner (`ExperimentPlanner`, plans 'nnUNetPlans'), 2d configuration.

Source: nnunetv2/experiment_planning/experiment_planners/default_experiment_planner.py and network_topology.py.
From a dataset fingerprint (radgan_jax.seg.fingerprint) and dataset.json:
  * target spacing = per-axis median of the case spacings (10th percentile for a very anisotropic axis with
    few voxels); transpose puts the coarsest axis first; the 2d configuration plans the two remaining axes.
  * median image size = median over cases of the cropped shape resampled to the target spacing.
  * patch size: the spacing's aspect ratio scaled to 2048^2 pixels, clipped to the median size, then the
    topology of get_pool_and_conv_props pads it to a multiple of 2^pools; while the U-Net's estimated feature
    map size (PlainConvUNet.compute_conv_feature_map_size) exceeds the reference (85e6 per 8 GB for batch
    size 12), the axis largest relative to the median size shrinks by one divisibility step.
  * batch size = max(min(round(ref / estimate * 12), round(5% of the dataset's voxels / patch voxels)), 2).
  * features min(512, 32 * 2^stage), 2 convs per stage (encoder and decoder), kernel 3 on axes within 2x of
    the finest spacing, instance norm, LeakyReLU; normalization scheme by channel name; use_mask_for_norm when
    cropping removed over 25% (median) and the scheme leaves the outside at zero (z-score).
`plans_dict` returns nnUNetPlans.json's content (same keys and nesting) with the '2d' configuration only; for
3D data nnU-Net would add 3d_fullres / 3d_lowres, which this 2D reproduction does not plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from radgan_jax.seg.normalization import scheme_for_channel
from radgan_jax.seg.preprocessing import ANISO_THRESHOLD, compute_new_shape

UNET_CLASS = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
CONV_OPS = {2: "torch.nn.modules.conv.Conv2d", 3: "torch.nn.modules.conv.Conv3d"}
NORM_OPS = {2: "torch.nn.modules.instancenorm.InstanceNorm2d", 3: "torch.nn.modules.instancenorm.InstanceNorm3d"}


@dataclasses.dataclass(frozen=True)
class PlannerSettings:
    """ExperimentPlanner.__init__ constants (2D values)."""

    gpu_memory_target_gb: float = 8.0        # gpu_memory_target_in_gb (nnUNetv2_plan_experiment -gpu_memory_target)
    plans_name: str = "nnUNetPlans"
    preprocessor_name: str = "DefaultPreprocessor"
    base_num_features: int = 32              # UNet_base_num_features
    max_features_2d: int = 512               # UNet_max_features_2d
    reference_val_2d: float = 85000000       # UNet_reference_val_2d
    reference_val_corresp_gb: float = 8      # UNet_reference_val_corresp_GB
    reference_val_corresp_bs_2d: int = 12    # UNet_reference_val_corresp_bs_2d
    featuremap_min_edge_length: int = 4      # UNet_featuremap_min_edge_length
    max_numpool: int = 999999
    blocks_per_stage_encoder: tuple[int, ...] = (2,) * 14
    blocks_per_stage_decoder: tuple[int, ...] = (2,) * 13
    min_batch_size: int = 2                  # UNet_min_batch_size
    max_dataset_covered: float = 0.05        # at most 5% of the dataset's voxels in one batch
    anisotropy_threshold: float = ANISO_THRESHOLD
    initial_patch_area: int = 2048 ** 2      # the 2D initial patch has this many pixels before clipping


# ------------------------------------------------------------------------------------------------ topology
def pad_shape(shape: Sequence[int], must_be_divisible_by: Sequence[int]) -> np.ndarray:
    """network_topology.pad_shape: each axis rounded up to a multiple of its divisor."""
    return np.array([s if s % d == 0 else s + d - s % d for s, d in zip(shape, must_be_divisible_by)]).astype(int)


def get_pool_and_conv_props(spacing: Sequence[float], patch_size: Sequence[int], min_feature_map_size: int,
                            max_numpool: int) -> tuple[list[int], tuple, tuple, tuple, np.ndarray]:
    """network_topology.get_pool_and_conv_props: pool an axis (stride 2) while its feature map is >= 2 *
    min_feature_map_size and its spacing is within 2x of the finest poolable one (a lone axis needs >= 3x);
    kernel 3 once an axis is within 2x of the finest spacing, else 1; a 3x3 bottleneck conv at the end.

    Returns (pools per axis, strides per stage (first (1, 1)), kernel sizes per stage, padded patch size,
    must_be_divisible_by)."""
    dim = len(spacing)
    spacing_now = [float(s) for s in spacing]
    size_now = [float(s) for s in patch_size]
    strides: list[list[int]] = [[1] * dim]
    kernels: list[list[int]] = []
    num_pool = [0] * dim
    kernel = [1] * dim
    while True:
        axes = [i for i in range(dim) if size_now[i] >= 2 * min_feature_map_size]
        if not axes:
            break
        finest = min(spacing_now[i] for i in axes)
        axes = [i for i in axes if spacing_now[i] / finest < 2 and num_pool[i] < max_numpool]
        if len(axes) == 1 and size_now[axes[0]] < 3 * min_feature_map_size:
            break
        if not axes:
            break
        kernel = [3 if k == 3 or spacing_now[d] / min(spacing_now) < 2 else 1 for d, k in enumerate(kernel)]
        stride = [1] * dim
        for a in axes:
            stride[a] = 2
            num_pool[a] += 1
            spacing_now[a] *= 2
            size_now[a] = float(np.ceil(size_now[a] / 2))
        strides.append(stride)
        kernels.append(list(kernel))
    divisible = 2 ** np.array(num_pool)
    kernels.append([3] * dim)
    return (num_pool, tuple(tuple(s) for s in strides), tuple(tuple(k) for k in kernels),
            tuple(int(p) for p in pad_shape(patch_size, divisible)), divisible)


def conv_feature_map_size(patch_size: Sequence[int], features_per_stage: Sequence[int],
                          strides: Sequence[Sequence[int]], n_conv_per_stage: Sequence[int],
                          n_conv_per_stage_decoder: Sequence[int], num_classes: int,
                          deep_supervision: bool = False) -> int:
    """PlainConvUNet.compute_conv_feature_map_size (dynamic_network_architectures): number of output values of
    every conv / transposed conv / segmentation layer of the U-Net for one input patch (nnU-Net's VRAM proxy)."""
    size = [int(s) for s in patch_size]
    total = 0
    skips = []
    for s, (stride, feats, n_conv) in enumerate(zip(strides, features_per_stage, n_conv_per_stage)):
        size = [a // b for a, b in zip(size, stride)]
        total += int(n_conv) * int(feats) * int(np.prod(size, dtype=np.int64))
        if s < len(strides) - 1:
            skips.append((list(size), int(feats)))
    for s, n_conv in enumerate(n_conv_per_stage_decoder):
        size, feats = skips[-(s + 1)]
        vox = int(np.prod(size, dtype=np.int64))
        total += int(n_conv) * feats * vox + feats * vox  # conv blocks + transposed conv
        if deep_supervision or s == len(n_conv_per_stage_decoder) - 1:
            total += int(num_classes) * vox
    return total


# ------------------------------------------------------------------------------------- dataset-level rules
def target_spacing(fingerprint: Mapping[str, Any], threshold: float = ANISO_THRESHOLD) -> np.ndarray:
    """determine_fullres_target_spacing: the median spacing, except for an axis that is both > 3x coarser
    and has < 1/3 of the voxels of the others: its 10th percentile, but not below the other axes' spacing."""
    spacings = np.vstack(fingerprint["spacings"])
    target = np.percentile(spacings, 50, 0)
    target_size = np.percentile(np.vstack(fingerprint["shapes_after_crop"]), 50, 0)
    worst = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != worst]
    other_spacings = [target[i] for i in others]
    aniso_spacing = target[worst] > threshold * max(other_spacings)
    aniso_voxels = target_size[worst] * threshold < min(target_size[i] for i in others)
    if aniso_spacing and aniso_voxels:
        coarse = np.percentile(spacings[:, worst], 10)
        if coarse < max(other_spacings):
            coarse = max(max(other_spacings), coarse) + 1e-5
        target[worst] = coarse
    return target


def transpose_axes(spacing: Sequence[float]) -> tuple[list[int], list[int]]:
    """determine_transpose: (forward, backward); forward puts the coarsest axis first."""
    first = int(np.argmax(spacing))
    forward = [first] + [i for i in range(len(spacing)) if i != first]
    backward = [forward.index(i) for i in range(len(spacing))]
    return forward, backward


def normalization_schemes(channel_names: Mapping[str, str], median_relative_size_after_cropping: float
                          ) -> tuple[list[str], list[bool]]:
    """Scheme per channel (by channel name) and use_mask_for_norm (cropping kept < 3/4 of the image)."""
    schemes = [scheme_for_channel(n) for n in channel_names.values()]
    if median_relative_size_after_cropping < 3 / 4.0:
        use_mask = [bool(s.leaves_outside_at_zero) for s in schemes]
    else:
        use_mask = [False] * len(schemes)
    return [s.name for s in schemes], use_mask


def _resampling() -> dict[str, Any]:
    """determine_resampling / determine_segmentation_softmax_export_fn."""
    def kw(is_seg: bool, order: int) -> dict[str, Any]:
        return {"is_seg": is_seg, "order": order, "order_z": 0, "force_separate_z": None}

    name = "resample_data_or_seg_to_shape"
    return {"resampling_fn_data": name, "resampling_fn_seg": name,
            "resampling_fn_data_kwargs": kw(False, 3), "resampling_fn_seg_kwargs": kw(True, 1),
            "resampling_fn_probabilities": name, "resampling_fn_probabilities_kwargs": kw(False, 1)}


# ------------------------------------------------------------------------------------------- configuration
def _architecture(dim: int, strides: tuple, kernels: tuple, s: PlannerSettings) -> dict[str, Any]:
    n = len(strides)
    return {
        "network_class_name": UNET_CLASS,
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": [min(s.max_features_2d, s.base_num_features * 2 ** i) for i in range(n)],
            "conv_op": CONV_OPS[dim],
            "kernel_sizes": [list(k) for k in kernels],
            "strides": [list(t) for t in strides],
            "n_conv_per_stage": list(s.blocks_per_stage_encoder[:n]),
            "n_conv_per_stage_decoder": list(s.blocks_per_stage_decoder[:n - 1]),
            "conv_bias": True,
            "norm_op": NORM_OPS[dim],
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _estimate(patch: Sequence[int], arch: Mapping[str, Any], num_classes: int) -> int:
    kw = arch["arch_kwargs"]
    return conv_feature_map_size(patch, kw["features_per_stage"], kw["strides"], kw["n_conv_per_stage"],
                                 kw["n_conv_per_stage_decoder"], num_classes)


def plan_2d(spacing: Sequence[float], median_shape: Sequence[float], approximate_n_voxels_dataset: float,
            num_classes: int, settings: PlannerSettings = PlannerSettings()) -> dict[str, Any]:
    """get_plans_for_configuration for a 2D spacing: data_identifier, batch/patch size and the architecture.

    `num_classes` = len(dataset.json labels) (nnU-Net passes that to the VRAM estimate)."""
    s = settings
    spacing = [float(x) for x in spacing]
    if len(spacing) != 2 or min(spacing) <= 0:
        raise ValueError(f"the 2d configuration needs two positive spacings, got {spacing}")
    median = [float(x) for x in median_shape][:2]
    inv = 1 / np.array(spacing)
    initial = [round(i) for i in inv * (s.initial_patch_area / np.prod(inv)) ** (1 / 2)]
    initial = np.array([min(i, j) for i, j in zip(initial, median)])

    def topology(patch):
        return get_pool_and_conv_props(spacing, patch, s.featuremap_min_edge_length, s.max_numpool)

    _, strides, kernels, patch, divisible = topology(initial)
    arch = _architecture(2, strides, kernels, s)
    estimate = _estimate(patch, arch, num_classes)
    reference = s.reference_val_2d * (s.gpu_memory_target_gb / s.reference_val_corresp_gb)
    ref_bs = s.reference_val_corresp_bs_2d
    while estimate / ref_bs * 2 > reference:  # at least batch size 2 must fit the reference
        axis = int(np.argsort([i / j for i, j in zip(patch, median)], kind="stable")[-1])
        # shrink by the divisibility of the one-step-smaller patch, so no valid size is skipped
        smaller = list(patch)
        smaller[axis] -= int(divisible[axis])
        divisible_smaller = topology(smaller)[4]
        patch = list(patch)
        patch[axis] -= int(divisible_smaller[axis])
        _, strides, kernels, patch, divisible = topology(patch)
        arch = _architecture(2, strides, kernels, s)
        estimate = _estimate(patch, arch, num_classes)
    batch_size = round(reference / estimate * ref_bs)
    bs_5_percent = round(approximate_n_voxels_dataset * s.max_dataset_covered / np.prod(patch, dtype=np.float64))
    batch_size = max(min(batch_size, bs_5_percent), s.min_batch_size)
    return {
        "data_identifier": f"{s.plans_name}_2d",
        "preprocessor_name": s.preprocessor_name,
        "batch_size": int(batch_size),
        "patch_size": [int(p) for p in patch],
        "median_image_size_in_voxels": median,
        "spacing": spacing,
        "architecture": arch,
    }


def plans_dict(dataset_json: Mapping[str, Any], fingerprint: Mapping[str, Any], dataset_name: str,
               image_reader_writer: str, settings: PlannerSettings = PlannerSettings()) -> dict[str, Any]:
    """ExperimentPlanner.plan_experiment: nnUNetPlans.json's content with the '2d' configuration.

    `fingerprint` as written to dataset_fingerprint.json (radgan_jax.seg.fingerprint.aggregate)."""
    channel_names = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not channel_names:
        raise ValueError("dataset.json has no channel_names")
    spacings, shapes = fingerprint["spacings"], fingerprint["shapes_after_crop"]
    if not spacings or len(spacings) != len(shapes):
        raise ValueError(f"fingerprint: {len(spacings)} spacings for {len(shapes)} shapes")
    fullres = target_spacing(fingerprint, settings.anisotropy_threshold)
    forward, backward = transpose_axes(fullres)
    new_shapes = [compute_new_shape(shape, sp, fullres) for sp, shape in zip(spacings, shapes)]
    median_shape = np.median(new_shapes, 0)[forward]
    n_voxels = float(np.prod(median_shape, dtype=np.float64) * dataset_json["numTraining"])

    cfg = plan_2d(fullres[forward][1:], median_shape[1:], n_voxels, len(dataset_json["labels"]), settings)
    schemes, use_mask = normalization_schemes(channel_names, fingerprint["median_relative_size_after_cropping"])
    arch = cfg.pop("architecture")
    cfg.update({"normalization_schemes": schemes, "use_mask_for_norm": use_mask, **_resampling(),
                "architecture": arch, "batch_dice": True})
    return {
        "dataset_name": dataset_name,
        "plans_name": settings.plans_name,
        "original_median_spacing_after_transp": [float(i) for i in np.median(spacings, 0)[forward]],
        "original_median_shape_after_transp": [int(round(i)) for i in np.median(shapes, 0)[forward]],
        "image_reader_writer": image_reader_writer,
        "transpose_forward": forward,
        "transpose_backward": backward,
        "configurations": {"2d": cfg},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(k): dict(v) for k, v in fingerprint["foreground_intensity_properties_per_channel"].items()},
    }
