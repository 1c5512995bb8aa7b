"""Gaussian blur of the discriminator input, faded out early in training (StyleGAN-XL `training/loss.py`) -- NHWC.

Official behaviour (autonomousvision/stylegan-xl 4241ff9):
  * schedule (loss.py L92): `sigma = max(1 - cur_nimg / (blur_fade_kimg * 1e3), 0) * blur_init_sigma` when
    `blur_fade_kimg > 1`, else 0; train.py L291-292 sets blur_init_sigma=2, blur_fade_kimg=300;
  * filter (loss.py L76-81): half-size `k = floor(3 * sigma)`; no blur when k == 0 (i.e. sigma < 1/3);
    taps `f[i] = 2 ** -((i / sigma) ** 2)` for i = -k..k (base 2, not e), normalised to sum 1, applied as a
    separable filter by `upfirdn2d.filter2d`, which zero-pads k pixels on each side so the size is kept.

Two entry points: `blur_images(x, sigma)` with a Python-float sigma (taps are compile-time constants, via
`radgan_jax.ops.upfirdn2d`), and `blur_images_traced(x, sigma, max_sigma)` for a traced sigma inside a jitted
train step: it uses a fixed `2 * floor(3 * max_sigma) + 1`-tap kernel whose taps beyond floor(3 * sigma) are 0,
which gives the same result (a zero tap adds nothing) without recompiling as sigma fades.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from radgan_jax.ops.upfirdn2d import upfirdn2d

BLUR_INIT_SIGMA = 2.0  # train.py L291
BLUR_FADE_KIMG = 300.0  # train.py L292


def blur_sigma(cur_nimg: float | jax.Array, blur_init_sigma: float = BLUR_INIT_SIGMA,
               blur_fade_kimg: float = BLUR_FADE_KIMG) -> float | jax.Array:
    """Blur sigma after `cur_nimg` real images shown: linear fade from `blur_init_sigma` to 0 over the fade.

    As in loss.py L92, the fade is disabled (sigma 0) unless `blur_fade_kimg > 1`. Returns a float for a Python
    number and an array for an array `cur_nimg` (usable under jit).
    """
    if not blur_fade_kimg > 1:
        return 0.0 if not isinstance(cur_nimg, jax.Array) else jnp.zeros_like(cur_nimg, jnp.float32)
    if isinstance(cur_nimg, jax.Array):
        fade = blur_fade_kimg * 1e3  # (fade - n) / fade: no float32 cancellation near the end of the fade
        return jnp.maximum((fade - cur_nimg.astype(jnp.float32)) / fade, 0) * blur_init_sigma
    return max(1 - cur_nimg / (blur_fade_kimg * 1e3), 0) * blur_init_sigma


def blur_half_size(sigma: float) -> int:
    """`floor(3 * sigma)`: the filter has `2 * k + 1` taps, and no blur is applied when k == 0."""
    return int(math.floor(sigma * 3))


def blur_filter(sigma: float) -> np.ndarray:
    """Normalised separable taps `2 ** -((i / sigma) ** 2)`, i = -k..k, in float32 like the official torch code."""
    k = blur_half_size(sigma)
    if k <= 0:
        return np.ones([1], np.float32)
    i = np.arange(-k, k + 1, dtype=np.float32)
    f = np.exp2(-np.square(i / np.float32(sigma)))
    return (f / f.sum()).astype(np.float32)


def blur_images(x: jax.Array, sigma: float) -> jax.Array:
    """Blur an NHWC batch with the official D-input filter for a static sigma (identity when floor(3σ) == 0)."""
    if x.ndim != 4:
        raise ValueError(f"blur_images expects an NHWC batch, got shape {x.shape}")
    k = blur_half_size(sigma)
    if k <= 0:
        return x
    # filter2d pads fw // 2 before and (fw - 1) // 2 after; both are k for the odd 2k+1 taps.
    return upfirdn2d(x, blur_filter(sigma), padding=[k, k, k, k])


def _traced_taps(sigma: jax.Array, half: int) -> jax.Array:
    """2*half+1 taps of the official filter for a traced sigma, zero beyond floor(3 sigma); [1] at the centre if 0."""
    i = jnp.arange(-half, half + 1, dtype=jnp.float32)
    k = jnp.floor(sigma * 3)
    safe_sigma = jnp.where(k > 0, sigma, 1.0)  # avoid 0/0 when the blur is off
    f = jnp.where(jnp.abs(i) <= k, jnp.exp2(-jnp.square(i / safe_sigma)), 0.0)
    f = f / jnp.sum(f)
    return jnp.where(k > 0, f, (i == 0).astype(jnp.float32))


def _fir_same(x: jax.Array, taps: jax.Array, axis: int) -> jax.Array:
    """Zero-padded 'same' correlation along `axis` with traced symmetric taps (a sum of shifted slices)."""
    half = (taps.shape[0] - 1) // 2
    cfg = [(0, 0)] * x.ndim
    cfg[axis] = (half, half)
    xp = jnp.pad(x, cfg)
    n = x.shape[axis]
    out = jnp.zeros(x.shape, jnp.promote_types(x.dtype, jnp.float32))
    for t in range(taps.shape[0]):
        out = out + taps[t] * jax.lax.slice_in_dim(xp, t, t + n, 1, axis)
    return out.astype(x.dtype)


def blur_images_traced(x: jax.Array, sigma: float | jax.Array, max_sigma: float = BLUR_INIT_SIGMA) -> jax.Array:
    """Same as `blur_images` for a (possibly traced) sigma in [0, max_sigma], with one compiled shape.

    `max_sigma` must be a Python float bounding sigma (the schedule's `blur_init_sigma`).
    """
    if x.ndim != 4:
        raise ValueError(f"blur_images_traced expects an NHWC batch, got shape {x.shape}")
    half = blur_half_size(max_sigma)
    if half <= 0:
        return x
    taps = _traced_taps(jnp.asarray(sigma, jnp.float32), half)
    return _fir_same(_fir_same(x, taps, axis=2), taps, axis=1)
