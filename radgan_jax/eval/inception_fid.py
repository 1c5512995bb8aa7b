"""Inception features for FID, as StyleGAN-XL's ``fid50k_full`` computes them (metrics/metric_utils.py).

The generator's [-1, 1] output becomes uint8 exactly as the original's ``(img * 127.5 + 128).clamp(0, 255)
.to(torch.uint8)`` (:func:`images_to_uint8`); grey images are repeated to 3 channels (``compute_feature_stats_
for_generator/_dataset``); the FID Inception (``radgan_jax.models.inception_fid``) maps them to 2048-d pool3
features. Accumulate those with ``radgan_jax.eval.frechet.FeatureStats`` and compare with
``frechet_distance_of_stats``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from radgan_jax.models.inception_fid import InceptionFID


def images_to_uint8(x: jax.Array) -> jax.Array:
    """[-1, 1] float images -> uint8, bit-exact with torch's ``(img * 127.5 + 128).clamp(0, 255).to(uint8)``.

    Torch rounds twice in float32 (the product, then the sum: separate kernels) and truncates toward zero.
    XLA fuses ``x * 127.5 + 128`` into one FMA (one rounding; ~3 values per million then land one lower, e.g.
    50.999996 instead of 51.0), and drops ``optimization_barrier``. So the product is formed as
    ``x*128 - x*0.5``: both terms are exact (powers of two), the subtraction rounds once like torch's
    multiply (also when contracted into an FMA, whose product is exact), and an add fed by a subtraction is
    never contracted. Clipping x to [-2, 2] first changes no result and keeps ``x*128`` finite.
    """
    x = jnp.clip(x.astype(jnp.float32), -2.0, 2.0)
    product = x * jnp.float32(128.0) - x * jnp.float32(0.5)  # == fl32(x * 127.5)
    return jnp.clip(product + jnp.float32(128.0), 0.0, 255.0).astype(jnp.uint8)


def make_feature_fn(variables: Any, preprocess: str = "tf", return_logits: bool = False
                    ) -> Callable[[jax.Array], jax.Array | tuple[jax.Array, jax.Array]]:
    """``fn(images)`` -> (N, 2048) float32 pool3 features (and (N, 1008) logits with ``return_logits``).

    ``images``: (N, H, W, C) uint8 (or float holding uint8 values), C = 1 or 3, any H, W. ``variables``
    from ``radgan_jax.tools.convert_inception.load_inception``; they are put on device once and passed to the
    jitted function as an argument (not baked into the program as constants).
    """
    model = InceptionFID(preprocess=preprocess)
    variables = jax.device_put(variables)

    @jax.jit
    def apply(v: Any, images: jax.Array) -> jax.Array | tuple[jax.Array, jax.Array]:
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"expected (N, H, W, 1 or 3) images, got shape {images.shape}")
        if images.shape[-1] == 1:  # metric_utils: images.repeat([1, 3, 1, 1])
            images = jnp.repeat(images, 3, axis=-1)
        return model.apply(v, images.astype(jnp.float32), return_logits=return_logits)

    return lambda images: apply(variables, images)
