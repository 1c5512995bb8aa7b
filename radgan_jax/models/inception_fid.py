"""The FID Inception-v3 (TF-slim graph ``inception-2015-12-05``) in flax.linen, NHWC, eval mode only.

StyleGAN-XL's ``fid50k_full`` (metrics/frechet_inception_distance.py) reads the 2048-d ``pool3`` features of
NVIDIA's TorchScript ``inception-2015-12-05.pkl`` (``return_features=True``); pytorch-fid publishes the same
graph's weights as a plain state_dict (``pt_inception-2015-12-05-6726825d.pth``) whose module names we use.
The TF graph differs from torchvision's Inception3 in the blocks pytorch-fid calls ``FIDInceptionA/C/E``:
the 3x3 average pools of the A, C and E blocks exclude the padding (``count_include_pad=False``), and the
last E block (``Mixed_7c``) max-pools its pool branch. BatchNorm eps is TF's 1e-3; convs have no bias.

Input: (N, H, W, 3) float holding uint8 values [0, 255]. Two input pipelines (``preprocess``):

* ``"tf"`` (default; what ``fid50k_full`` measures): NVIDIA's TorchScript samples a 299x299 grid with
  ``affine_grid``/``grid_sample(bilinear, border, align_corners=False)`` and a shifted theta
  (``theta[:, 2] += 1/size - 1/299``), i.e. source pixel ``i * size / 299`` = TF1's ``ResizeBilinear``
  without half-pixel centres, then ``(x - 128) / 128``. :func:`tf_resize_matrix` reproduces its float32
  arithmetic.
* ``"pytorch_fid"``: pytorch-fid's ``F.interpolate(299, bilinear, align_corners=False)`` on ``x / 255``,
  then ``2x - 1``. Not the official FID pipeline: at 64x64 inputs the resampled pixels differ.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from radgan_jax.models.projected_d.preprocess import bilinear_resize
from radgan_jax.ops.batch_norm import TorchBatchNorm

INPUT_RES = 299
NUM_FEATURES = 2048
NUM_CLASSES = 1008  # the 2015 graph's softmax: 1000 ImageNet classes + 8 unused
PREPROCESS_MODES = ("tf", "pytorch_fid")
_F32 = np.float32


def tf_resize_matrix(n_in: int, n_out: int = INPUT_RES) -> np.ndarray:
    """(n_out, n_in) float32 interpolation matrix of the NVIDIA TorchScript's resize along one axis.

    Emulates torch's float32 arithmetic, where ATen fuses multiply-adds (checked against torch 2.x on CPU):
    ``affine_grid`` base coordinates ``linspace(-1, 1, n_out) * (n_out-1) / n_out`` (linspace filled from both
    ends), plus the theta shift ``1/n_in - 1/299``; then ``grid_sample``'s unnormalisation
    ``((g + 1) * n_in - 1) / 2``, border clamping and bilinear weights. A coordinate one ulp off moves a
    pixel by up to ~1e-3 (of 255) on noisy images, which 94 layers turn into ~1e-4 on the features.
    """
    i = np.arange(n_out)
    step = np.float64(_F32(2.0) / _F32(n_out - 1))
    # start + step * idx in one rounding (ATen's kernel compiles to an FMA; float64 holds the exact value)
    lin = np.where(i < n_out // 2, -1.0 + step * i, 1.0 - step * (n_out - 1 - i)).astype(_F32)
    base = (lin * _F32(n_out - 1)).astype(_F32) / _F32(n_out)
    shift = _F32(_F32(1.0) / _F32(n_in)) - _F32(_F32(1.0) / _F32(INPUT_RES))
    g = (base + shift).astype(_F32)
    src = ((g + _F32(1.0)).astype(np.float64) * n_in - 1.0).astype(_F32) / _F32(2.0)  # also an FMA in ATen
    src = np.clip(src.astype(_F32), _F32(0.0), _F32(n_in - 1))
    i0 = np.floor(src).astype(np.int64)
    lam = (src - i0.astype(_F32)).astype(_F32)
    m = np.zeros((n_out, n_in), _F32)
    m[np.arange(n_out), i0] += _F32(1.0) - lam
    i1 = i0 + 1  # the out-of-range corner (only when lam == 0) reads zero padding in grid_sample
    ok = i1 < n_in
    m[np.arange(n_out)[ok], i1[ok]] += lam[ok]
    return m


def tf_resize(x: jax.Array, size: int = INPUT_RES) -> jax.Array:
    """The TorchScript's ``grid_sample`` resize of NHWC ``x`` to ``size`` x ``size`` (two exact fp32 matmuls)."""
    _, h, w, _ = x.shape
    hi = jax.lax.Precision.HIGHEST
    y = jnp.einsum("oh,nhwc->nowc", jnp.asarray(tf_resize_matrix(h, size)), x, precision=hi)
    return jnp.einsum("pw,nowc->nopc", jnp.asarray(tf_resize_matrix(w, size)), y, precision=hi)


def preprocess_images(x: jax.Array, mode: str = "tf") -> jax.Array:
    """(N, H, W, 3) values in [0, 255] -> the network's (N, 299, 299, 3) input in about [-1, 1]."""
    x = x.astype(jnp.float32)
    if mode == "tf":
        return (tf_resize(x) - 128.0) / 128.0
    if mode == "pytorch_fid":
        x = bilinear_resize(x / 255.0, (INPUT_RES, INPUT_RES), align_corners=False)
        return 2.0 * x - 1.0
    raise ValueError(f"unknown preprocess {mode!r}; expected one of {PREPROCESS_MODES}")


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm(eps 1e-3, running stats) -> ReLU (torchvision ``BasicConv2d``)."""

    features: int
    kernel: Sequence[int]
    stride: int = 1
    padding: Sequence[int] = (0, 0)
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = [(p, p) for p in self.padding]
        x = nn.Conv(self.features, tuple(self.kernel), (self.stride, self.stride), padding=pad, use_bias=False,
                    precision=self.precision, name="conv")(x)
        return nn.relu(TorchBatchNorm(epsilon=1e-3, name="bn")(x, train=False))


def _conv(precision: str | None, name: str, features: int, kernel: int | Sequence[int], stride: int = 1,
          padding: int | Sequence[int] = 0) -> BasicConv2d:
    """A BasicConv2d child of the calling compact module; int kernel / padding mean square ones."""
    k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    p = (padding, padding) if isinstance(padding, int) else tuple(padding)
    return BasicConv2d(features, k, stride, p, precision, name=name)


def _avg_pool3(x: jax.Array) -> jax.Array:
    # FIDInception{A,C,E}: F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False), as the TF graph.
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool3_s2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), (2, 2))


class InceptionA(nn.Module):
    """Mixed_5b..5d (FIDInceptionA): 64 + 64 + 96 + pool_features channels."""

    pool_features: int
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = functools.partial(_conv, self.precision)
        b1 = c("branch1x1", 64, 1)(x)
        b5 = c("branch5x5_2", 64, 5, padding=2)(c("branch5x5_1", 48, 1)(x))
        b3 = c("branch3x3dbl_1", 64, 1)(x)
        b3 = c("branch3x3dbl_3", 96, 3, padding=1)(c("branch3x3dbl_2", 96, 3, padding=1)(b3))
        bp = c("branch_pool", self.pool_features, 1)(_avg_pool3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a (torchvision InceptionB): grid reduction 35 -> 17, 384 + 96 + C_in channels."""

    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = functools.partial(_conv, self.precision)
        b3 = c("branch3x3", 384, 3, stride=2)(x)
        bd = c("branch3x3dbl_2", 96, 3, padding=1)(c("branch3x3dbl_1", 64, 1)(x))
        bd = c("branch3x3dbl_3", 96, 3, stride=2)(bd)
        return jnp.concatenate([b3, bd, _max_pool3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """Mixed_6b..6e (FIDInceptionC): factorised 7x7 convolutions, 4 x 192 channels."""

    channels_7x7: int
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c, c7 = functools.partial(_conv, self.precision), self.channels_7x7
        b1 = c("branch1x1", 192, 1)(x)
        b7 = c("branch7x7_1", c7, 1)(x)
        b7 = c("branch7x7_2", c7, (1, 7), padding=(0, 3))(b7)
        b7 = c("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7)
        bd = c("branch7x7dbl_1", c7, 1)(x)
        bd = c("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(bd)
        bd = c("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(bd)
        bd = c("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(bd)
        bd = c("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(bd)
        bp = c("branch_pool", 192, 1)(_avg_pool3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a (torchvision InceptionD): grid reduction 17 -> 8, 320 + 192 + C_in channels."""

    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = functools.partial(_conv, self.precision)
        b3 = c("branch3x3_2", 320, 3, stride=2)(c("branch3x3_1", 192, 1)(x))
        b7 = c("branch7x7x3_1", 192, 1)(x)
        b7 = c("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
        b7 = c("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
        b7 = c("branch7x7x3_4", 192, 3, stride=2)(b7)
        return jnp.concatenate([b3, b7, _max_pool3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b / 7c (FIDInceptionE_1 / _2): 320 + 768 + 768 + 192 = 2048 channels. ``max_pool``: the TF
    graph's last block max-pools (stride 1, pad 1) where the others average."""

    max_pool: bool = False
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = functools.partial(_conv, self.precision)
        b1 = c("branch1x1", 320, 1)(x)
        b3 = c("branch3x3_1", 384, 1)(x)
        b3 = jnp.concatenate([c("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3),
                              c("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3)], axis=-1)
        bd = c("branch3x3dbl_2", 384, 3, padding=1)(c("branch3x3dbl_1", 448, 1)(x))
        bd = jnp.concatenate([c("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd),
                              c("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd)], axis=-1)
        pooled = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1))) if self.max_pool else _avg_pool3(x)
        bp = c("branch_pool", 192, 1)(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionFID(nn.Module):
    """``InceptionFID()(x)`` -> pool3 features (N, 2048); ``return_logits=True`` -> (features, logits (N, 1008)).

    ``x``: (N, H, W, 3) float or uint8 with values in [0, 255]; any H, W (resized to 299 first). Variables:
    ``{'params', 'batch_stats'}`` from ``radgan_jax.tools.convert_inception.load_inception``.
    """

    preprocess: str = "tf"
    precision: str | None = "highest"  # fp32 convs on GPU too (no TF32): FID is sensitive, the net is cheap

    @nn.compact
    def __call__(self, x: jax.Array, return_logits: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) images, got shape {x.shape}")
        p = self.precision
        c = functools.partial(_conv, p)
        x = preprocess_images(x, self.preprocess)
        x = c("Conv2d_1a_3x3", 32, 3, stride=2)(x)  # 149
        x = c("Conv2d_2a_3x3", 32, 3)(x)  # 147
        x = c("Conv2d_2b_3x3", 64, 3, padding=1)(x)
        x = _max_pool3_s2(x)  # 73
        x = c("Conv2d_3b_1x1", 80, 1)(x)
        x = c("Conv2d_4a_3x3", 192, 3)(x)  # 71
        x = _max_pool3_s2(x)  # 35
        x = InceptionA(32, p, name="Mixed_5b")(x)
        x = InceptionA(64, p, name="Mixed_5c")(x)
        x = InceptionA(64, p, name="Mixed_5d")(x)
        x = InceptionB(p, name="Mixed_6a")(x)  # 17
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(c7, p, name=name)(x)
        x = InceptionD(p, name="Mixed_7a")(x)  # 8
        x = InceptionE(False, p, name="Mixed_7b")(x)
        x = InceptionE(True, p, name="Mixed_7c")(x)
        features = jnp.mean(x, axis=(1, 2))  # pool3: the graph's 8x8 average pool
        if not return_logits:
            return features
        return features, nn.Dense(NUM_CLASSES, precision=p, name="fc")(features)


def variable_shapes(model: InceptionFID | None = None) -> dict:
    """The abstract ``{'params', 'batch_stats'}`` tree (fc included), without computing anything."""
    model = model or InceptionFID()
    x = jax.ShapeDtypeStruct((1, INPUT_RES, INPUT_RES, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, return_logits=True), x)
