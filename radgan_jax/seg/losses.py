"""nnU-Net v2's segmentation loss (label maps, softmax outputs), as pure functions on NHWC arrays.

What nnunetv2 2.8.1 `nnUNetTrainer._build_loss` builds for a plan without regions:

    DeepSupervisionWrapper(DC_and_CE_loss({'batch_dice': plan['batch_dice'], 'smooth': 1e-5, 'do_bg': False,
                                           'ddp': ...}, {}, weight_ce=1, weight_dice=1, ignore_label=...,
                                          dice_class=MemoryEfficientSoftDiceLoss),
                           weights)

with weights 1/2^i over the `n_stages - 1` outputs, the lowest-resolution one set to 0, normalized to sum 1
(`deep_supervision_weights`). The targets of the lower-resolution outputs come from the data pipeline:
batchgeneratorsv2 `DownsampleSegForDSTransform` with scales 1 / cumprod(pool_op_kernel_sizes)[:-1]
(`deep_supervision_scales`, `downsample_seg_for_ds`).

Conventions here: logits (B, *spatial, C) float; targets are integer label maps (B, *spatial) or
(B, *spatial, 1). With an ignore label, C excludes it (nnU-Net's `num_segmentation_heads`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# nnUNetTrainer._build_loss: soft dice kwargs {'smooth': 1e-5, 'do_bg': False}, weight_ce = weight_dice = 1.
DICE_SMOOTH = 1e-5


def _labels(target: jax.Array, logits: jax.Array) -> jax.Array:
    """(B, *spatial) integer labels from (B, *spatial) or (B, *spatial, 1)."""
    if target.ndim == logits.ndim:
        if target.shape[-1] != 1:
            raise ValueError(f"target shape {target.shape}: expected a label map (B, *spatial) or (B, *spatial, 1) "
                             f"for logits {logits.shape} (one-hot targets are not supported)")
        target = target[..., 0]
    if target.shape != logits.shape[:-1]:
        raise ValueError(f"target shape {target.shape} does not match logits {logits.shape} (B, *spatial, C)")
    return target.astype(jnp.int32)


def soft_dice_loss(logits: jax.Array, target: jax.Array, *, batch_dice: bool, do_bg: bool = False,
                   smooth: float = DICE_SMOOTH, loss_mask: jax.Array | None = None) -> jax.Array:
    """nnunetv2 `MemoryEfficientSoftDiceLoss(apply_nonlin=softmax, ddp=False)`: minus the mean soft Dice.

    Per (sample, class) sums over space of p*y, p and y (times `loss_mask`, shape (B, *spatial)); with
    `batch_dice` the sums are also taken over the batch. dc = (2 I + smooth) / max(sum_gt + sum_pred + smooth,
    1e-8), averaged over classes (and samples), background dropped unless `do_bg`.
    """
    labels = _labels(target, logits)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    if not do_bg:
        probs, onehot = probs[..., 1:], onehot[..., 1:]
    if loss_mask is not None:
        m = loss_mask.astype(jnp.float32)[..., None]
        onehot_m, probs_m = onehot * m, probs * m
    else:
        onehot_m, probs_m = onehot, probs
    axes = tuple(range(1, logits.ndim - 1))
    sum_gt = onehot_m.sum(axes)            # (B, C')
    intersect = (probs_m * onehot).sum(axes)
    sum_pred = probs_m.sum(axes)
    if batch_dice:
        sum_gt, intersect, sum_pred = sum_gt.sum(0), intersect.sum(0), sum_pred.sum(0)
    dc = (2 * intersect + smooth) / jnp.maximum(sum_gt + sum_pred + smooth, 1e-8)
    return -dc.mean()


def cross_entropy_loss(logits: jax.Array, target: jax.Array, *, ignore_label: int | None = None) -> jax.Array:
    """nnunetv2 `RobustCrossEntropyLoss` (= torch CrossEntropyLoss, mean reduction, `ignore_index`).

    Mean over the pixels whose label is not `ignore_label`; 0 (not NaN) when every pixel is ignored.
    """
    labels = _labels(target, logits)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    if ignore_label is None:
        nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
        return nll.mean()
    valid = labels != ignore_label
    safe = jnp.where(valid, labels, 0)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    count = valid.sum()
    return jnp.where(count > 0, jnp.where(valid, nll, 0.0).sum() / jnp.maximum(count, 1), 0.0)


def dc_and_ce_loss(logits: jax.Array, target: jax.Array, *, batch_dice: bool, ignore_label: int | None = None,
                   weight_ce: float = 1.0, weight_dice: float = 1.0, smooth: float = DICE_SMOOTH) -> jax.Array:
    """nnunetv2 `DC_and_CE_loss` with MemoryEfficientSoftDiceLoss (do_bg=False): w_ce * CE + w_dice * Dice.

    With `ignore_label`: Dice uses the label map with ignored pixels set to 0 and masks them out of every sum;
    CE ignores them; CE is 0 when no pixel is left (nnU-Net's `num_fg > 0` guard).
    """
    labels = _labels(target, logits)
    if ignore_label is not None:
        mask = labels != ignore_label
        target_dice = jnp.where(mask, labels, 0)
    else:
        mask, target_dice = None, labels
    dc = soft_dice_loss(logits, target_dice, batch_dice=batch_dice, smooth=smooth, loss_mask=mask) \
        if weight_dice != 0 else 0.0
    ce = cross_entropy_loss(logits, labels, ignore_label=ignore_label) if weight_ce != 0 else 0.0
    return weight_ce * ce + weight_dice * dc


# ----------------------------------------------------------------------------------------------- deep supervision

def deep_supervision_scales(strides: Sequence[Sequence[int]]) -> list[tuple[float, ...]]:
    """nnUNetTrainer._get_deep_supervision_scales: 1 / cumprod(pool_op_kernel_sizes)[:-1], one per DS output."""
    s = np.cumprod(np.vstack([np.asarray(v, dtype=np.int64) for v in strides]), axis=0)
    return [tuple(float(x) for x in 1 / row) for row in s][:-1]


def deep_supervision_weights(num_outputs: int) -> np.ndarray:
    """nnUNetTrainer._build_loss: 1 / 2^i, the last (lowest resolution) set to 0, normalized to sum 1.

    (nnU-Net uses 1e-6 instead of 0 under DDP without torch.compile, only to dodge a DDP unused-parameter error.)
    """
    if num_outputs < 2:
        raise ValueError(f"deep supervision needs at least 2 outputs, got {num_outputs}")
    w = np.array([1 / (2**i) for i in range(num_outputs)])
    w[-1] = 0
    return w / w.sum()


def _nearest_exact_index(n_in: int, n_out: int) -> np.ndarray:
    """torch interpolate(mode='nearest-exact') source index: min(floor((i + 0.5) * n_in / n_out), n_in - 1)."""
    scale = n_in / n_out
    return np.minimum(np.floor((np.arange(n_out) + 0.5) * scale).astype(np.int64), n_in - 1)


def downsample_seg(seg: jax.Array, scale: Sequence[float]) -> jax.Array:
    """One target of batchgeneratorsv2 `DownsampleSegForDSTransform`: nearest-exact resize to round(n * s).

    `seg` is (B, *spatial) or (B, *spatial, 1) with len(spatial) == len(scale); the size uses Python's round
    (half to even) exactly as the transform does. Shapes are static, so this works under jit.
    """
    scale = tuple(scale)
    if all(s == 1 for s in scale):
        return seg
    out = seg
    for axis, s in enumerate(scale, start=1):
        n_in = seg.shape[axis]
        n_out = round(n_in * s)
        if n_out != n_in:
            out = jnp.take(out, jnp.asarray(_nearest_exact_index(n_in, n_out)), axis=axis)
    return out


def downsample_seg_for_ds(seg: jax.Array, scales: Sequence[Sequence[float]]) -> list[jax.Array]:
    """Targets for every deep-supervision output (highest resolution first), from the full-resolution map."""
    return [downsample_seg(seg, s) for s in scales]


def deep_supervision_loss(outputs: Sequence[jax.Array], targets: Sequence[jax.Array], weights: Sequence[float],
                          loss_fn: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
    """nnunetv2 `DeepSupervisionWrapper`: sum_i w_i * loss_fn(outputs[i], targets[i]), skipping w_i == 0."""
    if not (len(outputs) == len(targets) == len(weights)):
        raise ValueError(f"deep supervision: {len(outputs)} outputs, {len(targets)} targets, {len(weights)} weights")
    weights = [float(w) for w in weights]
    if not any(w != 0 for w in weights):
        raise ValueError("deep supervision: at least one weight must be != 0")
    return sum(w * loss_fn(o, t) for o, t, w in zip(outputs, targets, weights) if w != 0)


def nnunet_loss(outputs: Sequence[jax.Array] | jax.Array, targets: Sequence[jax.Array] | jax.Array, *,
                batch_dice: bool, ignore_label: int | None = None) -> jax.Array:
    """The loss nnUNetTrainer trains with: DC_and_CE, wrapped in deep supervision when `outputs` is a list.

    `targets` is then the list from `downsample_seg_for_ds` (one per output); a single array pairs with a single
    (non-deep-supervision) output.
    """
    def loss_fn(o, t):
        return dc_and_ce_loss(o, t, batch_dice=batch_dice, ignore_label=ignore_label)

    if isinstance(outputs, (list, tuple)):
        return deep_supervision_loss(outputs, targets, deep_supervision_weights(len(outputs)), loss_fn)
    return loss_fn(outputs, targets)
