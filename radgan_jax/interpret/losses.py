"""Interpreter losses, predictions and Dice, on logits [N, H, W, K] and integer masks [N, H, W].

K = 1 (one foreground class, label values {0, 1}): sigmoid binary cross-entropy, BigDatasetGAN's loss
(train.py: `BCEWithLogitsLoss`, mean over pixels). K > 1 (labels 0..K-1, 0 = background): softmax cross-entropy,
mean over pixels. Optionally plus nnU-Net's soft Dice (`seg/losses.soft_dice_loss`: background excluded, smooth
1e-5, minus the mean Dice), weighted by `dice_weight`; for K = 1 the sigmoid is written as the softmax of the
two logits (0, l), so the same Dice applies to the foreground.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from radgan_jax.seg.losses import cross_entropy_loss, soft_dice_loss


def num_logits(num_labels: int) -> int:
    """Interpreter outputs for a label map with `num_labels` labels (background included): 1 for a binary task
    (sigmoid, as the original), else one per label (softmax)."""
    if num_labels < 2:
        raise ValueError(f"a segmentation task needs at least 2 labels (background + one), got {num_labels}")
    return 1 if num_labels == 2 else int(num_labels)


def _check(logits: jax.Array, masks: jax.Array) -> None:
    if logits.ndim != 4 or masks.shape != logits.shape[:3]:
        raise ValueError(f"logits must be [N, H, W, K] and masks [N, H, W] of the same N, H, W; got logits "
                         f"{logits.shape}, masks {masks.shape}")


def _binary_as_two_class(logits: jax.Array) -> jax.Array:
    """[..., 1] logit l -> [..., 2] logits (0, l): softmax gives (1 - sigmoid(l), sigmoid(l))."""
    return jnp.concatenate([jnp.zeros_like(logits), logits], axis=-1)


def binary_cross_entropy(logits: jax.Array, masks: jax.Array) -> jax.Array:
    """Mean sigmoid BCE of logits [N, H, W, 1] against masks in {0, 1} (numerically stable form)."""
    _check(logits, masks)
    x = logits[..., 0].astype(jnp.float32)
    t = masks.astype(jnp.float32)
    return jnp.mean(jnp.maximum(x, 0) - x * t + jnp.log1p(jnp.exp(-jnp.abs(x))))


def segmentation_loss(logits: jax.Array, masks: jax.Array, *, dice_weight: float = 0.0,
                      batch_dice: bool = True) -> jax.Array:
    """BCE (K = 1) or softmax CE (K > 1), plus `dice_weight` x nnU-Net's soft Dice loss (background excluded;
    `batch_dice`: sums over the whole batch, nnU-Net's 2D setting)."""
    _check(logits, masks)
    masks = masks.astype(jnp.int32)
    if logits.shape[-1] == 1:
        loss = binary_cross_entropy(logits, masks)
        two = _binary_as_two_class(logits)
    else:
        loss = cross_entropy_loss(logits, masks)
        two = logits
    if dice_weight:
        loss = loss + dice_weight * soft_dice_loss(two, masks, batch_dice=batch_dice)
    return loss


def predict_labels(logits: jax.Array) -> jax.Array:
    """Logits [N, H, W, K] -> labels int32 [N, H, W]: sigmoid > 0.5 (i.e. logit > 0) for K = 1, else argmax."""
    if logits.shape[-1] == 1:
        return (logits[..., 0] > 0).astype(jnp.int32)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def probabilities(logits: jax.Array) -> jax.Array:
    """Logits [N, H, W, K] -> per-label probabilities [N, H, W, max(K, 2)] (K = 1: (1 - p, p))."""
    if logits.shape[-1] == 1:
        logits = _binary_as_two_class(logits)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def dice_per_label(pred: jax.Array, masks: jax.Array, num_labels: int) -> jax.Array:
    """Per-sample Dice of every foreground label: [N, num_labels - 1] float32, 2|P&T| / (|P| + |T|), NaN where the
    label is absent from both (leave those out of means: `jnp.nanmean`)."""
    if pred.shape != masks.shape or pred.ndim != 3:
        raise ValueError(f"pred and masks must both be [N, H, W]; got {pred.shape} and {masks.shape}")
    labels = jnp.arange(1, int(num_labels))
    p = pred[..., None] == labels
    t = masks[..., None] == labels
    inter = jnp.sum(p & t, axis=(1, 2)).astype(jnp.float32)
    total = (jnp.sum(p, axis=(1, 2)) + jnp.sum(t, axis=(1, 2))).astype(jnp.float32)
    return jnp.where(total > 0, 2 * inter / jnp.maximum(total, 1), jnp.nan)
