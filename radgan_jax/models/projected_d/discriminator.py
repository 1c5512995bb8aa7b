"""The projected discriminator: per backbone, DiffAugment -> [0, 1] -> normalise -> 224 -> frozen feature network
-> fixed random CCM/CSM projector -> trainable multi-scale conditional mini discriminators.

As the official `pg_modules/discriminator.py` (`ProjectedDiscriminator`, train.py: backbones
`deit_base_distilled_patch16_224` and `tf_efficientnet_lite0`, diffaug, interp224, cout 64, expand, proj_type 2,
num_discs 4, cond): each backbone draws its own augmentation (one key per backbone), the feature network always
runs in eval mode, and `MultiScaleD` is built for the feature resolutions of a 256 px input
(`_make_projector` fixes im_res = 256: [64, 32, 16, 8], doubled by the CSM), so at the real 224 px input every
mini disc outputs 4 x 4 logits. Returns one (N, L) logits array per backbone, the list the losses take.

Which weights train: only `<backbone>_disc` (the heads). The feature networks and projectors are frozen
(`trainable_mask`); gradients still flow through them to the images, which is how G learns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from radgan_jax.models.projected_d import deit
from radgan_jax.models.projected_d import efficientnet_lite as effnet
from radgan_jax.models.projected_d.heads import MultiScaleD
from radgan_jax.models.projected_d.preprocess import preprocess_for_backbone
from radgan_jax.models.projected_d.projector import Projector
from radgan_jax.ops.diffaugment import diff_augment

PAPER_BACKBONES = ("deit_base_distilled_patch16_224", "tf_efficientnet_lite0")
PROJECTOR_IM_RES = 256  # `_make_projector` builds the heads for this input size whatever the real one is


def check_backbone(backbone: str) -> None:
    if not (backbone.removeprefix("tf_efficientnet_") in effnet.LITE_VARIANTS or backbone in deit.VIT_BACKBONES):
        raise ValueError(f"unknown backbone {backbone!r}; valid: tf_efficientnet_lite0..4, "
                         f"{', '.join(deit.VIT_BACKBONES)}")


def feature_network(backbone: str, name: str | None = None) -> nn.Module:
    """The frozen feature network for a backbone name (EfficientNet-Lite without its classifier head, or ViT)."""
    check_backbone(backbone)
    if backbone.startswith("tf_efficientnet_"):
        return effnet.efficientnet_lite(backbone.removeprefix("tf_efficientnet_"), include_head=False, name=name)
    if backbone in deit.VIT_BACKBONES:
        return deit.DeiTFeatures(deit.deit_config(backbone), name=name)
    raise ValueError(f"unknown backbone {backbone!r}; valid: tf_efficientnet_lite0..4, {', '.join(deit.VIT_BACKBONES)}")


def head_resolutions(proj_type: int, im_res: int = PROJECTOR_IM_RES) -> list[int]:
    base = [im_res // 4, im_res // 8, im_res // 16, im_res // 32]
    return [2 * r for r in base] if proj_type == 2 else base  # the CSM upsamples x2


class ProjectedDiscriminator(nn.Module):
    backbones: Sequence[str] = PAPER_BACKBONES
    diffaug: bool = True
    diffaug_policy: str = "color,translation,cutout"
    interp224: bool = True
    cout: int = 64
    expand: bool = True
    proj_type: int = 2
    num_discs: int = 4
    ndf: int | None = None
    per_device_bn_axis_name: str | None = None
    input_size: int = 224  # interp224's target size for CNN backbones (the original: always 224)
    projector_im_res: int = PROJECTOR_IM_RES  # heads are built for this input size (the original: always 256)
    bn_group_size: int = 0  # >0: per-GPU BatchNorm statistics over groups of this many rows (original's batch_gpu)

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array, *, train: bool = False, key: jax.Array | None = None,
                 return_features: bool = False) -> Any:
        """x: (N, H, W, 3) in [-1, 1]; c: one-hot (N, c_dim). `key` draws the augmentation (needed when
        diffaug is on and train is True; without a key no augmentation is applied)."""
        for bb in self.backbones:
            check_backbone(bb)
        augment = self.diffaug and key is not None
        keys = jax.random.split(key, len(self.backbones)) if augment else [None] * len(self.backbones)
        logits, features = [], {}
        for bb, k in zip(self.backbones, keys):
            x_aug = diff_augment(x, k, self.diffaug_policy) if augment else x
            x_n = preprocess_for_backbone(x_aug, bb, self.interp224, self.input_size)
            taps = list(feature_network(bb, name=f"{bb}_pretrained")(x_n))  # always eval mode (frozen)
            channels_in = [t.shape[-1] for t in taps]
            _, proj = Projector(channels_in, self.cout, self.expand, self.proj_type, name=f"{bb}_scratch")(taps)
            channels = [p.shape[-1] for p in proj]
            disc = MultiScaleD(channels, head_resolutions(self.proj_type, self.projector_im_res), self.num_discs,
                               self.ndf,
                               per_device_bn_axis_name=self.per_device_bn_axis_name,
                               bn_group_size=self.bn_group_size, name=f"{bb}_disc")
            logits.append(disc(proj, c, train))
            features[bb] = {"taps": taps, "proj": proj}
        return (logits, features) if return_features else logits


def trainable_mask(params: Mapping[str, Any]) -> Any:
    """Pytree of bools over D's params: True for the heads (`<backbone>_disc`), False for the frozen rest."""
    return {name: jax.tree.map(lambda _, head=name.endswith("_disc"): head, sub) for name, sub in params.items()}


def load_into(variables: Mapping[str, Any], backbone: str, part: str, loaded: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of D's `variables` with `<backbone>_<part>` (part: 'pretrained', 'scratch' or 'disc') replaced by
    `loaded` ({'params': ..., 'batch_stats': ..., ...}). Collections/keys the target lacks (e.g. an EfficientNet
    classifier head) are dropped; a missing or mis-shaped entry raises ValueError naming it."""
    name = f"{backbone}_{part}"
    out = {col: dict(tree) for col, tree in variables.items()}
    for col, tree in out.items():
        if name not in tree:
            continue
        if col not in loaded:
            raise ValueError(f"{name}: the loaded variables have no {col!r} collection")
        out[col][name] = _match(tree[name], loaded[col], f"{col}/{name}")
    return out


def _match(target: Any, src: Any, where: str) -> Any:
    if isinstance(target, Mapping):
        if not isinstance(src, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(src).__name__}")
        missing = [k for k in target if k not in src]
        if missing:
            raise ValueError(f"{where}: missing {missing[:5]}")
        return {k: _match(target[k], src[k], f"{where}/{k}") for k in target}
    want = tuple(getattr(target, "shape", np.shape(target)))  # arrays or jax.ShapeDtypeStruct (eval_shape)
    if want != tuple(np.shape(src)):
        raise ValueError(f"{where}: shape {np.shape(src)} where {want} is expected")
    return np.asarray(src, dtype=getattr(target, "dtype", None) or np.asarray(target).dtype)
