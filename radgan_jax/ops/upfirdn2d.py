"""upfirdn2d in JAX: upsample (zero insertion), pad/crop, FIR filter, downsample -- NHWC.

Semantics follow the original reference `torch_utils/ops/upfirdn2d.py::_upfirdn2d_ref`:
1. insert `up - 1` zeros after every input sample (so the upsampled size is `in * up`);
2. pad with zeros (negative padding crops), `padding = [x0, x1, y0, y1]` w.r.t. the upsampled image;
3. convolve with `f` (flipped unless `flip_filter`), scaled by `gain ** (f.ndim / 2)`, keeping only
   outputs whose footprint lies inside the padded image ("valid");
4. keep every `down`-th sample starting at index 0.

Zero insertion is expressed as `lhs_dilation` and decimation as the convolution stride, so XLA never
materialises the zero-stuffed image nor the discarded samples. A separable filter is applied as two
depthwise 1-D convolutions (width first, then height, like the original).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Padding = Sequence[int]


def parse_padding(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """`p`, `[px, py]` or `[x0, x1, y0, y1]` -> (x0, x1, y0, y1)."""
    if isinstance(padding, (int, np.integer)):
        p = int(padding)
        return p, p, p, p
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) == 4:
        return tuple(padding)  # type: ignore[return-value]
    raise ValueError(f"padding must be an int, [px, py] or [x0, x1, y0, y1]; got {padding}")


def _depthwise_1d(
    x: jax.Array,
    taps: np.ndarray,
    axis: int,
    up: int,
    down: int,
    pad: tuple[int, int],
    precision: jax.lax.Precision | None,
) -> jax.Array:
    """Filters NHWC `x` along spatial `axis` (1 = height, 2 = width) with a 1-D kernel."""
    channels = x.shape[-1]
    k = jnp.asarray(taps, dtype=x.dtype)
    kshape = (len(taps), 1) if axis == 1 else (1, len(taps))
    kernel = jnp.broadcast_to(k.reshape(kshape + (1, 1)), kshape + (1, channels))
    lo, hi = pad
    # Torch inserts up-1 zeros after the last sample too; lhs_dilation does not, hence `+ up - 1`.
    hi = hi + up - 1
    spatial_pad = [(0, 0), (0, 0)]
    spatial_pad[axis - 1] = (lo, hi)
    dil = [1, 1]
    dil[axis - 1] = up
    stride = [1, 1]
    stride[axis - 1] = down
    # Negative padding (cropping) is done explicitly; conv padding must be >= 0.
    crop = [(max(-a, 0), max(-b, 0)) for a, b in spatial_pad]
    spatial_pad = [(max(a, 0), max(b, 0)) for a, b in spatial_pad]
    if any(c != (0, 0) for c in crop):
        # Cropping happens on the dilated grid: dilate first, then crop, then convolve.
        if up > 1:
            x = _dilate(x, axis, up)
            dil = [1, 1]
        x = jax.lax.slice(
            x,
            (0, crop[0][0], crop[1][0], 0),
            (x.shape[0], x.shape[1] - crop[0][1], x.shape[2] - crop[1][1], channels),
        )
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=tuple(stride),
        padding=spatial_pad,
        lhs_dilation=tuple(dil),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels,
        precision=precision,
    )


def _dilate(x: jax.Array, axis: int, up: int) -> jax.Array:
    """Zero insertion (up - 1 zeros between samples, none after the last) along `axis`."""
    cfg = [(0, 0, 0)] * 4
    cfg[axis] = (0, 0, up - 1)
    return jax.lax.pad(x, jnp.zeros((), x.dtype), cfg)


def upfirdn2d(
    x: jax.Array,
    f: np.ndarray | None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = 1.0,
    flip_filter: bool = False,
    precision: jax.lax.Precision | None = jax.lax.Precision.HIGHEST,
) -> jax.Array:
    """Pad, upsample, filter and downsample a batch of NHWC images (see module docstring)."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects NHWC input, got shape {x.shape}")
    up, down = int(up), int(down)
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up} down={down}")
    x0, x1, y0, y1 = parse_padding(padding)
    if f is None:
        f = np.ones([1, 1], dtype=np.float32)
    f = np.asarray(f, dtype=np.float32)
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D (separable) or 2-D, got shape {f.shape}")
    f = f * np.float32(gain ** (f.ndim / 2))
    if not flip_filter:
        f = f[::-1] if f.ndim == 1 else f[::-1, ::-1]
    _, in_h, in_w, channels = x.shape
    fh = f.shape[0]
    fw = f.shape[-1]
    if in_w * up + x0 + x1 < fw or in_h * up + y0 + y1 < fh:
        raise ValueError(f"upsampled+padded image {in_h}x{in_w} is smaller than the filter {f.shape}")
    if f.ndim == 1:
        x = _depthwise_1d(x, f, axis=2, up=up, down=down, pad=(x0, x1), precision=precision)
        x = _depthwise_1d(x, f, axis=1, up=up, down=down, pad=(y0, y1), precision=precision)
        return x
    # Non-separable filter: zero-insert and crop explicitly, then one depthwise 2-D convolution.
    if up > 1:
        x = _dilate(_dilate(x, 1, up), 2, up)
    cfg = [(0, 0, 0), (y0, y1 + up - 1, 0), (x0, x1 + up - 1, 0), (0, 0, 0)]
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), cfg)
    kernel = jnp.broadcast_to(jnp.asarray(f, x.dtype)[:, :, None, None], (fh, fw, 1, channels))
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(down, down),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels,
        precision=precision,
    )
