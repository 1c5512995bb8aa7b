"""nnU-Net v2's DefaultPreprocessor (nnunetv2/preprocessing/preprocessors/default_preprocessor.py, run_case_npy).

Per case: transpose -> crop to the nonzero region -> normalize -> resample to the configuration's spacing ->
sample foreground locations (for oversampling) -> seg to int8 (int16 if a label exceeds 127). numpy on the
host, run once per dataset; the trainer only reads the result.

  * crop_to_nonzero (preprocessing/cropping/cropping.py): nonzero mask = any channel != 0, holes filled
    (scipy binary_fill_holes in the array's own dimensionality: a (1, H, W) 2D image has no enclosed holes,
    as in nnU-Net), cropped to its bounding box; seg gets -1 where it is 0 outside the mask.
  * resampling (preprocessing/resampling/default_resampling.py, resample_data_or_seg_to_shape): skimage-style
    resize (scipy.ndimage.zoom, grid_mode, edge padding, no anti-aliasing, clipped to the input range),
    order 3 for data; for segmentations every label's indicator is resized (order 1) and each voxel takes the
    label with the highest score, ties going to the nearest-neighbour label (batchgenerators'
    resize_segmentation). Anisotropic spacing (max/min > 3) resamples slice by slice in-plane and with order_z
    along the low-resolution axis.
  * class locations (_sample_foreground_locations): per foreground label up to 10000 voxel coordinates, at
    least 1% of the label's voxels, drawn without replacement with np.random.RandomState(1234). nnU-Net's
    legacy numpy RNG is kept on purpose (not a jax key): it is what makes our locations equal nnU-Net's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from radgan_jax.seg.normalization import normalize

ANISO_THRESHOLD = 3  # nnunetv2/configuration.py


# ----------------------------------------------------------------------------------------------- cropping
def create_nonzero_mask(data: np.ndarray) -> np.ndarray:
    """True where any channel of data (C, ...) is nonzero, holes filled."""
    if data.ndim not in (3, 4):
        raise ValueError(f"data must be (C, X, Y) or (C, X, Y, Z), got shape {data.shape}")
    return ndimage.binary_fill_holes(np.any(data != 0, axis=0))


def bbox_from_mask(mask: np.ndarray) -> list[list[int]]:
    """Half-open [start, end) per axis of the True region; the whole axis where the mask is empty (acvl_utils)."""
    out = []
    for ax in range(mask.ndim):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != ax)))
        out.append([int(hit[0]), int(hit[-1]) + 1] if hit.size else [0, int(mask.shape[ax])])
    return out


def crop_to_nonzero(data: np.ndarray, seg: np.ndarray | None = None, nonzero_label: int = -1
                    ) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """(cropped data, seg with `nonzero_label` outside the nonzero mask, bbox). Without seg, an int8 map of
    0 inside / -1 outside is returned as seg."""
    mask = create_nonzero_mask(data)
    bbox = bbox_from_mask(mask)
    slicer = tuple(slice(a, b) for a, b in bbox)
    mask = mask[slicer][None]
    data = data[(slice(None), *slicer)]
    if seg is None:
        return data, np.where(mask, np.int8(0), np.int8(nonzero_label)), bbox
    seg = seg[(slice(None), *slicer)].copy()
    seg[(seg == 0) & ~mask] = nonzero_label
    return data, seg, bbox


# --------------------------------------------------------------------------------------------- resampling
def compute_new_shape(old_shape: Sequence[int], old_spacing: Sequence[float], new_spacing: Sequence[float]
                      ) -> np.ndarray:
    if not len(old_shape) == len(old_spacing) == len(new_spacing):
        raise ValueError(f"shape {old_shape}, spacing {old_spacing} and new spacing {new_spacing} differ in length")
    return np.array([int(round(i / j * k)) for i, j, k in zip(old_spacing, new_spacing, old_shape)])


def _lowres_axes(spacing: Sequence[float]) -> np.ndarray:
    return np.where(max(spacing) / np.array(spacing) == 1)[0]


def separate_z_axis(current_spacing: Sequence[float], new_spacing: Sequence[float],
                    force_separate_z: bool | None = None, threshold: float = ANISO_THRESHOLD) -> int | None:
    """default_resampling.determine_do_sep_z_and_axis: the low-resolution axis to resample on its own, or None."""
    if force_separate_z is not None:
        axes = _lowres_axes(current_spacing) if force_separate_z else None
    elif max(current_spacing) / min(current_spacing) > threshold:
        axes = _lowres_axes(current_spacing)
    elif max(new_spacing) / min(new_spacing) > threshold:
        axes = _lowres_axes(new_spacing)
    else:
        axes = None
    if axes is None or len(axes) != 1:  # 2 or 3 equally coarse axes: no separate axis (nnU-Net's rule)
        return None
    return int(axes[0])


def resize(image: np.ndarray, new_shape: Sequence[int], order: int) -> np.ndarray:
    """skimage.transform.resize(image, new_shape, order, mode='edge', anti_aliasing=False) of float64 input:
    scipy zoom with grid_mode (pixel areas, not centres, are aligned) and the output clipped to the input range."""
    image = np.asarray(image, dtype=np.float64)
    factors = np.divide(image.shape, tuple(new_shape))
    out = ndimage.zoom(image, [1 / f for f in factors], order=order, mode="nearest", grid_mode=True)
    np.clip(out, np.asarray(image.min()), np.asarray(image.max()), out=out)
    return out


def resize_segmentation(seg: np.ndarray, new_shape: Sequence[int], order: int) -> np.ndarray:
    """batchgenerators resize_segmentation: per-label indicator resize, per-voxel argmax (first label on ties),
    except where the nearest-neighbour label shares the top score: then that label."""
    if order == 0:
        return resize(seg, new_shape, 0)
    labels = np.unique(seg)
    if len(labels) == 1:
        return np.full(tuple(new_shape), labels[0], dtype=np.float64)
    scores = np.stack([resize((seg == c).astype(np.float64), new_shape, order) for c in labels])
    win = np.argmax(scores, axis=0)
    best = np.take_along_axis(scores, win[None], 0)[0]
    nearest = resize(seg, new_shape, 0)
    nn_idx = np.minimum(np.searchsorted(labels, nearest), len(labels) - 1)
    nn_valid = labels[nn_idx] == nearest
    nn_score = np.take_along_axis(scores, nn_idx[None], 0)[0]
    use_nn = nn_valid & (nn_score == best) & (best > 0)
    return labels[np.where(use_nn, nn_idx, win)]


def resample_data_or_seg(data: np.ndarray, new_shape: Sequence[int], is_seg: bool = False, axis: int | None = None,
                         order: int = 3, order_z: int = 0) -> np.ndarray:
    """Resample every channel of data (C, X, Y, Z) to new_shape; `axis` = the separately resampled axis."""
    if data.ndim != 4:
        raise ValueError(f"data must be (C, X, Y, Z), got shape {data.shape}")
    new_shape = np.array(new_shape)
    shape = np.array(data.shape[1:])
    if np.all(shape == new_shape):
        return data
    fn = resize_segmentation if is_seg else resize
    out = np.zeros((data.shape[0], *new_shape), dtype=data.dtype)
    for c in range(data.shape[0]):
        channel = data[c].astype(np.float64)
        if axis is None:
            out[c] = fn(channel, new_shape, order)
            continue
        in_plane = [int(s) for i, s in enumerate(new_shape) if i != axis]
        slices = [fn(np.take(channel, k, axis=axis), in_plane, order) for k in range(shape[axis])]
        stacked = np.stack(slices, axis=axis)
        if shape[axis] == new_shape[axis]:
            out[c] = stacked
            continue
        # along the coarse axis: map_coordinates of order_z on a centre-aligned grid (nnU-Net's skimage copy)
        grid = np.mgrid[tuple(slice(0, int(n)) for n in new_shape)].astype(np.float64)
        for d in range(3):
            grid[d] = stacked.shape[d] / float(new_shape[d]) * (grid[d] + 0.5) - 0.5
        if not is_seg or order_z == 0:
            out[c] = ndimage.map_coordinates(stacked, grid, order=order_z, mode="nearest")
        else:
            for cl in np.unique(stacked):
                hit = ndimage.map_coordinates((stacked == cl).astype(np.float64), grid, order=order_z, mode="nearest")
                out[c][np.round(hit) > 0.5] = cl
    return out


def resample_data_or_seg_to_shape(data: np.ndarray, new_shape: Sequence[int], current_spacing: Sequence[float],
                                  new_spacing: Sequence[float], is_seg: bool = False, order: int = 3,
                                  order_z: int = 0, force_separate_z: bool | None = False,
                                  separate_z_anisotropy_threshold: float = ANISO_THRESHOLD) -> np.ndarray:
    """nnU-Net's resampling function of the same name (the plans file names it in resampling_fn_data/seg)."""
    axis = separate_z_axis(current_spacing, new_spacing, force_separate_z, separate_z_anisotropy_threshold)
    return resample_data_or_seg(data, new_shape, is_seg, axis, order, order_z)


# Resampling functions by the name a plans file stores (resampling_fn_data / resampling_fn_seg).
RESAMPLING_FNS: dict[str, Callable[..., np.ndarray]] = {
    "resample_data_or_seg_to_shape": resample_data_or_seg_to_shape,
}


# --------------------------------------------------------------------------------------- class locations
def foreground_classes(labels: Mapping[str, Any]) -> list[int | tuple[int, ...]]:
    """LabelManager: the foreground labels (or regions) class locations are collected for, plus
    [-1, *all labels] when dataset.json declares an 'ignore' label."""
    values = {k: v for k, v in labels.items() if k != "ignore"}
    has_regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in values.values())
    if has_regions:
        out: list[int | tuple[int, ...]] = [tuple(int(i) for i in v) if isinstance(v, (list, tuple)) else int(v)
                                            for v in values.values()]
        out = [r for r in out if not (r == 0 or (isinstance(r, tuple) and set(r) == {0}))]
    else:
        flat = [int(i) for v in values.values() for i in (v if isinstance(v, (list, tuple)) else [v])]
        out = [i for i in sorted(set(flat)) if i != 0]
    if "ignore" in labels:
        flat = [int(i) for v in values.values() for i in (v if isinstance(v, (list, tuple)) else [v])]
        out.append(tuple([-1, *sorted(set(flat))]))
    return out


def sample_foreground_locations(seg: np.ndarray, classes: Sequence[int | tuple[int, ...]], seed: int = 1234,
                                min_num_samples: int = 10000, min_percent_coverage: float = 0.01
                                ) -> dict[int | tuple[int, ...], np.ndarray]:
    """Per class (label or region): coordinates (N, seg.ndim) of voxels of that class. All of them up to
    min_num_samples, else min_num_samples of them but at least min_percent_coverage of the class's voxels.
    Draw order and RNG as nnU-Net's _sample_foreground_locations, so the coordinates are the same."""
    rs = np.random.RandomState(seed)
    wanted = sorted({int(i) for c in classes for i in (c if isinstance(c, tuple) else (c,))})
    valid = np.isin(seg, np.array(wanted, dtype=np.int32))
    coords = np.argwhere(valid)
    values = seg[valid]
    locs: dict[int | tuple[int, ...], np.ndarray] = {}
    order = np.argsort(values, kind="stable")
    values, coords = values[order], coords[order]
    present, starts, counts = np.unique(values, return_index=True, return_counts=True)
    ranges = {int(v): (int(s), int(n)) for v, s, n in zip(present, starts, counts)}
    for c in classes:
        key = tuple(int(i) for i in c) if isinstance(c, tuple) else int(c)
        parts = [ranges[lab] for lab in (key if isinstance(key, tuple) else (key,)) if lab in ranges]
        if not parts:
            locs[key] = np.zeros((0, seg.ndim), dtype=np.int64)
            continue
        sizes = np.array([n for _, n in parts])
        total = int(sizes.sum())
        n_pick = max(min(min_num_samples, total), int(np.ceil(total * min_percent_coverage)))
        offsets = rs.choice(total, n_pick, replace=False)
        cum = np.cumsum(sizes)
        which = np.searchsorted(cum, offsets, side="right")
        first = np.array([s for s, _ in parts])
        locs[key] = coords[first[which] + offsets - np.concatenate(([0], cum[:-1]))[which]]
    return locs


# ------------------------------------------------------------------------------------------------ the case
def preprocess_case(data: np.ndarray, seg: np.ndarray | None, properties: Mapping[str, Any],
                    plans: Mapping[str, Any], configuration: str, labels: Mapping[str, Any]
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """DefaultPreprocessor.run_case_npy for one case of a raw dataset.

    data (C, Z, Y, X) float, seg (1, Z, Y, X) or None, properties with 'spacing' (Z, Y, X); `plans` a dict in
    nnUNetPlans.json shape (radgan_jax.seg.planner.plans_dict), `labels` dataset.json's labels.
    Returns (data float32, seg int8/int16, properties + shape_before_cropping, bbox_used_for_cropping,
    shape_after_cropping_and_before_resampling, class_locations when seg was given).
    """
    cfg = plans["configurations"][configuration]
    props = dict(properties)
    data = np.array(data, dtype=np.float32)
    if seg is not None:
        if tuple(data.shape[1:]) != tuple(seg.shape[1:]):
            raise ValueError(f"image shape {data.shape[1:]} != segmentation shape {seg.shape[1:]}")
        seg = np.array(seg)
    has_seg = seg is not None
    tf = list(plans["transpose_forward"])
    data = data.transpose([0, *[i + 1 for i in tf]])
    if seg is not None:
        seg = seg.transpose([0, *[i + 1 for i in tf]])
    original_spacing = [props["spacing"][i] for i in tf]

    props["shape_before_cropping"] = tuple(int(s) for s in data.shape[1:])
    data, seg, bbox = crop_to_nonzero(data, seg)
    props["bbox_used_for_cropping"] = bbox
    props["shape_after_cropping_and_before_resampling"] = tuple(int(s) for s in data.shape[1:])

    target_spacing = list(cfg["spacing"])
    if len(target_spacing) < data.ndim - 1:  # 2d configuration: the spacing between slices is kept
        target_spacing = [original_spacing[0], *target_spacing]
    new_shape = compute_new_shape(data.shape[1:], original_spacing, target_spacing)

    # normalization before resampling (nnU-Net: a resampled nonzero mask would no longer fit the image)
    data = normalize(data, seg, list(cfg["normalization_schemes"]), list(cfg["use_mask_for_norm"]),
                     plans["foreground_intensity_properties_per_channel"])
    data = RESAMPLING_FNS[cfg["resampling_fn_data"]](data, new_shape, original_spacing, target_spacing,
                                                     **cfg["resampling_fn_data_kwargs"])
    seg = RESAMPLING_FNS[cfg["resampling_fn_seg"]](seg, new_shape, original_spacing, target_spacing,
                                                   **cfg["resampling_fn_seg_kwargs"])
    if has_seg:
        props["class_locations"] = sample_foreground_locations(seg, foreground_classes(labels))
    seg = seg.astype(np.int16 if np.max(seg) > 127 else np.int8)
    return data.astype(np.float32, copy=False), seg, props
