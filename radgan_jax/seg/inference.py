"""Sliding-window prediction of a 2D network over whole images, as nnU-Net v2's `nnUNetPredictor` does it.

What nnU-Net does (nnunetv2/inference/predict_from_raw_data.py, sliding_window_prediction.py):
  * `predict_sliding_window_return_logits`: the image (C, Z, H, W; 2D plans predict every z slice on its own)
    is zero-padded to at least the patch size (acvl_utils `pad_nd_image`: centred, the odd pixel after),
    tiles start at `compute_steps_for_sliding_window(..., tile_step_size=0.5)`, visited z, then y, then x.
  * `_internal_maybe_mirror_and_predict`: network(x), plus network(flip(x)) flipped back for every non-empty
    combination of the mirror axes ((y,), (x,), (y, x) for a 2D plan), summed in that order in float32 and
    divided by the number of passes.
  * `_internal_predict_sliding_window_return_logits`: each tile's prediction is multiplied by the Gaussian
    importance map (`compute_gaussian(patch, sigma_scale=1/8, value_scaling_factor=10)`, float16, zeros
    replaced by the smallest non-zero value) and added to a float16 logits buffer; the map itself is added to
    a float16 weight buffer; at the end logits /= weights. The padding is cropped off again.
  * `predict_logits_from_preprocessed_data` (fold ensembling): the folds' float16 logits are summed one fold
    after the other in float16 and divided by the number of folds (logits are averaged, not probabilities).
  * nnUNetv2_ensemble (ensembling/ensemble.py `average_probabilities`) averages float32 probabilities.

Here the accumulation is emulated exactly: tiles are added one by one in nnU-Net's order with every
intermediate rounded to `accumulate_dtype` (float16 as nnU-Net; float32 is available and more accurate).
The network runs on fixed-size batches of tiles (all mirror passes of a batch in one call), inside one jit.
Layout: NHWC, `image` is (H, W, C) or a stack of slices (Z, H, W, C); logits come back as (..., H, W, K).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ApplyFn = Callable[[object, jax.Array], jax.Array]

TILE_STEP_SIZE = 0.5  # nnUNetPredictor default
SIGMA_SCALE = 1.0 / 8  # _internal_predict_sliding_window_return_logits
VALUE_SCALING_FACTOR = 10.0  # idem (compute_gaussian's own default is 1)
DEFAULT_MIRROR_AXES_2D = (0, 1)  # nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size, 2D


def compute_steps_for_sliding_window(image_size: Sequence[int], tile_size: Sequence[int],
                                     tile_step_size: float = TILE_STEP_SIZE) -> list[list[int]]:
    """Tile start coordinates per axis, as nnU-Net's function of the same name: ceil((size - tile) / (tile *
    step)) + 1 steps, spread evenly over [0, size - tile] and rounded with np.round (half to even)."""
    if not 0 < tile_step_size <= 1:
        raise ValueError(f"tile_step_size must be in (0, 1], got {tile_step_size}")
    if len(image_size) != len(tile_size):
        raise ValueError(f"image size {tuple(image_size)} and tile size {tuple(tile_size)} differ in length")
    if any(i < t for i, t in zip(image_size, tile_size)):
        raise ValueError(f"image size {tuple(image_size)} must be >= tile size {tuple(tile_size)}; pad it first")
    steps = []
    for size, tile in zip(image_size, tile_size):
        n = int(np.ceil((size - tile) / (tile * tile_step_size))) + 1
        stride = (size - tile) / (n - 1) if n > 1 else 99999999999
        steps.append([int(np.round(stride * i)) for i in range(n)])
    return steps


@functools.lru_cache(maxsize=8)
def _gaussian_cached(tile_size: tuple[int, ...], sigma_scale: float, value_scaling_factor: float,
                     dtype_name: str) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    tmp = np.zeros(tile_size)
    tmp[tuple(t // 2 for t in tile_size)] = 1
    g = gaussian_filter(tmp, [t * sigma_scale for t in tile_size], 0, mode="constant", cval=0)
    g /= np.max(g) / value_scaling_factor
    g = g.astype(np.float32).astype(dtype_name)  # torch's float64 -> half goes through float32: round twice
    zero = g == 0  # a zero weight would divide by zero where only that tile reaches: use the smallest one
    g[zero] = np.min(g[~zero])
    g.setflags(write=False)
    return g


def compute_gaussian(tile_size: Sequence[int], sigma_scale: float = SIGMA_SCALE,
                     value_scaling_factor: float = VALUE_SCALING_FACTOR, dtype: object = np.float16) -> np.ndarray:
    """nnU-Net's `compute_gaussian`: a unit impulse at tile_size // 2 blurred with scipy's gaussian_filter
    (sigma = tile * sigma_scale, constant border), scaled to a maximum of value_scaling_factor, cast to
    `dtype`, zeros replaced by the smallest non-zero value (read-only array)."""
    return _gaussian_cached(tuple(int(t) for t in tile_size), float(sigma_scale), float(value_scaling_factor),
                            np.dtype(dtype).name)


def padding_for(spatial_shape: Sequence[int], patch_size: Sequence[int]) -> list[tuple[int, int]]:
    """(before, after) zero padding per axis that `pad_nd_image(image, patch_size)` applies: none where the
    image is already large enough, else centred with the odd pixel after."""
    out = []
    for s, p in zip(spatial_shape, patch_size):
        d = max(int(p) - int(s), 0)
        out.append((d // 2, d // 2 + d % 2))
    return out


def mirror_combinations(mirror_axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    """All non-empty combinations, smallest first, in itertools order: (0,), (1,), (0, 1) for a 2D plan."""
    axes = tuple(mirror_axes or ())
    return [c for k in range(len(axes)) for c in itertools.combinations(axes, k + 1)]


def maybe_mirror_and_predict(apply_fn: ApplyFn, params: object, x: jax.Array,
                             mirror_axes: Sequence[int] | None = DEFAULT_MIRROR_AXES_2D) -> jax.Array:
    """nnU-Net's `_internal_maybe_mirror_and_predict` for NHWC tiles x (N, H, W, C): mirror axis 0 is H, 1 is W.
    All passes run as one batch; the flipped-back outputs are summed in nnU-Net's order, then averaged."""
    combos = mirror_combinations(mirror_axes)
    if any(a not in (0, 1) for c in combos for a in c):
        raise ValueError(f"2D mirror axes must be 0 (H) and/or 1 (W), got {tuple(mirror_axes or ())}")
    if not combos:
        return apply_fn(params, x).astype(jnp.float32)
    flips = [tuple(a + 1 for a in c) for c in combos]
    xs = jnp.concatenate([x] + [jnp.flip(x, f) for f in flips], axis=0)
    ys = apply_fn(params, xs).astype(jnp.float32)
    n = x.shape[0]
    pred = ys[:n]
    for k, f in enumerate(flips):
        pred = pred + jnp.flip(ys[(k + 1) * n:(k + 2) * n], f)
    return pred / (len(combos) + 1)


@functools.partial(jax.jit, static_argnames=("apply_fn", "patch_size", "mirror_axes", "num_classes", "dtype"))
def _sliding_window(params: object, image: jax.Array, starts: jax.Array, valid: jax.Array, gaussian: jax.Array, *,
                    apply_fn: ApplyFn, patch_size: tuple[int, int], mirror_axes: tuple[int, ...] | None,
                    num_classes: int, dtype: str) -> jax.Array:
    """image (Z, H, W, C) already padded; starts (num_batches, B, 3) tile origins (z, y, x); valid (num_batches, B)
    marks real tiles (the last batch is filled up with copies of tile 0)."""
    f32 = jnp.float32
    ph, pw = patch_size
    z, h, w, c = image.shape
    g32 = gaussian.astype(f32)

    def tile(s: jax.Array) -> jax.Array:
        return lax.dynamic_slice(image, (s[0], s[1], s[2], 0), (1, ph, pw, c))[0]

    def batch_body(b: jax.Array, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        st = starts[b]
        pred = maybe_mirror_and_predict(apply_fn, params, jax.vmap(tile)(st), mirror_axes)
        pred = pred * g32[None, :, :, None]  # nnU-Net: prediction (float32) *= gaussian

        def tile_body(i: jax.Array, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
            acc, cnt = carry
            s, ok = st[i], valid[b, i]
            cur = lax.dynamic_slice(acc, (s[0], s[1], s[2], 0), (1, ph, pw, num_classes))
            new = jnp.where(ok, (cur.astype(f32) + pred[i][None]).astype(dtype), cur)
            acc = lax.dynamic_update_slice(acc, new, (s[0], s[1], s[2], 0))
            cur_n = lax.dynamic_slice(cnt, (s[0], s[1], s[2]), (1, ph, pw))
            new_n = jnp.where(ok, (cur_n.astype(f32) + g32[None]).astype(dtype), cur_n)
            return acc, lax.dynamic_update_slice(cnt, new_n, (s[0], s[1], s[2]))

        return lax.fori_loop(0, st.shape[0], tile_body, carry)

    acc = jnp.zeros((z, h, w, num_classes), dtype)
    cnt = jnp.zeros((z, h, w), dtype)
    acc, cnt = lax.fori_loop(0, starts.shape[0], batch_body, (acc, cnt))
    return (acc.astype(f32) / cnt.astype(f32)[..., None]).astype(dtype)


def tile_origins(spatial_shape: Sequence[int], patch_size: Sequence[int],
                 tile_step_size: float = TILE_STEP_SIZE) -> np.ndarray:
    """(T, 3) tile origins (z, y, x) of a padded (Z, H, W) stack in nnU-Net's order (z, then y, then x)."""
    z, h, w = spatial_shape
    sy, sx = compute_steps_for_sliding_window((h, w), patch_size, tile_step_size)
    return np.array([(d, y, x) for d in range(z) for y in sy for x in sx], dtype=np.int32).reshape(-1, 3)


_NUM_CLASSES: dict[tuple, int] = {}


def _num_classes(apply_fn: ApplyFn, params: object, patch: tuple[int, int], channels: int) -> int:
    """K from the network's output shape; traced once per (apply_fn, params structure, patch, channels)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    key = (apply_fn, treedef, tuple(np.shape(x) for x in leaves), patch, channels)
    if key not in _NUM_CLASSES:
        out = jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct((1, *patch, channels), jnp.float32))
        if out.ndim != 4 or out.shape[:3] != (1, *patch):
            raise ValueError(f"apply_fn must map (N, {patch[0]}, {patch[1]}, C) tiles to (N, {patch[0]}, "
                             f"{patch[1]}, K) logits, got output shape {out.shape}")
        _NUM_CLASSES[key] = int(out.shape[-1])
    return _NUM_CLASSES[key]


def predict_sliding_window(apply_fn: ApplyFn, params: object, image: np.ndarray | jax.Array,
                           patch_size: Sequence[int], *, tile_step_size: float = TILE_STEP_SIZE,
                           use_gaussian: bool = True, mirror_axes: Sequence[int] | None = DEFAULT_MIRROR_AXES_2D,
                           batch_size: int = 8, accumulate_dtype: str = "float16") -> jax.Array:
    """One network's sliding-window logits, nnU-Net's `predict_sliding_window_return_logits`.

    `apply_fn(params, x)` maps float32 NHWC tiles (N, ph, pw, C) to logits (N, ph, pw, K); keep passing the same
    (hashable) apply_fn object so the compiled program is reused. `image` (H, W, C) or (Z, H, W, C) float.
    Returns (H, W, K) or (Z, H, W, K) logits in `accumulate_dtype`. RuntimeError on inf (as nnU-Net).
    """
    if len(patch_size) != 2:
        raise ValueError(f"2D prediction needs a 2D patch size, got {tuple(patch_size)}")
    patch = (int(patch_size[0]), int(patch_size[1]))
    if accumulate_dtype not in ("float16", "float32"):
        raise ValueError(f"accumulate_dtype must be 'float16' (nnU-Net) or 'float32', got {accumulate_dtype!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    image = jnp.asarray(image, jnp.float32)
    single = image.ndim == 3
    if image.ndim not in (3, 4):
        raise ValueError(f"image must be (H, W, C) or (Z, H, W, C), got shape {image.shape}")
    stack = image[None] if single else image
    pads = padding_for(stack.shape[1:3], patch)
    padded = jnp.pad(stack, [(0, 0), *pads, (0, 0)])  # pad_nd_image(..., 'constant', value 0)
    origins = tile_origins(padded.shape[:3], patch, tile_step_size)
    n_batches = -(-len(origins) // batch_size)
    starts = np.zeros((n_batches * batch_size, 3), np.int32)
    starts[:len(origins)] = origins
    valid = np.arange(n_batches * batch_size) < len(origins)
    if use_gaussian:
        gaussian = compute_gaussian(patch, SIGMA_SCALE, VALUE_SCALING_FACTOR, accumulate_dtype)
    else:
        gaussian = np.ones(patch, accumulate_dtype)  # nnU-Net: gaussian = 1
    axes = tuple(int(a) for a in mirror_axes) if mirror_axes else None
    num_classes = _num_classes(apply_fn, params, patch, int(padded.shape[-1]))
    logits = _sliding_window(params, padded, jnp.asarray(starts.reshape(n_batches, batch_size, 3)),
                             jnp.asarray(valid.reshape(n_batches, batch_size)), jnp.asarray(gaussian),
                             apply_fn=apply_fn, patch_size=patch, mirror_axes=axes,
                             num_classes=num_classes, dtype=accumulate_dtype)
    (y0, y1), (x0, x1) = pads
    logits = logits[:, y0:logits.shape[1] - y1, x0:logits.shape[2] - x1]
    if bool(jnp.any(jnp.isinf(logits))):
        raise RuntimeError("inf in the predicted logits (float16 overflow): use accumulate_dtype='float32'")
    return logits[0] if single else logits


def ensemble_fold_logits(fold_logits: Sequence[jax.Array]) -> jax.Array:
    """nnU-Net's fold ensembling (predict_logits_from_preprocessed_data): sum the folds one after the other in
    their own dtype (float16: every partial sum rounded), then divide by the number of folds if > 1."""
    if not fold_logits:
        raise ValueError("ensemble_fold_logits needs at least one fold")
    dtype = fold_logits[0].dtype
    acc = fold_logits[0]
    for logits in fold_logits[1:]:
        acc = (acc.astype(jnp.float32) + logits.astype(jnp.float32)).astype(dtype)
    if len(fold_logits) > 1:
        acc = (acc.astype(jnp.float32) / len(fold_logits)).astype(dtype)
    return acc


def predict_logits(apply_fn: ApplyFn, params_list: Sequence[object], image: np.ndarray | jax.Array,
                   patch_size: Sequence[int], *, tile_step_size: float = TILE_STEP_SIZE, use_gaussian: bool = True,
                   mirror_axes: Sequence[int] | None = DEFAULT_MIRROR_AXES_2D, batch_size: int = 8,
                   accumulate_dtype: str = "float16") -> jax.Array:
    """Sliding-window logits of every parameter set (fold) in `params_list`, ensembled as nnU-Net does
    (`predict_logits_from_preprocessed_data`). Arguments as `predict_sliding_window`."""
    if not params_list:
        raise ValueError("params_list is empty: give the parameters of at least one fold")
    kw = dict(tile_step_size=tile_step_size, use_gaussian=use_gaussian, mirror_axes=mirror_axes,
              batch_size=batch_size, accumulate_dtype=accumulate_dtype)
    return ensemble_fold_logits([predict_sliding_window(apply_fn, p, image, patch_size, **kw) for p in params_list])


def average_probabilities(probabilities: Sequence[np.ndarray | jax.Array]) -> np.ndarray:
    """nnUNetv2_ensemble's `average_probabilities`: float32 running sum of the members, divided by their count."""
    if not probabilities:
        raise ValueError("average_probabilities needs at least one member")
    avg = np.asarray(probabilities[0]).astype(np.float32)
    for p in probabilities[1:]:
        avg += np.asarray(p)
    avg /= len(probabilities)
    return avg


def logits_to_probabilities(logits: jax.Array) -> jax.Array:
    """Softmax over the class axis (last) in float32 (LabelManager.apply_inference_nonlin, non-region)."""
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def logits_to_segmentation(logits: jax.Array) -> jax.Array:
    """Argmax over classes (LabelManager.convert_logits_to_segmentation, non-region: argmax of logits)."""
    return jnp.argmax(logits, axis=-1)
