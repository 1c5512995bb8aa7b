"""nnU-Net v2's 2D spatial augmentation in JAX: rotation/scaling resample, centre crop, mirroring.

Layout: one sample, channels last. data [H, W, C] float32, seg [H, W, 1] integer. `jax.vmap` over a leading
batch axis gives NHWC batches, the layout of `radgan_jax.models.unet`.

What nnU-Net does (nnunetv2 2.8.1 `nnUNetTrainer.get_training_transforms`, batchgeneratorsv2 0.3.6
`transforms/spatial/spatial.py` SpatialTransform with patch_center_dist_from_border=0, random_crop=False,
p_elastic_deform=0, p_rotation=0.2, p_scaling=0.2, scaling=(0.7, 1.4), p_synchronize_scaling_across_axes=1,
border_mode_seg='constant', padding_value_seg=-1, mode_seg='bilinear', seg_tiebreak='nearest'):
  * the data loader hands over a patch of the larger `initial_patch_size`; the output patch is centred on its
    centre `S / 2` (random_crop=False), never randomly placed;
  * without rotation and scaling it is a plain crop (`crop_tensor`, centre `floor(S / 2)`, start
    `centre - P // 2`, padding 0 / -1 where the patch leaves the input);
  * otherwise output pixel k samples input pixel `A @ (k - (P - 1) / 2) + (S - 1) / 2` with
    `A = R(angle) @ diag(scale)` (`create_affine_matrix_2d`), through torch `grid_sample` (align_corners=False);
  * data: bilinear, zeros outside;
  * seg: per label, bilinear interpolation of the label's indicator x1000, rounded to float16; the argmax wins
    (ties -> smallest label), and where the nearest neighbour's label shares the top score it wins the tie.
    Outside the input counts as label -1, but only when some sample point reaches past the outer pixel
    centres (`_may_reach_outside`). With exactly two labels present only the larger label's score is
    computed and compared with 500 (> wins, == goes to the nearest neighbour), as the original does.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

PAD_LABEL = -1  # nnUNetTrainer: padding_value_seg=-1 (the data loader pads seg with -1 too)
SCORE_SCALE = 1000.0  # spatial.py: scale_factor for the float16 label scores


def rotation_for_da(patch_size: Sequence[int]) -> tuple[float, float]:
    """2D rotation range (radians) as `nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size`.

    +-15 degrees when the patch is elongated (max / min side > 1.5), else +-180 degrees.
    """
    if len(patch_size) != 2:
        raise ValueError(f"2D augmentation needs a 2D patch_size, got {tuple(patch_size)}")
    a = 15.0 if max(patch_size) / min(patch_size) > 1.5 else 180.0
    return (-a / 360 * 2.0 * np.pi, a / 360 * 2.0 * np.pi)


def initial_patch_size(patch_size: Sequence[int], rotation: float | Sequence[float],
                       scale: Sequence[float] = (0.85, 1.25)) -> tuple[int, int]:
    """nnU-Net's `get_patch_size` (training/data_augmentation/compute_initial_patch_size.py) for 2D.

    Rotates the corner vector `patch_size` by the largest |angle| (capped at 90 degrees) only, takes the
    per-axis max with the patch size, divides by min(scale) and truncates. nnU-Net passes scale (0.85, 1.25)
    here, not the (0.7, 1.4) the spatial transform samples from.
    """
    if len(patch_size) != 2:
        raise ValueError(f"initial_patch_size is 2D only, got patch_size {tuple(patch_size)}")
    rot = max(abs(float(r)) for r in rotation) if isinstance(rotation, (tuple, list)) else float(rotation)
    rot = min(90 / 360 * 2.0 * np.pi, rot)
    coords = np.array(patch_size, dtype=np.float64)
    # batchgenerators rotate_coords_2d: row vector @ [[cos, -sin], [sin, cos]]
    rot_m = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
    rotated = np.abs(coords[None] @ rot_m)[0]
    final = np.maximum(rotated, coords) / min(scale)
    return tuple(int(v) for v in final.astype(int))


def affine_matrix(angle: jax.Array, scale: jax.Array) -> jax.Array:
    """`create_affine_matrix_2d`: R(angle) @ diag(scale), acting on (axis0, axis1) column vectors. [2, 2]."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    rot = jnp.stack([jnp.stack([c, -s]), jnp.stack([s, c])]).astype(jnp.float32)
    return rot * jnp.asarray(scale, jnp.float32)[None, :]


def sample_coords(affine: jax.Array, patch_size: Sequence[int], input_shape: Sequence[int]) -> jax.Array:
    """Input pixel coordinates [P0, P1, 2] (axis0, axis1) that each output pixel samples.

    Same steps as SpatialTransform.get_parameters + grid_sample: centred identity grid, times affine, divided by
    S / 2 (grid_sample's normalised grid), then unnormalised with align_corners=False: (g + 1) * S / 2 - 0.5.
    """
    p0, p1 = patch_size
    b0 = jnp.arange(p0, dtype=jnp.float32) - (p0 - 1) / 2
    b1 = jnp.arange(p1, dtype=jnp.float32) - (p1 - 1) / 2
    b0, b1 = jnp.meshgrid(b0, b1, indexing="ij")
    g = [(affine[d, 0] * b0 + affine[d, 1] * b1) / np.float32(input_shape[d] / 2) for d in range(2)]
    return normalized_to_pixel(jnp.stack(g, -1), input_shape)


def normalized_to_pixel(grid: jax.Array, input_shape: Sequence[int]) -> jax.Array:
    """grid_sample's unnormalisation (align_corners=False) of a grid in (axis0, axis1) order."""
    half = jnp.asarray([s / 2 for s in input_shape], jnp.float32)
    return (grid + 1.0) * half - 0.5


def may_reach_outside(coords: jax.Array, input_shape: Sequence[int]) -> jax.Array:
    """SpatialTransform._may_reach_outside for bilinear: any normalised |g| beyond min_d(1 - 1 / S_d)."""
    half = jnp.asarray([s / 2 for s in input_shape], jnp.float32)
    g = (coords + 0.5) / half - 1.0
    bound = min(1.0 - 1.0 / s for s in input_shape)
    return (-jnp.min(g) > bound) | (jnp.max(g) > bound)


def _corners(coords: jax.Array, input_shape: Sequence[int]):
    """Bilinear corners nw, ne, sw, se: flat indices, inside masks, weights (grid_sample's CPU kernel order)."""
    y, x = coords[..., 0], coords[..., 1]
    y0, x0 = jnp.floor(y), jnp.floor(x)
    n, w = y - y0, x - x0
    s, e = 1.0 - n, 1.0 - w
    weights = (s * e, s * w, n * e, n * w)
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
    h, wd = input_shape
    idx, inside = [], []
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        yy, xx = y0 + dy, x0 + dx
        inside.append((yy >= 0) & (yy < h) & (xx >= 0) & (xx < wd))
        idx.append(jnp.clip(yy, 0, h - 1) * wd + jnp.clip(xx, 0, wd - 1))
    return idx, inside, weights


def resample_image(data: jax.Array, coords: jax.Array) -> jax.Array:
    """Bilinear sampling of data [S0, S1, C] at coords [P0, P1, 2], zeros outside -> [P0, P1, C]."""
    shape = data.shape[:2]
    flat = data.reshape(-1, data.shape[-1])
    idx, inside, weights = _corners(coords, shape)
    out = None
    for i, m, w in zip(idx, inside, weights):
        term = jnp.where(m[..., None], flat[i], 0.0) * w[..., None]
        out = term if out is None else out + term
    return out


def resample_seg(seg: jax.Array, coords: jax.Array) -> jax.Array:
    """Label map [S0, S1, 1] resampled at coords [P0, P1, 2] as SpatialTransform does with mode_seg='bilinear'.

    Only the (at most four) labels of a pixel's bilinear corners can have a non-zero score there, so each pixel
    scores those candidates instead of every label of the dataset: the same float32 sums (corner order nw, ne,
    sw, se) and float16 rounding as per-label grid_sample calls, with no label list needed at trace time.
    Assumes labels >= -1 (nnU-Net's).
    """
    shape = seg.shape[:2]
    lab_in = seg[..., 0].astype(jnp.int32)
    flat = lab_in.reshape(-1)
    idx, inside, weights = _corners(coords, shape)
    labs = [jnp.where(m, flat[i], PAD_LABEL) for i, m in zip(idx, inside)]
    reach = may_reach_outside(coords, shape)

    def chain(vals):
        out = None
        for v, w in zip(vals, weights):
            out = v * w if out is None else out + v * w
        return out

    def plain_score(u):
        return chain([jnp.where(m & (l == u), SCORE_SCALE, 0.0) for m, l in zip(inside, labs)]).astype(jnp.float16)

    # the padding label's indicator is 1 outside: grid_sample of (ind - 1) * 1000 with zeros padding, + 1000
    pad_score = (chain([jnp.where(m & (l != PAD_LABEL), -SCORE_SCALE, 0.0) for m, l in zip(inside, labs)])
                 + SCORE_SCALE).astype(jnp.float16)
    scores = [jnp.where(reach & (u == PAD_LABEL), pad_score, plain_score(u)) for u in labs]

    # nearest neighbour (grid_sample mode='nearest': round half to even), -1 outside
    ny = jnp.round(coords[..., 0]) > jnp.floor(coords[..., 0])
    nx = jnp.round(coords[..., 1]) > jnp.floor(coords[..., 1])
    pick = lambda v: jnp.where(ny, jnp.where(nx, v[3], v[2]), jnp.where(nx, v[1], v[0]))
    nn_lab, nn_score = pick(labs), pick(scores)

    # the label set of the patch (plus -1 when reaching outside) decides between the original's code paths
    big = jnp.iinfo(jnp.int32).max
    lo = jnp.minimum(jnp.min(lab_in), jnp.where(reach, PAD_LABEL, big))
    hi = jnp.maximum(jnp.max(lab_in), jnp.where(reach, PAD_LABEL, -big))
    has_middle = jnp.any((lab_in > lo) & (lab_in < hi)) | (reach & (PAD_LABEL > lo) & (PAD_LABEL < hi))

    # two labels: hi wins where its score > 500, the nearest neighbour at exactly 500
    hi_score = plain_score(hi)
    half = np.float16(SCORE_SCALE / 2)
    two = jnp.where(hi_score > half, hi, lo)
    two = jnp.where(hi_score == half, nn_lab, two)

    # three or more: argmax (smallest label among the top scores), nearest neighbour where it has the top score
    best = jnp.max(jnp.stack(scores), axis=0)
    winner = jnp.full(best.shape, big, jnp.int32)
    for u, sc in zip(labs, scores):
        winner = jnp.where(sc == best, jnp.minimum(winner, u), winner)
    multi = jnp.where(nn_score == best, nn_lab, winner)

    out = jnp.where(lo == hi, lo, jnp.where(has_middle, multi, two))
    return out[..., None].astype(seg.dtype)


def center_crop(x: jax.Array, patch_size: Sequence[int], pad_value: float | int) -> jax.Array:
    """`crop_tensor` at centre floor(S / 2): start = centre - P // 2, constant padding where it leaves x."""
    for d, p in enumerate(patch_size):
        size = x.shape[d]
        start = size // 2 - p // 2
        lo, hi = max(start, 0), min(start + p, size)
        x = jax.lax.slice_in_dim(x, lo, hi, axis=d)
        pad = [(0, 0)] * x.ndim
        pad[d] = (lo - start, start + p - hi)
        if any(pad[d]):
            x = jnp.pad(x, pad, constant_values=pad_value)
    return x


def spatial_transform(data: jax.Array, seg: jax.Array, angle: jax.Array, scale: jax.Array,
                      do_affine: jax.Array, patch_size: Sequence[int]) -> tuple[jax.Array, jax.Array]:
    """SpatialTransform with given parameters: resample when `do_affine` (rotation or scaling drawn), else crop.

    angle: scalar radians; scale: [2] per-axis factors (>1 samples a larger area, objects get smaller).
    """
    coords = sample_coords(affine_matrix(angle, scale), patch_size, data.shape[:2])
    d_aff, s_aff = resample_image(data, coords), resample_seg(seg, coords)
    d_crop = center_crop(data, patch_size, 0.0)
    s_crop = center_crop(seg, patch_size, PAD_LABEL)
    return jnp.where(do_affine, d_aff, d_crop), jnp.where(do_affine, s_aff, s_crop)


def mirror(x: jax.Array, flips: jax.Array) -> jax.Array:
    """MirrorTransform: flip spatial axis d (0 or 1) of x [H, W, ...] where flips[d]."""
    for d in range(2):
        x = jnp.where(flips[d], jnp.flip(x, axis=d), x)
    return x
