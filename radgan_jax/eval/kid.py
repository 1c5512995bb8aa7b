"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs") as StyleGAN computes `kid50k_full`
(metrics/kernel_inception_distance.py): the unbiased MMD^2 with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over `num_subsets` = 100 random subsets of m = min(n_real, n_fake, 1000)
rows of each set (drawn without replacement). The original draws with the global numpy RNG; we use a seeded
generator so that a metric is a function of the features alone.
"""

from __future__ import annotations

import numpy as np

NUM_SUBSETS = 100  # kernel_inception_distance.py defaults
MAX_SUBSET_SIZE = 1000


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, num_subsets: int = NUM_SUBSETS,
                              max_subset_size: int = MAX_SUBSET_SIZE, seed: int = 0) -> float:
    """KID of two feature sets [n, d] (rows = samples)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"KID needs two [n, d] feature sets of one width, got {real.shape} and {fake.shape}")
    m = min(real.shape[0], fake.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {real.shape[0]} real and {fake.shape[0]} fake")
    n = real.shape[1]
    gen = np.random.default_rng(seed)
    t = 0.0
    for _ in range(num_subsets):
        x = fake[gen.choice(fake.shape[0], m, replace=False)]
        y = real[gen.choice(real.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)


__all__ = ["kernel_inception_distance"]
