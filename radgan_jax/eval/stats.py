"""Paired statistics for the segmentation experiments (baseline vs. + synthetic data) and a Dice plot.

* `wilcoxon_paired`: scipy.stats.wilcoxon on per-case differences, two-sided, zero_method='wilcox' by default
  (zero differences are dropped, scipy's default; 'pratt' keeps them in the ranking, 'zsplit' splits them).
  Pairs where either value is NaN (nnU-Net's Dice of a case where the label is absent from both reference and
  prediction) are dropped first, and the count is reported.
* `bootstrap_ci`: percentile bootstrap of the mean (n_boot 10000 resamples with replacement, explicit
  `np.random.default_rng(seed)`), 95% by default; `bootstrap_ci_paired` does it on the paired differences a - b.
* `paired_comparison`: both for one pair of per-case Dice lists, as one JSON-ready dict.
* `plot_dice`: box and/or strip plot of per-case (or per-fold) Dice per method, as a PNG drawn with Pillow
  (the project's plotting helpers in radgan_jax/eval/plots.py; no matplotlib).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from radgan_jax.eval.plots import PALETTE, _font, _put_text, _text_size, _tick_label, frame_box, linear_ticks

ZERO_METHODS = ("wilcox", "pratt", "zsplit")


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray, int]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be two 1D arrays of equal length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep], int((~keep).sum())


def wilcoxon_paired(a: Sequence[float], b: Sequence[float], zero_method: str = "wilcox",
                    alternative: str = "two-sided", method: str = "auto") -> dict:
    """Wilcoxon signed-rank test of a vs. b (paired, per case). Returns statistic, p-value and what was used."""
    from scipy.stats import wilcoxon

    if zero_method not in ZERO_METHODS:
        raise ValueError(f"zero_method must be one of {ZERO_METHODS}, got {zero_method!r}")
    a, b, dropped = _paired(a, b)
    d = a - b
    n_zero = int(np.sum(d == 0))
    if len(d) == 0 or (zero_method == "wilcox" and n_zero == len(d)):
        stat, p = math.nan, math.nan  # nothing to rank: every difference is zero (or no pairs)
    else:
        res = wilcoxon(a, b, zero_method=zero_method, alternative=alternative, method=method)
        stat, p = float(res.statistic), float(res.pvalue)
    return {"test": "wilcoxon_signed_rank", "statistic": stat, "pvalue": p, "n": len(d), "n_zero_diff": n_zero,
            "n_dropped_nan": dropped, "zero_method": zero_method, "alternative": alternative, "method": method,
            "median_diff": float(np.median(d)) if len(d) else math.nan}


def bootstrap_means(x: Sequence[float], n_boot: int = 10000, seed: int = 0, chunk: int = 1000) -> np.ndarray:
    """Means of `n_boot` resamples (with replacement, same size) of x, from np.random.default_rng(seed)."""
    x = np.asarray(x, np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"bootstrap needs a non-empty 1D sample, got shape {x.shape}")
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):  # bounded memory for large samples
        stop = min(start + chunk, n_boot)
        out[start:stop] = x[rng.integers(0, len(x), size=(stop - start, len(x)))].mean(axis=1)
    return out


def bootstrap_ci(x: Sequence[float], n_boot: int = 10000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Percentile bootstrap CI of the mean of x (NaNs dropped and counted)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = np.asarray(x, np.float64)
    finite = x[np.isfinite(x)]
    means = bootstrap_means(finite, n_boot, seed)
    alpha = (1 - confidence) / 2
    lo, hi = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return {"mean": float(finite.mean()), "ci_low": float(lo), "ci_high": float(hi), "confidence": confidence,
            "n": len(finite), "n_dropped_nan": int(len(x) - len(finite)), "n_boot": n_boot, "seed": seed,
            "method": "percentile"}


def bootstrap_ci_paired(a: Sequence[float], b: Sequence[float], n_boot: int = 10000, confidence: float = 0.95,
                        seed: int = 0) -> dict:
    """Percentile bootstrap CI of the mean paired difference a - b (cases resampled as pairs)."""
    a, b, dropped = _paired(a, b)
    out = bootstrap_ci(a - b, n_boot, confidence, seed)
    out["n_dropped_nan"] = dropped
    return out


def paired_comparison(a: Sequence[float], b: Sequence[float], name_a: str = "a", name_b: str = "b",
                      n_boot: int = 10000, confidence: float = 0.95, seed: int = 0,
                      zero_method: str = "wilcox") -> dict:
    """Everything the paper's tables need for one comparison: per-method mean + CI, the mean difference a - b
    + CI, and the two-sided Wilcoxon signed-rank test (same NaN-dropped pairs everywhere)."""
    pa, pb, _ = _paired(a, b)
    return {"a": name_a, "b": name_b,
            name_a: bootstrap_ci(pa, n_boot, confidence, seed),
            name_b: bootstrap_ci(pb, n_boot, confidence, seed),
            "difference": bootstrap_ci_paired(a, b, n_boot, confidence, seed),
            "wilcoxon": wilcoxon_paired(a, b, zero_method)}


def _quartiles(v: np.ndarray) -> tuple[float, float, float, float, float, np.ndarray]:
    """Median, quartiles (linear interpolation) and 1.5-IQR whisker ends (Tukey, as matplotlib's boxplot)."""
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    iqr = q3 - q1
    inside = v[(v >= q1 - 1.5 * iqr) & (v <= q3 + 1.5 * iqr)]
    lo, hi = float(inside.min()), float(inside.max())
    return float(med), float(q1), float(q3), lo, hi, v[(v < lo) | (v > hi)]


def plot_dice(path: str | os.PathLike, groups: Mapping[str, Sequence[float]], title: str, ylabel: str = "Dice",
              kind: str = "box+strip", ylim: tuple[float, float] | None = (0.0, 1.0), width: int = 800,
              height: int = 500, seed: int = 0) -> None:
    """One box (median, quartiles, 1.5-IQR whiskers, outliers) and/or jittered strip of points per group
    (method / fold), in the palette colour of its position, -> RGB PNG. NaN values are skipped."""
    if kind not in ("box", "strip", "box+strip"):
        raise ValueError(f"kind must be 'box', 'strip' or 'box+strip', got {kind!r}")
    data = {k: np.asarray(v, np.float64) for k, v in groups.items()}
    data = {k: v[np.isfinite(v)] for k, v in data.items()}
    allv = np.concatenate([v for v in data.values()] + [np.zeros(0)])
    lo, hi = ylim if ylim is not None else ((float(allv.min()), float(allv.max())) if allv.size else (0.0, 1.0))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.03
    lo, hi = lo - pad, hi + pad

    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font, title_font = _font(12), _font(15)
    ticks = linear_ticks(lo, hi)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else None
    labels = [_tick_label(t, step) for t in ticks]
    left, top, right, bottom, label_h = frame_box(draw, labels, width, height, font)

    def py(y: float) -> int:  # values outside ylim are drawn on the frame
        return min(max(round(bottom - (y - lo) / (hi - lo) * (bottom - top)), top), bottom)

    for t, s in zip(ticks, labels):
        draw.line([(left, py(t)), (right, py(t))], fill=(225, 225, 225))
        draw.line([(left - 4, py(t)), (left, py(t))], fill=(0, 0, 0))
        _put_text(draw, left - 6, py(t), s, font, (0, 0, 0), h="r", v="m")
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    _put_text(draw, (left + right) / 2, 12, title, title_font, (0, 0, 0), h="c")
    if ylabel:
        tw, th = _text_size(draw, ylabel, font)
        strip = Image.new("RGB", (tw + 4, th + 6), (255, 255, 255))
        _put_text(ImageDraw.Draw(strip), 2, 3, ylabel, font, (0, 0, 0))
        strip = strip.rotate(90, expand=True)
        image.paste(strip, (12, max((top + bottom - strip.height) // 2, 0)))

    rng = np.random.default_rng(seed)
    slot = (right - left) / max(len(data), 1)
    half = max(int(slot * 0.25), 3)
    for i, (name, v) in enumerate(data.items()):
        colour = PALETTE[i % len(PALETTE)]
        cx = round(left + slot * (i + 0.5))
        _put_text(draw, cx, bottom + 7, name, font, (0, 0, 0), h="c")
        if v.size == 0:
            continue
        if "box" in kind:
            med, q1, q3, wlo, whi, outliers = _quartiles(v)
            draw.rectangle([cx - half, py(q3), cx + half, py(q1)], outline=colour, width=2)
            draw.line([(cx - half, py(med)), (cx + half, py(med))], fill=colour, width=3)
            for a, b in ((q3, whi), (q1, wlo)):
                draw.line([(cx, py(a)), (cx, py(b))], fill=colour, width=2)
                draw.line([(cx - half // 2, py(b)), (cx + half // 2, py(b))], fill=colour, width=2)
            if "strip" not in kind:
                for y in outliers:
                    draw.ellipse([cx - 3, py(y) - 3, cx + 3, py(y) + 3], outline=colour)
        if "strip" in kind:
            jitter = rng.uniform(-0.8, 0.8, v.size) * half
            for dx, y in zip(jitter, v):
                x = cx + dx
                draw.ellipse([x - 2, py(y) - 2, x + 2, py(y) + 2], fill=colour)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
