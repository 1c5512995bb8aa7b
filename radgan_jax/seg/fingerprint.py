"""nnU-Net v2's dataset fingerprint (nnunetv2/experiment_planning/dataset_fingerprint/fingerprint_extractor.py).

Per case (`analyze_case`, nnU-Net's DatasetFingerprintExtractor.analyze_case): crop to the nonzero region, then
record the spacing, the shape after cropping, the cropped/original size ratio, and a sample of foreground
intensities per channel (voxels with seg > 0 after cropping, drawn with replacement,
np.random.RandomState(1234) restarted for every case, `samples_per_case(num_cases)` = 1e8 // num_cases of them).
`aggregate` concatenates the samples in case order and computes mean / median / std / min / max /
percentile_99_5 / percentile_00_5 per channel, and the median size ratio. The legacy numpy RNG (not a jax
key) is deliberate: it is what makes our statistics equal nnU-Net's.

`aggregate` returns the dict nnU-Net writes as dataset_fingerprint.json (keys spacings, shapes_after_crop,
foreground_intensity_properties_per_channel with '0', '1', ... keys, median_relative_size_after_cropping).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from radgan_jax.seg.preprocessing import crop_to_nonzero

NUM_FOREGROUND_SAMPLES = 10e7  # fingerprint_extractor.py: num_foreground_voxels_for_intensitystats (1e8 in total)
SEED = 1234
_PERCENTILES = np.array((0.5, 50.0, 99.5))


@dataclasses.dataclass
class CaseFingerprint:
    shape_after_crop: tuple[int, ...]
    spacing: list[float]
    foreground_samples: list[np.ndarray]   # one array per channel (float32; float64 empty if no foreground)
    relative_size_after_cropping: float


def samples_per_case(num_cases: int) -> int:
    """Foreground intensities sampled per case: int(1e8 // num_cases)."""
    if num_cases < 1:
        raise ValueError(f"a fingerprint needs at least one case, got {num_cases}")
    return int(NUM_FOREGROUND_SAMPLES // num_cases)


def foreground_samples(data: np.ndarray, seg: np.ndarray, num_samples: int, seed: int = SEED) -> list[np.ndarray]:
    """Per channel, `num_samples` intensities drawn with replacement from the voxels where seg > 0.

    A case without foreground contributes an empty float64 array (nnU-Net appends []), which makes the
    concatenated samples float64 - kept, because it changes the float32 statistics nnU-Net computes.
    """
    if data.ndim != 4 or seg.ndim != 4:
        raise ValueError(f"expected data (C, X, Y, Z) and seg (1, X, Y, Z), got {data.shape} and {seg.shape}")
    if np.isnan(seg).any() or np.isnan(data).any():
        raise ValueError("image or segmentation contains NaN values")
    rs = np.random.RandomState(seed)
    foreground = seg[0] > 0
    out = []
    for c in range(data.shape[0]):
        pixels = data[c][foreground]
        out.append(rs.choice(pixels, num_samples, replace=True) if pixels.size else np.zeros(0, np.float64))
    return out


def analyze_case(data: np.ndarray, seg: np.ndarray, spacing: Sequence[float], num_samples: int) -> CaseFingerprint:
    """One case (data (C, Z, Y, X) float32 as read, seg (1, Z, Y, X)) -> its part of the fingerprint."""
    cropped, seg_cropped, _ = crop_to_nonzero(data, seg)
    samples = foreground_samples(cropped, seg_cropped, num_samples)
    before, after = data.shape[1:], cropped.shape[1:]
    return CaseFingerprint(tuple(int(s) for s in after), [float(s) for s in spacing], samples,
                           float(np.prod(after) / np.prod(before)))


def intensity_statistics(samples: np.ndarray) -> dict[str, float]:
    """mean / median / std / min / max / percentile_99_5 / percentile_00_5 of one channel's samples."""
    if samples.size == 0:
        raise ValueError("no foreground voxels in any case: the intensity statistics need labelled foreground")
    p005, median, p995 = np.percentile(samples, _PERCENTILES)
    return {"mean": float(np.mean(samples)), "median": float(median), "std": float(np.std(samples)),
            "min": float(np.min(samples)), "max": float(np.max(samples)),
            "percentile_99_5": float(p995), "percentile_00_5": float(p005)}


def aggregate(cases: Sequence[CaseFingerprint], num_channels: int) -> dict[str, Any]:
    """The dataset fingerprint (nnU-Net's dataset_fingerprint.json content) from per-case results in case order."""
    if not cases:
        raise ValueError("a fingerprint needs at least one case")
    stats = {}
    for c in range(num_channels):
        parts = [case.foreground_samples[c] for case in cases]
        dtype = np.result_type(*parts)
        samples = np.empty(sum(p.size for p in parts), dtype=dtype)
        pos = 0
        for p in parts:
            samples[pos:pos + p.size] = p
            pos += p.size
        stats[str(c)] = intensity_statistics(samples)
        del samples
    return {
        "spacings": [list(case.spacing) for case in cases],
        "shapes_after_crop": [list(case.shape_after_crop) for case in cases],
        "foreground_intensity_properties_per_channel": stats,
        "median_relative_size_after_cropping": float(np.median([case.relative_size_after_cropping for case in cases])),
    }
