"""Fréchet distance: analytic Gaussian cases, the official formula's conventions, streaming statistics."""

from __future__ import annotations

import numpy as np
import pytest

from radgan_jax.eval.frechet import FeatureStats, frechet_distance, frechet_distance_of_stats


def test_diagonal_gaussians_have_the_closed_form():
    # For commuting covariances Tr(S1 + S2 - 2 (S1 S2)^1/2) = sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1.0 + 4.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0.0
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-9)


def test_identical_and_rotated_distributions():
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    s = q @ np.diag(rng.uniform(0.5, 2.0, 6)) @ q.T
    mu = rng.normal(size=6)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-8)
    # symmetric in its two arguments (the trace term is)
    s2 = np.eye(6) * 0.7
    assert frechet_distance(mu, s, 0 * mu, s2) == pytest.approx(frechet_distance(0 * mu, s2, mu, s), rel=1e-9)


def test_streaming_stats_equal_numpy_biased_covariance_and_merge():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8)) + 3.0
    stats = FeatureStats(8)
    for chunk in np.array_split(x, 7):
        stats.append(chunk.astype(np.float32))
    mean, cov = stats.mean_cov()
    np.testing.assert_allclose(mean, x.astype(np.float32).astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x.astype(np.float32).astype(np.float64), rowvar=False, bias=True),
                               rtol=1e-9, atol=1e-9)
    a, b = FeatureStats(8), FeatureStats(8)  # two hosts, merged == one pass
    a.append(x[:200])
    b.append(x[200:])
    a.merge(b)
    np.testing.assert_allclose(a.mean_cov()[1], FeatureStats_from(x).mean_cov()[1], rtol=1e-12)


def FeatureStats_from(x):  # noqa: N802 - reads as a constructor
    s = FeatureStats(x.shape[1])
    s.append(x)
    return s


def test_sample_estimate_approaches_the_population_distance():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20000, 4))
    y = rng.normal(size=(20000, 4)) * 2.0 + 1.0
    fd = frechet_distance_of_stats(FeatureStats_from(x), FeatureStats_from(y))
    assert fd == pytest.approx(4 * 1.0 + 4 * (1 - 2) ** 2, rel=0.05)  # |mu|^2 = 4, trace term = 4


def test_errors():
    with pytest.raises(ValueError, match=r"features must be \(N, 3\)"):
        FeatureStats(3).append(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN or inf"):
        FeatureStats(2).append(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="at least 2 samples"):
        FeatureStats(2).mean_cov()
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
