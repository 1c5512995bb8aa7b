"""BigDatasetGAN's feature interpreter (a segmentation head on frozen generator features), Flax linen, NHWC.

Structure of BigDatasetGAN models.py `BigdatasetGANModel` / `SegBlock` (written anew for StyleGAN-XL features):
- per group a 1x1 conv without bias reduces the concatenated features (`low_feature_conv` etc.; default widths
  128 / 64 / 32 as the original's low / mid / high);
- fusion coarse to fine: low -> bilinear up to mid's size, concat with mid, SegBlock; -> up to high's size,
  concat with high, SegBlock (`forward`). Groups a small generator lacks are skipped and their width moves to
  the next present group, so the fused width stays 128 + 64 + 32 = 224; "mid" and "high" always get their
  SegBlock (a 16 px generator, "high" only, still has one residual block);
- SegBlock: ccbn -> ReLU -> SN conv3x3 -> ccbn -> ReLU -> SN conv3x3, plus the input (through an SN 1x1 conv only
  when the channel count changes, the original's `learnable_sc`);
- output: BN -> ReLU -> SN conv3x3 (with bias) -> K logits at the image resolution.

Class-conditional BN (BigGAN layers.ccbn, norm_style 'bn', eps 1e-4 as SegBlock sets it): batch norm without
affine, then `x * (1 + gain(y)) + bias(y)` with `gain`, `bias` linear in the class vector y (the generator's
class embedding). Deviation: BigGAN's linears are spectral-norm layers with random init; here they are plain
linears initialised to zero, so every ccbn starts as the identity affine (gain exactly 1, bias 0) and the class
dependence is learned (spectral norm is there to keep a GAN generator Lipschitz, not needed for a supervised head).
Spectral-norm convs: `ops/spectral_norm.SpectralNormConv` (torch semantics, BigGAN's SN_eps 1e-4, one power
iteration per train forward), u/v in the mutable 'spectral' collection; BN running statistics (torch momentum
0.1, unbiased running variance) in 'batch_stats'. Train: `apply(..., train=True, mutable=['batch_stats',
'spectral'])`; eval: `train=False`, no mutation (batch independent).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from radgan_jax.ops.batch_norm import TorchBatchNorm
from radgan_jax.ops.spectral_norm import SpectralNormConv, torch_default_init

GROUP_NAMES = ("low", "mid", "high")  # fusion order; the same names as interpret/features.py
DEFAULT_WIDTHS = (128, 64, 32)  # BigDatasetGAN models.py: low/mid/high_feature_channel
CCBN_EPS = 1e-4  # SegBlock: ccbn(..., eps=1e-4)
BN_EPS = 1e-5  # BigGAN layers.bn default (the output BN)
BN_MOMENTUM = 0.1
SN_EPS = 1e-4  # BigDatasetGAN get_config: SN_eps


def group_widths(present: Sequence[str], widths: Sequence[int] = DEFAULT_WIDTHS) -> dict[str, int]:
    """Reduced width per present group; a missing group's width goes to the next present one."""
    unknown = [g for g in present if g not in GROUP_NAMES]
    if unknown or "high" not in present:
        raise ValueError(f"feature groups {list(present)}: expected a subset of {GROUP_NAMES} containing 'high'")
    out, carry = {}, 0
    for name, width in zip(GROUP_NAMES, widths, strict=True):
        carry += int(width)
        if name in present:
            out[name], carry = carry, 0
    return out


class CondBatchNorm(nn.Module):
    """BigGAN's class-conditional BN: normalise (batch stats in train, running stats in eval), then
    `* (1 + gain(y)) + bias(y)`; gain / bias are zero-initialised linears of y [N, E]."""

    eps: float = CCBN_EPS
    momentum: float = BN_MOMENTUM

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array, train: bool = False) -> jax.Array:
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        xf = x.astype(jnp.float32)
        if train:
            mean = jnp.mean(xf, axis=(0, 1, 2))
            var = jnp.mean(jnp.square(xf - mean), axis=(0, 1, 2))
            if not self.is_initializing():
                n = xf.size // c
                ra_mean.value = (1 - self.momentum) * ra_mean.value + self.momentum * mean
                ra_var.value = (1 - self.momentum) * ra_var.value + self.momentum * var * (n / max(n - 1, 1))
        else:
            mean, var = ra_mean.value, ra_var.value
        h = (xf - mean) * jax.lax.rsqrt(var + self.eps)
        zeros = nn.initializers.zeros_init()
        gain = 1 + nn.Dense(c, kernel_init=zeros, bias_init=zeros, name="gain")(y.astype(jnp.float32))
        bias = nn.Dense(c, kernel_init=zeros, bias_init=zeros, name="bias")(y.astype(jnp.float32))
        return (h * gain[:, None, None, :] + bias[:, None, None, :]).astype(x.dtype)


class SegBlock(nn.Module):
    """BigDatasetGAN models.py SegBlock (without its unused upsampling): residual, class-conditional."""

    out_channels: int

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array, train: bool = False) -> jax.Array:
        h = nn.relu(CondBatchNorm(name="bn1")(x, y, train))
        h = SpectralNormConv(self.out_channels, 3, padding=1, eps=SN_EPS, name="conv1")(h, train)
        h = nn.relu(CondBatchNorm(name="bn2")(h, y, train))
        h = SpectralNormConv(self.out_channels, 3, padding=1, eps=SN_EPS, name="conv2")(h, train)
        if x.shape[-1] != self.out_channels:
            x = SpectralNormConv(self.out_channels, 1, padding=0, eps=SN_EPS, name="conv_sc")(x, train)
        return h + x


def _upsample(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear, half-pixel centres (torch `F.interpolate(mode='bilinear', align_corners=False)`)."""
    if x.shape[1:3] == tuple(size):
        return x
    return jax.image.resize(x, (x.shape[0], *size, x.shape[3]), method="bilinear", antialias=False)


def _parts(group: jax.Array | Sequence[jax.Array]) -> list[jax.Array]:
    """A group's features: one concatenated array, or its layers' outputs (features.group_features layerwise)."""
    return [group] if hasattr(group, "ndim") else list(group)


def _reduce_group(parts: Sequence[jax.Array], kernel: jax.Array) -> jax.Array:
    """The group's bias-free 1x1 conv. For per-layer parts, each layer's rows of the kernel are applied at the
    layer's own resolution and the results resized to the largest and summed: the same linear map as
    conv(concat(resize(parts))), since bilinear resizing acts per channel, without the wide concatenation."""
    size = max(p.shape[1] for p in parts)
    out, row = None, 0
    for p in parts:
        k = kernel[row:row + p.shape[-1]].astype(p.dtype)
        row += p.shape[-1]
        h = jnp.einsum("nhwc,cd->nhwd", p, k, precision=jax.lax.Precision.HIGHEST)
        h = _upsample(h, (size, size))
        out = h if out is None else out + h
    return out


class Interpreter(nn.Module):
    """features {group: [N, h_g, w_g, C_g]} (low/mid/high, 'high' at image size) + class vector y [N, E]
    -> logits [N, H, W, num_outputs] (1 = one foreground class with sigmoid, else one per label)."""

    num_outputs: int
    widths: tuple[int, int, int] = DEFAULT_WIDTHS

    @nn.compact
    def __call__(self, features: Mapping[str, jax.Array], y: jax.Array, train: bool = False) -> jax.Array:
        present = [g for g in GROUP_NAMES if g in features]
        extra = sorted(set(features) - set(GROUP_NAMES))
        if extra:
            raise ValueError(f"unknown feature groups {extra}; expected names from {GROUP_NAMES}")
        widths = group_widths(present, self.widths)
        n = _parts(features["high"])[0].shape[0]
        if y.ndim != 2 or y.shape[0] != n:
            raise ValueError(f"class vector y must be [N={n}, E], got {y.shape}")
        x, width = None, 0
        for name in present:
            parts = _parts(features[name])
            for f in parts:
                if f.ndim != 4 or f.shape[0] != n:
                    raise ValueError(f"feature group {name!r} must be [N={n}, h, w, C], got {f.shape}")
            fan_in = sum(f.shape[-1] for f in parts)
            kernel = self.param(f"{name}_feature_conv", torch_default_init(fan_in), (fan_in, widths[name]))
            f = _reduce_group(parts, kernel)
            x = f if x is None else jnp.concatenate([_upsample(x, f.shape[1:3]), f], axis=-1)
            width += widths[name]
            if name != "low":
                x = SegBlock(width, name=f"{name}_feature_mix_conv")(x, y, train)
        x = TorchBatchNorm(epsilon=BN_EPS, momentum=BN_MOMENTUM, name="out_bn")(x, train)
        x = nn.relu(x)
        return SpectralNormConv(self.num_outputs, 3, padding=1, eps=SN_EPS, name="out_conv")(x, train)


def init_interpreter(model: Interpreter, feature_shapes: Mapping[str, Sequence[int]] | Sequence[Any], y_dim: int,
                     key: jax.Array) -> dict[str, Any]:
    """Variables {'params', 'spectral', 'batch_stats'} for `model` on features of the given per-sample shapes:
    {group: (h, w, C)}, or a list of `interpret.features.FeatureGroup` (resolution, channels)."""
    if not isinstance(feature_shapes, Mapping):
        feature_shapes = {g.name: (g.resolution, g.resolution, g.channels) for g in feature_shapes}
    feats = {name: jnp.zeros((1, *tuple(shape)), jnp.float32) for name, shape in feature_shapes.items()}
    y = jnp.zeros((1, int(y_dim)), jnp.float32)
    return dict(_jitted_init(model)({"params": key}, feats, y, train=False))


@functools.cache
def _jitted_init(model: Interpreter):
    """One compiled init per module configuration (a fresh `jax.jit(model.init)` per call recompiles: ~9 s)."""
    return jax.jit(model.init, static_argnames="train")
