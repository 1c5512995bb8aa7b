"""DeiT / ViT feature network of the projected discriminator, on the official StyleGAN-XL ViT path.

Follows `feature_networks/vit.py` + `pretrained_builder._make_vit` of autonomousvision/stylegan-xl (commit
4241ff9): timm's ViT/DeiT (patch 16, LayerNorm eps 1e-6, exact-erf GELU, qkv bias, attention scale
head_dim**-0.5), run through `forward_flex` (position embedding of the patch grid resized bilinearly,
align_corners=False, to the input's grid; the cls/dist token embeddings are kept as they are), the block
outputs of `hooks` (2/5/8/11) with the cls (+dist) tokens sliced off, unflattened to the (H/16, W/16) grid and
reassembled to four scales: 1x1 conv to `features[i]`, then ConvTranspose k4s4 (level 0), k2s2 (level 1),
identity (level 2), Conv k3s2p1 (level 3). At 224 input the taps are 56/28/14/7 (NHWC here; NCHW in torch).

Variables are `{'params': {'vit': ..., 'reassemble': ...}}`; `deit_variables_from_state_dict` converts a timm
state_dict or an official `F_RandomProj` / projector state_dict (`pretrained.model.*`, `pretrained.layer*`).
"""

from __future__ import annotations

import dataclasses
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from radgan_jax.models.projected_d.preprocess import bilinear_resize

HIGHEST = jax.lax.Precision.HIGHEST
PATCH = 16
LN_EPS = 1e-6  # timm VisionTransformer: norm_layer = partial(nn.LayerNorm, eps=1e-6)


@dataclasses.dataclass(frozen=True)
class DeiTConfig:
    embed_dim: int
    num_heads: int
    features: tuple[int, int, int, int]  # reassembly widths of the 4 taps
    depth: int = 12
    mlp_ratio: int = 4
    distilled: bool = True  # cls + dist tokens (DeiT distilled); False: cls only (plain ViT)
    num_classes: int = 1000
    hooks: tuple[int, int, int, int] = (2, 5, 8, 11)
    pos_grid: int = 14  # the position embedding is trained for 224 / 16 = 14 patches per side

    @property
    def start_index(self) -> int:
        return 2 if self.distilled else 1


# `_make_vit` widths by token width (tiny / small / base): features = [d/8, d/4, d/2, d]; timm heads use 64-d heads.
_WIDTHS = {"tiny": 192, "small": 384, "base": 768}


def deit_config(name: str = "deit_base_distilled_patch16_224") -> DeiTConfig:
    """Config for one of the official VITS backbones (`feature_networks/constants.py`), e.g. the train.py default
    `deit_base_distilled_patch16_224`, `deit_tiny_distilled_patch16_224` or `vit_base_patch16_224`."""
    size = next((s for s in _WIDTHS if s in name), None)
    if size is None or "patch16_224" not in name:
        raise ValueError(f"unsupported ViT backbone {name!r}: expected a '*_{{tiny,small,base}}*_patch16_224' name")
    return config_for_width(_WIDTHS[size], distilled="deit" in name)


def config_for_width(embed_dim: int, *, distilled: bool = True, depth: int = 12, num_classes: int = 1000) -> DeiTConfig:
    if embed_dim not in _WIDTHS.values():
        raise ValueError(f"token width {embed_dim} is not an official _make_vit width {sorted(_WIDTHS.values())}")
    d = embed_dim
    return DeiTConfig(embed_dim=d, num_heads=d // 64, features=(d // 8, d // 4, d // 2, d), depth=depth,
                      distilled=distilled, num_classes=num_classes)


def resize_pos_embed(pos_embed: jax.Array, start_index: int, gh: int, gw: int) -> jax.Array:
    """`_resize_pos_embed`: the cls (+dist) token embeddings kept, the square grid part resized bilinearly
    (align_corners=False) to (gh, gw); identity at the trained grid."""
    g = math.isqrt(pos_embed.shape[1] - start_index)
    grid = pos_embed[:, start_index:].reshape(1, g, g, -1)
    grid = bilinear_resize(grid, (gh, gw), align_corners=False).reshape(1, gh * gw, -1)
    return jnp.concatenate([pos_embed[:, :start_index], grid], axis=1)


def _torch_uniform(fan_in: int):
    """torch's default Conv2d/ConvTranspose2d init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)), same for bias."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def _layer_norm(name: str) -> nn.LayerNorm:
    # Two-pass variance as torch: ViT tokens carry large-magnitude outlier channels, where E[x^2] - E[x]^2 in fp32
    # loses digits.
    return nn.LayerNorm(LN_EPS, use_fast_variance=False, name=name)


class Attention(nn.Module):
    dim: int
    num_heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, t, d = x.shape
        hd = d // self.num_heads
        qkv = nn.Dense(3 * d, precision=HIGHEST, name="qkv")(x).reshape(n, t, 3, self.num_heads, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (n, t, heads, hd)
        logits = jnp.einsum("nqhc,nkhc->nhqk", q * hd**-0.5, k, precision=HIGHEST)
        out = jnp.einsum("nhqk,nkhc->nqhc", jax.nn.softmax(logits, axis=-1), v, precision=HIGHEST)
        return nn.Dense(d, precision=HIGHEST, name="proj")(out.reshape(n, t, d))


class Block(nn.Module):
    dim: int
    num_heads: int
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + Attention(self.dim, self.num_heads, name="attn")(_layer_norm("norm1")(x))
        h = nn.Dense(self.dim * self.mlp_ratio, precision=HIGHEST, name="fc1")(_layer_norm("norm2")(x))
        h = nn.gelu(h, approximate=False)  # torch nn.GELU default is the exact erf form
        return x + nn.Dense(self.dim, precision=HIGHEST, name="fc2")(h)


class VisionTransformer(nn.Module):
    """timm VisionTransformer / VisionTransformerDistilled (eval mode: no dropout, no drop-path)."""

    cfg: DeiTConfig

    def setup(self) -> None:
        c = self.cfg
        init = nn.initializers.truncated_normal(0.02)
        self.patch_embed = nn.Conv(c.embed_dim, (PATCH, PATCH), strides=(PATCH, PATCH), padding="VALID",
                                   precision=HIGHEST)
        self.cls_token = self.param("cls_token", init, (1, 1, c.embed_dim))
        if c.distilled:
            self.dist_token = self.param("dist_token", init, (1, 1, c.embed_dim))
        self.pos_embed = self.param("pos_embed", init, (1, c.start_index + c.pos_grid**2, c.embed_dim))
        self.blocks = [Block(c.embed_dim, c.num_heads, c.mlp_ratio, name=f"blocks_{i}") for i in range(c.depth)]
        self.norm = _layer_norm("norm")
        self.head = nn.Dense(c.num_classes, precision=HIGHEST)
        if c.distilled:
            self.head_dist = nn.Dense(c.num_classes, precision=HIGHEST)

    def __call__(self, x: jax.Array) -> tuple[list[jax.Array], jax.Array]:
        """`forward_flex` on NHWC images -> (outputs of every block, final normed tokens), tokens (N, T, D)."""
        n = x.shape[0]
        x = self.patch_embed(x)
        gh, gw = x.shape[1], x.shape[2]  # = h // 16, w // 16
        x = x.reshape(n, gh * gw, -1)  # row-major patches, as torch's flatten(2).transpose(1, 2)
        tokens = [jnp.broadcast_to(self.cls_token, (n, 1, x.shape[-1]))]
        if self.cfg.distilled:
            tokens.append(jnp.broadcast_to(self.dist_token, (n, 1, x.shape[-1])))
        x = jnp.concatenate([*tokens, x], axis=1) + resize_pos_embed(self.pos_embed, self.cfg.start_index, gh, gw)
        outs = []
        for blk in self.blocks:
            x = blk(x)
            outs.append(x)
        x = self.norm(x)
        if self.is_initializing():  # create the head params too, so `init` gives the full variable tree
            self._heads(x)
        return outs, x

    def _heads(self, tokens: jax.Array) -> jax.Array:
        out = self.head(tokens[:, 0])
        if self.cfg.distilled:
            out = (out + self.head_dist(tokens[:, 1])) / 2
        return out

    def logits(self, x: jax.Array) -> jax.Array:
        """timm `model(x)` in eval mode: head on the cls token, averaged with head_dist on the dist token."""
        return self._heads(self(x)[1])


class ConvTransposeNoOverlap(nn.Module):
    """torch ConvTranspose2d with kernel == stride, padding 0: each input pixel writes one disjoint k x k block,
    out[k*i + a, k*j + b, o] = sum_c x[i, j, c] * W[c, o, a, b] + bias[o] (no kernel flip in this case).
    `kernel` is stored (k, k, in, out) = torch weight (in, out, k, k).transpose(2, 3, 0, 1)."""

    features: int
    k: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        init = _torch_uniform(self.features * self.k * self.k)  # torch's fan_in of a ConvT weight uses dim 1 (out)
        kernel = self.param("kernel", init, (self.k, self.k, c, self.features))
        bias = self.param("bias", init, (self.features,))
        y = jnp.einsum("nhwc,abco->nhawbo", x, kernel, precision=HIGHEST)
        return y.reshape(n, h * self.k, w * self.k, self.features) + bias


class Reassemble(nn.Module):
    """`pretrained.layer{1..4}[3:]` of `_make_vit_b16_backbone` on the unflattened token grids."""

    features: tuple[int, int, int, int]

    @nn.compact
    def __call__(self, grids: list[jax.Array]) -> list[jax.Array]:
        outs = []
        for i, (g, f) in enumerate(zip(grids, self.features, strict=True)):
            cin = g.shape[-1]
            y = nn.Conv(f, (1, 1), precision=HIGHEST, kernel_init=_torch_uniform(cin), bias_init=_torch_uniform(cin),
                        name=f"proj_{i}")(g)
            if i in (0, 1):
                y = ConvTransposeNoOverlap(f, 4 if i == 0 else 2, name=f"up_{i}")(y)
            elif i == 3:
                y = nn.Conv(f, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), precision=HIGHEST,
                            kernel_init=_torch_uniform(f * 9), bias_init=_torch_uniform(f * 9), name="down_3")(y)
            outs.append(y)
        return outs


class DeiTFeatures(nn.Module):
    """The frozen ViT feature network: `__call__(x)` gives the 4 taps (NHWC) from normalised NHWC images."""

    cfg: DeiTConfig

    def setup(self) -> None:
        self.vit = VisionTransformer(self.cfg)
        self.reassemble = Reassemble(self.cfg.features)

    def block_tokens(self, x: jax.Array) -> list[jax.Array]:
        """The 4 hooked block outputs (N, start_index + gh*gw, D), cls/dist tokens included."""
        outs, _ = self.vit(x)
        return [outs[i] for i in self.cfg.hooks]

    def classify(self, x: jax.Array) -> jax.Array:
        """Class logits (N, num_classes), timm `model(x)` in eval mode."""
        return self.vit.logits(x)

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        gh, gw = x.shape[1] // PATCH, x.shape[2] // PATCH
        grids = [t[:, self.cfg.start_index:].reshape(t.shape[0], gh, gw, -1) for t in self.block_tokens(x)]
        return self.reassemble(grids)


# ---- conversion from torch state_dicts -------------------------------------------------------------------

_MODEL_PREFIX = "pretrained.model."


def _linear(sd: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
    return {"kernel": sd[f"{key}.weight"].T, "bias": sd[f"{key}.bias"]}


def _norm(sd: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
    return {"scale": sd[f"{key}.weight"], "bias": sd[f"{key}.bias"]}


def config_from_state_dict(sd: dict[str, np.ndarray]) -> DeiTConfig:
    """Infer the config from a timm ViT/DeiT state_dict (keys without the `pretrained.model.` prefix)."""
    embed_dim = sd["cls_token"].shape[-1]
    depth = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    if depth <= max(DeiTConfig.hooks):
        raise ValueError(f"{depth} transformer blocks found; the official hooks need blocks {DeiTConfig.hooks}")
    cfg = config_for_width(embed_dim, distilled="dist_token" in sd, depth=depth, num_classes=sd["head.weight"].shape[0])
    grid = sd["pos_embed"].shape[1] - cfg.start_index
    if math.isqrt(grid) ** 2 != grid:
        raise ValueError(f"pos_embed {sd['pos_embed'].shape} is not {cfg.start_index} tokens + a square grid")
    return dataclasses.replace(cfg, pos_grid=math.isqrt(grid))


def _vit_params(sd: dict[str, np.ndarray], cfg: DeiTConfig) -> dict:
    p: dict = {"patch_embed": {"kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
                               "bias": sd["patch_embed.proj.bias"]},
               "cls_token": sd["cls_token"], "pos_embed": sd["pos_embed"],
               "norm": _norm(sd, "norm"), "head": _linear(sd, "head")}
    if cfg.distilled:
        p["dist_token"] = sd["dist_token"]
        p["head_dist"] = _linear(sd, "head_dist")
    for i in range(cfg.depth):
        b = f"blocks.{i}"
        p[f"blocks_{i}"] = {"norm1": _norm(sd, f"{b}.norm1"), "norm2": _norm(sd, f"{b}.norm2"),
                            "attn": {"qkv": _linear(sd, f"{b}.attn.qkv"), "proj": _linear(sd, f"{b}.attn.proj")},
                            "fc1": _linear(sd, f"{b}.mlp.fc1"), "fc2": _linear(sd, f"{b}.mlp.fc2")}
    return p


class _Tracked(dict):
    """A state_dict view that records which keys the conversion read, to refuse the ones it would ignore."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.used: set[str] = set()

    def __getitem__(self, key: str) -> np.ndarray:
        self.used.add(key)
        return super().__getitem__(key)


def _reassemble_params(sd: dict[str, np.ndarray]) -> dict:
    conv = lambda w, b: {"kernel": w.transpose(2, 3, 1, 0), "bias": b}  # noqa: E731  torch (out,in,kh,kw)
    p = {f"proj_{i}": conv(sd[f"pretrained.layer{i + 1}.3.weight"], sd[f"pretrained.layer{i + 1}.3.bias"])
         for i in range(4)}
    for i in (0, 1):  # ConvTranspose2d weight is (in, out, kh, kw)
        p[f"up_{i}"] = {"kernel": sd[f"pretrained.layer{i + 1}.4.weight"].transpose(2, 3, 0, 1),
                        "bias": sd[f"pretrained.layer{i + 1}.4.bias"]}
    p["down_3"] = conv(sd["pretrained.layer4.4.weight"], sd["pretrained.layer4.4.bias"])
    return p


def _check_shapes(got: dict, want: dict, path: str = "") -> None:
    for k, v in want.items():
        if k not in got:
            raise ValueError(f"missing parameter {path}{k}")
        if isinstance(v, dict):
            _check_shapes(got[k], v, f"{path}{k}/")
        elif tuple(got[k].shape) != tuple(v.shape):
            raise ValueError(f"parameter {path}{k} has shape {tuple(got[k].shape)}, expected {tuple(v.shape)}")


def deit_variables_from_state_dict(state_dict: dict[str, np.ndarray], *, layout: str = "timm",
                                   rng: jax.Array | int = 0) -> dict:
    """Convert torch weights to `DeiTFeatures` variables (`config_from_variables` gives the matching config).

    layout='timm': a plain timm ViT/DeiT state_dict (`cls_token`, `blocks.N.*`, ...). The reassembly convs are
    not part of it (the official code leaves them at torch's default init, never trained), so they get torch's
    default init (U(+-1/sqrt(fan_in)) for weight and bias) drawn from `rng` (a key or an int seed, default 0).
    layout='projector': an official `F_RandomProj` / `feature_networks.<bb>` state_dict: `pretrained.model.*`
    plus the reassembly convs `pretrained.layer{1..4}.{3,4}.*` (`scratch.*` is ignored here).
    Raises ValueError naming the missing or mis-shaped entry (callers add the file name).
    """
    if layout not in ("timm", "projector"):
        raise ValueError(f"unknown layout {layout!r}; expected 'timm' or 'projector'")
    sd = _Tracked({k: np.asarray(v, np.float32) for k, v in state_dict.items()})
    model_sd = sd
    if layout == "projector":
        model_sd = _Tracked({k[len(_MODEL_PREFIX):]: v for k, v in sd.items() if k.startswith(_MODEL_PREFIX)})
    try:
        cfg = config_from_state_dict(model_sd)
        vit = _vit_params(model_sd, cfg)
    except KeyError as e:
        prefix = _MODEL_PREFIX if layout == "projector" else ""
        raise ValueError(f"not a {layout}-layout ViT/DeiT state_dict: missing {prefix}{e.args[0]}") from None
    if layout == "projector":
        try:
            reassemble = _reassemble_params(sd)
        except KeyError as e:
            raise ValueError(f"projector state_dict lacks the reassembly conv {e.args[0]}") from None
        cfg = dataclasses.replace(cfg, features=tuple(reassemble[f"proj_{i}"]["bias"].shape[0] for i in range(4)))
    else:
        key = jax.random.PRNGKey(rng) if isinstance(rng, int) else rng
        reassemble = _init_reassemble(cfg, key)
    unused = set(model_sd) - model_sd.used
    if layout == "projector":  # `scratch.*` (CCM/CSM) belongs to the projector module, not to this one
        unused |= {k for k in sd if k.startswith("pretrained.") and not k.startswith(_MODEL_PREFIX)} - sd.used
    if unused:
        raise ValueError(f"{len(unused)} entries this port would ignore, e.g. {sorted(unused)[:4]}: "
                         f"not a ViT/DeiT it covers")
    params = {"vit": vit, "reassemble": reassemble}
    side = PATCH * cfg.pos_grid
    want = jax.eval_shape(DeiTFeatures(cfg).init, jax.random.PRNGKey(0), jnp.zeros((1, side, side, 3)))
    _check_shapes(params, want["params"])
    return {"params": jax.tree_util.tree_map(jnp.asarray, params)}


def config_from_variables(variables: dict) -> DeiTConfig:
    """The `DeiTConfig` that `variables` (from `deit_variables_from_state_dict` or `init`) were built for."""
    p = variables["params"]
    vit, re_ = p["vit"], p["reassemble"]
    d = vit["cls_token"].shape[-1]
    distilled = "dist_token" in vit
    grid = vit["pos_embed"].shape[1] - (2 if distilled else 1)
    features = tuple(re_[f"proj_{i}"]["bias"].shape[0] for i in range(4))
    return DeiTConfig(embed_dim=d, num_heads=d // 64, features=features,
                      depth=sum(k.startswith("blocks_") for k in vit), distilled=distilled,
                      num_classes=vit["head"]["bias"].shape[0], pos_grid=math.isqrt(grid))


def _init_reassemble(cfg: DeiTConfig, key: jax.Array) -> dict:
    """torch's default init of the reassembly convs, U(+-1/sqrt(fan_in)) for weight and bias, where a
    ConvTranspose2d's fan_in is out*kh*kw (torch reads its weight's dim 1). One draw for all leaves: compiling
    a separate threefry per parameter shape costs seconds on CPU."""
    grids = [jax.ShapeDtypeStruct((1, 1, 1, cfg.embed_dim), jnp.float32)] * 4  # params do not depend on grid size
    shapes = jax.eval_shape(Reassemble(cfg.features).init, key, grids)["params"]
    total = sum(math.prod(leaf.shape) for m in shapes.values() for leaf in m.values())
    u = np.asarray(jax.random.uniform(key, (total,), jnp.float32, -1.0, 1.0))
    out, start = {}, 0
    for name in sorted(shapes):
        kh, kw, cin, cout = shapes[name]["kernel"].shape
        bound = 1.0 / math.sqrt(kh * kw * (cout if name.startswith("up_") else cin))
        out[name] = {}
        for leaf in ("kernel", "bias"):
            shape = shapes[name][leaf].shape
            out[name][leaf] = u[start:start + math.prod(shape)].reshape(shape) * np.float32(bound)
            start += math.prod(shape)
    return out


# ---- feature-net checkpoint converter (radgan_jax.tools.convert_feature_nets.CONVERTERS) ------------------

VIT_BACKBONES = ("deit_tiny_distilled_patch16_224", "deit_small_distilled_patch16_224",
                 "deit_base_distilled_patch16_224", "vit_base_patch16_224")  # official VITS (constants.py)


def module_from_kwargs(kwargs: dict) -> DeiTFeatures:
    """`DeiTFeatures` from JSON-able kwargs (`dataclasses.asdict(cfg)`; lists come back as tuples)."""
    return DeiTFeatures(DeiTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}))


def converter_variables(sd: dict[str, np.ndarray], source: str, *, net: str, error: type[Exception] = ValueError,
                        rng: int = 0) -> tuple[dict, dict, str]:
    """`FeatureNetConverter.to_variables` for `net` -> (module kwargs, numpy variables, layout). The layout is
    recognised by where `cls_token` sits: `[...]pretrained.model.cls_token` is the official projector /
    discriminator layout (other keys such as `scratch.*` skipped), any other `[prefix]cls_token` a timm
    state_dict (e.g. `module.`-prefixed); timm sources get the reassembly convs drawn with seed `rng`.
    Problems raise `error` (the caller's ConversionError) naming `source`."""
    hits = [k for k in sd if k.endswith("cls_token")]
    if len(hits) != 1:
        raise error(f"{source}: not a ViT/DeiT state_dict: {len(hits)} '[...]cls_token' entries, expected 1 "
                    f"(first keys: {list(sd)[:5]})")
    prefix = hits[0][: -len("cls_token")]
    if prefix.endswith(_MODEL_PREFIX):
        layout, prefix = "projector", prefix[: -len(_MODEL_PREFIX)]
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix + "pretrained.")}
    else:
        layout = "timm"
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    where = f"{layout} layout" + (f", prefix {prefix!r}" if prefix else "")
    try:
        variables = deit_variables_from_state_dict(sub, layout=layout, rng=rng)
    except ValueError as e:
        raise error(f"{source} ({where}): {e}") from None
    cfg, want = config_from_variables(variables), deit_config(net)
    got_arch = (cfg.embed_dim, cfg.depth, cfg.distilled, cfg.features)
    if got_arch != (want.embed_dim, want.depth, want.distilled, want.features):
        raise error(f"{source} ({where}): holds a ViT with (width, depth, distilled, features) = {got_arch}, "
                    f"not {net} {(want.embed_dim, want.depth, want.distilled, want.features)}")
    return dataclasses.asdict(cfg), jax.device_get(variables), layout
