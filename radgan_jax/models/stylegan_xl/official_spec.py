"""Build a `GeneratorSpec` from what an official StyleGAN-XL network says about itself.

Two sources share one description (an "arch" dict):
- the `config.json` beside an official `state_dict` saved as `.npz` (the layout of the golden folders:
  `effective`, `G_kwargs_passed` / `SR_kwargs_passed`, `common_kwargs` and the full `layers` list);
- the attributes of the `G_ema` object in a network pickle (read by `tools/safe_unpickle.py`).
The per-layer list, when present, is authoritative (it is what the official object was built with); for a
stem we also recompute it from the kwargs and refuse a mismatch, which catches a config from other code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from radgan_jax.models.stylegan_xl.generator import GeneratorSpec, MappingSpec
from radgan_jax.models.stylegan_xl.layer_specs import (
    InputSpec,
    LayerSpec,
    SynthesisSpec,
    layer_specs_equal,
    stem_synthesis_spec,
)

_HYPER_DEFAULTS = dict(output_scale=0.25, channel_base=32768, channel_max=512, num_critical=2, margin_size=10,
                       last_stopband_rel=2**0.3, num_fp16_res=4, conv_kernel=3, use_radial_filters=False)
_STEM_KWARGS = ("channel_base", "channel_max", "num_layers", "num_critical", "first_cutoff", "first_stopband",
                "last_stopband_rel", "margin_size", "output_scale", "num_fp16_res", "conv_kernel",
                "use_radial_filters", "conv_clamp", "filter_size", "lrelu_upsampling", "magnitude_ema_beta")


def spec_from_arch(arch: Mapping[str, Any], source: str = "network") -> GeneratorSpec:
    """arch: {z_dim, c_dim, w_dim, img_resolution, img_channels, mapping{...}, synthesis{...hyper},
    input{channels,size,sampling_rate,bandwidth} (optional), layers[...], stages (optional)}."""
    try:
        layers = tuple(LayerSpec.from_dict(layer) for layer in arch["layers"])
        if not layers:
            raise ValueError("empty 'layers' list")
        first = layers[0]
        inp = arch.get("input") or {}
        input_spec = InputSpec(
            channels=int(inp.get("channels", first.in_channels)),
            size=int(inp.get("size", first.in_size[0])),
            sampling_rate=float(inp.get("sampling_rate", first.in_sampling_rate)),
            bandwidth=float(inp.get("bandwidth", first.in_cutoff)))
        syn_in = arch.get("synthesis", {})
        hyper = {k: syn_in.get(k, v) for k, v in _HYPER_DEFAULTS.items()}
        hyper = {k: (type(v)(hyper[k]) if not isinstance(v, bool) else bool(hyper[k]))
                 for k, v in _HYPER_DEFAULTS.items()}
        res = int(arch["img_resolution"])
        stages = arch.get("stages") or ()  # growth history; informational only
        syn = SynthesisSpec(w_dim=int(arch["w_dim"]), img_resolution=res, img_channels=int(arch["img_channels"]),
                            input=input_spec, layers=layers, stages=tuple(tuple(s) for s in stages), **hyper)
        m = arch.get("mapping", {})
        mapping = MappingSpec(num_layers=int(m.get("num_layers", 2)),
                              lr_multiplier=float(m.get("lr_multiplier", 0.01)),
                              w_avg_beta=float(m.get("w_avg_beta", 0.998)),
                              embed_num=int(m.get("embed_num", 1000)), embed_dim=int(m.get("embed_dim", 320)))
        spec = GeneratorSpec(z_dim=int(arch["z_dim"]), c_dim=int(arch["c_dim"]), synthesis=syn, mapping=mapping)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: cannot build the generator spec: {type(e).__name__}: {e}") from None
    last = spec.synthesis.layers[-1]
    if not last.is_torgb or last.out_size[0] != res or last.out_channels != spec.img_channels:
        raise ValueError(f"{source}: last layer {last.name} is not a {res}px ToRGB with {spec.img_channels} "
                         f"channels")
    return spec


def arch_from_official_config(config: Mapping[str, Any], state_dict: Mapping[str, np.ndarray] | None = None,
                              source: str = "config.json") -> dict[str, Any]:
    """The golden/official `config.json` (+ the state_dict's shapes as a fallback) -> arch dict."""
    eff = dict(config.get("effective", {}))
    common = dict(config.get("common_kwargs", {}))
    gk = dict(config.get("G_kwargs_passed", {}))
    sd = state_dict or {}

    def pick(key, *fallbacks):
        for src in (eff, common, gk):
            if key in src:
                return src[key]
        for fb in fallbacks:
            if fb is not None:
                return fb
        raise ValueError(f"{source}: cannot determine {key!r} (not in effective/common_kwargs/G_kwargs_passed)")

    w_avg = sd.get("mapping.w_avg")
    fc0 = sd.get("mapping.fc0.weight")
    embed = sd.get("mapping.embed.weight")
    c_dim = int(pick("c_dim", w_avg.shape[0] if w_avg is not None and w_avg.ndim == 2 else None))
    z_dim = int(pick("z_dim", (fc0.shape[1] // (2 if c_dim else 1)) if fc0 is not None else None))
    w_dim = int(pick("w_dim", fc0.shape[0] if fc0 is not None else None))
    mk = dict(gk.get("mapping_kwargs", {}))
    mapping = {"num_layers": int(eff.get("mapping_num_layers", mk.get("num_layers", 2))),
               "lr_multiplier": float(eff.get("mapping_lr_multiplier", 0.01)),
               "w_avg_beta": float(eff.get("w_avg_beta", 0.998)),
               "embed_num": int(eff.get("embed_num", embed.shape[0] if embed is not None else 1000)),
               "embed_dim": int(eff.get("embed_dim", embed.shape[1] if embed is not None else 320))}
    synthesis = {k: eff[k] for k in _HYPER_DEFAULTS if k in eff}
    for k in _HYPER_DEFAULTS:
        if k not in synthesis and k in gk:
            synthesis[k] = gk[k]
    arch: dict[str, Any] = {"z_dim": z_dim, "c_dim": c_dim, "w_dim": w_dim,
                            "img_resolution": int(pick("img_resolution")),
                            "img_channels": int(pick("img_channels")),
                            "mapping": mapping, "synthesis": synthesis}
    if "input_channels" in eff:
        size = eff.get("input_size", [0])
        arch["input"] = {"channels": eff["input_channels"], "size": int(np.atleast_1d(size)[0]),
                         "sampling_rate": eff["input_sampling_rate"], "bandwidth": eff["input_bandwidth"]}
    stem_kwargs = {k: gk[k] for k in _STEM_KWARGS if k in gk}
    is_stem = "SR_kwargs_passed" not in config and "head_layers" not in eff
    computed = None
    if is_stem and gk:
        computed = stem_synthesis_spec(w_dim=w_dim, img_resolution=arch["img_resolution"],
                                       img_channels=arch["img_channels"], **stem_kwargs)
    if "layers" in config:
        arch["layers"] = list(config["layers"])
        if computed is not None:
            diffs = layer_specs_equal(tuple(LayerSpec.from_dict(x) for x in arch["layers"]), computed.layers,
                                      rtol=1e-9)
            if diffs:
                raise ValueError(f"{source}: the 'layers' list disagrees with the spec computed from "
                                 f"G_kwargs_passed: {diffs[:5]}")
    elif computed is not None:
        arch["layers"] = [layer.to_dict() for layer in computed.layers]
        arch["input"] = {"channels": computed.input.channels, "size": computed.input.size,
                         "sampling_rate": computed.input.sampling_rate, "bandwidth": computed.input.bandwidth}
    else:
        raise ValueError(f"{source}: a superres generator's config needs the full 'layers' list (the head "
                         f"layout depends on every earlier stage)")
    if is_stem:
        arch["stages"] = [[arch["img_resolution"], 0, 1]]
    elif "head_layers" in eff:  # the last growth step is known; earlier ones are not recorded
        arch["stages"] = [[arch["img_resolution"], int(eff["head_layers"]), int(eff.get("up_factor", 2))]]
    return arch
