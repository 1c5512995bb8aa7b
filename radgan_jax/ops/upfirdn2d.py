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

import functools
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


def _fir_1d(x: jax.Array, taps: np.ndarray, axis: int, up: int, down: int, pad: tuple[int, int]) -> jax.Array:
    """`_fir_1d_plain` with the original's gradient: the transpose of an up/FIR/down is a down/FIR/up with the
    reversed taps (torch_utils/ops/upfirdn2d.py, `_upfirdn2d_cuda.backward`). Autodiff of the slice sum would
    transpose every tap's strided slice into its own padded copy; XLA:CPU runs that 15-50x slower than the
    forward. The backward is itself a `_fir_1d`, so second derivatives (path-length reg) work too."""
    return _fir_1d_vjp(x, tuple(float(t) for t in np.asarray(taps, np.float32)), axis, up, down, tuple(pad))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5))
def _fir_1d_vjp(x, taps, axis, up, down, pad):
    return _fir_1d_plain(x, np.asarray(taps, np.float32), axis, up, down, pad)


def _fir_1d_fwd(x, taps, axis, up, down, pad):
    return _fir_1d_vjp(x, taps, axis, up, down, pad), x.shape[axis]


def _fir_1d_bwd(taps, axis, up, down, pad, n, dy):
    out = dy.shape[axis]
    bpad = (len(taps) - pad[0] - 1, n * up - out * down + pad[0] - up + 1)
    dx = _fir_1d_vjp(dy, taps[::-1], axis, down, up, bpad)
    if dx.shape[axis] != n:  # cannot happen for consistent shapes; guards the padding algebra
        raise AssertionError(f"upfirdn2d backward produced length {dx.shape[axis]}, expected {n}")
    return (dx,)


_fir_1d_vjp.defvjp(_fir_1d_fwd, _fir_1d_bwd)


def _fir_1d_plain(x: jax.Array, taps: np.ndarray, axis: int, up: int, down: int, pad: tuple[int, int]
                  ) -> jax.Array:
    """Filters `x` along `axis` with the (already flipped, gain-scaled) correlation kernel `taps`.

    Output m is  sum_k taps[k] * xu[m * down + k - lo]  with xu the zero-stuffed input (xu[i * up] = x[i]).
    The taps are compile-time constants, so this is written as a sum of shifted (strided) slices, one per
    tap and output phase: XLA fuses it into one loop over the output and never touches the zeros of the
    upsampled image. (A grouped convolution with `lhs_dilation` computes the same but runs 10-20x slower on
    CPU.) Accumulates in float32 for half-precision inputs, like the original CUDA kernels.
    """
    n, lo, hi, num_taps = x.shape[axis], pad[0], pad[1], len(taps)
    out_len = n * up + lo + hi - num_taps + 1  # 'valid' length on the upsampled, padded axis
    if out_len <= 0:
        raise ValueError(f"filter of {num_taps} taps longer than the padded axis ({n * up + lo + hi})")
    acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
    if up > 1 and down > 1:  # not used by StyleGAN3 (filtered_lrelu ups and downs in separate calls)
        y = _fir_1d_plain(x, taps, axis, up, 1, pad)
        return jax.lax.slice_in_dim(y, 0, y.shape[axis], down, axis)
    step = down if up == 1 else 1
    count = -(-out_len // step) if up == 1 else -(-out_len // up)  # outputs per phase
    phases = []
    for p in range(up):
        # Output up*a + p reads x[a + d] for every tap k with (p + k - lo) % up == 0, d = (p + k - lo) // up.
        terms = [(float(taps[k]), (p + k - lo) // up) for k in range(num_taps) if (p + k - lo) % up == 0]
        phases.append(terms)
    offsets = [d for terms in phases for _, d in terms]
    left = max(0, -min(offsets))
    right = max(0, (count - 1) * step + max(offsets) - (n - 1))
    cfg = [(0, 0)] * x.ndim
    cfg[axis] = (left, right)
    xp = jnp.pad(x, cfg).astype(acc_dtype)
    outs = []
    for terms in phases:
        acc = None
        for tap, d in terms:
            s = jax.lax.slice_in_dim(xp, d + left, d + left + (count - 1) * step + 1, step, axis) * tap
            acc = s if acc is None else acc + s
        outs.append(acc)
    if up > 1:  # interleave the phases: [..., count, up, ...] -> [..., count * up, ...]
        y = jnp.stack(outs, axis=axis + 1)
        y = y.reshape(y.shape[:axis] + (count * up,) + y.shape[axis + 2:])
    else:
        y = outs[0]
    return jax.lax.slice_in_dim(y, 0, -(-out_len // down), 1, axis).astype(x.dtype)


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
        x = _fir_1d(x, f, axis=2, up=up, down=down, pad=(x0, x1))
        return _fir_1d(x, f, axis=1, up=up, down=down, pad=(y0, y1))
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
