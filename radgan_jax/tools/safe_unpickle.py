"""Read official StyleGAN-XL network pickles without torch and without running any code from the pickle.

The official loader (``legacy.load_network_pkl``) uses the stock unpickler, which imports and calls whatever
the file names, and EXECs the module source that ``torch_utils.persistence`` stores with every network object.
Here (see ``restricted_unpickler`` for the whitelist):

* :func:`load_pickle` -> the pickle's data with torch tensors as ``numpy.ndarray``, network objects as inert
  :class:`PersistentRecord` / :class:`ObjectRecord`; anything else raises :class:`UnsafePickleError` before it
  could run (``strict=False``: kept as inert placeholders, e.g. for the dill-pickled hook functions that an
  official training snapshot's discriminator holds);
* :func:`module_state_dict`, :func:`module_attributes`, :func:`submodule` read module records like
  ``torch.nn.Module`` would report them;
* :func:`extract_generator` -> (official ``G_ema.state_dict()``, JSON-able ``arch``) for
  ``radgan_jax.models.stylegan_xl.official_spec.spec_from_arch``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from radgan_jax.tools.restricted_unpickler import (
    RECORD_NAMESPACES,
    GlobalRef,
    ObjectRecord,
    PersistentRecord,
    PickleFormatError,
    UnsafePickleError,
    load_restricted,
)

__all__ = ["RECORD_NAMESPACES", "GlobalRef", "ObjectRecord", "PersistentRecord", "PickleFormatError",
           "UnsafePickleError", "extract_generator", "load_pickle", "load_pickle_bytes", "module_attributes",
           "module_state_dict", "submodule", "unresolved_globals"]


def load_pickle(path: str | os.PathLike, *, strict: bool = True) -> Any:
    """Unpickle ``path`` without importing or running anything from it: tensors become numpy arrays, network
    objects inert records. Raises :class:`UnsafePickleError` for content outside the whitelist (before it
    could run) and :class:`PickleFormatError` (a ``ValueError``) for data that is not a complete pickle; both
    name the file. ``strict=False`` keeps unknown globals as inert placeholders (with a warning) instead."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        return load_restricted(f, path, strict)


def load_pickle_bytes(data: bytes, *, source: str = "<bytes>", strict: bool = True) -> Any:
    """:func:`load_pickle` for in-memory pickle bytes; ``source`` names them in error messages."""
    return load_restricted(io.BytesIO(data), source, strict)


# ---- module records ---------------------------------------------------------------------------------------

def _describe(obj: Any) -> str:
    if isinstance(obj, PersistentRecord):
        return f"persistent {obj.class_name}"
    if isinstance(obj, ObjectRecord):
        return obj.ref.qualname
    return type(obj).__name__


def _module_state(obj: Any, where: str) -> dict:
    state = getattr(obj, "state", None)
    if not (isinstance(obj, PersistentRecord | ObjectRecord) and isinstance(state, dict)
            and all(isinstance(state.get(k), dict) for k in ("_parameters", "_buffers", "_modules"))):
        raise TypeError(f"{where or 'object'} is not a torch module record (it is {_describe(obj)})")
    return state


def module_state_dict(obj: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Like ``torch.nn.Module.state_dict()``: own parameters, then persistent non-None buffers, then every
    submodule recursively; dotted names in registration order. The arrays are the loaded ones, not copies."""
    out: dict[str, np.ndarray] = {}

    def walk(rec: Any, pre: str) -> None:
        state = _module_state(rec, pre.rstrip("."))
        skip = state.get("_non_persistent_buffers_set") or ()
        for kind in ("_parameters", "_buffers"):
            for name, value in state[kind].items():
                if value is None or (kind == "_buffers" and name in skip):
                    continue
                if not isinstance(value, np.ndarray):
                    raise TypeError(f"{pre}{name} is a {_describe(value)}, not a tensor")
                out[pre + name] = value
        for name, sub in state["_modules"].items():
            if sub is not None:
                walk(sub, f"{pre}{name}.")

    walk(obj, prefix)
    return out


class _NotPlain(Exception):
    pass


def _plain(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        return {k: _plain(x) for k, x in v.items()}
    raise _NotPlain


def module_attributes(obj: Any) -> dict[str, Any]:
    """The plain attributes of a module record: None/bool/int/float/str, lists (also from tuples) and
    str-keyed dicts of those, numpy scalars / arrays converted to Python values / lists. Torch internals
    (names starting with ``_``, ``training``), tensor-valued attributes and non-data objects are left out."""
    out = {}
    for key, value in _module_state(obj, _describe(obj)).items():
        if key.startswith("_") or key == "training" or key in obj.tensor_attrs:
            continue
        try:
            out[key] = _plain(value)
        except _NotPlain:
            pass
    return out


def submodule(obj: Any, dotted_name: str) -> Any:
    """The submodule record at ``dotted_name`` (``''`` -> ``obj``), e.g. ``'synthesis.L0_36_128.affine'``."""
    cur, path = obj, []
    for part in filter(None, dotted_name.split(".")):
        mods = _module_state(cur, ".".join(path))["_modules"]
        if mods.get(part) is None:
            raise KeyError(f"no submodule {part!r} in {'.'.join(path) or 'the root module'} "
                           f"({_describe(cur)}); it has {[k for k, v in mods.items() if v is not None]}")
        cur = mods[part]
        path.append(part)
    return cur


# ---- generator extraction ---------------------------------------------------------------------------------

def unresolved_globals(obj: Any) -> list[str]:
    """Qualified names of the strict=False placeholders anywhere inside ``obj``."""
    found, seen, todo = [], set(), [obj]
    while todo:
        x = todo.pop()
        if id(x) in seen or isinstance(x, np.ndarray | str | bytes | int | float | type(None)):
            continue
        seen.add(id(x))
        if isinstance(x, GlobalRef | ObjectRecord):
            ref = x if isinstance(x, GlobalRef) else x.ref
            if not ref.allowed:
                found.append(ref.qualname)
        if isinstance(x, ObjectRecord):
            todo += [x.state, x.args, x.kwargs, x.listitems, x.dictitems, x.slotstate]
        elif isinstance(x, PersistentRecord):
            todo.append(x.state)
        elif isinstance(x, dict):
            todo += [*x.keys(), *x.values()]
        elif isinstance(x, list | tuple | set | frozenset):
            todo += list(x)
    return sorted(set(found))


def _jsonable(v: Any) -> Any:
    if isinstance(v, GlobalRef):
        return v.qualname
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [_jsonable(x) for x in v]
    try:
        return _plain(v)
    except _NotPlain:
        return repr(v)


def _num(v: Any) -> int | float:
    return v if isinstance(v, int) and not isinstance(v, bool) else float(v)


def _int(v: Any) -> int:
    if isinstance(v, float) and not v.is_integer():
        raise ValueError(f"expected an integer, got {v!r}")
    return int(v)


def _size(v: Any) -> list[int]:
    return [_int(x) for x in (v if isinstance(v, list) else [v, v])]


def _getter(attrs: dict, where: str) -> Any:
    def get(key: str) -> Any:
        if key not in attrs:
            raise ValueError(f"{where}: missing attribute {key!r} (has {sorted(attrs)}); not a StyleGAN-XL "
                             f"(training.networks_stylegan3_resetting) generator?")
        return attrs[key]
    return get


def _layer_arch(name: str, rec: Any) -> dict[str, Any]:
    """One entry of the golden config.json 'layers' list (same keys, plain JSON types)."""
    g = _getter(module_attributes(rec), f"synthesis.{name}")
    bufs = rec.state["_buffers"]
    shape = lambda k: None if bufs.get(k) is None else list(bufs[k].shape)  # noqa: E731
    clamp = g("conv_clamp")
    floats = ("in_sampling_rate", "out_sampling_rate", "tmp_sampling_rate", "in_cutoff", "out_cutoff",
              "in_half_width", "out_half_width")
    return {
        "name": name, "is_torgb": bool(g("is_torgb")),
        "is_critically_sampled": bool(g("is_critically_sampled")), "use_fp16_on_cuda": bool(g("use_fp16")),
        "in_channels": _int(g("in_channels")),
        "out_channels": _int(g("out_channels")), "in_size": _size(g("in_size")),
        "out_size": _size(g("out_size")), **{k: float(g(k)) for k in floats},
        "conv_kernel": _int(g("conv_kernel")), "filter_size": _int(g("filter_size")),
        "lrelu_upsampling": _num(g("lrelu_upsampling")),
        **{k: _int(g(k)) for k in ("up_factor", "down_factor", "up_taps", "down_taps")},
        "down_radial": bool(g("down_radial")), "padding": [_int(p) for p in g("padding")],
        "conv_clamp": None if clamp is None else _num(clamp),
        "magnitude_ema_beta": float(g("magnitude_ema_beta")),
        "up_filter_shape": shape("up_filter"), "down_filter_shape": shape("down_filter"),
    }


_SYNTHESIS_KEYS = ("num_ws", "num_layers", "num_critical", "margin_size", "output_scale", "num_fp16_res",
                   "channel_base", "channel_max", "first_cutoff", "first_stopband", "last_stopband_rel",
                   "conv_kernel", "use_radial_filters", "w_dim", "img_resolution", "img_channels")


def extract_generator(snapshot: Any, key: str = "G_ema") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """From a loaded snapshot dict (``G``, ``D``, ``G_ema``, ...) or a bare generator record: the generator's
    official state_dict and a JSON-serializable ``arch`` dict (kwargs, hyper-parameters, the per-layer specs
    with the keys of the golden ``config.json`` 'layers' list, and for SuperresGenerator the head layout).
    Refuses a generator that holds any ``strict=False`` placeholder."""
    if isinstance(snapshot, Mapping):
        contents = ", ".join(f"{k!s}: {_describe(v)}" for k, v in snapshot.items())
        if key not in snapshot:
            raise KeyError(f"the snapshot has no {key!r}; it holds {{{contents}}}")
        g, where = snapshot[key], f"snapshot[{key!r}]"
    else:
        g, where, contents = snapshot, "the pickle", ""
    if not (isinstance(g, PersistentRecord) and g.class_name in ("Generator", "SuperresGenerator")):
        raise ValueError(f"{where} is {_describe(g)}, not a StyleGAN-XL Generator or SuperresGenerator"
                         + (f"; the snapshot holds {{{contents}}}" if contents else ""))
    bad = unresolved_globals(g)
    if bad:
        raise UnsafePickleError(f"{where} ({g.class_name}) holds objects outside the whitelist: {bad[:10]}")
    state_dict = module_state_dict(g)
    syn, mapping = submodule(g, "synthesis"), submodule(g, "mapping")
    top_get = _getter(module_attributes(g), g.class_name)
    syn_get = _getter(module_attributes(syn), "synthesis")
    map_get = _getter(module_attributes(mapping), "mapping")
    in_get = _getter(module_attributes(submodule(syn, "input")), "synthesis.input")
    fc0_get = _getter(module_attributes(submodule(mapping, "fc0")), "mapping.fc0")
    embed = mapping.state["_modules"].get("embed")
    e = module_attributes(embed) if embed is not None else {}
    top = {k: _int(top_get(k))
           for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "num_ws")}
    layer_names = [str(n) for n in syn_get("layer_names")]
    arch: dict[str, Any] = {
        "class_name": g.class_name, **top, "init_kwargs": _jsonable(g.init_kwargs),
        "mapping": {**{k: _int(map_get(k)) for k in ("num_layers", "num_ws", "z_dim", "c_dim", "w_dim")},
                    "w_avg_beta": float(map_get("w_avg_beta")), "lr_multiplier": _num(fc0_get("bias_gain")),
                    "embed_num": e.get("num_embeddings"), "embed_dim": e.get("embedding_dim")},
        "synthesis": {**{k: syn_get(k) for k in _SYNTHESIS_KEYS}, "layer_names": layer_names,
                      "init_kwargs": _jsonable(syn.init_kwargs if isinstance(syn, PersistentRecord) else {})},
        "input": {"channels": _int(in_get("channels")), "size": _size(in_get("size"))[0],
                  "sampling_rate": float(in_get("sampling_rate")), "bandwidth": float(in_get("bandwidth"))},
        "layers": [_layer_arch(n, submodule(syn, n)) for n in layer_names],
        "stages": [[top["img_resolution"], 0, 1]],
    }
    if g.class_name == "SuperresGenerator":
        heads = [str(n) for n in top_get("head_layer_names")]
        head_layers = _int(g.init_kwargs.get("head_layers", len(heads) - 1))
        arch.update(head_layer_names=heads, head_layers=head_layers, up_factor=_int(top_get("up_factor")),
                    path_stem=module_attributes(g).get("path_stem"))
        arch["stages"] = [[top["img_resolution"], head_layers, arch["up_factor"]]]
    return state_dict, arch
