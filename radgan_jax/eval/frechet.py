"""Fréchet distance between two feature distributions (FID when the features are Inception's), as StyleGAN-XL
computes it (`metrics/frechet_inception_distance.py`, `metrics/metric_utils.FeatureStats`).

Feature statistics accumulate in float64 as raw sums (sum x, sum x x^T), so they can be built batch by batch,
on any number of hosts, and merged exactly; the covariance is the *biased* one (divided by n), as the
original's `get_mean_cov`. The distance is `|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))` with scipy's
`sqrtm` and the real part taken, exactly as the original (which follows Heusel et al.'s TTUR).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.linalg


@dataclasses.dataclass
class FeatureStats:
    """Running float64 sums of features (rows = samples); `merge` combines stats from other batches/hosts."""

    num_features: int
    num_items: int = 0
    raw_mean: np.ndarray | None = None
    raw_cov: np.ndarray | None = None
    capture_all: bool = False  # also keep every row (float32), for KID (metric_utils.FeatureStats.capture_all)
    rows: list[np.ndarray] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.raw_mean is None:
            self.raw_mean = np.zeros([self.num_features], np.float64)
        if self.raw_cov is None:
            self.raw_cov = np.zeros([self.num_features, self.num_features], np.float64)

    def append(self, x: np.ndarray) -> None:
        x64 = np.asarray(x, np.float64)
        if x64.ndim != 2 or x64.shape[1] != self.num_features:
            raise ValueError(f"features must be (N, {self.num_features}), got {x64.shape}")
        if not np.all(np.isfinite(x64)):
            raise ValueError("features hold NaN or inf (a diverged generator?)")
        self.num_items += x64.shape[0]
        self.raw_mean += x64.sum(axis=0)
        self.raw_cov += x64.T @ x64
        if self.capture_all:
            self.rows.append(np.asarray(x, np.float32))

    def merge(self, other: FeatureStats) -> None:
        if other.num_features != self.num_features:
            raise ValueError(f"cannot merge stats of {other.num_features} features into {self.num_features}")
        self.num_items += other.num_items
        self.raw_mean += other.raw_mean
        self.raw_cov += other.raw_cov
        if self.capture_all:
            self.rows.extend(other.rows)

    def get_all(self) -> np.ndarray:
        """Every captured row [num_items, num_features] (needs capture_all)."""
        if not self.capture_all:
            raise ValueError("these FeatureStats did not capture rows (capture_all=False)")
        return np.concatenate(self.rows) if self.rows else np.zeros((0, self.num_features), np.float32)

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.num_items < 2:
            raise ValueError(f"need at least 2 samples for a covariance, have {self.num_items}")
        mean = self.raw_mean / self.num_items
        cov = self.raw_cov / self.num_items - np.outer(mean, mean)
        return mean, cov


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2), computed as the official FID code does."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}")
    m = np.square(mu1 - mu2).sum()
    s = scipy.linalg.sqrtm(sigma1 @ sigma2)  # the original passes disp=False (deprecated in SciPy 1.17): same value
    return float(np.real(m + np.trace(sigma1 + sigma2 - s * 2)))


def frechet_distance_of_stats(a: FeatureStats, b: FeatureStats) -> float:
    return frechet_distance(*a.mean_cov(), *b.mean_cov())
