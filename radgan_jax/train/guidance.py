"""Classifier guidance for super-resolution stages (StyleGAN-XL's `--cls_weight`, training/loss.py L59-64, L110).

The original adds `cls_weight * CrossEntropy(classifier(normalize((img + 1) / 2)), argmax(c))` to G's loss in
Gmain, where the classifier is a frozen, pretrained timm network behind `Interpolate(224)` (bilinear,
align_corners=False), `deit_small_distilled_patch16_224` by default (train.py L297), and only super-resolution
stages of a conditional model use it (L296, L313). Its label is the class index of c, so the classifier must
predict the generator's own classes: for RadImageGAN, a RadImageNet classifier, not an ImageNet one.

Here the classifier loads from a local file only (`train.cls_weights`): a raw state_dict (.pth, .safetensors,
.npz; timm names, or EfficientNet-PyTorch names for EfficientNet-Lite) or a directory written by
`python -m radgan_jax.tools.convert_feature_nets`. No construction quirk: timm.create_model(...).eval() is used
as is. Any backbone the feature-net converters know works (EfficientNet-Lite0..4, DeiT tiny/small/base).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from radgan_jax.models.projected_d.preprocess import BACKBONE_RES, preprocess_for_backbone
from radgan_jax.tools import convert_feature_nets as cfn
from radgan_jax.train.gan_losses import classifier_guidance_loss

DEFAULT_CLS_MODEL = "deit_small_distilled_patch16_224"  # train.py L297


class GuidanceError(ValueError):
    """A classifier-guidance config or file problem; the message names the value or file."""


@dataclasses.dataclass(frozen=True)
class GuidanceClassifier:
    """A frozen classifier: `loss(variables, img, c)` is the original's guidance cross entropy."""

    net: str
    module: nn.Module
    num_classes: int

    def logits(self, variables: Any, img: jax.Array) -> jax.Array:
        """[-1, 1] NHWC images -> class logits: (x + 1) / 2, the net's Normalize, bilinear resize to 224."""
        x = preprocess_for_backbone(img.astype(jnp.float32), self.net, interp224=True, input_size=BACKBONE_RES)
        return self.module.apply(variables, x, method="classify")

    def loss(self, variables: Any, img: jax.Array, c_onehot: jax.Array) -> jax.Array:
        return classifier_guidance_loss(self.logits(variables, img), c_onehot)


def _num_classes(module: nn.Module) -> int:
    if hasattr(module, "cfg"):  # DeiTFeatures
        return int(module.cfg.num_classes)
    return int(module.num_classes) if getattr(module, "include_head", False) else 0


def _stored_net(ckpt_dir: Path) -> str:
    from radgan_jax.checkpoint import Checkpointer

    with Checkpointer(ckpt_dir, max_to_keep=None) as ck:
        return str(ck.metadata(None).get("net"))


def load_guidance_classifier(net: str, source: str, c_dim: int) -> tuple[GuidanceClassifier, dict[str, Any]]:
    """(classifier, frozen variables as host numpy) from a local file or converted directory."""
    if net not in cfn.CONVERTERS:
        raise GuidanceError(f"train.cls_model={net!r} is not a known classifier; available: {sorted(cfn.CONVERTERS)}")
    if not source:
        raise GuidanceError("train.cls_weight > 0 needs train.cls_weights: a local file or converted directory of "
                            f"a {net} classifier over the model's {c_dim} classes (nothing is downloaded)")
    path = Path(source)
    try:
        if path.is_dir():
            module, variables = cfn.load_feature_net(path)
            stored = _stored_net(path)
            if stored != net:  # the net decides the input normalisation
                raise GuidanceError(f"train.cls_weights={source} holds a {stored} but train.cls_model={net!r}")
        elif path.is_file():
            module, variables, _ = cfn.load_source(path, net, construction_quirk=False)
        else:
            raise GuidanceError(f"train.cls_weights={source}: no such file or directory")
    except cfn.ConversionError as e:
        raise GuidanceError(f"train.cls_weights={source}: {e}") from None
    k = _num_classes(module)
    if k != c_dim:
        raise GuidanceError(
            f"train.cls_weights={source}: the classifier ({net}) predicts {k} classes but the generator "
            f"has c_dim={c_dim}; guidance takes argmax(c) as the label, so it needs a classifier over the "
            "generator's own classes")
    return GuidanceClassifier(net, module, k), dict(variables)


__all__ = ["DEFAULT_CLS_MODEL", "GuidanceClassifier", "GuidanceError", "load_guidance_classifier"]
