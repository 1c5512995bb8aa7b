"""Ensemble uncertainty of interpreter masks (DatasetGAN's rule) and the filter that drops the most uncertain samples.

DatasetGAN (nv-tlabs/datasetGAN_release, datasetGAN/train_interpreter.py `generate_data`) trains several pixel
classifiers, and for every generated image computes per pixel the Jensen-Shannon divergence of the members'
predictions, `JSD = H(mixture) - mean_m H(p_m)` (entropies in nats), then scores the image by the mean of its top
10% pixels (`js.sort()[0][-int(N / 10):].mean()`) and discards the most uncertain images before training the
downstream network. Deviations: the mixture here is the mean of the members' *probabilities* (the generalised
Jensen-Shannon divergence; DatasetGAN averages logits, which is not a mixture of the distributions and can make
the "divergence" negative), and at least one pixel is kept when an image has fewer than 10 pixels.

`pixel_jsd` / `top_fraction_mean` / `sample_uncertainty` are pure jnp (jit them, shard the batch);
`select_most_uncertain` is a host-side numpy selection over all samples' scores (ties broken by case id).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

TOP_FRACTION = 0.1  # DatasetGAN: mean of the top 10% pixels


def entropy(p: jax.Array, axis: int = -1) -> jax.Array:
    """Shannon entropy in nats along `axis`, with 0 log 0 = 0."""
    p = jnp.asarray(p, jnp.float32)
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=axis)


def pixel_jsd(probs: jax.Array) -> jax.Array:
    """Members' probabilities [M, ..., K] -> generalised Jensen-Shannon divergence [...] (nats, >= 0):
    H(mean_m p_m) - mean_m H(p_m). Zero when every member predicts the same distribution; at most log(M)."""
    probs = jnp.asarray(probs, jnp.float32)
    if probs.ndim < 2:
        raise ValueError(f"probs must be [members, ..., labels], got shape {probs.shape}")
    jsd = entropy(jnp.mean(probs, axis=0)) - jnp.mean(entropy(probs), axis=0)
    return jnp.maximum(jsd, 0.0)  # float rounding can leave -1e-8 for identical members


def top_count(num_pixels: int, fraction: float = TOP_FRACTION) -> int:
    """How many pixels the score averages: floor(fraction * num_pixels) as DatasetGAN, at least 1."""
    if not 0 < fraction <= 1:
        raise ValueError(f"top fraction must be in (0, 1], got {fraction}")
    return max(1, int(num_pixels * fraction))


def top_fraction_mean(x: jax.Array, fraction: float = TOP_FRACTION) -> jax.Array:
    """Per-sample mean of the largest `top_count` values: x [N, ...] -> [N]."""
    flat = jnp.reshape(x, (x.shape[0], -1)).astype(jnp.float32)
    top, _ = jax.lax.top_k(flat, top_count(flat.shape[1], fraction))
    return jnp.mean(top, axis=1)


def sample_uncertainty(probs: jax.Array, fraction: float = TOP_FRACTION) -> jax.Array:
    """Members' probabilities [M, N, H, W, K] -> per-sample uncertainty [N] (mean of the top 10% pixel JSDs)."""
    if probs.ndim != 5:
        raise ValueError(f"probs must be [members, N, H, W, labels], got shape {probs.shape}")
    return top_fraction_mean(pixel_jsd(probs), fraction)


@dataclasses.dataclass(frozen=True)
class FilterResult:
    """Which samples the filter drops: `drop[i]` for sample i; per group the score of the least uncertain dropped
    sample (`thresholds`, None where nothing is dropped) and the number dropped."""

    drop: np.ndarray
    thresholds: dict[str, float | None]
    num_dropped: dict[str, int]


def select_most_uncertain(scores: Sequence[float] | np.ndarray, case_ids: Sequence[str], fraction: float,
                          groups: Sequence[str] | None = None) -> FilterResult:
    """Marks the floor(fraction * n) most uncertain samples of every group (all samples one group when `groups` is
    None) for dropping. Order: score descending, then case id ascending (so equal scores are broken the same way
    on every run and host). The threshold of a group is the smallest dropped score: every kept sample scores
    <= it, and samples scoring exactly it may be on either side (decided by case id)."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    ids = [str(c) for c in case_ids]
    if len(ids) != scores.size:
        raise ValueError(f"{scores.size} scores but {len(ids)} case ids")
    if len(set(ids)) != len(ids):
        raise ValueError("case ids repeat: each sample needs a unique id for a deterministic tie-break")
    if not 0 <= fraction < 1:
        raise ValueError(f"filter fraction must be in [0, 1), got {fraction}")
    if not np.isfinite(scores).all():
        bad = [ids[i] for i in np.flatnonzero(~np.isfinite(scores))[:5]]
        raise ValueError(f"non-finite uncertainty for samples {bad}")
    group_of = ["all"] * len(ids) if groups is None else [str(g) for g in groups]
    if len(group_of) != len(ids):
        raise ValueError(f"{len(ids)} samples but {len(group_of)} group names")
    drop = np.zeros(len(ids), bool)
    thresholds: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    members: dict[str, list[int]] = {}
    for i, g in enumerate(group_of):
        members.setdefault(g, []).append(i)
    for g, idx in members.items():
        k = int(np.floor(fraction * len(idx) + 1e-9))
        order = sorted(idx, key=lambda i: (-scores[i], ids[i]))[:k]
        drop[order] = True
        thresholds[g] = float(scores[order[-1]]) if k else None
        counts[g] = k
    return FilterResult(drop=drop, thresholds=thresholds, num_dropped=counts)
