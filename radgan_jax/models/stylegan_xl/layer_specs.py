"""Per-layer specification of the StyleGAN3-T synthesis network, stem and superresolution heads.

This is the original's spec math as a first-class, testable object: `SynthesisNetwork.get_layer_specs`,
`SynthesisLayer.init_upfirdn` and `SuperresGenerator.compute_superres_filterparams` of StyleGAN-XL
(autonomousvision/stylegan-xl @ 4241ff9, `training/networks_stylegan3_resetting.py`). A spec is computed
once from a handful of hyper-parameters (or read back from an official network) and the Flax modules are
built from it, so the same numbers drive construction, conversion, checkpoints and the printed table.
The JSON keys of a layer are those of the golden `config.json` 'layers' list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One `SynthesisLayer`: channels, sizes, sampling rates, cutoffs, filters and padding."""

    name: str
    is_torgb: bool
    is_critically_sampled: bool
    use_fp16: bool  # the original's `use_fp16` (only honoured on CUDA there; here: mixed-precision option)
    in_channels: int
    out_channels: int
    in_size: tuple[int, int]  # [width, height], as the original stores it
    out_size: tuple[int, int]
    in_sampling_rate: float
    out_sampling_rate: float
    tmp_sampling_rate: float
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    conv_kernel: int
    filter_size: int
    lrelu_upsampling: int
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: tuple[int, int, int, int]  # [x0, x1, y0, y1] w.r.t. the upsampled image
    conv_clamp: float | None
    magnitude_ema_beta: float

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["use_fp16_on_cuda"] = d.pop("use_fp16")
        d["in_size"], d["out_size"], d["padding"] = list(self.in_size), list(self.out_size), list(self.padding)
        d["up_filter_shape"] = [self.up_taps] if self.up_taps > 1 else None
        d["down_filter_shape"] = (
            None if self.down_taps == 1 else [self.down_taps] * (2 if self.down_radial else 1))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        d = dict(d)
        if "use_fp16_on_cuda" in d:
            d["use_fp16"] = d.pop("use_fp16_on_cuda")
        missing = names - set(d)
        if missing:
            raise ValueError(f"layer spec {d.get('name', '?')!r} lacks keys {sorted(missing)}")
        kw = {k: d[k] for k in names}
        for k in ("in_size", "out_size", "padding"):
            kw[k] = tuple(int(v) for v in np.broadcast_to(np.asarray(d[k]), [4 if k == "padding" else 2]))
        for k in ("in_channels", "out_channels", "conv_kernel", "filter_size", "lrelu_upsampling",
                  "up_factor", "down_factor", "up_taps", "down_taps"):
            kw[k] = int(kw[k])
        for k in ("in_sampling_rate", "out_sampling_rate", "tmp_sampling_rate", "in_cutoff", "out_cutoff",
                  "in_half_width", "out_half_width", "magnitude_ema_beta"):
            kw[k] = float(kw[k])
        kw["conv_clamp"] = None if kw["conv_clamp"] is None else float(kw["conv_clamp"])
        return cls(**kw)


def make_layer_spec(
    idx_name: int,
    *,
    is_torgb: bool,
    is_critically_sampled: bool,
    use_fp16: bool,
    in_channels: int,
    out_channels: int,
    in_size: int,
    out_size: int,
    in_sampling_rate: float,
    out_sampling_rate: float,
    in_cutoff: float,
    out_cutoff: float,
    in_half_width: float,
    out_half_width: float,
    conv_kernel: int = 3,
    filter_size: int = 6,
    lrelu_upsampling: int = 2,
    use_radial_filters: bool = False,
    conv_clamp: float | None = 256,
    magnitude_ema_beta: float = 0.999,
) -> LayerSpec:
    """`SynthesisLayer.__init__` + `init_upfirdn`: derives filter rates, taps and padding."""
    tmp_sr = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
    up = int(np.rint(tmp_sr / in_sampling_rate))
    down = int(np.rint(tmp_sr / out_sampling_rate))
    if in_sampling_rate * up != tmp_sr or out_sampling_rate * down != tmp_sr:
        raise ValueError(f"layer {idx_name}: sampling rates {in_sampling_rate}->{out_sampling_rate} are not "
                         f"integer ratios of {tmp_sr}")
    kernel = 1 if is_torgb else conv_kernel
    up_taps = filter_size * up if up > 1 and not is_torgb else 1
    down_taps = filter_size * down if down > 1 and not is_torgb else 1
    # Padding so that the output lands on the requested grid (StyleGAN3 Appendix C.3, symmetric interp.).
    pad_total = (out_size - 1) * down + 1 - (in_size + kernel - 1) * up + up_taps + down_taps - 2
    pad_lo = (pad_total + up) // 2
    pad_hi = pad_total - pad_lo
    return LayerSpec(
        name=f"L{idx_name}_{out_size}_{out_channels}",
        is_torgb=bool(is_torgb), is_critically_sampled=bool(is_critically_sampled), use_fp16=bool(use_fp16),
        in_channels=int(in_channels), out_channels=int(out_channels),
        in_size=(int(in_size), int(in_size)), out_size=(int(out_size), int(out_size)),
        in_sampling_rate=float(in_sampling_rate), out_sampling_rate=float(out_sampling_rate),
        tmp_sampling_rate=float(tmp_sr),
        in_cutoff=float(in_cutoff), out_cutoff=float(out_cutoff),
        in_half_width=float(in_half_width), out_half_width=float(out_half_width),
        conv_kernel=int(kernel), filter_size=int(filter_size), lrelu_upsampling=int(lrelu_upsampling),
        up_factor=up, down_factor=down, up_taps=up_taps, down_taps=down_taps,
        down_radial=bool(use_radial_filters and not is_critically_sampled),
        padding=(int(pad_lo), int(pad_hi), int(pad_lo), int(pad_hi)),
        conv_clamp=None if conv_clamp is None else float(conv_clamp),
        magnitude_ema_beta=float(magnitude_ema_beta),
    )


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """`SynthesisInput`: Fourier features of `channels` channels on a `size`^2 grid."""

    channels: int
    size: int
    sampling_rate: float
    bandwidth: float


@dataclasses.dataclass(frozen=True)
class SynthesisSpec:
    """The whole synthesis network: input, layers (stem [+ heads]) and the hyper-parameters to grow it."""

    w_dim: int
    img_resolution: int
    img_channels: int
    input: InputSpec
    layers: tuple[LayerSpec, ...]
    output_scale: float = 0.25
    channel_base: float = 32768
    channel_max: int = 512
    num_critical: int = 2
    margin_size: int = 10
    last_stopband_rel: float = 2**0.3
    num_fp16_res: int = 4
    conv_kernel: int = 3
    use_radial_filters: bool = False
    # Growth history, oldest first: ((resolution, head_layers, up_factor), ...); the stem is (res, 0, 1).
    # Networks converted from official files may record only the last step.
    stages: tuple[tuple[int, int, int], ...] = ()

    @property
    def num_ws(self) -> int:
        return len(self.layers) + 1  # ws[0] drives the input, ws[i+1] layer i

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["input"] = dataclasses.asdict(self.input)
        d["layers"] = [layer.to_dict() for layer in self.layers]
        d["stages"] = [list(s) for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SynthesisSpec:
        kw = dict(d)
        kw["input"] = InputSpec(**{k: kw["input"][k] for k in ("channels", "size", "sampling_rate", "bandwidth")})
        kw["layers"] = tuple(LayerSpec.from_dict(layer) for layer in kw["layers"])
        kw["stages"] = tuple(tuple(int(v) for v in s) for s in kw.get("stages", ()))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(kw) - known
        if unknown:
            raise ValueError(f"unknown synthesis spec keys {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**kw)


def _progression(first: float, last: float, exponents: np.ndarray) -> np.ndarray:
    return first * (last / first) ** exponents


def stem_synthesis_spec(
    w_dim: int,
    img_resolution: int,
    img_channels: int,
    channel_base: float = 32768,
    channel_max: int = 512,
    num_layers: int = 14,
    num_critical: int = 2,
    first_cutoff: float = 2,
    first_stopband: float = 2**2.1,
    last_stopband_rel: float = 2**0.3,
    margin_size: int = 10,
    output_scale: float = 0.25,
    num_fp16_res: int = 4,
    conv_kernel: int = 3,
    use_radial_filters: bool = False,
    conv_clamp: float | None = 256,
    filter_size: int = 6,
    lrelu_upsampling: int = 2,
    magnitude_ema_beta: float = 0.999,
) -> SynthesisSpec:
    """`SynthesisNetwork.__init__` / `get_layer_specs` of the stem (defaults = the original's)."""
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = _progression(first_cutoff, last_cutoff, exponents)
    stopbands = _progression(first_stopband, last_stopband, exponents)
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    layers = []
    for idx in range(num_layers + 1):
        prev = max(idx - 1, 0)
        layers.append(make_layer_spec(
            idx,
            is_torgb=idx == num_layers,
            is_critically_sampled=idx >= num_layers - num_critical,
            use_fp16=bool(sampling_rates[idx] * 2**num_fp16_res > img_resolution),
            in_channels=int(channels[prev]), out_channels=int(channels[idx]),
            in_size=int(sizes[prev]), out_size=int(sizes[idx]),
            in_sampling_rate=int(sampling_rates[prev]), out_sampling_rate=int(sampling_rates[idx]),
            in_cutoff=cutoffs[prev], out_cutoff=cutoffs[idx],
            in_half_width=half_widths[prev], out_half_width=half_widths[idx],
            conv_kernel=conv_kernel, filter_size=filter_size, lrelu_upsampling=lrelu_upsampling,
            use_radial_filters=use_radial_filters, conv_clamp=conv_clamp,
            magnitude_ema_beta=magnitude_ema_beta))
    return SynthesisSpec(
        w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
        input=InputSpec(channels=int(channels[0]), size=int(sizes[0]),
                        sampling_rate=float(sampling_rates[0]), bandwidth=float(cutoffs[0])),
        layers=tuple(layers), output_scale=output_scale, channel_base=channel_base, channel_max=channel_max,
        num_critical=num_critical, margin_size=margin_size, last_stopband_rel=last_stopband_rel,
        num_fp16_res=num_fp16_res, conv_kernel=conv_kernel, use_radial_filters=use_radial_filters,
        stages=((img_resolution, 0, 1),))


def superres_synthesis_spec(prev: SynthesisSpec, head_layers: int, up_factor: int = 2) -> SynthesisSpec:
    """`SuperresGenerator.__init__`: drop the critically sampled layers of `prev`, append a new head.

    Head layer j is named `L{j + stem_len}_...` where stem_len = (#surviving layers) + 1, so one index is
    skipped (e.g. the 32 px model has L0..L7 then L9..L16), exactly as the original names them.
    """
    if up_factor not in (2, 4, 8, 16):
        raise ValueError(f"up_factor must be one of 2, 4, 8, 16 (as the original); got {up_factor}")
    if head_layers < 3:
        raise ValueError(f"head_layers must be >= 3 (2 critically sampled layers + ToRGB); got {head_layers}")
    kept = tuple(layer for layer in prev.layers if not layer.is_critically_sampled)
    stem_len = len(kept) + 1
    res = prev.img_resolution * up_factor
    last = kept[-1]
    first_cutoff = last.out_cutoff
    first_stopband = last.out_half_width + first_cutoff
    last_cutoff = res / 2
    last_stopband = last_cutoff * prev.last_stopband_rel
    # The original's compute_superres_filterparams uses its default num_critical=2 here.
    exponents = np.minimum(np.arange(head_layers + 1) / (head_layers - 2), 1)
    cutoffs = _progression(first_cutoff, last_cutoff, exponents)
    stopbands = _progression(first_stopband, last_stopband, exponents)
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    sampling_rates[0] = last.out_sampling_rate
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + prev.margin_size * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum((prev.channel_base / 2) / cutoffs, prev.channel_max))
    channels[0] = last.out_channels
    channels[-1] = prev.img_channels
    head = []
    for idx in range(head_layers + 1):
        p = max(idx - 1, 0)
        # Head layers keep the SynthesisLayer defaults for filter_size, lrelu_upsampling, conv_clamp and
        # magnitude_ema_beta; only conv_kernel and use_radial_filters come from the stem.
        head.append(make_layer_spec(
            idx + stem_len,
            is_torgb=idx == head_layers,
            is_critically_sampled=idx >= head_layers - prev.num_critical,
            use_fp16=bool(sampling_rates[idx] * 2**prev.num_fp16_res > res),
            in_channels=int(channels[p]), out_channels=int(channels[idx]),
            in_size=int(sizes[p]), out_size=int(sizes[idx]),
            in_sampling_rate=int(sampling_rates[p]), out_sampling_rate=int(sampling_rates[idx]),
            in_cutoff=cutoffs[p], out_cutoff=cutoffs[idx],
            in_half_width=half_widths[p], out_half_width=half_widths[idx],
            conv_kernel=prev.conv_kernel, use_radial_filters=prev.use_radial_filters))
    return dataclasses.replace(
        prev, img_resolution=res, layers=kept + tuple(head),
        stages=prev.stages + ((res, head_layers, up_factor),))


def head_layer_names(prev: SynthesisSpec, new: SynthesisSpec) -> tuple[str, ...]:
    """Names of the layers `new` adds on top of `prev` (the trainable ones of a superres stage)."""
    old = set(prev.layer_names)
    return tuple(n for n in new.layer_names if n not in old)


def format_table(spec: SynthesisSpec) -> str:
    """Human-readable per-layer table, like the original's `print_module_summary` of the spec."""
    cols = ("name", "ch_in", "ch_out", "size", "sr_in", "sr_out", "cutoff", "half_w", "up", "down",
            "taps", "padding", "crit", "torgb")
    rows = [cols, ("input", "-", str(spec.input.channels), str(spec.input.size), "-",
                   f"{spec.input.sampling_rate:g}", f"{spec.input.bandwidth:.3g}", "-", "-", "-", "-", "-",
                   "-", "-")]
    for s in spec.layers:
        rows.append((s.name, str(s.in_channels), str(s.out_channels), f"{s.in_size[0]}->{s.out_size[0]}",
                     f"{s.in_sampling_rate:g}", f"{s.out_sampling_rate:g}", f"{s.out_cutoff:.3g}",
                     f"{s.out_half_width:.3g}", str(s.up_factor), str(s.down_factor),
                     f"{s.up_taps}/{s.down_taps}", ",".join(map(str, s.padding)),
                     "y" if s.is_critically_sampled else "", "y" if s.is_torgb else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def layer_specs_equal(a: Sequence[LayerSpec], b: Sequence[LayerSpec], rtol: float = 1e-12) -> list[str]:
    """Differences between two layer lists (empty list = equal up to float rounding)."""
    diffs = []
    if len(a) != len(b):
        return [f"{len(a)} layers vs {len(b)}"]
    for la, lb in zip(a, b, strict=True):
        for f in dataclasses.fields(LayerSpec):
            va, vb = getattr(la, f.name), getattr(lb, f.name)
            if isinstance(va, float) and isinstance(vb, float):
                if not np.isclose(va, vb, rtol=rtol, atol=0):
                    diffs.append(f"{la.name}.{f.name}: {va} != {vb}")
            elif va != vb:
                diffs.append(f"{la.name}.{f.name}: {va} != {vb}")
    return diffs
