"""nnU-Net's online validation ("pseudo Dice", the green line of progress.png) and its best-checkpoint rule.

nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py:
  * `validation_step`: on the highest-resolution output only, one-hot of argmax vs the target, tp/fp/fn summed
    over the batch and the spatial axes (get_tp_fp_fn_tn with axes [0, 2, 3]), background dropped; pixels with
    the ignore label are masked out.
  * `on_validation_epoch_end`: tp/fp/fn summed over all validation batches of the epoch, then per class
    2tp / (2tp + fp + fn) (NaN for a class absent from both), `mean_fg_dice` = nanmean.
  * the logger (training/logging/nnunet_logger.py): `ema_fg_dice = 0.9 * previous + 0.1 * mean_fg_dice` (the
    first epoch takes the value itself); a new best EMA writes checkpoint_best.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

EMA_OLD = 0.9  # nnunet_logger.py: ema * 0.9 + 0.1 * value


def tp_fp_fn(logits: jax.Array, target: jax.Array, ignore_label: int | None = None
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per foreground class counts of argmax(logits) [B, H, W, K] against integer `target` [B, H, W] (or [B, H, W,
    1]); returns three float32 arrays [K - 1]."""
    if target.ndim == logits.ndim:
        target = target[..., 0]
    k = logits.shape[-1]
    pred = jax.nn.one_hot(jnp.argmax(logits, axis=-1), k, dtype=jnp.float32)
    if ignore_label is not None:
        mask = (target != ignore_label).astype(jnp.float32)[..., None]
        target = jnp.where(target == ignore_label, 0, target)
    else:
        mask = jnp.ones(target.shape + (1,), jnp.float32)
    ref = jax.nn.one_hot(target, k, dtype=jnp.float32)
    axes = tuple(range(logits.ndim - 1))
    tp = jnp.sum(pred * ref * mask, axes)
    fp = jnp.sum(pred * (1 - ref) * mask, axes)
    fn = jnp.sum((1 - pred) * ref * mask, axes)
    return tp[1:], fp[1:], fn[1:]


def pseudo_dice(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[list[float], float]:
    """(per-class Dice, nanmean) of counts summed over an epoch's validation batches."""
    tp, fp, fn = (np.asarray(a, np.float64) for a in (tp, fp, fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = 2 * tp / (2 * tp + fp + fn)
    mean = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")
    return [float(v) for v in per_class], mean


def ema_fg_dice(previous: float | None, mean_fg_dice: float) -> float:
    """The logger's moving average (None = first epoch)."""
    return float(mean_fg_dice) if previous is None else float(previous) * EMA_OLD + (1 - EMA_OLD) * mean_fg_dice


__all__ = ["EMA_OLD", "ema_fg_dice", "pseudo_dice", "tp_fp_fn"]
