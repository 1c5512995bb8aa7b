"""EfficientNet-Lite (timm ``tf_efficientnet_lite*``, the TF release ported to PyTorch) in flax.linen, NHWC.

The projected discriminator of StyleGAN-XL uses ``tf_efficientnet_lite0`` as a frozen feature network and
reads four taps (official ``feature_networks/pretrained_builder.py::_make_efficientnet``):

    layer0 = conv_stem, bn1, act, blocks[0:2]  -> tap 0 (24 ch, /4)
    layer1 = blocks[2]                         -> tap 1 (40 ch, /8)
    layer2 = blocks[3:5]                       -> tap 2 (112 ch, /16)
    layer3 = blocks[5:7]                       -> tap 3 (320 ch, /32)

Details that matter numerically (../shared/golden/feature_nets/README.md): TF "same" padding (asymmetric,
computed from input size / stride / kernel / dilation; symmetric padding moves the taps by up to ~80),
BatchNorm eps 1e-3 (the TF port; 1e-5 is off by up to ~3), ReLU6, no squeeze-excitation, stem 32 and head
1280 channels fixed for every lite variant.

BatchNorm follows torch exactly (`radgan_jax.ops.batch_norm.TorchBatchNorm`, eps 1e-3 here): train mode
moves ``running_var`` toward the *unbiased* batch variance, which matters at the 8x8 stride-32 maps of the
construction quirk below (64/63, far outside the README's 3e-5 tolerance on the running stats).

Construction quirk (README): the official ``calc_dims`` runs one forward of a zero 1x3x256x256 image
through layer0..3 while the backbone is still in train mode, which moves every BatchNorm's running stats
in the tapped layers (not the head's) by momentum 0.1 toward that batch's statistics. The official
discriminator uses that state; :func:`apply_construction_quirk` reproduces it from raw pretrained weights.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from radgan_jax.ops.batch_norm import TorchBatchNorm

#: variant -> (width multiplier, depth multiplier); timm ``_gen_efficientnet_lite``.
LITE_VARIANTS: dict[str, tuple[float, float]] = {
    "lite0": (1.0, 1.0), "lite1": (1.0, 1.1), "lite2": (1.1, 1.2), "lite3": (1.2, 1.4), "lite4": (1.4, 1.8),
}
#: timm EfficientNet-Lite arch_def per stage: (kind, repeats, kernel, stride, expand ratio, out channels);
#: 'ds' = depthwise-separable block, 'ir' = inverted residual (MBConv) without SE.
LITE_STAGES: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("ds", 1, 3, 1, 1, 16), ("ir", 2, 3, 2, 6, 24), ("ir", 2, 5, 2, 6, 40), ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112), ("ir", 4, 5, 2, 6, 192), ("ir", 1, 3, 1, 6, 320),
)
#: index of the last stage in each official tap (layer0..3 of ``_make_efficientnet``).
TAP_LAST_STAGE: tuple[int, ...] = (1, 2, 4, 6)
STEM_CHANNELS = 32  # fixed for lite (TF EfficientNet-Lite: "fix stem and head")
HEAD_CHANNELS = 1280
BN_EPS = 1e-3  # TF BatchNorm default, kept by timm's tf_ ports
QUIRK_INPUT_SHAPE = (1, 256, 256, 3)  # calc_dims: torch.zeros(1, 3, 256, 256)


def make_divisible(v: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """timm ``make_divisible``: nearest multiple of ``divisor``, never more than 10% below ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < round_limit * v else new_v


@dataclass(frozen=True)
class BlockSpec:
    kind: str  # 'ds' | 'ir'
    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    mid_ch: int  # expanded width (== in_ch for 'ds')

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.in_ch == self.out_ch


def block_specs(width_multiplier: float = 1.0, depth_multiplier: float = 1.0) -> list[list[BlockSpec]]:
    """Per stage, the blocks of the network. Like timm (``fix_first_last``), the first and last stages keep
    their repeats; the others get ``ceil(repeats * depth_multiplier)``; channels are rounded to 8."""
    stages, in_ch = [], STEM_CHANNELS
    for i, (kind, repeats, kernel, stride, expand, out) in enumerate(LITE_STAGES):
        if 0 < i < len(LITE_STAGES) - 1:
            repeats = int(math.ceil(repeats * depth_multiplier))
        out_ch = make_divisible(out * width_multiplier)
        blocks = []
        for j in range(repeats):
            mid = in_ch if kind == "ds" else make_divisible(in_ch * expand)
            blocks.append(BlockSpec(kind, in_ch, out_ch, kernel, stride if j == 0 else 1, mid))
            in_ch = out_ch
        stages.append(blocks)
    return stages


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF "SAME" padding of one spatial dim: total = max((ceil(size/stride)-1)*stride + (k-1)*d + 1 - size, 0),
    the smaller half before (timm ``pad_same``)."""
    total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class SameConv(nn.Module):
    """Bias-free conv with TF "same" padding; kernel ``(k, k, in/groups, out)`` (torch: ``(out, in/groups, k, k)``)."""

    features: int
    kernel_size: int
    stride: int = 1
    groups: int = 1
    dilation: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (k, k, x.shape[-1] // self.groups, self.features))
        pads = [tf_same_padding(x.shape[a], k, self.stride, self.dilation) for a in (1, 2)]
        return lax.conv_general_dilated(x, kernel.astype(x.dtype), (self.stride,) * 2, pads,
                                        rhs_dilation=(self.dilation,) * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=self.groups)


BatchNorm = functools.partial(TorchBatchNorm, epsilon=BN_EPS)  # TF port: eps 1e-3


class LiteBlock(nn.Module):
    """timm ``DepthwiseSeparableConv`` ('ds') or ``InvertedResidual`` ('ir'), ReLU6, no SE; timm names."""

    spec: BlockSpec

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        s, shortcut = self.spec, x
        if s.kind == "ds":
            x = nn.relu6(BatchNorm(name="bn1")(
                SameConv(s.in_ch, s.kernel, s.stride, groups=s.in_ch, name="conv_dw")(x), train))
            x = BatchNorm(name="bn2")(SameConv(s.out_ch, 1, name="conv_pw")(x), train)
        else:
            x = nn.relu6(BatchNorm(name="bn1")(SameConv(s.mid_ch, 1, name="conv_pw")(x), train))
            x = nn.relu6(BatchNorm(name="bn2")(
                SameConv(s.mid_ch, s.kernel, s.stride, groups=s.mid_ch, name="conv_dw")(x), train))
            x = BatchNorm(name="bn3")(SameConv(s.out_ch, 1, name="conv_pwl")(x), train)
        return x + shortcut if s.has_skip else x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite; defaults = lite0. Submodule names follow timm: ``conv_stem``, ``bn1``,
    ``blocks_{stage}_{index}``, ``conv_head``, ``bn2``, ``classifier``.

    ``__call__(x, train=False, taps=True)``: the 4 official taps (``taps=False``: only the last one);
    ``classify(x)``: full network, global average pool, classifier logits (needs ``include_head``).
    Inputs are NHWC images already normalised (the projector uses mean = std = 0.5).
    Initialise with :func:`init_variables` so that the head exists too.
    """

    width_multiplier: float = 1.0
    depth_multiplier: float = 1.0
    include_head: bool = True
    num_classes: int = 1000  # 0: no classifier

    def setup(self) -> None:
        self.specs = block_specs(self.width_multiplier, self.depth_multiplier)
        self.conv_stem = SameConv(STEM_CHANNELS, 3, 2)
        self.bn1 = BatchNorm()
        self.blocks = [[LiteBlock(b) for b in stage] for stage in self.specs]  # flax names: blocks_{i}_{j}
        if self.include_head:
            self.conv_head = SameConv(HEAD_CHANNELS, 1)
            self.bn2 = BatchNorm()
            if self.num_classes:
                self.classifier = nn.Dense(self.num_classes)

    @property
    def tap_channels(self) -> list[int]:
        return [block_specs(self.width_multiplier, self.depth_multiplier)[i][-1].out_ch for i in TAP_LAST_STAGE]

    def _stages(self, x: jax.Array, train: bool) -> list[jax.Array]:
        x = nn.relu6(self.bn1(self.conv_stem(x), train))
        taps = []
        for i, stage in enumerate(self.blocks):
            for block in stage:
                x = block(x, train)
            if i in TAP_LAST_STAGE:
                taps.append(x)
        return taps

    def __call__(self, x: jax.Array, *, train: bool = False, taps: bool = True) -> Any:
        out = self._stages(x, train)
        return tuple(out) if taps else out[-1]

    def classify(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if not self.include_head:
            raise ValueError("EfficientNetLite(include_head=False) has no head; classify() needs the head")
        x = self._stages(x, train)[-1]
        x = nn.relu6(self.bn2(self.conv_head(x), train))
        x = jnp.mean(x, axis=(1, 2))
        return self.classifier(x) if self.num_classes else x


def efficientnet_lite(variant: str = "lite0", **kwargs: Any) -> EfficientNetLite:
    """``EfficientNetLite`` for a named variant ('lite0'..'lite4')."""
    if variant not in LITE_VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {sorted(LITE_VARIANTS)}")
    w, d = LITE_VARIANTS[variant]
    return EfficientNetLite(width_multiplier=w, depth_multiplier=d, **kwargs)


def init_variables(module: EfficientNetLite, rng: jax.Array, image_size: int = 224) -> dict[str, Any]:
    """Random ``{'params', 'batch_stats'}`` covering every submodule the module has (head included)."""
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    method = module.classify if module.include_head else module.__call__
    return dict(jax.jit(lambda r: module.init(r, x, method=method))(rng))


def apply_construction_quirk(variables: dict[str, Any], module: EfficientNetLite | None = None
                             ) -> dict[str, Any]:
    """The official ``calc_dims`` side effect: one train-mode forward of zeros (1, 256, 256, 3) through the
    tapped layers, returning ``variables`` with the moved ``batch_stats`` (pure; the head's stats stay)."""
    module = EfficientNetLite() if module is None else module

    @jax.jit
    def step(v: dict[str, Any]) -> Any:
        _, updates = module.apply(v, jnp.zeros(QUIRK_INPUT_SHAPE, jnp.float32), train=True,
                                  mutable=["batch_stats"])
        return updates["batch_stats"]

    new_stats = step({"params": variables["params"], "batch_stats": variables["batch_stats"]})
    return {**variables, "batch_stats": new_stats}
