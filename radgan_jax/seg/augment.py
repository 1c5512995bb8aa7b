"""nnU-Net v2's 2D training augmentation as pure, jit- and vmap-able JAX functions.

Layout (one sample, channels last): data [H, W, C] float32 and seg [H, W, 1] integer, both of the larger
`initial_patch_size` the data loader crops; `augment` returns data [P0, P1, C] and seg [P0, P1, 1] of the plan's
`patch_size`. The trainer runs `jax.vmap(functools.partial(augment, cfg=cfg))(keys, data, seg)` inside its jitted
step, which gives NHWC batches.

The pipeline is nnunetv2 2.8.1 `nnUNetTrainer.get_training_transforms` for a 2D plan (batchgeneratorsv2 0.3.6
transforms), in its order; `p` is the RandomTransform apply_probability:
  SpatialTransform (augment_spatial.py) -> GaussianNoise p=0.1 (std U(0, 0.1), one std for all channels) ->
  GaussianBlur p=0.2 (each channel with p=0.5, sigma U(0.5, 1) per channel and axis) ->
  MultiplicativeBrightness p=0.15 -> Contrast p=0.15 (preserve_range) -> SimulateLowResolution p=0.25 (each
  channel with p=0.5, zoom U(0.5, 1) shared by both axes) -> Gamma p=0.1 (inverted, retain stats) ->
  Gamma p=0.3 (retain stats) -> Mirror (each axis of `mirror_axes` with p=0.5) -> MaskImage (channels with
  use_mask_for_norm: 0 where seg < 0) -> RemoveLabel (-1 -> 0).
Factors of brightness, contrast and gamma are BGContrast draws: with p=0.5 U(lo, 1), else U(1, hi), per channel.
Deep-supervision targets (DownsampleSegForDSTransform) come from `seg.losses.downsample_seg_for_ds` on the output.

Every transform is computed for every sample and selected by its flag (that is what vmap does to a cond anyway),
so a batch costs the same whatever was drawn. All draws come from the key: one `rng.derive` stream per
transform, so adding a transform never shifts the draws of the others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from radgan_jax import rng
from radgan_jax.seg.augment_spatial import initial_patch_size, mirror, rotation_for_da, spatial_transform

BLUR_TRUNCATE = 6.0  # gaussian_blur.py blur_dimension(truncate=6)
EPS = 1e-7  # gamma.py


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """nnU-Net's 2D training-augmentation constants (nnUNetTrainer.get_training_transforms, 2.8.1)."""

    patch_size: tuple[int, int]
    initial_patch_size: tuple[int, int]
    rotation: tuple[float, float]
    p_rotation: float = 0.2
    p_scaling: float = 0.2
    scaling: tuple[float, float] = (0.7, 1.4)
    p_synchronize_scaling_across_axes: float = 1.0
    p_noise: float = 0.1
    noise_std: tuple[float, float] = (0.0, 0.1)  # named noise_variance in nnU-Net, used as the std
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    blur_p_per_channel: float = 0.5
    p_brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    p_lowres: float = 0.25
    lowres_scale: tuple[float, float] = (0.5, 1.0)
    lowres_p_per_channel: float = 0.5
    p_gamma_inverted: float = 0.1
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    mirror_axes: tuple[int, ...] = (0, 1)
    mask_channels: tuple[int, ...] = ()  # channels whose use_mask_for_norm is true


def _plan_config(plan: Mapping[str, Any]) -> Mapping[str, Any]:
    if "configurations" in plan:
        if "2d" not in plan["configurations"]:
            raise ValueError(f"plans have no '2d' configuration (have {sorted(plan['configurations'])})")
        plan = plan["configurations"]["2d"]
    if "patch_size" not in plan:
        raise ValueError(f"plan configuration has no 'patch_size' (keys: {sorted(plan)})")
    return plan


def augment_config_from_plan(plan_2d: Mapping[str, Any]) -> AugmentConfig:
    """AugmentConfig for a 2D configuration (`plans['configurations']['2d']`, or the whole plans dict).

    Rotation range and initial patch size as `configure_rotation_dummyDA_mirroring_and_inital_patch_size`;
    mask_channels from `use_mask_for_norm`.
    """
    plan = _plan_config(plan_2d)
    patch = tuple(int(p) for p in plan["patch_size"])
    if len(patch) != 2:
        raise ValueError(f"augment_config_from_plan needs a 2D patch_size, got {patch}")
    rotation = rotation_for_da(patch)
    mask = tuple(i for i, m in enumerate(plan.get("use_mask_for_norm") or []) if m)
    return AugmentConfig(patch_size=patch, initial_patch_size=initial_patch_size(patch, rotation, (0.85, 1.25)),
                         rotation=rotation, mask_channels=mask)


def _bg_contrast(key: jax.Array, rng_range: tuple[float, float], shape: tuple[int, ...]) -> jax.Array:
    """BGContrast.sample_contrast: with p=0.5 (and lo < 1) U(lo, 1), else U(max(lo, 1), hi)."""
    lo, hi = rng_range
    k1, k2, k3 = jax.random.split(key, 3)
    low = jax.random.uniform(k2, shape, minval=lo, maxval=1.0)
    high = jax.random.uniform(k3, shape, minval=max(lo, 1.0), maxval=hi)
    return jnp.where((jax.random.uniform(k1, shape) < 0.5) & (lo < 1), low, high)


def _flag(key: jax.Array, p: float, shape: tuple[int, ...] = ()) -> jax.Array:
    return jax.random.uniform(key, shape) < p


def sample_params(key: jax.Array, cfg: AugmentConfig, num_channels: int) -> dict[str, jax.Array]:
    """Every random draw of one sample's augmentation (flags, per-channel masks and factors, noise key)."""
    c = num_channels
    k = {n: rng.derive(key, f"seg_augment/{n}") for n in
         ("spatial", "noise", "blur", "brightness", "contrast", "lowres", "gamma_inverted", "gamma", "mirror")}
    ks = jax.random.split(k["spatial"], 5)
    do_rot, do_scale = _flag(ks[0], cfg.p_rotation), _flag(ks[1], cfg.p_scaling)
    angle = jax.random.uniform(ks[2], (), minval=cfg.rotation[0], maxval=cfg.rotation[1])
    sync = jax.random.uniform(ks[3]) <= cfg.p_synchronize_scaling_across_axes
    per_axis = jax.random.uniform(ks[4], (2,), minval=cfg.scaling[0], maxval=cfg.scaling[1])
    scale = jnp.where(sync, per_axis[0], per_axis)
    p = {"do_rotation": do_rot, "do_scaling": do_scale, "angle": jnp.where(do_rot, angle, 0.0),
         "scale": jnp.where(do_scale, scale, 1.0)}
    kn = jax.random.split(k["noise"], 3)
    p |= {"do_noise": _flag(kn[0], cfg.p_noise), "noise_key": kn[1],
          "noise_std": jax.random.uniform(kn[2], (), minval=cfg.noise_std[0], maxval=cfg.noise_std[1])}
    kb = jax.random.split(k["blur"], 3)
    p |= {"do_blur": _flag(kb[0], cfg.p_blur), "blur_channels": _flag(kb[1], cfg.blur_p_per_channel, (c,)),
          "blur_sigma": jax.random.uniform(kb[2], (c, 2), minval=cfg.blur_sigma[0], maxval=cfg.blur_sigma[1])}
    kb = jax.random.split(k["brightness"])
    p |= {"do_brightness": _flag(kb[0], cfg.p_brightness),
          "brightness": _bg_contrast(kb[1], cfg.brightness_range, (c,))}
    kc = jax.random.split(k["contrast"])
    p |= {"do_contrast": _flag(kc[0], cfg.p_contrast), "contrast": _bg_contrast(kc[1], cfg.contrast_range, (c,))}
    kl = jax.random.split(k["lowres"], 3)
    p |= {"do_lowres": _flag(kl[0], cfg.p_lowres), "lowres_channels": _flag(kl[1], cfg.lowres_p_per_channel, (c,)),
          "lowres_scale": jax.random.uniform(kl[2], (c,), minval=cfg.lowres_scale[0], maxval=cfg.lowres_scale[1])}
    for name, prob in (("gamma_inverted", cfg.p_gamma_inverted), ("gamma", cfg.p_gamma)):
        kg = jax.random.split(k[name])
        p |= {f"do_{name}": _flag(kg[0], prob), name: _bg_contrast(kg[1], cfg.gamma_range, (c,))}
    flips = _flag(k["mirror"], 0.5, (2,))
    p["mirror"] = flips & jnp.asarray([d in cfg.mirror_axes for d in range(2)])
    return p


# ---- intensity transforms; x is one channel [H, W] unless stated ----

def _blur_kernel(sigma: jax.Array, half_max: int) -> jax.Array:
    """`_build_kernel(sigma, truncate=6)` padded with zero taps to 2 * half_max + 1."""
    n = sigma * BLUR_TRUNCATE + 0.5  # _round_to_nearest_odd(n)
    r = jnp.round(n)
    odd = jnp.where(r % 2 == 1, r, jnp.where(n - r >= 0, r + 1, r - 1))
    t = jnp.arange(-half_max, half_max + 1, dtype=jnp.float32)
    pdf = jnp.where(jnp.abs(t) <= (odd - 1) / 2, jnp.exp(-0.5 * (t / sigma) ** 2), 0.0)
    return pdf / jnp.sum(pdf)


def _blur_half_max(sigma_max: float) -> int:
    """Half width of the largest kernel (`_round_to_nearest_odd` is non-decreasing in sigma)."""
    n = sigma_max * BLUR_TRUNCATE + 0.5
    r = round(n)
    odd = r if r % 2 == 1 else (r + 1 if n - r >= 0 else r - 1)
    return (odd - 1) // 2


def gaussian_blur(x: jax.Array, sigma: jax.Array, half_max: int) -> jax.Array:
    """blur_dimension along axis 0 then axis 1: separable Gaussian, reflect padding (torch 'reflect')."""
    for d in range(2):
        k = _blur_kernel(sigma[d], half_max)
        pad = [(0, 0), (0, 0)]
        pad[d] = (half_max, half_max)
        xp = jnp.pad(x, pad, mode="reflect")
        n = x.shape[d]
        x = sum(k[t] * jax.lax.slice_in_dim(xp, t, t + n, axis=d) for t in range(2 * half_max + 1))
    return x


def contrast(x: jax.Array, factor: jax.Array) -> jax.Array:
    """ContrastTransform(preserve_range=True): (x - mean) * factor + mean, clipped to the channel's range."""
    mean = jnp.mean(x)
    return jnp.clip((x - mean) * factor + mean, jnp.min(x), jnp.max(x))


def gamma(x: jax.Array, g: jax.Array, invert: bool, retain_stats: bool = True) -> jax.Array:
    """GammaTransform for one channel: rescale to [0, 1], ** g, back; keep mean/std (unbiased std as torch)."""
    if invert:
        x = -x
    mean, std = jnp.mean(x), jnp.std(x, ddof=1)
    mn, mx = jnp.min(x), jnp.max(x)
    rnge = mx - mn
    x = ((x - mn) / jnp.maximum(rnge, EPS)) ** g * rnge + mn
    if retain_stats:
        x = (x - jnp.mean(x)) * (std / jnp.maximum(jnp.std(x, ddof=1), EPS)) + mean
    return -x if invert else x


def _lowres_axis(n_out: int, scale: jax.Array):
    """Index pairs and weights of nearest-exact down to round(n * scale), then linear up (align_corners=False)."""
    n = jnp.maximum(jnp.round(np.float32(n_out) * scale).astype(jnp.int32), 1)
    nf = n.astype(jnp.float32)
    down = np.float32(n_out) / nf  # torch nearest-exact: src = min(floor((dst + 0.5) * in / out), in - 1)
    up = nf / np.float32(n_out)  # torch linear: src = max(out_scale * (dst + 0.5) - 0.5, 0)
    real = jnp.maximum(up * (jnp.arange(n_out, dtype=jnp.float32) + 0.5) - 0.5, 0.0)
    i0 = jnp.minimum(jnp.floor(real).astype(jnp.int32), n - 1)
    lam = jnp.clip(real - i0, 0.0, 1.0)
    i1 = i0 + (i0 < n - 1).astype(jnp.int32)
    src = lambda i: jnp.minimum(jnp.floor((i.astype(jnp.float32) + 0.5) * down).astype(jnp.int32), n_out - 1)
    return src(i0), src(i1), lam


def simulate_low_resolution(x: jax.Array, scale: jax.Array) -> jax.Array:
    """SimulateLowResolutionTransform for one channel: nearest-exact down by `scale`, bilinear back up.

    Written as two [N, N] interpolation matrices (two non-zeros per row) applied with full-precision matmuls:
    the downsampled size is data-dependent, the matrices are not, and matmuls beat per-channel gathers.
    """
    mats = []
    for d in range(2):
        a, b, lam = _lowres_axis(x.shape[d], scale)
        n = x.shape[d]
        mats.append(jax.nn.one_hot(a, n) * (1.0 - lam)[:, None] + jax.nn.one_hot(b, n) * lam[:, None])
    hp = jax.lax.Precision.HIGHEST
    return jnp.dot(jnp.dot(mats[0], x, precision=hp), mats[1].T, precision=hp)


def _per_channel(fn, x: jax.Array, *args: jax.Array) -> jax.Array:
    """Apply fn(channel [H, W], *per-channel args) to every channel of x [H, W, C]."""
    return jax.vmap(fn, in_axes=(2,) + (0,) * len(args), out_axes=2)(x, *args)


def apply_params(data: jax.Array, seg: jax.Array, p: Mapping[str, jax.Array],
                 cfg: AugmentConfig) -> tuple[jax.Array, jax.Array]:
    """Run the pipeline with drawn (or forced) parameters `p` (keys as `sample_params` returns)."""
    data = data.astype(jnp.float32)
    data, seg = spatial_transform(data, seg, p["angle"], p["scale"], p["do_rotation"] | p["do_scaling"],
                                  cfg.patch_size)
    noise = jax.random.normal(p["noise_key"], data.shape, jnp.float32) * p["noise_std"]
    data = jnp.where(p["do_noise"], data + noise, data)
    half = _blur_half_max(cfg.blur_sigma[1])
    blurred = _per_channel(lambda x, s: gaussian_blur(x, s, half), data, p["blur_sigma"])
    data = jnp.where(p["do_blur"] & p["blur_channels"], blurred, data)
    data = jnp.where(p["do_brightness"], data * p["brightness"], data)
    data = jnp.where(p["do_contrast"], _per_channel(contrast, data, p["contrast"]), data)
    low = _per_channel(simulate_low_resolution, data, p["lowres_scale"])
    data = jnp.where(p["do_lowres"] & p["lowres_channels"], low, data)
    data = jnp.where(p["do_gamma_inverted"],
                     _per_channel(lambda x, g: gamma(x, g, True), data, p["gamma_inverted"]), data)
    data = jnp.where(p["do_gamma"], _per_channel(lambda x, g: gamma(x, g, False), data, p["gamma"]), data)
    data, seg = mirror(data, p["mirror"]), mirror(seg, p["mirror"])
    if cfg.mask_channels:
        sel = jnp.asarray([c in cfg.mask_channels for c in range(data.shape[-1])])
        data = jnp.where(sel & (seg < 0), 0.0, data)
    seg = jnp.where(seg == -1, 0, seg).astype(seg.dtype)  # RemoveLabelTansform(-1, 0)
    return data, seg


def augment(key: jax.Array, data: jax.Array, seg: jax.Array, cfg: AugmentConfig) -> tuple[jax.Array, jax.Array]:
    """nnU-Net's 2D training augmentation of one sample (data [S0, S1, C], seg [S0, S1, 1] of the initial patch
    size) -> (data [P0, P1, C] float32, seg [P0, P1, 1] same dtype as seg)."""
    if data.ndim != 3 or seg.ndim != 3 or seg.shape[-1] != 1 or data.shape[:2] != seg.shape[:2]:
        raise ValueError(f"augment wants data [H, W, C] and seg [H, W, 1], got {data.shape} and {seg.shape}")
    return apply_params(data, seg, sample_params(key, cfg, data.shape[-1]), cfg)
