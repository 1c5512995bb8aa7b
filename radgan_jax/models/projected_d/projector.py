"""Random, frozen feature projector of Projected GAN / StyleGAN-XL: CCM + CSM (pg_modules/projector.py).

* CCM (cross-channel mixing): one 1x1 conv with bias per backbone tap, to cout*[1, 2, 4, 8] channels
  (expand=True) or cout each.
* CSM (cross-scale mixing, proj_type=2): FeatureFusionBlocks from coarse to fine,
  o3 = F3(c3), o2 = F2(o3 + c2), o1 = F1(o2 + c1), o0 = F0(o1 + c0); each F is a bilinear x2 upsample with
  align_corners=True followed by a 1x1 conv with bias (F3..F1 halve channels when expand; F0 keeps them).
  No activation, no residual units (the official `activation` argument is unused).

The weights are drawn once, like torch's default conv init (U(+-1/sqrt(fan_in)) for weight and bias), from
the key given to `init`, and are never trained: the official code freezes `feature_networks`. Keep the key
(or the params) with the checkpoint, since the discriminator heads are trained against these projections.
Layout: NHWC; 1x1 kernels are stored as (in, out) matrices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from radgan_jax.data.base import DataError
from radgan_jax.models.projected_d.preprocess import bilinear_resize
from radgan_jax.ops.spectral_norm import torch_default_init

_HI = jax.lax.Precision.HIGHEST


class Conv1x1(nn.Module):
    """nn.Conv2d(in, out, kernel_size=1, bias=True) with torch's default init; NHWC."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cin = x.shape[-1]
        kernel = self.param("kernel", torch_default_init(cin), (cin, self.features))
        bias = self.param("bias", torch_default_init(cin), (self.features,))
        return jnp.einsum("nhwc,co->nhwo", x, kernel.astype(x.dtype), precision=_HI) + bias.astype(x.dtype)


def ccm_channels(cout: int, expand: bool) -> list[int]:
    return [cout, cout * 2, cout * 4, cout * 8] if expand else [cout] * 4


def csm_channels(cout: int, expand: bool) -> list[int]:
    """Output channels of the CSM levels (the finest level never expands, to save memory)."""
    return [cout, cout, cout * 2, cout * 4] if expand else [cout] * 4


class Projector(nn.Module):
    """Backbone taps (4 NHWC maps, fine to coarse) -> projected maps.

    Returns (ccm_outs, csm_outs) for proj_type=2, (ccm_outs, ccm_outs) for proj_type=1 and the taps twice for
    proj_type=0, so callers always read the second list as the discriminator input.
    """

    channels_in: Sequence[int]
    cout: int = 64
    expand: bool = True
    proj_type: int = 2

    @nn.compact
    def __call__(self, feats: Sequence[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
        if self.proj_type not in (0, 1, 2):
            raise ValueError(f"proj_type must be 0, 1 or 2, got {self.proj_type}")
        if len(feats) != 4 or [f.shape[-1] for f in feats] != list(self.channels_in):
            raise ValueError(f"Projector expects 4 maps with channels {list(self.channels_in)}, got "
                             f"{[tuple(f.shape) for f in feats]}")
        if self.proj_type == 0:
            return list(feats), list(feats)
        cc = ccm_channels(self.cout, self.expand)
        ccm = [Conv1x1(cc[i], name=f"layer{i}_ccm")(f) for i, f in enumerate(feats)]
        if self.proj_type == 1:
            return ccm, ccm
        csm: list[jax.Array] = [None] * 4  # type: ignore[list-item]
        out = None
        for i in (3, 2, 1, 0):
            x = ccm[i] if out is None else out + ccm[i]
            h, w = x.shape[1:3]
            x = bilinear_resize(x, (2 * h, 2 * w), align_corners=True)
            # F0 never expands; F1..F3 halve their input channels when expand (FeatureFusionBlock)
            feats_out = cc[i] // 2 if (self.expand and i > 0) else cc[i]
            out = Conv1x1(feats_out, name=f"layer{i}_csm")(x)
            csm[i] = out
        return ccm, csm

    @property
    def out_channels(self) -> list[int]:
        if self.proj_type == 0:
            return list(self.channels_in)
        return ccm_channels(self.cout, self.expand) if self.proj_type == 1 else csm_channels(self.cout, self.expand)


def projector_params_from_official(state_dict: Mapping[str, np.ndarray], prefix: str = "scratch.",
                                   source: str = "<state_dict>") -> dict:
    """Official `scratch.layer{i}_ccm.{weight,bias}` / `scratch.layer{i}_csm.out_conv.{weight,bias}` (OIHW 1x1)
    -> our `params` tree. `prefix` selects e.g. 'feature_networks.<bb>.scratch.'; `source` names the file."""
    params: dict = {}
    for i in range(4):
        for ours, theirs in ((f"layer{i}_ccm", f"layer{i}_ccm"), (f"layer{i}_csm", f"layer{i}_csm.out_conv")):
            wk, bk = f"{prefix}{theirs}.weight", f"{prefix}{theirs}.bias"
            missing = [k for k in (wk, bk) if k not in state_dict]
            if missing:
                raise DataError(source, f"projector weights missing: {missing}", kind="layout")
            w = np.asarray(state_dict[wk], np.float32)
            if w.ndim != 4 or w.shape[2:] != (1, 1):
                raise DataError(source, f"{wk} has shape {w.shape}, expected (out, in, 1, 1)", kind="layout")
            params[ours] = {"kernel": jnp.asarray(w[:, :, 0, 0].T),
                            "bias": jnp.asarray(np.asarray(state_dict[bk], np.float32))}
    return {"params": params}
