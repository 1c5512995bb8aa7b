"""StyleGAN3-T synthesis network (Fourier-feature input + alias-free modulated layers), NHWC.

Faithful to `SynthesisInput`, `SynthesisLayer`, `modulated_conv2d` and `SynthesisNetwork` of
stylegan-xl (`training/networks_stylegan3_resetting.py`), built from a `SynthesisSpec` (layer_specs.py).
Design choices (mathematically identical to the original, see docs/ARCHITECTURE.md):
- The modulated convolution is computed by scaling activations instead of weights ("non-fused" form):
  conv(x * s * input_gain, w_hat) * dcoef == conv(x, w_hat * s * dcoef * input_gain), so every sample
  shares one standard convolution -- the fast form on TPU/GPU and under batch sharding.
- Buffers (`freqs`, `phases`, `transform`, `magnitude_ema`) live in the `buffers` collection; low-pass
  filters are constants of the spec (recomputed with scipy.signal.firwin, as the original designs them).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from radgan_jax.models.stylegan_xl.fully_connected import FullyConnected
from radgan_jax.models.stylegan_xl.layer_specs import InputSpec, LayerSpec, SynthesisSpec
from radgan_jax.models.stylegan_xl.mapping import torch_lerp
from radgan_jax.ops.filtered_lrelu import filtered_lrelu
from radgan_jax.ops.filters import design_lowpass_filter

HIGHEST = jax.lax.Precision.HIGHEST


def _init_freqs(key: jax.Array, channels: int, bandwidth: float) -> tuple[jax.Array, jax.Array]:
    """Random frequencies from a uniform 2-D disc of radius `bandwidth` and phases in [-0.5, 0.5)."""
    kf, kp = jax.random.split(key)
    freqs = jax.random.normal(kf, (channels, 2), jnp.float32)
    radii = jnp.sqrt(jnp.sum(jnp.square(freqs), axis=1, keepdims=True))
    freqs = freqs / (radii * jnp.exp(jnp.square(radii)) ** 0.25) * bandwidth
    phases = jax.random.uniform(kp, (channels,), jnp.float32) - 0.5
    return freqs, phases


class SynthesisInput(nn.Module):
    w_dim: int
    spec: InputSpec

    @nn.compact
    def __call__(self, w: jax.Array, transform: jax.Array | None = None) -> jax.Array:
        """w [N, w_dim] -> Fourier features [N, size, size, channels]. `transform` overrides the buffer."""
        ch, size, sr, bw = self.spec.channels, self.spec.size, self.spec.sampling_rate, self.spec.bandwidth
        key = self.make_rng("params") if self.is_initializing() else None
        init = _init_freqs(key, ch, bw) if key is not None else None
        freqs0 = self.variable("buffers", "freqs", lambda: init[0]).value
        phases0 = self.variable("buffers", "phases", lambda: init[1]).value
        transform_buf = self.variable("buffers", "transform", lambda: jnp.eye(3, dtype=jnp.float32)).value
        weight = self.param("weight", lambda k, s: jax.random.normal(k, s, jnp.float32), (ch, ch))  # [in, out]
        # Learned rotation + translation, t = (r_c, r_s, t_x, t_y) normalised by |(r_c, r_s)|.
        t = FullyConnected(self.w_dim, 4, weight_init=0.0, bias_init=(1.0, 0.0, 0.0, 0.0), name="affine")(w)
        t = t / jnp.linalg.norm(t[:, :2], axis=1, keepdims=True)
        n = w.shape[0]
        one, zero = jnp.ones((n,), t.dtype), jnp.zeros((n,), t.dtype)
        m_r = jnp.stack([jnp.stack([t[:, 0], -t[:, 1], zero], -1), jnp.stack([t[:, 1], t[:, 0], zero], -1),
                         jnp.stack([zero, zero, one], -1)], axis=1)
        m_t = jnp.stack([jnp.stack([one, zero, -t[:, 2]], -1), jnp.stack([zero, one, -t[:, 3]], -1),
                         jnp.stack([zero, zero, one], -1)], axis=1)
        user = transform_buf if transform is None else jnp.asarray(transform, jnp.float32)
        transforms = jnp.matmul(jnp.matmul(m_r, m_t, precision=HIGHEST), user[None], precision=HIGHEST)
        # Transform frequencies: phases += f @ T[:2, 2]; f = f @ T[:2, :2].
        phases = phases0[None] + jnp.einsum("cx,nx->nc", freqs0, transforms[:, :2, 2], precision=HIGHEST)
        freqs = jnp.einsum("cx,nxy->ncy", freqs0, transforms[:, :2, :2], precision=HIGHEST)
        # Dampen out-of-band frequencies that the user transform may introduce.
        amplitudes = jnp.clip(1 - (jnp.linalg.norm(freqs, axis=2) - bw) / (sr / 2 - bw), 0, 1)
        # affine_grid(diag(0.5*size/sr), align_corners=False): pixel centres (2j+1)/size - 1, scaled.
        coords = ((2 * np.arange(size) + 1) / size - 1).astype(np.float32) * np.float32(0.5 * size / sr)
        gx = jnp.asarray(coords)[None, None, :, None]  # width axis
        gy = jnp.asarray(coords)[None, :, None, None]  # height axis
        x = gx * freqs[:, None, None, :, 0] + gy * freqs[:, None, None, :, 1]  # [N, H, W, C]
        x = x + phases[:, None, None, :]
        x = jnp.sin(x * (np.pi * 2)) * amplitudes[:, None, None, :]
        return jnp.matmul(x, weight / np.sqrt(ch), precision=HIGHEST)


def modulated_conv2d(
    x: jax.Array,
    weight: jax.Array,
    styles: jax.Array,
    demodulate: bool,
    padding: int,
    input_gain: jax.Array | None,
    precision: jax.lax.Precision | None = HIGHEST,
) -> jax.Array:
    """x [N,H,W,I], weight [k,k,I,O] (HWIO), styles [N,I] -> [N,H',W',O]; the original's math."""
    w = weight.astype(jnp.float32)
    s = styles.astype(jnp.float32)
    if demodulate:
        w = w * jax.lax.rsqrt(jnp.mean(jnp.square(w), axis=(0, 1, 2), keepdims=True))
        s = s * jax.lax.rsqrt(jnp.mean(jnp.square(s)))  # one scalar over the whole batch, as the original
    scale = s if input_gain is None else s * input_gain
    x = x * scale[:, None, None, :].astype(x.dtype)
    # Explicit zero padding + VALID conv: the same numbers, but XLA:CPU computes the weight gradient of a conv
    # whose output is larger than its input (padding k-1) ~10x slower than that of a VALID one.
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    y = jax.lax.conv_general_dilated(
        x, w.astype(x.dtype), window_strides=(1, 1), padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)
    if demodulate:
        # dcoef[n, o] = rsqrt(sum_{i,kh,kw} (w[kh,kw,i,o] * s[n,i])^2 + 1e-8)
        wsq = jnp.sum(jnp.square(w), axis=(0, 1))  # [I, O]
        dcoefs = jax.lax.rsqrt(jnp.matmul(jnp.square(s), wsq, precision=HIGHEST) + 1e-8)
        y = y * dcoefs[:, None, None, :].astype(y.dtype)
    return y


class SynthesisLayer(nn.Module):
    w_dim: int
    spec: LayerSpec
    compute_dtype: jnp.dtype | None = None  # e.g. bf16/fp16 for layers whose spec says use_fp16

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array, update_emas: bool = False) -> jax.Array:
        s = self.spec
        k = s.conv_kernel
        magnitude_ema = self.variable("buffers", "magnitude_ema", lambda: jnp.ones((), jnp.float32))
        if update_emas and not self.is_initializing():
            cur = jnp.mean(jnp.square(jax.lax.stop_gradient(x).astype(jnp.float32)))
            magnitude_ema.value = torch_lerp(cur, magnitude_ema.value, s.magnitude_ema_beta)
        input_gain = jax.lax.rsqrt(magnitude_ema.value)

        styles = FullyConnected(self.w_dim, s.in_channels, bias_init=1.0, name="affine")(w)
        self.sow("intermediates", "styles_raw", styles)
        if s.is_torgb:
            styles = styles * (1 / np.sqrt(s.in_channels * k**2))
        weight = self.param("weight", lambda key, shp: jax.random.normal(key, shp, jnp.float32),
                            (k, k, s.in_channels, s.out_channels))
        bias = self.param("bias", nn.initializers.zeros_init(), (s.out_channels,))

        dtype = self.compute_dtype if (self.compute_dtype is not None and s.use_fp16) else jnp.float32
        precision = HIGHEST if dtype == jnp.float32 else None
        x = modulated_conv2d(x.astype(dtype), weight, styles, demodulate=not s.is_torgb, padding=k - 1,
                             input_gain=input_gain, precision=precision)
        self.sow("intermediates", "modconv_out", x)
        fu = design_lowpass_filter(s.up_taps, s.in_cutoff, s.in_half_width * 2, s.tmp_sampling_rate)
        fd = design_lowpass_filter(s.down_taps, s.out_cutoff, s.out_half_width * 2, s.tmp_sampling_rate,
                                   radial=s.down_radial)
        x = filtered_lrelu(
            x, fu=fu, fd=fd, b=bias.astype(dtype), up=s.up_factor, down=s.down_factor, padding=s.padding,
            gain=1.0 if s.is_torgb else float(np.sqrt(2)), slope=1.0 if s.is_torgb else 0.2,
            clamp=s.conv_clamp, precision=precision)
        return x


class SynthesisNetwork(nn.Module):
    spec: SynthesisSpec
    compute_dtype: jnp.dtype | None = None

    def setup(self):
        self.input = SynthesisInput(self.spec.w_dim, self.spec.input)
        self.layers = [SynthesisLayer(self.spec.w_dim, ls, self.compute_dtype, name=ls.name)
                       for ls in self.spec.layers]

    def __call__(
        self,
        ws: jax.Array,
        update_emas: bool = False,
        transform: jax.Array | None = None,
        return_features: bool = False,
    ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """ws [N, num_ws, w_dim] -> image [N, res, res, img_channels] (float32, no tanh/clamp).

        With `return_features`, also returns every layer's output (input + layers, NHWC) by name --
        the generator features the BigDatasetGAN interpreter reads.
        """
        if ws.ndim != 3 or ws.shape[1:] != (self.spec.num_ws, self.spec.w_dim):
            raise ValueError(f"ws must be [N, {self.spec.num_ws}, {self.spec.w_dim}], got {ws.shape}")
        ws = ws.astype(jnp.float32)
        x = self.input(ws[:, 0], transform=transform)
        feats = {"input": x} if return_features else None
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i + 1], update_emas=update_emas)
            if feats is not None:
                feats[layer.spec.name] = x
        img = x.astype(jnp.float32)
        if self.spec.output_scale != 1:
            img = img * self.spec.output_scale
        return (img, feats) if return_features else img
