"""KID: StyleGAN's kid50k_full estimator equals the unbiased MMD^2 with the cubic kernel; behaves as a distance."""

from __future__ import annotations

import numpy as np
import pytest

from radgan_jax.eval.frechet import FeatureStats
from radgan_jax.eval.kid import kernel_inception_distance


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Independent reference: explicit double sums of k(a, b) = (a.b / d + 1)^3 (Binkowski et al., eq. 3)."""
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_one_full_subset_is_the_unbiased_mmd():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(30, 5)), rng.normal(0.5, 1.2, size=(30, 5))
    got = kernel_inception_distance(real, fake, num_subsets=1, max_subset_size=30)
    assert got == pytest.approx(_mmd2_unbiased(fake, real), rel=1e-10)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_the_shift():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(600, 16))
    same = kernel_inception_distance(real, rng.normal(size=(600, 16)), num_subsets=20, max_subset_size=300)
    near = kernel_inception_distance(real, rng.normal(0.3, 1, size=(600, 16)), num_subsets=20, max_subset_size=300)
    far = kernel_inception_distance(real, rng.normal(1.0, 1, size=(600, 16)), num_subsets=20, max_subset_size=300)
    assert abs(same) < 0.2 * near and near < far
    # deterministic by seed, and a different seed draws other subsets
    fake = rng.normal(0.3, 1, size=(600, 16))
    a = kernel_inception_distance(real, fake, num_subsets=5, max_subset_size=100, seed=3)
    assert a == kernel_inception_distance(real, fake, num_subsets=5, max_subset_size=100, seed=3)
    assert a != kernel_inception_distance(real, fake, num_subsets=5, max_subset_size=100, seed=4)


def test_refusals_and_captured_rows():
    with pytest.raises(ValueError, match="one width"):
        kernel_inception_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(np.zeros((1, 3)), np.zeros((4, 3)))
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    s = FeatureStats(4, capture_all=True)
    s.append(x[:2])
    s.append(x[2:])
    np.testing.assert_array_equal(s.get_all(), x)
    with pytest.raises(ValueError, match="capture_all"):
        FeatureStats(4).get_all()
