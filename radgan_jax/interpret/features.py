"""Generator features for the BigDatasetGAN interpreter: synthesis-layer outputs, cropped and grouped.

BigDatasetGAN (models.py `BigdatasetGANModel._prepare_features`) reads every block output of BigGAN-512 and
groups them by resolution: 8/16/32 px -> "low" at 32 px, 64/128 px -> "mid" at 128 px, 256/512 px -> "high" at
512 px, i.e. boundaries at res/16 and res/4, each group bilinearly resized to its size and concatenated. Here
the same rule is applied to the sampling rates of StyleGAN-XL's synthesis layers, scaled to the generator's
resolution: a layer goes to "low" if its rate <= res/16, to "mid" if <= res/4, else to "high"; the group sizes
are res/16, res/4 and res. Small generators have empty groups, which are left out (a 16 px stem, or the 32 px
demo, has only "high": all its layers run at 16 or 32 px). "high" is never empty (the last layers run at res).

Which layers: every `SynthesisLayer` except ToRGB (its output is the image itself, a 3-channel linear map of the
previous layer; BigDatasetGAN also reads only the blocks, not the output layer). The Fourier input is left out
by default (`include_input`): like BigGAN's initial linear output, which BigDatasetGAN skips, it holds no
image content -- only sinusoids of a w-dependent rotation/translation that the first layer mixes anyway.

Crop: a layer of sampling rate `sr` and size `size` samples the image's extent [-0.5, 0.5]^2 on its central
sr x sr pixels (StyleGAN3's `margin_size`, 10 px at the layer's own rate); `(size - sr) / 2` pixels are cut from
every side, so each cropped feature covers exactly the image, and half-pixel-centred bilinear resizing
(torch `align_corners=False` = `jax.image.resize`) keeps it aligned. The last layers have size == sr == res.

Everything here is pure and batch-parallel (jit it, shard the batch); the generator is frozen (stop_gradient).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from radgan_jax.models.stylegan_xl.generator import Generator, GeneratorSpec

GROUP_NAMES = ("low", "mid", "high")
# BigDatasetGAN models.py BigdatasetGANModel: low_feature_size 32, mid 128, high 512 for a 512 px BigGAN.
GROUP_DIVISORS = {"low": 16, "mid": 4, "high": 1}


@dataclasses.dataclass(frozen=True)
class FeatureLayer:
    """One synthesis layer read as a feature: its output size (with margin), sampling rate and crop."""

    name: str
    channels: int
    size: int
    sampling_rate: int

    @property
    def margin(self) -> int:
        """Pixels cut from each side so the feature covers exactly the image."""
        return (self.size - self.sampling_rate) // 2


@dataclasses.dataclass(frozen=True)
class FeatureGroup:
    """Layers of similar sampling rate, resized to `resolution` and concatenated to `channels` channels."""

    name: str
    layers: tuple[FeatureLayer, ...]
    resolution: int

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    @property
    def channels(self) -> int:
        return sum(layer.channels for layer in self.layers)


def _feature_layer(name: str, channels: int, size: int, sampling_rate: float) -> FeatureLayer:
    sr = int(round(sampling_rate))
    if sr != sampling_rate or size < sr or (size - sr) % 2:
        raise ValueError(f"layer {name}: size {size} and sampling rate {sampling_rate} do not leave an equal "
                         f"integer margin on both sides; cannot crop it to the image")
    return FeatureLayer(name=name, channels=int(channels), size=int(size), sampling_rate=sr)


def feature_groups(spec: GeneratorSpec, include_input: bool = False) -> list[FeatureGroup]:
    """The low / mid / high groups of `spec`'s synthesis layers (empty groups left out), coarse to fine."""
    syn = spec.synthesis
    res = syn.img_resolution
    layers = []
    if include_input:
        layers.append(_feature_layer("input", syn.input.channels, syn.input.size, syn.input.sampling_rate))
    for ls in syn.layers:
        if ls.out_size[0] != ls.out_size[1]:
            raise ValueError(f"layer {ls.name}: non-square output {ls.out_size}")
        if not ls.is_torgb:
            layers.append(_feature_layer(ls.name, ls.out_channels, ls.out_size[0], ls.out_sampling_rate))
    groups = []
    lower = 0
    for name in GROUP_NAMES:
        group_res = max(res // GROUP_DIVISORS[name], 1)
        members = tuple(f for f in layers if lower < f.sampling_rate <= group_res)
        lower = group_res
        if members:
            groups.append(FeatureGroup(name=name, layers=members, resolution=group_res))
    if sum(len(g.layers) for g in groups) != len(layers):
        missing = [f.name for f in layers if f.sampling_rate > res]
        raise ValueError(f"layers {missing} run above the image resolution {res}")
    return groups


def format_groups(groups: Sequence[FeatureGroup]) -> str:
    """Printable table: one row per layer (group, resolution, layer, channels, size, sampling rate, crop)."""
    rows = [("group", "res", "layer", "ch", "size", "sr", "crop")]
    for g in groups:
        for i, f in enumerate(g.layers):
            rows.append((g.name if i == 0 else "", str(g.resolution) if i == 0 else "", f.name, str(f.channels),
                         str(f.size), str(f.sampling_rate), str(f.margin)))
        rows.append(("", "", f"= {g.name}", str(g.channels), "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def crop_layer(x: jax.Array, layer: FeatureLayer) -> jax.Array:
    """[N, size, size, C] layer output -> [N, sr, sr, C], the part covering the image."""
    if x.ndim != 4 or x.shape[1:3] != (layer.size, layer.size) or x.shape[3] != layer.channels:
        raise ValueError(f"feature {layer.name}: expected [N, {layer.size}, {layer.size}, {layer.channels}], "
                         f"got {x.shape}")
    m = layer.margin
    return x[:, m:layer.size - m, m:layer.size - m, :]


def resize_bilinear(x: jax.Array, size: int) -> jax.Array:
    """NHWC bilinear resize to size x size, half-pixel centres (torch `F.interpolate(align_corners=False)`)."""
    if x.shape[1:3] == (size, size):
        return x
    return jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), method="bilinear", antialias=False)


def group_features(raw: Mapping[str, jax.Array], groups: Sequence[FeatureGroup],
                   dtype: jnp.dtype = jnp.float32, layerwise: bool = False) -> dict[str, jax.Array | tuple]:
    """Layer outputs by name -> {group: [N, res_g, res_g, C_g]} (crop, resize, concat in layer order).

    `layerwise=True` returns {group: (cropped layer outputs at their own resolution, in layer order)} instead:
    the interpreter then applies each layer's slice of its 1x1 group conv before resizing, which is the same
    linear map (bilinear resize and a 1x1 conv commute) without ever building the concatenation at the group's
    resolution -- 3.1 GB per sample for the 'high' group of a 512 px generator in float32, vs ~0.2 GB.
    """
    out = {}
    for g in groups:
        missing = [n for n in g.layer_names if n not in raw]
        if missing:
            raise KeyError(f"feature group {g.name!r}: layer outputs {missing} missing; have {sorted(raw)}")
        cropped = [crop_layer(raw[f.name], f).astype(dtype) for f in g.layers]
        if layerwise:  # the largest part sets the group's size in the interpreter: make it the group's
            big = max(range(len(cropped)), key=lambda i: cropped[i].shape[1])
            cropped[big] = resize_bilinear(cropped[big], g.resolution)
            out[g.name] = tuple(cropped)
        else:
            out[g.name] = jnp.concatenate([resize_bilinear(x, g.resolution) for x in cropped], axis=-1)
    return out


def synthesize_with_features(gen: Generator, variables: Mapping, ws: jax.Array,
                             groups: Sequence[FeatureGroup] | None = None,
                             dtype: jnp.dtype = jnp.float32, layerwise: bool = False
                             ) -> tuple[jax.Array, dict[str, jax.Array | tuple]]:
    """ws [N, num_ws, w_dim] -> (images [N, res, res, ch] float32 ~[-1, 1], grouped features), one pass.
    `layerwise`: see `group_features` (the memory-lean form for large generators)."""
    groups = feature_groups(gen.spec) if groups is None else groups
    img, raw = gen.apply(variables, ws, return_features=True, method=Generator.synthesize)
    img, raw = jax.lax.stop_gradient((img, raw))
    return img, group_features(raw, groups, dtype, layerwise)


def collect_features(gen: Generator, variables: Mapping, ws: jax.Array,
                     groups: Sequence[FeatureGroup] | None = None,
                     dtype: jnp.dtype = jnp.float32, layerwise: bool = False) -> dict[str, jax.Array | tuple]:
    """ws [N, num_ws, w_dim] -> {group name: [N, res_g, res_g, C_g]} (see `feature_groups`, `group_features`)."""
    return synthesize_with_features(gen, variables, ws, groups, dtype, layerwise)[1]


def class_embedding(gen: Generator, variables: Mapping, c: jax.Array) -> jax.Array:
    """The class vector the generator conditions on: normalised projected embedding [N, z_dim] of class `c`
    (one-hot [N, c_dim] or indices [N]). An unconditional generator gives [N, 0]."""
    c = jnp.asarray(c)
    if gen.spec.c_dim == 0:
        return jnp.zeros((c.shape[0], 0), jnp.float32)
    if c.ndim == 1:
        c = jax.nn.one_hot(c, gen.spec.c_dim, dtype=jnp.float32)
    if c.ndim != 2 or c.shape[1] != gen.spec.c_dim:
        raise ValueError(f"c must be one-hot [N, {gen.spec.c_dim}] or class indices [N], got {c.shape}")
    y = gen.apply(variables, c, method=lambda m, c: m.mapping.embed_class(c))
    return jax.lax.stop_gradient(y.astype(jnp.float32))
