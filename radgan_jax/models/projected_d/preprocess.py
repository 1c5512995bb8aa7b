"""Discriminator input preprocessing: [-1, 1] images -> what a frozen feature network expects.

As `ProjectedDiscriminator.forward` (stylegan-xl pg_modules/discriminator.py), after DiffAugment:
`(x + 1) / 2`, per-backbone `Normalize(mean, std)`, then `F.interpolate(x, 224, mode='bilinear',
align_corners=False)` (no antialias) when interp224 is on or the backbone is a ViT. Also holds the
torch-exact bilinear resize that the projector's CSM uses with align_corners=True.
Layout: NHWC.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# feature_networks/constants.py groups backbones by input normalisation; these are the ones we port.
_INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NORM_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    **{f"tf_efficientnet_lite{i}": _INCEPTION for i in range(5)},
    "vit_base_patch16_224": _INCEPTION,
    **{f"deit_{s}_distilled_patch16_224": _IMAGENET for s in ("tiny", "small", "base")},
}
VITS = ("deit_tiny_distilled_patch16_224", "deit_small_distilled_patch16_224", "deit_base_distilled_patch16_224",
        "vit_base_patch16_224")
BACKBONE_RES = 224  # the pretrained backbones' input size


def backbone_normstats(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the official code uses for `backbone` (get_backbone_normstats)."""
    if backbone not in NORM_STATS:
        raise ValueError(f"no input normalisation known for backbone {backbone!r}; known: {sorted(NORM_STATS)}")
    return NORM_STATS[backbone]


def bilinear_matrix(n_in: int, n_out: int, align_corners: bool, scale_factor: float | None = None) -> np.ndarray:
    """(n_out, n_in) float32 matrix M with out = M @ in: torch's 1-D bilinear rule (upsample_bilinear2d).

    align_corners=True: src = i * (n_in-1)/(n_out-1). False: src = (i+0.5)*scale - 0.5 clamped at 0, where
    scale = 1/scale_factor when a scale factor is given, else n_in/n_out (torch's area_pixel_compute_scale).
    """
    # torch computes the scale in float32 and the source index as float32(scale32 * (i + 0.5) - 0.5) (the
    # product in double); matching that rounding matters: a float64 scale moves far indices by ~4e-6.
    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        scale = np.float32((n_in - 1) / (n_out - 1)) if n_out > 1 else np.float32(0.0)
        src = (np.float32(scale) * i.astype(np.float32)).astype(np.float32)
    else:
        scale = np.float32(1.0 / scale_factor) if scale_factor else np.float32(n_in / n_out)
        src = np.maximum(np.float64(scale) * (i + 0.5) - 0.5, 0.0).astype(np.float32)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (src - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), i0] += 1.0 - lam
    m[np.arange(n_out), i1] += lam
    return m


def bilinear_resize(x: jax.Array, size: Sequence[int], align_corners: bool,
                    scale_factor: float | None = None) -> jax.Array:
    """torch `F.interpolate(mode='bilinear', antialias=False)` on an NHWC array, as two exact fp32 matmuls."""
    n, h, w, c = x.shape
    mh = jnp.asarray(bilinear_matrix(h, size[0], align_corners, scale_factor))
    mw = jnp.asarray(bilinear_matrix(w, size[1], align_corners, scale_factor))
    hi = jax.lax.Precision.HIGHEST
    y = jnp.einsum("oh,nhwc->nowc", mh, x, precision=hi)
    return jnp.einsum("pw,nowc->nopc", mw, y, precision=hi)


def preprocess_for_backbone(x: jax.Array, backbone: str, interp224: bool = True, input_size: int = BACKBONE_RES
                            ) -> jax.Array:
    """NHWC images in [-1, 1] (already augmented) -> the feature network's NHWC input.

    `input_size` replaces the original's fixed 224 of `interp224` (CNN backbones only; ViTs always see 224):
    small-budget runs (the CPU quickstart) feed EfficientNet 64 px inputs, 12x cheaper."""
    mean, std = backbone_normstats(backbone)
    x = (x + 1) / 2
    x = (x - jnp.asarray(mean, x.dtype)) / jnp.asarray(std, x.dtype)
    size = BACKBONE_RES if backbone in VITS else int(input_size)
    if (interp224 or backbone in VITS) and (x.shape[1], x.shape[2]) != (size, size):
        x = bilinear_resize(x, (size, size), align_corners=False)
    return x
