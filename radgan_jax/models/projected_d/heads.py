"""Multi-scale conditional mini discriminators of StyleGAN-XL (pg_modules/discriminator.py).

`SingleDiscCond`: DownBlocks (spectral-norm conv 4x4 s2 p1 + BatchNorm + LeakyReLU 0.2) from start_sz to
end_sz, then `cls` = spectral-norm conv 4x4 s1 p0 to cmap_dim without bias. The class enters as
cmap = embed_proj(embed[c.argmax(1)]) with a trainable 1000x320 table (the official loads the pretrained
ImageNet table, `in_embeddings/tf_efficientnet_lite0.pkl`, into every mini disc) and embed_proj the StyleGAN2
FullyConnectedLayer(320 -> cmap_dim, lrelu). out = sum_ch(cls_out * cmap) / sqrt(cmap_dim).
`MultiScaleD`: one mini disc per feature level; logits flattened per disc and concatenated.

Mutable collections: `spectral` (u, v of every spectral-norm conv) and `batch_stats` (BN running mean/var and
the batch counter). Train mode: `apply(..., train=True, mutable=['spectral', 'batch_stats'])`.

BatchNorm batch statistics: by default a plain mean over (N, H, W). Under `jax.jit` with a batch-sharded
input this is the mean over the GLOBAL batch (XLA inserts the all-reduce). Set `per_device_bn_axis_name` when
the model runs inside `shard_map`/`pmap` over that axis and you want the official DDP behaviour instead
(per-GPU BatchNorm2d statistics): batch stats then stay local to each device, and the running-stat updates are
averaged over the axis so replicas keep one state (the official keeps rank 0's copy). `bn_group_size` gives the
same per-GPU statistics under plain jit: groups of that many rows (the original's batch_gpu), whatever the mesh.
Layout: NHWC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from radgan_jax.data.base import DataError
from radgan_jax.models.stylegan_xl.fully_connected import FullyConnected
from radgan_jax.ops.batch_norm import TorchBatchNorm
from radgan_jax.ops.spectral_norm import SpectralNormConv

# pg_modules/discriminator.py: channel width per spatial size
NFC_MIDAS = {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 64, 256: 32, 512: 16, 1024: 8}
BN_EPS, BN_MOMENTUM = 1e-5, 0.1  # torch.nn.BatchNorm2d defaults


class DownBlock(nn.Module):
    features: int
    bn_axis_name: str | None = None
    bn_group_size: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = SpectralNormConv(self.features, 4, stride=2, padding=1, use_bias=True, name="conv")(x, train)
        x = TorchBatchNorm(BN_EPS, BN_MOMENTUM, self.bn_axis_name, track_count=True,
                           group_size=self.bn_group_size, name="bn")(x, train)
        return jnp.where(x >= 0, x, 0.2 * x)


def disc_widths(nc: int, start_sz: int, end_sz: int = 8, ndf: int | None = None) -> tuple[int, list[int]]:
    """(snapped start_sz, channel chain) of one mini disc, as SingleDiscCond.__init__ builds it."""
    if start_sz not in NFC_MIDAS:  # non-power-of-two sizes snap to the nearest listed size
        sizes = np.array(list(NFC_MIDAS))
        start_sz = int(sizes[np.argmin(abs(sizes - start_sz))])
    nfc = dict(NFC_MIDAS) if ndf is None else {k: ndf for k in NFC_MIDAS}
    nfc[start_sz] = nc
    chain, sz = [nfc[start_sz]], start_sz
    while sz > end_sz:
        sz //= 2
        chain.append(nfc[sz])
    return start_sz, chain


class SingleDiscCond(nn.Module):
    nc: int
    start_sz: int
    end_sz: int = 8
    ndf: int | None = None
    cmap_dim: int = 64
    num_embeddings: int = 1000  # ImageNet table rows; classes use rows 0..c_dim-1 (c.argmax)
    embedding_dim: int = 320
    bn_axis_name: str | None = None
    bn_group_size: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array, train: bool = False) -> jax.Array:
        _, chain = disc_widths(self.nc, self.start_sz, self.end_sz, self.ndf)
        if x.shape[-1] != chain[0]:
            raise ValueError(f"mini disc expects {chain[0]} input channels, got shape {tuple(x.shape)}")
        for j, width in enumerate(chain[1:]):
            x = DownBlock(width, self.bn_axis_name, self.bn_group_size, name=f"main_{j}")(x, train)
        out = SpectralNormConv(self.cmap_dim, 4, use_bias=False, name="cls")(x, train)
        # torch Embedding default init N(0, 1); real runs load the pretrained table (heads_variables_from_official)
        table = self.param("embed", nn.initializers.normal(1.0), (self.num_embeddings, self.embedding_dim))
        rows = table[jnp.argmax(c, axis=1)]
        cmap = FullyConnected(self.embedding_dim, self.cmap_dim, activation="lrelu", name="embed_proj")(rows)
        self.sow("intermediates", "cls_out", out)
        self.sow("intermediates", "cmap", cmap)
        return jnp.sum(out * cmap[:, None, None, :].astype(out.dtype), axis=-1, keepdims=True) * (
            1 / np.sqrt(self.cmap_dim))


class MultiScaleD(nn.Module):
    """Conditional MultiScaleD: features[k] (NHWC, k = 0..num_discs-1) -> logits (N, sum_k h_k*w_k)."""

    channels: Sequence[int]
    resolutions: Sequence[int]
    num_discs: int = 4
    ndf: int | None = None
    end_sz: int = 8
    cmap_dim: int = 64
    per_device_bn_axis_name: str | None = None
    bn_group_size: int = 0

    @nn.compact
    def __call__(self, features: Sequence[jax.Array], c: jax.Array, train: bool = False) -> jax.Array:
        if not 1 <= self.num_discs <= 5:
            raise ValueError(f"num_discs must be in 1..5, got {self.num_discs}")
        logits = []
        for k, (cin, res) in enumerate(zip(self.channels[:self.num_discs], self.resolutions[:self.num_discs])):
            disc = SingleDiscCond(cin, res, self.end_sz, self.ndf, self.cmap_dim,
                                  bn_axis_name=self.per_device_bn_axis_name, bn_group_size=self.bn_group_size,
                                  name=f"mini_discs_{k}")
            out = disc(features[k], c, train)
            logits.append(out.reshape(out.shape[0], -1))
        return jnp.concatenate(logits, axis=1)


def _get(sd: Mapping[str, np.ndarray], key: str, source: str) -> np.ndarray:
    if key not in sd:
        raise DataError(source, f"missing discriminator tensor {key!r}", kind="layout")
    return np.asarray(sd[key])


def heads_variables_from_official(state_dict: Mapping[str, np.ndarray], embed_table: np.ndarray | None = None,
                                  prefix: str = "", source: str = "<state_dict>") -> dict:
    """Official MultiScaleD state (`{prefix}mini_discs.{k}.…`: weight_orig/weight_u/weight_v, BN weight/bias/
    running_*, cls.*, embed.weight, embed_proj.*) -> our variables {params, spectral, batch_stats}.

    `embed_table` (1000x320) is used for every mini disc when the `embed.weight` keys are absent (the golden
    files store one copy). `prefix` is e.g. 'discriminators.tf_efficientnet_lite0.'; `source` names the file.
    """
    sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    discs = sorted({int(k.split(".")[1]) for k in sd if k.startswith("mini_discs.")})
    if not discs:
        raise DataError(source, f"no '{prefix}mini_discs.*' tensors found", kind="layout")
    f32 = lambda a: jnp.asarray(np.asarray(a, np.float32))  # noqa: E731

    def sn(p: str) -> tuple[dict, dict]:
        w = _get(sd, f"{p}.weight_orig", source)
        par = {"kernel": f32(np.transpose(w, (2, 3, 1, 0)))}
        if f"{p}.bias" in sd:
            par["bias"] = f32(sd[f"{p}.bias"])
        return par, {"u": f32(_get(sd, f"{p}.weight_u", source)), "v": f32(_get(sd, f"{p}.weight_v", source))}

    params, spectral, stats = {}, {}, {}
    for k in discs:
        d = f"mini_discs.{k}"
        p, s, b = {}, {}, {}
        blocks = sorted({int(key.split(".")[3]) for key in sd if key.startswith(f"{d}.main.")})
        for j in blocks:
            conv_p, conv_s = sn(f"{d}.main.{j}.main.0")
            bn = f"{d}.main.{j}.main.1"
            p[f"main_{j}"] = {"conv": conv_p, "bn": {"scale": f32(_get(sd, f"{bn}.weight", source)),
                                                    "bias": f32(_get(sd, f"{bn}.bias", source))}}
            s[f"main_{j}"] = {"conv": conv_s}
            b[f"main_{j}"] = {"bn": {"mean": f32(_get(sd, f"{bn}.running_mean", source)),
                                     "var": f32(_get(sd, f"{bn}.running_var", source)),
                                     "num_batches_tracked": jnp.asarray(
                                         int(sd.get(f"{bn}.num_batches_tracked", 0)), jnp.int32)}}
        p["cls"], s["cls"] = sn(f"{d}.cls")
        table = sd.get(f"{d}.embed.weight", embed_table)
        if table is None:
            raise DataError(source, f"{d}.embed.weight missing and no embed_table given", kind="layout")
        p["embed"] = f32(table)
        # FullyConnectedLayer stores weight (out, in); ours is (in, out)
        p["embed_proj"] = {"weight": f32(_get(sd, f"{d}.embed_proj.weight", source).T),
                           "bias": f32(_get(sd, f"{d}.embed_proj.bias", source))}
        params[f"mini_discs_{k}"], spectral[f"mini_discs_{k}"], stats[f"mini_discs_{k}"] = p, s, b
    return {"params": params, "spectral": spectral, "batch_stats": stats}


def heads_state_to_official(variables: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """Our mutable state (spectral u/v, BN running stats) -> official buffer names, e.g. to compare or save."""
    out: dict[str, np.ndarray] = {}
    for name, disc in variables["spectral"].items():
        d = f"{prefix}mini_discs.{name.rsplit('_', 1)[1]}"
        for blk, sub in disc.items():
            base = f"{d}.cls" if blk == "cls" else f"{d}.main.{blk.rsplit('_', 1)[1]}.main.0"
            uv = sub if blk == "cls" else sub["conv"]
            out[f"{base}.weight_u"], out[f"{base}.weight_v"] = np.asarray(uv["u"]), np.asarray(uv["v"])
    for name, disc in variables["batch_stats"].items():
        d = f"{prefix}mini_discs.{name.rsplit('_', 1)[1]}"
        for blk, sub in disc.items():
            base = f"{d}.main.{blk.rsplit('_', 1)[1]}.main.1"
            out[f"{base}.running_mean"] = np.asarray(sub["bn"]["mean"])
            out[f"{base}.running_var"] = np.asarray(sub["bn"]["var"])
            out[f"{base}.num_batches_tracked"] = np.asarray(sub["bn"]["num_batches_tracked"], np.int64)
    return out
