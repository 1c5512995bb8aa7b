"""Convert the FID Inception weights (pytorch-fid's state_dict) into a flat ``.npz`` of our flax variables.

    python -m radgan_jax.tools.convert_inception --src pt_inception-2015-12-05-6726825d.pth --out DIR_or_FILE.npz

``--src`` is read without torch (``torch_state_dict``: ``.pth`` zip or legacy, ``.safetensors``, ``.npz``) and
must hold every tensor of pytorch-fid's ``FIDInceptionA/C/E`` Inception3 (torchvision names: ``Mixed_5b.
branch1x1.conv.weight``, ``...bn.running_var``, ``fc.weight``); ``num_batches_tracked`` and ``AuxLogits.*`` are
ignored, anything else is refused. Names and shapes are derived from :class:`InceptionFID` itself. The output
``.npz`` maps ``params/Mixed_5b/branch1x1/conv/kernel``-style paths to float32 arrays; a ``.json`` sidecar
records the source path and its sha256. :func:`load_inception` reads it back at run time (nothing is ever
downloaded).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from radgan_jax.models.inception_fid import variable_shapes
from radgan_jax.tools.files import sha256_file
from radgan_jax.tools.torch_state_dict import StateDictError, UnsafePickleError, load_state_dict

DEFAULT_NAME = "inception_fid.npz"
KIND = "inception_fid"
SOURCE_NAME = "pt_inception-2015-12-05-6726825d.pth"
SOURCE_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{SOURCE_NAME}"
HOW_TO_GET = (f"obtain {SOURCE_NAME} (pytorch-fid's release: {SOURCE_URL}) on a machine with internet access, "
              f"then run `python -m radgan_jax.tools.convert_inception --src {SOURCE_NAME} --out DIR` and pass "
              f"DIR/{DEFAULT_NAME}; nothing is downloaded at run time")
_IGNORED_SUFFIXES = (".num_batches_tracked",)
_IGNORED_PREFIXES = ("AuxLogits.",)  # torchvision's auxiliary classifier: not part of the FID graph
# flax leaf -> (torch suffix, transpose applied to the torch array); conv OIHW -> HWIO, linear (out, in) -> (in, out)
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
_TRANSPOSE = {4: (2, 3, 1, 0), 2: (1, 0)}


class ConversionError(Exception):
    """The weights cannot be converted or loaded; the message names the file and the problem."""


@functools.lru_cache(maxsize=1)
def _flat_shapes() -> dict[str, tuple[int, ...]]:
    """``'params/Mixed_5b/branch1x1/conv/kernel' -> shape`` for every variable of InceptionFID."""
    leaves = jax.tree_util.tree_flatten_with_path(variable_shapes())[0]
    return {"/".join(k.key for k in path): tuple(leaf.shape) for path, leaf in leaves}


def torch_name(flax_name: str) -> str:
    """``params/Mixed_5b/branch1x1/conv/kernel`` -> ``Mixed_5b.branch1x1.conv.weight``."""
    _, *modules, leaf = flax_name.split("/")
    return ".".join([*modules, _LEAVES[leaf]])


def _unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, arr in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = arr
    return tree


def state_dict_to_flat(sd: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Checks every name and shape of pytorch-fid's state_dict ``sd`` and maps it onto flat flax names."""
    shapes = _flat_shapes()
    wanted = {torch_name(n): n for n in shapes}
    missing = [k for k in wanted if k not in sd]
    extra = sorted(k for k in sd if k not in wanted and not k.endswith(_IGNORED_SUFFIXES)
                   and not k.startswith(_IGNORED_PREFIXES))
    if missing:
        raise ConversionError(f"{source}: missing key {missing[0]!r} ({len(missing)} of {len(wanted)} FID Inception "
                              f"tensors missing, e.g. {missing[:3]}); expected pytorch-fid's {SOURCE_NAME}")
    if extra:
        raise ConversionError(f"{source}: unexpected key {extra[0]!r} ({len(extra)} keys that are not part of the "
                              f"FID Inception, e.g. {extra[:3]})")
    flat = {}
    for key, name in wanted.items():
        arr = np.asarray(sd[key])
        if arr.ndim in _TRANSPOSE and name.endswith("/kernel"):
            arr = arr.transpose(_TRANSPOSE[arr.ndim])
        if arr.shape != shapes[name]:
            want = shapes[name]
            want_torch = tuple(want[i] for i in np.argsort(_TRANSPOSE[len(want)])) if name.endswith("/kernel") \
                else want
            raise ConversionError(f"{source}: {key!r} has shape {tuple(sd[key].shape)} where the FID Inception "
                                  f"expects {want_torch}")
        flat[name] = np.ascontiguousarray(arr, dtype=np.float32)
    return flat


def _npz_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out if out.suffix == ".npz" else out / DEFAULT_NAME


def convert(src: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Converts ``src`` to ``out`` (an ``.npz`` path, or a directory that gets ``inception_fid.npz``) plus its
    ``.json`` sidecar. Returns the ``.npz`` path."""
    src, dst = Path(src), _npz_path(out)
    if not src.is_file():
        raise ConversionError(f"{src}: no such file; {HOW_TO_GET}")
    if dst.exists():
        raise ConversionError(f"{dst}: already exists; remove it or choose another --out")
    try:
        sd = load_state_dict(src)
    except (StateDictError, UnsafePickleError) as e:
        raise ConversionError(str(e)) from None
    flat = state_dict_to_flat(sd, str(src))
    dst.parent.mkdir(parents=True, exist_ok=True)
    np.savez(dst, **flat)
    meta = {"kind": KIND, "source": str(src.resolve()), "source_sha256": sha256_file(src),
            "npz_sha256": sha256_file(dst), "num_arrays": len(flat)}
    dst.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return dst


def load_inception(path: str | os.PathLike) -> dict[str, Any]:
    """``{'params', 'batch_stats'}`` (numpy float32) for :class:`InceptionFID` from a converted ``.npz`` (or a
    directory holding ``inception_fid.npz``); every name and shape is checked."""
    npz = _npz_path(path) if Path(path).is_dir() else Path(path)
    if not npz.is_file():
        raise ConversionError(f"{npz}: no FID Inception weights there; {HOW_TO_GET}")
    try:
        with np.load(npz, allow_pickle=False) as f:
            flat = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise ConversionError(f"{npz}: not a readable .npz ({e}); {HOW_TO_GET}") from None
    shapes = _flat_shapes()
    missing = [k for k in shapes if k not in flat]
    if missing:
        raise ConversionError(f"{npz}: missing array {missing[0]!r} ({len(missing)} missing); not written by "
                              f"convert_inception? {HOW_TO_GET}")
    for name, shape in shapes.items():
        if flat[name].shape != shape:
            raise ConversionError(f"{npz}: {name!r} has shape {flat[name].shape}, expected {shape}")
    return _unflatten({k: np.asarray(flat[k], np.float32) for k in shapes})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help=f"pytorch-fid's {SOURCE_NAME} (.pth, .safetensors or .npz)")
    p.add_argument("--out", required=True, help=f"output .npz, or a directory (gets {DEFAULT_NAME})")
    args = p.parse_args(argv)
    try:
        dst = convert(args.src, args.out)
    except ConversionError as e:
        print(f"convert_inception: error: {e}", file=sys.stderr)
        return 2
    print(f"converted {args.src} -> {dst} (+ {dst.with_suffix('.json').name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
