"""Predicted logits (preprocessed geometry) -> a segmentation in the raw case's geometry, and overlay pictures.

nnunetv2/inference/export_prediction.py `convert_predicted_logits_to_segmentation_with_correct_shape`:
resample the logits to the cropped shape before resampling (`resampling_fn_probabilities`, order 1, from the
configuration's spacing to the case's), softmax + argmax, paste into zeros of `shape_before_cropping` at
`bbox_used_for_cropping`, transpose back. Arrays here are nnU-Net's channels-first [K, Z, Y, X] (Z = 1 in 2D).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from radgan_jax.seg.preprocessing import RESAMPLING_FNS

# label colours of overlays (RGB), label 1 first
OVERLAY_COLOURS = ((255, 64, 64), (64, 200, 255), (255, 220, 0), (120, 255, 120), (255, 128, 255), (255, 160, 64))


def logits_to_raw_segmentation(logits: np.ndarray, properties: Mapping[str, Any], plans: Mapping[str, Any],
                               configuration: str = "2d") -> np.ndarray:
    """logits [K, Z, Y, X] of a preprocessed case -> uint8/uint16 segmentation in raw geometry [Z, Y, X]."""
    cfg = plans["configurations"][configuration]
    tf, tb = list(plans["transpose_forward"]), list(plans["transpose_backward"])
    spacing_t = [properties["spacing"][i] for i in tf]
    target_shape = [int(s) for s in properties["shape_after_cropping_and_before_resampling"]]
    current = list(cfg["spacing"])
    if len(current) != len(target_shape):
        current = [spacing_t[0], *current]
    logits = np.asarray(logits, np.float32)
    if list(logits.shape[1:]) != target_shape:
        logits = RESAMPLING_FNS[cfg["resampling_fn_probabilities"]](
            logits, target_shape, current, spacing_t, **cfg["resampling_fn_probabilities_kwargs"])
    seg = np.argmax(logits, axis=0)  # softmax is monotone: argmax of probabilities == argmax of logits
    dtype = np.uint8 if logits.shape[0] < 255 else np.uint16
    full = np.zeros([int(s) for s in properties["shape_before_cropping"]], dtype)
    bbox = properties["bbox_used_for_cropping"]
    full[tuple(slice(int(a), int(b)) for a, b in bbox)] = seg
    return full.transpose(tb)


def overlay(image: np.ndarray, seg: np.ndarray, reference: np.ndarray | None = None, alpha: float = 0.45
            ) -> np.ndarray:
    """RGB uint8 picture: the image (first channel, min-max scaled, or RGB as is) with the predicted labels
    filled in colour and, when given, the reference outlines in white. image [H, W] or [H, W, C]."""
    img = np.asarray(image, np.float32)
    if img.ndim == 3 and img.shape[-1] == 3:
        base = img
    else:
        base = np.repeat((img if img.ndim == 2 else img[..., 0])[..., None], 3, axis=-1)
    lo, hi = np.percentile(base, 0.5), np.percentile(base, 99.5)
    base = np.clip((base - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    out = base.copy()
    for label in np.unique(seg):
        if label == 0:
            continue
        colour = np.asarray(OVERLAY_COLOURS[(int(label) - 1) % len(OVERLAY_COLOURS)], np.float32)
        m = seg == label
        out[m] = (1 - alpha) * out[m] + alpha * colour
    if reference is not None:
        ref = np.asarray(reference)
        edge = np.zeros(ref.shape, bool)
        edge[1:] |= ref[1:] != ref[:-1]
        edge[:, 1:] |= ref[:, 1:] != ref[:, :-1]
        out[edge] = 255
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def side_by_side(images: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Horizontal strip of equally tall RGB images (shorter ones padded at the bottom)."""
    h = max(i.shape[0] for i in images)
    parts = []
    for i in images:
        parts.append(np.pad(i, [(0, h - i.shape[0]), (0, gap), (0, 0)]))
    return np.concatenate(parts, axis=1)


__all__ = ["OVERLAY_COLOURS", "logits_to_raw_segmentation", "overlay", "side_by_side"]
