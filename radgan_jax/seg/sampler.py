"""Training patches as nnU-Net v2 draws them (nnunetv2/training/dataloading/data_loader.py, `nnUNetDataLoader`).

One batch = `batch_size` cases drawn uniformly WITH replacement (batchgenerators' infinite `get_indices`). The
last `round(batch_size * oversample_foreground_percent)` positions of every batch (0.33: the last 4 of 12) are
forced to contain foreground: a class is picked uniformly among the classes present in the case, then one of its
stored `class_locations` (sampled at preprocessing), and the patch is centred on it (clamped at the lower
bound only, as the original). Other positions take a uniform random box, allowed to stick out of the image by
half of (initial patch - final patch) on each side so that augmentation can rotate the border in. Outside the
image data is padded with 0 and seg with -1 (`crop_and_pad_nd`).

2D cases are kept in nnU-Net's pseudo-3D layout (data [C, 1, H, W], patch (1, ph, pw)) so that the sequence of
random draws is exactly the original's: with `rng = np.random.RandomState(s)` this sampler returns the same
patches as `nnUNetDataLoader.generate_train_batch()` after `np.random.seed(s)` (tests/seg/test_sampler.py).
The trainer derives `rng` from (seed, step, host), so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

OVERSAMPLE_FOREGROUND_PERCENT = 0.33  # nnUNetTrainer.oversample_foreground_percent


@dataclasses.dataclass
class SegCase:
    """A preprocessed case: data float32 [C, Z, H, W] (Z = 1 in 2D), seg int [1, Z, H, W], and
    class_locations {label (int, or a tuple for the annotated-region key): int array [n, 4] (c, z, y, x)}."""

    data: np.ndarray
    seg: np.ndarray
    class_locations: Mapping[Any, np.ndarray]


def crop_and_pad(image: np.ndarray, lbs: Sequence[int], ubs: Sequence[int], pad_value: float) -> np.ndarray:
    """The box [lbs, ubs) of the trailing axes of `image`; parts outside the image are `pad_value` (constant)."""
    lead = image.ndim - len(lbs)
    out = np.full(image.shape[:lead] + tuple(u - lo for lo, u in zip(lbs, ubs)), pad_value, image.dtype)
    src, dst = [slice(None)] * lead, [slice(None)] * lead
    for lo, u, n in zip(lbs, ubs, image.shape[lead:]):
        a, b = max(lo, 0), min(u, n)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out[tuple(dst)] = image[tuple(src)]
    return out


class PatchSampler:
    """`batch(rng) -> (data [B, C, ph, pw] float32, seg [B, 1, ph, pw] int16, case ids)` (2D patch sizes)."""

    def __init__(self, load_case: Callable[[str], SegCase], case_ids: Sequence[str], batch_size: int,
                 patch_size: Sequence[int], final_patch_size: Sequence[int], foreground_labels: Sequence[int],
                 oversample_foreground_percent: float = OVERSAMPLE_FOREGROUND_PERCENT,
                 has_ignore_label: bool = False) -> None:
        if not case_ids:
            raise ValueError("PatchSampler: no training cases")
        if len(patch_size) != 2 or len(final_patch_size) != 2:
            raise ValueError(f"2D patch sizes expected, got {patch_size} / {final_patch_size}")
        self.load_case = load_case
        self.case_ids = list(case_ids)
        self.batch_size = int(batch_size)
        self.patch_size = (1, *map(int, patch_size))  # pseudo-3D, as nnUNetDataLoader does for 2D
        self.need_to_pad = np.array(self.patch_size) - np.array((1, *map(int, final_patch_size)))
        self.oversample = float(oversample_foreground_percent)
        self.has_ignore = bool(has_ignore_label)
        self.annotated_key = tuple([-1, *map(int, foreground_labels)])  # label_manager.all_labels with bg

    def forced_foreground(self, position: int) -> bool:
        """`_oversample_last_XX_percent`: the last positions of the batch must show foreground."""
        return not position < round(self.batch_size * (1 - self.oversample))

    def bbox(self, shape: Sequence[int], force_fg: bool, class_locations: Mapping[Any, np.ndarray] | None,
             rng: np.random.RandomState) -> tuple[list[int], list[int]]:
        """`nnUNetDataLoader.get_bbox` with the same draws in the same order."""
        dim = len(shape)
        need = self.need_to_pad.copy()
        for d in range(dim):
            need[d] = max(need[d], self.patch_size[d] - shape[d])
        lbs = [-int(need[d]) // 2 for d in range(dim)]
        ubs = [int(shape[d] + need[d] // 2 + need[d] % 2 - self.patch_size[d]) for d in range(dim)]
        selected = None
        if not force_fg and not self.has_ignore:
            return self._box([rng.randint(lbs[d], ubs[d] + 1) for d in range(dim)])
        if not force_fg:  # ignore label present: centre on an annotated pixel
            selected = self.annotated_key if len(class_locations.get(self.annotated_key, ())) else None
        else:
            if class_locations is None:
                raise ValueError("foreground oversampling needs class_locations (run seg_plan's preprocessing)")
            eligible = [k for k in class_locations if len(class_locations[k]) > 0]
            if len(eligible) > 1 and self.annotated_key in eligible:
                eligible.remove(self.annotated_key)
            selected = eligible[rng.choice(len(eligible))] if eligible else None
        if selected is None:
            return self._box([rng.randint(lbs[d], ubs[d] + 1) for d in range(dim)])
        voxels = class_locations[selected]
        voxel = voxels[rng.choice(len(voxels))]
        return self._box([max(lbs[d], int(voxel[d + 1]) - self.patch_size[d] // 2) for d in range(dim)])

    def _box(self, lbs: list[int]) -> tuple[list[int], list[int]]:
        return [int(v) for v in lbs], [int(v) + p for v, p in zip(lbs, self.patch_size)]

    def batch(self, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray, list[str]]:
        keys = [str(k) for k in rng.choice(self.case_ids, self.batch_size, replace=True)]
        data_all, seg_all = [], []
        for j, key in enumerate(keys):
            case = self.load_case(key)
            lbs, ubs = self.bbox(case.data.shape[1:], self.forced_foreground(j), case.class_locations, rng)
            data_all.append(crop_and_pad(case.data, lbs, ubs, 0).astype(np.float32)[:, 0])
            seg_all.append(crop_and_pad(case.seg.astype(np.int16), lbs, ubs, -1)[:, 0])
        return np.stack(data_all), np.stack(seg_all), keys


def step_rng(seed: int, step: int, host: int = 0, purpose: int = 0) -> np.random.RandomState:
    """The sampler's RandomState for one (seed, step, host, purpose): independent streams, reproducible on resume.
    (`np.random.SeedSequence` mixes the four integers; RandomState then draws exactly as the legacy global RNG.)"""
    seq = np.random.SeedSequence([int(seed), int(step), int(host), int(purpose)])
    return np.random.RandomState(np.random.MT19937(seq))


__all__ = ["OVERSAMPLE_FOREGROUND_PERCENT", "PatchSampler", "SegCase", "crop_and_pad", "step_rng"]
