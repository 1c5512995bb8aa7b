"""Paired statistics against scipy, bootstrap CI coverage on a known distribution, and the Dice plot."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from scipy import stats as sst

from radgan_jax.eval import stats
from radgan_jax.eval.plots import PALETTE


@pytest.mark.parametrize("zero_method", ["wilcox", "pratt", "zsplit"])
def test_wilcoxon_equals_scipy(zero_method: str) -> None:
    rng = np.random.default_rng(0)
    a = np.round(rng.uniform(0.6, 0.95, 60), 3)
    b = np.round(a - rng.normal(0.01, 0.03, 60), 3)
    b[:5] = a[:5]  # ties at zero difference
    a[7], b[9] = np.nan, np.nan  # absent-label cases: dropped as pairs
    got = stats.wilcoxon_paired(a, b, zero_method=zero_method)
    keep = np.isfinite(a) & np.isfinite(b)
    ref = sst.wilcoxon(a[keep], b[keep], zero_method=zero_method, alternative="two-sided")
    assert got["statistic"] == pytest.approx(float(ref.statistic), rel=1e-12)
    assert got["pvalue"] == pytest.approx(float(ref.pvalue), rel=1e-12)
    assert (got["n"], got["n_dropped_nan"], got["n_zero_diff"]) == (58, 2, 5)
    assert got["zero_method"] == zero_method and got["alternative"] == "two-sided"
    small = stats.wilcoxon_paired(a[10:30], b[10:30])  # n <= 50: scipy's exact distribution
    assert small["pvalue"] == pytest.approx(float(sst.wilcoxon(a[10:30], b[10:30]).pvalue), rel=1e-12)
    assert math.isnan(stats.wilcoxon_paired([0.5, 0.6], [0.5, 0.6])["pvalue"])
    with pytest.raises(ValueError, match="equal length"):
        stats.wilcoxon_paired([1, 2], [1])


def test_bootstrap_ci_matches_scipy_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    x = rng.beta(8, 2, 80)
    ci = stats.bootstrap_ci(x, seed=3)
    assert ci == stats.bootstrap_ci(x, seed=3) and ci != stats.bootstrap_ci(x, seed=4)
    assert ci["n_boot"] == 10000 and ci["mean"] == pytest.approx(x.mean())
    ref = sst.bootstrap((x,), np.mean, n_resamples=10000, method="percentile", confidence_level=0.95,
                        random_state=np.random.default_rng(5)).confidence_interval
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert abs(ci["ci_low"] - ref.low) < 0.1 * se and abs(ci["ci_high"] - ref.high) < 0.1 * se
    means = stats.bootstrap_means(x, 4000, seed=0)
    assert means.std() == pytest.approx(x.std(ddof=0) / np.sqrt(len(x)), rel=0.05)
    # paired: resample the differences
    y = x - 0.02 + rng.normal(0, 0.01, 80)
    y[3] = np.nan
    d = stats.bootstrap_ci_paired(x, y, seed=3)
    keep = np.isfinite(y)
    assert d == {**stats.bootstrap_ci((x - y)[keep], seed=3), "n_dropped_nan": 1}
    assert d["ci_low"] < 0.02 < d["ci_high"]
    comp = stats.paired_comparison(x, y, "baseline", "synthetic", n_boot=2000)
    assert set(comp) == {"a", "b", "baseline", "synthetic", "difference", "wilcoxon"}
    assert comp["wilcoxon"]["pvalue"] < 1e-6 and comp["baseline"]["n"] == 79


def test_bootstrap_ci_coverage_on_known_distribution() -> None:
    """95% percentile intervals of the mean of N(0.7, 0.1^2), n=40: about 95% of them contain 0.7."""
    rng = np.random.default_rng(2)
    reps = 300
    hits = 0
    for r in range(reps):
        ci = stats.bootstrap_ci(rng.normal(0.7, 0.1, 40), n_boot=1000, seed=r)
        hits += ci["ci_low"] <= 0.7 <= ci["ci_high"]
    coverage = hits / reps
    assert 0.89 <= coverage <= 0.985, coverage  # binomial sd at 0.95 is 0.013; percentile CIs run a bit narrow


def test_plot_dice_png(tmp_path) -> None:
    rng = np.random.default_rng(3)
    groups = {"fold 0": rng.uniform(0.7, 0.95, 30), "fold 1": np.append(rng.uniform(0.6, 0.9, 30), [0.05, np.nan]),
              "empty": []}
    for kind in ("box", "strip", "box+strip"):
        path = tmp_path / f"{kind}.png"
        stats.plot_dice(path, groups, "Dice per case", kind=kind, width=600, height=400)
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert pixels.shape == (400, 600, 3)
        for i in range(2):
            assert np.all(pixels == np.array(PALETTE[i], np.uint8), axis=-1).sum() > 40, (kind, i)
        assert np.all(pixels == np.array(PALETTE[2], np.uint8), axis=-1).sum() == 0
    with pytest.raises(ValueError, match="kind"):
        stats.plot_dice(tmp_path / "x.png", groups, "t", kind="violin")
