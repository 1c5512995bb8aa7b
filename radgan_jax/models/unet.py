"""nnU-Net v2's default network, PlainConvUNet, in flax.linen (NHWC).

Reference: dynamic_network_architectures 0.4.4 (`architectures/unet.py` PlainConvUNet,
`building_blocks/plain_conv_encoder.py`, `unet_decoder.py`, `simple_conv_blocks.py`,
`initialization/weight_init.py` InitWeights_He), built by nnunetv2 2.8.1 `get_network_from_plans` from the
plan's `configurations[...]['architecture']` block.

Layout (same order and names as the torch module, so a torch state_dict maps 1:1, see
`variables_from_torch_state_dict`):

    encoder_stages_{s}/convs_{i}/{conv,norm}   stage s: n_conv_per_stage[s] x (conv -> InstanceNorm -> LeakyReLU);
                                                the first conv of a stage carries the stage's stride (pool='conv')
    decoder_transpconvs_{s}                     transposed conv, kernel = stride = encoder stride of the stage below
    decoder_stages_{s}/convs_{i}/{conv,norm}    concat(upsampled, skip) -> n_conv_per_stage_decoder[s] convs
    decoder_seg_layers_{s}                      1x1 conv to num_classes (always built, as nnU-Net does)

Decoder stages are ordered by computation (lowest resolution first). With `deep_supervision` the output is a
list of logits, highest resolution first (nnU-Net reverses its list), `n_stages - 1` entries; without it, the
full-resolution logits only. Convs pad (k - 1) // 2 on both sides (nnU-Net's ConvDropoutNormReLU), which is not
flax's 'SAME' for strided convs. InstanceNorm has no running stats (torch default), so train == eval.

Init (InitWeights_He(1e-2)): kaiming_normal_(a=0.01, mode='fan_in') for every conv and transposed conv, bias 0;
norm scale 1, bias 0. torch computes a transposed conv's fan_in from its weight's dim 1 (= output channels), so
those kernels use fan_in = out_channels * prod(kernel).

Precision: parameters are always float32; `compute_dtype` ('bfloat16' / 'float16') runs convs in that dtype
(like nnU-Net's CUDA autocast), InstanceNorm statistics in float32, and the returned logits are float32.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
PRECISIONS = {None: None, "default": jax.lax.Precision.DEFAULT, "high": jax.lax.Precision.HIGH,
              "highest": jax.lax.Precision.HIGHEST}

# dynamic_network_architectures InitWeights_He(neg_slope=1e-2) -> torch.nn.init.kaiming_normal_(a=1e-2)
HE_NEG_SLOPE = 1e-2


def kaiming_std(shape: Sequence[int], transposed: bool = False, neg_slope: float = HE_NEG_SLOPE) -> float:
    """std of torch.nn.init.kaiming_normal_(a=neg_slope, mode='fan_in') for a flax kernel (*k, in, out).

    gain^2 = 2 / (1 + a^2); std = gain / sqrt(fan_in). torch's fan_in is its weight's dim 1 times the kernel
    volume: the input channels of a conv (O, I, *k), but the *output* channels of a transposed conv (I, O, *k).
    """
    fan_in = (shape[-1] if transposed else shape[-2]) * math.prod(shape[:-2])
    return math.sqrt(2.0 / (1.0 + neg_slope**2)) / math.sqrt(fan_in)


def kaiming_normal(transposed: bool = False) -> jax.nn.initializers.Initializer:
    """Initializer drawing N(0, kaiming_std^2) (untruncated, like torch)."""

    def init(key, shape, dtype=jnp.float32):
        return kaiming_std(shape, transposed) * jax.random.normal(key, shape, dtype)

    return init


class InstanceNorm(nn.Module):
    """torch InstanceNorm{2,3}d(affine=True, track_running_stats=False): per sample and channel, biased var."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        axes = tuple(range(1, x.ndim - 1))
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=axes, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias
        return y.astype(x.dtype)


class ConvDropoutNormReLU(nn.Module):
    """conv (pad (k-1)//2) -> InstanceNorm -> LeakyReLU (or conv -> LeakyReLU -> norm with nonlin_first)."""

    features: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    conv_bias: bool = True
    norm_eps: float = 1e-5
    negative_slope: float = 1e-2
    nonlin_first: bool = False
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = [((k - 1) // 2, (k - 1) // 2) for k in self.kernel_size]
        x = nn.Conv(self.features, self.kernel_size, self.stride, padding=pad, use_bias=self.conv_bias,
                    dtype=self.dtype, param_dtype=jnp.float32, precision=self.precision,
                    kernel_init=kaiming_normal(), bias_init=nn.initializers.zeros, name="conv")(x)
        norm = InstanceNorm(self.norm_eps, name="norm")
        if self.nonlin_first:
            return norm(nn.leaky_relu(x, self.negative_slope))
        return nn.leaky_relu(norm(x), self.negative_slope)


class StackedConvBlocks(nn.Module):
    """`num_convs` ConvDropoutNormReLU; only the first one is strided (simple_conv_blocks.StackedConvBlocks)."""

    num_convs: int
    features: int
    kernel_size: tuple[int, ...]
    initial_stride: tuple[int, ...]
    conv_bias: bool = True
    norm_eps: float = 1e-5
    negative_slope: float = 1e-2
    nonlin_first: bool = False
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ones = (1,) * len(self.kernel_size)
        for i in range(self.num_convs):
            x = ConvDropoutNormReLU(self.features, self.kernel_size, self.initial_stride if i == 0 else ones,
                                    self.conv_bias, self.norm_eps, self.negative_slope, self.nonlin_first,
                                    self.dtype, self.precision, name=f"convs_{i}")(x)
        return x


class TransposedConv(nn.Module):
    """torch ConvTranspose{2,3}d(kernel_size=stride, stride=stride): each input pixel paints a stride-sized tile.

    With kernel == stride the tiles do not overlap, so this is one matmul plus a depth-to-space reshape.
    Kernel layout (*stride, in, out) (torch: (in, out, *stride)).
    """

    features: int
    stride: tuple[int, ...]
    use_bias: bool = True
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = len(self.stride)
        c = x.shape[-1]
        kernel = self.param("kernel", kaiming_normal(transposed=True), (*self.stride, c, self.features), jnp.float32)
        k = kernel.astype(self.dtype).reshape(math.prod(self.stride), c, self.features)
        y = jnp.einsum("...c,kco->...ko", x.astype(self.dtype), k, precision=self.precision)
        b, spatial = x.shape[0], x.shape[1:-1]
        y = y.reshape(b, *spatial, *self.stride, self.features)
        # (b, X, Y, sx, sy, o) -> (b, X, sx, Y, sy, o) -> (b, X*sx, Y*sy, o)
        perm = [0] + [a for i in range(d) for a in (1 + i, 1 + d + i)] + [1 + 2 * d]
        y = y.transpose(perm).reshape(b, *(n * s for n, s in zip(spatial, self.stride)), self.features)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
        return y


class PlainConvUNet(nn.Module):
    """dynamic_network_architectures PlainConvUNet (pool='conv', no dropout), NHWC in, logits out.

    Call on x of shape (B, *spatial, input_channels); every spatial size must be divisible by the product of the
    strides on that axis. Returns a list of (B, *spatial_i, num_classes) float32 logits, highest resolution first,
    when `deep_supervision`, else the full-resolution logits.
    """

    input_channels: int
    n_stages: int
    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    n_conv_per_stage: tuple[int, ...]
    num_classes: int
    n_conv_per_stage_decoder: tuple[int, ...]
    conv_bias: bool = True
    norm_eps: float = 1e-5
    negative_slope: float = 1e-2
    nonlin_first: bool = False
    deep_supervision: bool = True
    compute_dtype: str = "float32"
    precision: str | None = None  # None = XLA default; 'highest' for fp32 parity on TPU/GPU (TF32)

    def _check(self) -> None:
        n = self.n_stages
        for name, want in (("features_per_stage", n), ("kernel_sizes", n), ("strides", n),
                           ("n_conv_per_stage", n), ("n_conv_per_stage_decoder", n - 1)):
            if len(getattr(self, name)) != want:
                raise ValueError(f"PlainConvUNet: {name}={getattr(self, name)!r} must have {want} entries "
                                 f"(n_stages={n})")
        if self.compute_dtype not in DTYPES:
            raise ValueError(f"compute_dtype {self.compute_dtype!r} not in {sorted(DTYPES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} not in {list(PRECISIONS)}")

    @property
    def divisor(self) -> tuple[int, ...]:
        """Per-axis factor every input size must be a multiple of (product of the strides)."""
        return tuple(int(v) for v in np.prod(np.asarray(self.strides), axis=0))

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array] | jax.Array:
        self._check()
        dtype, precision = DTYPES[self.compute_dtype], PRECISIONS[self.precision]
        spatial = x.shape[1:-1]
        if x.ndim != len(self.strides[0]) + 2 or x.shape[-1] != self.input_channels:
            raise ValueError(f"PlainConvUNet expects (B, *{len(self.strides[0])} spatial, {self.input_channels}) "
                             f"input, got shape {x.shape}")
        if any(s % d for s, d in zip(spatial, self.divisor)):
            raise ValueError(f"input spatial shape {spatial} is not divisible by {self.divisor} "
                             f"(product of the strides {self.strides})")
        common = dict(conv_bias=self.conv_bias, norm_eps=self.norm_eps, negative_slope=self.negative_slope,
                      nonlin_first=self.nonlin_first, dtype=dtype, precision=precision)
        x = x.astype(dtype)

        # Encoder (plain_conv_encoder.PlainConvEncoder, return_skips=True).
        skips = []
        for s in range(self.n_stages):
            x = StackedConvBlocks(self.n_conv_per_stage[s], self.features_per_stage[s], tuple(self.kernel_sizes[s]),
                                  tuple(self.strides[s]), **common, name=f"encoder_stages_{s}")(x)
            skips.append(x)

        # Decoder (unet_decoder.UNetDecoder): stage s upsamples by the stride of encoder stage n-s.
        seg_outputs = []
        lres = skips[-1]
        n_dec = self.n_stages - 1
        build_all_heads = self.deep_supervision or self.is_initializing()
        for s in range(n_dec):
            skip_i = -(s + 2)
            up = TransposedConv(self.features_per_stage[skip_i], tuple(self.strides[-(s + 1)]), self.conv_bias,
                                dtype, precision, name=f"decoder_transpconvs_{s}")(lres)
            x = jnp.concatenate([up, skips[skip_i]], axis=-1)  # torch.cat((x, skip), 1): upsampled first
            x = StackedConvBlocks(self.n_conv_per_stage_decoder[s], self.features_per_stage[skip_i],
                                  tuple(self.kernel_sizes[skip_i]), (1,) * len(spatial), **common,
                                  name=f"decoder_stages_{s}")(x)
            if build_all_heads or s == n_dec - 1:
                # nnU-Net always builds every seg layer (so DS and non-DS checkpoints load alike).
                seg = nn.Conv(self.num_classes, (1,) * len(spatial), use_bias=True, dtype=dtype,
                              param_dtype=jnp.float32, precision=precision, kernel_init=kaiming_normal(),
                              bias_init=nn.initializers.zeros, name=f"decoder_seg_layers_{s}")(x)
                seg_outputs.append(seg.astype(jnp.float32))
            lres = x
        if self.deep_supervision:
            return seg_outputs[::-1]
        return seg_outputs[-1]


def _as_tuple(v: Any, n: int) -> tuple:
    """nnU-Net accepts a scalar for 'same value for every stage'."""
    if isinstance(v, int):
        return (v,) * n
    return tuple(v)


def unet_from_plan(plan_2d: Mapping[str, Any], num_input_channels: int, num_classes: int, *,
                   deep_supervision: bool = True, compute_dtype: str = "float32",
                   precision: str | None = None) -> PlainConvUNet:
    """PlainConvUNet from an nnU-Net v2 plan configuration (`plans['configurations']['2d']`).

    Reads `architecture.arch_kwargs` the way nnunetv2 `get_network_from_plans` does and refuses anything this
    module does not reproduce (another network class, conv/norm/nonlin op, or dropout), naming the value.
    `num_classes` is nnU-Net's `label_manager.num_segmentation_heads` (labels without the ignore label).
    """
    arch = plan_2d.get("architecture") if isinstance(plan_2d, Mapping) else None
    if not isinstance(arch, Mapping) or "arch_kwargs" not in arch:
        raise ValueError("plan configuration has no 'architecture' block with 'arch_kwargs' (nnU-Net v2 plans "
                         f"format); keys: {sorted(plan_2d) if isinstance(plan_2d, Mapping) else type(plan_2d)}")
    cls = str(arch.get("network_class_name", ""))
    if cls.split(".")[-1] != "PlainConvUNet":
        raise ValueError(f"architecture.network_class_name {cls!r}: only PlainConvUNet is implemented")
    kw = dict(arch["arch_kwargs"])
    expected = {"conv_op": "Conv2d", "norm_op": "InstanceNorm2d", "nonlin": "LeakyReLU"}
    for key, name in expected.items():
        if str(kw.get(key, "")).split(".")[-1] != name:
            raise ValueError(f"arch_kwargs.{key}={kw.get(key)!r}: only {name} is implemented (2D nnU-Net default)")
    if kw.get("dropout_op") is not None:
        raise ValueError(f"arch_kwargs.dropout_op={kw['dropout_op']!r}: dropout is not implemented")
    n = int(kw["n_stages"])
    norm_kwargs = kw.get("norm_op_kwargs") or {}
    if not norm_kwargs.get("affine", False):
        raise ValueError(f"arch_kwargs.norm_op_kwargs={norm_kwargs!r}: only affine InstanceNorm is implemented")
    nonlin_kwargs = kw.get("nonlin_kwargs") or {}
    return PlainConvUNet(
        input_channels=int(num_input_channels),
        n_stages=n,
        features_per_stage=tuple(int(f) for f in _as_tuple(kw["features_per_stage"], n)),
        kernel_sizes=tuple(tuple(int(k) for k in ks) if not isinstance(ks, int) else (ks, ks)
                           for ks in _as_tuple(kw["kernel_sizes"], n)),
        strides=tuple(tuple(int(k) for k in st) if not isinstance(st, int) else (st, st)
                      for st in _as_tuple(kw["strides"], n)),
        n_conv_per_stage=tuple(int(c) for c in _as_tuple(kw["n_conv_per_stage"], n)),
        num_classes=int(num_classes),
        n_conv_per_stage_decoder=tuple(int(c) for c in _as_tuple(kw["n_conv_per_stage_decoder"], n - 1)),
        conv_bias=bool(kw.get("conv_bias", False)),
        norm_eps=float(norm_kwargs.get("eps", 1e-5)),
        negative_slope=float(nonlin_kwargs.get("negative_slope", 1e-2)),
        nonlin_first=bool(kw.get("nonlin_first", False)),
        deep_supervision=deep_supervision,
        compute_dtype=compute_dtype,
        precision=precision,
    )


def dummy_input(module: PlainConvUNet, batch: int = 1) -> jax.Array:
    """Smallest valid input (B, *divisor, C) for `init` / `eval_shape`."""
    return jnp.zeros((batch, *module.divisor, module.input_channels), jnp.float32)


def init_unet(module: PlainConvUNet, key: jax.Array) -> dict[str, Any]:
    """nnU-Net-initialized variables ({'params': ...}); every seg layer exists regardless of the DS flag.

    Same distribution as `module.init` (kaiming_normal on every kernel, zero biases, unit norm scales) but all
    kernels come from ONE normal draw split by layer, and no forward pass is compiled: on CPU, XLA compiles each
    threefry draw separately (~0.7 s per layer here), so `module.init` of a 7-stage 2D net takes ~30 s, this ~3 s.
    """
    shapes = jax.eval_shape(module.init, key, dummy_input(module))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)

    @jax.jit
    def draw(key):
        sizes = [math.prod(leaf.shape) for path, leaf in leaves if path[-1].key == "kernel"]
        z = jax.random.normal(key, (sum(sizes),), jnp.float32)
        out, offset = [], 0
        for path, leaf in leaves:
            name = path[-1].key
            if name == "kernel":
                n = math.prod(leaf.shape)
                std = kaiming_std(leaf.shape, transposed=path[-2].key.startswith("decoder_transpconvs"))
                out.append(std * z[offset:offset + n].reshape(leaf.shape))
                offset += n
            else:
                out.append(jnp.full(leaf.shape, 1.0 if name == "scale" else 0.0, leaf.dtype))
        return jax.tree_util.tree_unflatten(treedef, out)

    return draw(key)


def count_params(variables: Mapping[str, Any]) -> int:
    """Number of parameters (torch `sum(p.numel() for p in net.parameters())`)."""
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(variables["params"])))


# ----------------------------------------------------------------------------------------------- torch interop

_FLAX_TO_TORCH_LEAF = {("conv", "kernel"): "conv.weight", ("conv", "bias"): "conv.bias",
                       ("norm", "scale"): "norm.weight", ("norm", "bias"): "norm.bias"}


def torch_name(path: Sequence[str]) -> str:
    """Torch state_dict key of one flax parameter path, e.g. ('encoder_stages_0', 'convs_1', 'conv', 'kernel')."""
    top = path[0]
    if m := re.fullmatch(r"encoder_stages_(\d+)", top):
        prefix = f"encoder.stages.{m[1]}.0"  # each encoder stage is nn.Sequential(StackedConvBlocks)
    elif m := re.fullmatch(r"decoder_stages_(\d+)", top):
        prefix = f"decoder.stages.{m[1]}"
    elif m := re.fullmatch(r"decoder_(transpconvs|seg_layers)_(\d+)", top):
        return f"decoder.{m[1]}.{m[2]}." + {"kernel": "weight", "bias": "bias"}[path[1]]
    else:
        raise KeyError(f"no torch name for flax path {'/'.join(path)}")
    block = re.fullmatch(r"convs_(\d+)", path[1])
    if block is None or tuple(path[2:]) not in _FLAX_TO_TORCH_LEAF:
        raise KeyError(f"no torch name for flax path {'/'.join(path)}")
    return f"{prefix}.convs.{block[1]}.{_FLAX_TO_TORCH_LEAF[tuple(path[2:])]}"


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):  # torch tensor, without importing torch
        v = v.detach().cpu().float().numpy()
    return np.asarray(v, dtype=np.float32)


def variables_from_torch_state_dict(sd: Mapping[str, Any], module: PlainConvUNet) -> dict[str, Any]:
    """Flax variables for `module` from a torch PlainConvUNet state_dict (or nnU-Net's `network_weights`).

    Conv weights (O, I, *k) -> (*k, I, O); transposed-conv weights (I, O, *k) -> (*k, I, O). The aliases torch
    also lists (`...convs.i.all_modules.j`, `decoder.encoder.*`) and the DDP / torch.compile prefixes
    (`module.`, `_orig_mod.`) are ignored. Missing keys, unknown keys and shape mismatches raise KeyError /
    ValueError naming the key.
    """
    clean: dict[str, np.ndarray] = {}
    for key, value in sd.items():
        k = key
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if ".all_modules." in k or k.startswith("decoder.encoder."):
            continue
        clean[k] = value
    shapes = jax.eval_shape(module.init, jax.random.key(0), dummy_input(module))["params"]
    used = set()

    def convert(path, leaf):
        names = tuple(p.key for p in path)
        key = torch_name(names)
        if key not in clean:
            raise KeyError(f"torch state_dict has no {key!r} (needed for flax {'/'.join(names)})")
        w = _to_numpy(clean[key])
        used.add(key)
        if w.ndim > 1:
            w = np.moveaxis(w, (0, 1), (-1, -2)) if "transpconvs" not in key else np.moveaxis(w, (0, 1), (-2, -1))
        if w.shape != leaf.shape:
            raise ValueError(f"torch {key!r} has shape {clean[key].shape} -> {w.shape}, flax "
                             f"{'/'.join(names)} needs {leaf.shape}")
        return jnp.asarray(w)

    params = jax.tree_util.tree_map_with_path(convert, shapes)
    unused = sorted(set(clean) - used)
    if unused:
        raise KeyError(f"torch state_dict keys not used by PlainConvUNet (another architecture?): {unused[:8]}"
                       + (f" ... ({len(unused)} in all)" if len(unused) > 8 else ""))
    return {"params": params}
