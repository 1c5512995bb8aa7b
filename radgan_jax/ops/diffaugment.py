"""DiffAugment (Zhao et al. 2020, arXiv:2006.10738) as used by StyleGAN-XL's projected discriminator -- NHWC.

Follows `training/diffaug.py` of autonomousvision/stylegan-xl (commit 4241ff9), which the discriminator calls
with policy 'color,translation,cutout' (`pg_modules/discriminator.py` L201). The official code draws from the
global torch RNG; here every random parameter comes from an explicit key, and each augmentation is also exposed
as a deterministic function of its parameters so it can be checked against a transcription of the formulas.

Draws (all per sample, i.e. shape [N], independent across samples):
  * color:       brightness u_b ~ U[0,1), saturation u_s ~ U[0,1), contrast u_c ~ U[0,1) (in x.dtype, like the
                 `torch.rand(..., dtype=x.dtype)` calls);
  * translation: (t_h, t_w) integers, t_h ~ U{-s_h..s_h}, t_w ~ U{-s_w..s_w}, s = int(size * 0.125 + 0.5);
  * cutout:      (o_h, o_w) integers, o_h ~ U{0..H - 1 + (1 - c_h % 2)}, c = int(size * 0.2 + 0.5).
`sample_params` splits the key into one sub-key per random quantity in the fixed order of `_DRAW_NAMES`
(brightness, saturation, contrast, translation_h, translation_w, cutout_h, cutout_w), whatever the policy, so a
policy's draws do not depend on which other augmentations are enabled.

The projected D augments independently for every feature network (the call sits inside the backbone loop,
`discriminator.py` L196-201): callers should pass a different key per backbone, e.g. `jax.random.split(key, nb)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DEFAULT_POLICY = "color,translation,cutout"
TRANSLATION_RATIO = 0.125  # rand_translation default (diffaug.py)
CUTOUT_RATIO = 0.2  # rand_cutout default (diffaug.py)
_KNOWN = ("color", "translation", "cutout")
_DRAW_NAMES = ("brightness", "saturation", "contrast", "translation_h", "translation_w", "cutout_h", "cutout_w")


def parse_policy(policy: str) -> tuple[str, ...]:
    """'color,translation,cutout' -> ('color', 'translation', 'cutout'); '' -> (). Unknown names raise ValueError."""
    if not policy:
        return ()
    names = tuple(p.strip() for p in policy.split(","))
    bad = [p for p in names if p not in _KNOWN]
    if bad:
        raise ValueError(f"DiffAugment policy {policy!r}: unknown augmentation(s) {bad}; known: {list(_KNOWN)}")
    return names


def translation_shift(size: int, ratio: float = TRANSLATION_RATIO) -> int:
    """Largest shift in pixels along an axis of `size` pixels (`int(size * ratio + 0.5)`, rounding half up)."""
    return int(size * ratio + 0.5)


def cutout_size(size: int, ratio: float = CUTOUT_RATIO) -> int:
    """Side of the cut-out square along an axis of `size` pixels (`int(size * ratio + 0.5)`)."""
    return int(size * ratio + 0.5)


# --- deterministic augmentations (parameters given) ----------------------------------------------------------


def _per_sample(v: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.asarray(v, x.dtype).reshape(x.shape[0], 1, 1, 1)


def brightness(x: jax.Array, u: jax.Array) -> jax.Array:
    """`x + (u - 0.5)` with one u in [0, 1) per sample (rand_brightness)."""
    return x + (_per_sample(u, x) - 0.5)


def saturation(x: jax.Array, u: jax.Array) -> jax.Array:
    """Scale the deviation from the per-pixel channel mean by `2u` (rand_saturation)."""
    mean = jnp.mean(x, axis=3, keepdims=True)
    return (x - mean) * (_per_sample(u, x) * 2) + mean


def contrast(x: jax.Array, u: jax.Array) -> jax.Array:
    """Scale the deviation from the per-sample mean over H, W, C by `u + 0.5` (rand_contrast)."""
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - mean) * (_per_sample(u, x) + 0.5) + mean


def translate(x: jax.Array, shift_hw: jax.Array) -> jax.Array:
    """Integer translation with zero fill (rand_translation); `shift_hw` is int [N, 2] = (t_h, t_w) per sample.

    Output pixel (i, j) is x[i + t_h, j + t_w], or 0 outside the image: the official code pads by one zero pixel
    and gathers at `clamp(i + t + 1, 0, size + 1)` from the padded image, which is what is done here (the clamp
    only ever lands on the zero border because |t| <= size).
    """
    n, h, w, _ = x.shape
    shift_hw = jnp.asarray(shift_hw, jnp.int32).reshape(n, 2)
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows = jnp.clip(jnp.arange(h)[None, :] + shift_hw[:, :1] + 1, 0, h + 1)  # [N, H]
    cols = jnp.clip(jnp.arange(w)[None, :] + shift_hw[:, 1:] + 1, 0, w + 1)  # [N, W]
    # The official 2-D gather x_pad[b, rows[b, i], cols[b, j]] factorises into one gather per axis.
    xp = jnp.take_along_axis(xp, rows[:, :, None, None], axis=1)
    return jnp.take_along_axis(xp, cols[:, None, :, None], axis=2)


def cutout_mask(shape_nhw: tuple[int, int, int], offsets_hw: jax.Array, ratio: float = CUTOUT_RATIO) -> jax.Array:
    """[N, H, W] mask, 0 on the cut-out square and 1 elsewhere (rand_cutout).

    Rows `clamp(k + o_h - c_h // 2, 0, H - 1)` for k < c_h are hit, likewise columns; the square is their product.
    """
    n, h, w = shape_nhw
    ch, cw = cutout_size(h, ratio), cutout_size(w, ratio)
    offsets_hw = jnp.asarray(offsets_hw, jnp.int32).reshape(n, 2)
    hit_rows = jnp.clip(jnp.arange(ch)[None, :] + offsets_hw[:, :1] - ch // 2, 0, h - 1)  # [N, ch]
    hit_cols = jnp.clip(jnp.arange(cw)[None, :] + offsets_hw[:, 1:] - cw // 2, 0, w - 1)  # [N, cw]
    row_in = jnp.any(hit_rows[:, :, None] == jnp.arange(h)[None, None, :], axis=1)  # [N, H]
    col_in = jnp.any(hit_cols[:, :, None] == jnp.arange(w)[None, None, :], axis=1)  # [N, W]
    return 1 - (row_in[:, :, None] & col_in[:, None, :])


def cutout(x: jax.Array, offsets_hw: jax.Array, ratio: float = CUTOUT_RATIO) -> jax.Array:
    """Zero a square of side `int(size * ratio + 0.5)` centred at `offsets_hw` ([N, 2] ints) by multiplication."""
    n, h, w, _ = x.shape
    mask = cutout_mask((n, h, w), offsets_hw, ratio).astype(x.dtype)
    return x * mask[:, :, :, None]


# --- random parameters --------------------------------------------------------------------------------------


def sample_params(key: jax.Array, shape_nhwc: tuple[int, int, int, int], dtype: jnp.dtype = jnp.float32,
                  policy: str = DEFAULT_POLICY) -> dict[str, jax.Array]:
    """Draw the random parameters of `policy` for a batch of `shape_nhwc` (see the module docstring).

    Returns a dict with the keys among 'brightness', 'saturation', 'contrast' ([N] floats in `dtype`),
    'translation' ([N, 2] int32) and 'cutout' ([N, 2] int32) that the policy uses.
    """
    names = parse_policy(policy)
    n, h, w, _ = shape_nhwc
    keys = dict(zip(_DRAW_NAMES, jax.random.split(key, len(_DRAW_NAMES))))
    params: dict[str, jax.Array] = {}
    if "color" in names:
        for name in ("brightness", "saturation", "contrast"):
            params[name] = jax.random.uniform(keys[name], (n,), dtype)
    if "translation" in names:
        sh, sw = translation_shift(h), translation_shift(w)
        th = jax.random.randint(keys["translation_h"], (n,), -sh, sh + 1)
        tw = jax.random.randint(keys["translation_w"], (n,), -sw, sw + 1)
        params["translation"] = jnp.stack([th, tw], axis=1).astype(jnp.int32)
    if "cutout" in names:
        ch, cw = cutout_size(h), cutout_size(w)
        # torch.randint(0, size + (1 - c % 2)): the upper bound is exclusive.
        oh = jax.random.randint(keys["cutout_h"], (n,), 0, h + (1 - ch % 2))
        ow = jax.random.randint(keys["cutout_w"], (n,), 0, w + (1 - cw % 2))
        params["cutout"] = jnp.stack([oh, ow], axis=1).astype(jnp.int32)
    return params


def apply_params(x: jax.Array, params: dict[str, jax.Array], policy: str = DEFAULT_POLICY) -> jax.Array:
    """Apply the augmentations of `policy` in its order (color = brightness, saturation, contrast)."""
    for name in parse_policy(policy):
        if name == "color":
            x = contrast(saturation(brightness(x, params["brightness"]), params["saturation"]), params["contrast"])
        elif name == "translation":
            x = translate(x, params["translation"])
        else:
            x = cutout(x, params["cutout"])
    return x


def diff_augment(x: jax.Array, key: jax.Array, policy: str = DEFAULT_POLICY) -> jax.Array:
    """DiffAugment of an NHWC batch in [-1, 1]; differentiable in x, jit-able (policy is static).

    Every sample gets its own draws. Same key -> same augmentation. An empty policy returns x unchanged.
    """
    if x.ndim != 4:
        raise ValueError(f"diff_augment expects an NHWC batch, got shape {x.shape}")
    if not parse_policy(policy):
        return x
    return apply_params(x, sample_params(key, x.shape, x.dtype, policy), policy)
