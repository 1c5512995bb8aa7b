"""Filtered leaky ReLU (StyleGAN3 Sec. 3.2): bias -> upsample+filter -> lrelu*gain -> clamp -> filter+down.

Semantics of the original reference path `torch_utils/ops/filtered_lrelu.py::_filtered_lrelu_ref`
(the one the golden tensors were computed with), in NHWC:
    x = x + b
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=up**2)
    x = clamp(leaky_relu(x, slope) * gain, -clamp, clamp)
    x = upfirdn2d(x, fd, down=down)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from radgan_jax.ops.upfirdn2d import parse_padding, upfirdn2d


def bias_lrelu_clamp(
    x: jax.Array, slope: float = 0.2, gain: float = float(np.sqrt(2)), clamp: float | None = None
) -> jax.Array:
    """leaky_relu(x, slope) * gain, then clamp to [-clamp, clamp] (the original `bias_act` 'lrelu')."""
    if slope != 1:
        x = jnp.where(x >= 0, x, x * jnp.asarray(slope, x.dtype))
    if gain != 1:
        x = x * jnp.asarray(gain, x.dtype)
    if clamp is not None and clamp >= 0:
        x = jnp.clip(x, -clamp, clamp)
    return x


def filtered_lrelu(
    x: jax.Array,
    fu: np.ndarray | None = None,
    fd: np.ndarray | None = None,
    b: jax.Array | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = float(np.sqrt(2)),
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
    precision: jax.lax.Precision | None = jax.lax.Precision.HIGHEST,
) -> jax.Array:
    """Bias, upsample, filter, leaky ReLU, clamp, filter, downsample an NHWC batch."""
    if b is not None:
        if b.shape != (x.shape[-1],):
            raise ValueError(f"bias shape {b.shape} does not match {x.shape[-1]} channels")
        x = x + b.astype(x.dtype)
    x = upfirdn2d(x, fu, up=up, padding=parse_padding(padding), gain=up**2, flip_filter=flip_filter,
                  precision=precision)
    x = bias_lrelu_clamp(x, slope=slope, gain=gain, clamp=clamp)
    return upfirdn2d(x, fd, down=down, flip_filter=flip_filter, precision=precision)
