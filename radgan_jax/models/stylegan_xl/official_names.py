"""Official StyleGAN-XL `state_dict` names <-> our variable tree, both directions, strictly checked.

Names stay the original's (`mapping.fc0.weight`, `synthesis.L0_36_128.affine.bias`, `mapping.w_avg`), so a
reader who knows the original finds the same thing under the same word. Only layouts differ:
FC weights are [in, out] here ([out, in] in torch), conv weights HWIO ([k, k, in, out]; torch OIHW).
The low-pass filter buffers (`up_filter`, `down_filter`) are not stored: they are recomputed from the
spec and checked against the official ones on import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from radgan_jax.models.stylegan_xl.generator import GeneratorSpec
from radgan_jax.ops.filters import design_lowpass_filter

# (official suffix, collection, transform-to-ours) for each tensor kind.
_FC = {"weight": lambda a: a.T, "bias": lambda a: a}


def _expected(spec: GeneratorSpec) -> dict[str, tuple[str, tuple[str, ...], Any]]:
    """official name -> (collection, path in that collection, official->ours array transform)."""
    ident = lambda a: a  # noqa: E731
    out: dict[str, tuple[str, tuple[str, ...], Any]] = {}

    def fc(official: str, path: tuple[str, ...]):
        for leaf, fn in _FC.items():
            out[f"{official}.{leaf}"] = ("params", path + (leaf,), fn)

    out["mapping.embed.weight"] = ("params", ("mapping", "embed", "weight"), ident)
    if spec.c_dim > 0:
        fc("mapping.embed_proj", ("mapping", "embed_proj"))
    for i in range(spec.mapping.num_layers):
        fc(f"mapping.fc{i}", ("mapping", f"fc{i}"))
    out["mapping.w_avg"] = ("buffers", ("mapping", "w_avg"), ident)
    out["synthesis.input.weight"] = ("params", ("synthesis", "input", "weight"), lambda a: a.T)
    fc("synthesis.input.affine", ("synthesis", "input", "affine"))
    for b in ("transform", "freqs", "phases"):
        out[f"synthesis.input.{b}"] = ("buffers", ("synthesis", "input", b), ident)
    for layer in spec.synthesis.layers:
        n = layer.name
        out[f"synthesis.{n}.weight"] = ("params", ("synthesis", n, "weight"), lambda a: a.transpose(2, 3, 1, 0))
        out[f"synthesis.{n}.bias"] = ("params", ("synthesis", n, "bias"), ident)
        fc(f"synthesis.{n}.affine", ("synthesis", n, "affine"))
        out[f"synthesis.{n}.magnitude_ema"] = ("buffers", ("synthesis", n, "magnitude_ema"), ident)
    return out


def _filter_names(spec: GeneratorSpec) -> dict[str, np.ndarray | None]:
    res = {}
    for s in spec.synthesis.layers:
        res[f"synthesis.{s.name}.up_filter"] = design_lowpass_filter(
            s.up_taps, s.in_cutoff, s.in_half_width * 2, s.tmp_sampling_rate)
        res[f"synthesis.{s.name}.down_filter"] = design_lowpass_filter(
            s.down_taps, s.out_cutoff, s.out_half_width * 2, s.tmp_sampling_rate, radial=s.down_radial)
    return res


def _set(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


def from_official_state_dict(
    state_dict: Mapping[str, np.ndarray], spec: GeneratorSpec, source: str = "state_dict",
    filter_atol: float = 1e-6,
) -> dict[str, dict]:
    """Official flat state_dict -> {'params': ..., 'buffers': ...} for `Generator(spec)`.

    Raises ValueError naming `source` and every missing, unexpected or mis-shaped tensor.
    """
    expected = _expected(spec)
    filters = _filter_names(spec)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected) - set(filters))
    if missing or unexpected:
        raise ValueError(f"{source}: does not match the generator spec "
                         f"({spec.img_resolution}px, {len(spec.synthesis.layers)} layers): "
                         f"missing {missing[:12]}{' ...' if len(missing) > 12 else ''}; "
                         f"unexpected {unexpected[:12]}{' ...' if len(unexpected) > 12 else ''}")
    for name, designed in filters.items():
        if name in state_dict and designed is not None:
            got = np.asarray(state_dict[name], np.float32)
            if got.shape != designed.shape or not np.allclose(got, designed, atol=filter_atol, rtol=0):
                raise ValueError(f"{source}: {name} differs from the filter the layer spec designs "
                                 f"(shape {got.shape} vs {designed.shape}); the spec does not match the weights")
    variables: dict[str, dict] = {"params": {}, "buffers": {}}
    for name, (col, path, fn) in expected.items():
        arr = fn(np.asarray(state_dict[name], dtype=np.float32))
        _set(variables[col], path, np.array(arr, dtype=np.float32, order="C"))  # keeps 0-d shape
    check_shapes(variables, abstract_variables(spec), source)
    return variables


def abstract_variables(spec: GeneratorSpec) -> Any:
    """Shapes/dtypes of `Generator(spec)`'s variables, without computing anything."""
    import jax

    from radgan_jax.models.stylegan_xl.generator import init_generator

    return jax.eval_shape(lambda k: init_generator(spec, k), jax.random.key(0))


def check_shapes(variables: Mapping[str, Any], reference: Mapping[str, Any], source: str) -> None:
    """Raises ValueError listing every leaf whose shape differs from `reference` (e.g. a fresh init)."""
    import jax

    ref = {jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_flatten_with_path(reference)[0]}
    got = {jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_flatten_with_path(variables)[0]}
    bad = [f"{k}: {got.get(k)} vs expected {v}" for k, v in ref.items() if got.get(k) != v]
    extra = sorted(set(got) - set(ref))
    if bad or extra:
        raise ValueError(f"{source}: variables do not fit the generator spec: {bad[:10]} extra={extra[:10]}")


def to_official_state_dict(variables: Mapping[str, Any], spec: GeneratorSpec) -> dict[str, np.ndarray]:
    """Inverse of `from_official_state_dict` (filters included, as the original's state_dict has them)."""
    inverse = {"weight4": lambda a: a.transpose(3, 2, 0, 1)}
    out = {}
    for name, (col, path, _) in _expected(spec).items():
        arr = np.asarray(_get(variables[col], path))
        if path[-1] == "weight" and arr.ndim == 4:
            arr = inverse["weight4"](arr)
        elif path[-1] == "weight" and path[-2] != "embed" and arr.ndim == 2:
            arr = arr.T
        out[name] = arr
    for name, f in _filter_names(spec).items():
        if f is not None:
            out[name] = np.array(f)
    return out
