"""Pretrained class-embedding tables (StyleGAN-XL's `in_embeddings/tf_efficientnet_lite0.pkl`) from a local file.

The original initialises the class embedding of G's mapping network (training/networks_stylegan3_resetting.py
L137) and of every conditional mini discriminator (pg_modules/discriminator.py L101) from that pickle: a
1000 x 320 `torch.nn.Embedding` of ImageNet classes; classes use rows `c.argmax(1)`, and the table then trains.
`rand_embedding=True` replaces it by a fresh N(0, 1) table, which is what we do when no file is given (nothing
is downloaded). Accepted files:
  .pkl                 the official pickle ({'embed': nn.Embedding}), read without torch and without running code
  .pth / .pt / .bin    a state_dict or tensor with a 'weight' / 'embed.weight' / 'embed' entry
  .safetensors         the same keys
  .npy / .npz          the table itself ('embed' / 'weight' key in an .npz, or its only array)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

_KEYS = ("embed", "weight", "embed.weight")


class ClassEmbeddingError(ValueError):
    """A class-embedding file problem; the message names the file."""


def _pick(entries: dict[str, Any], path: Path) -> Any:
    for k in _KEYS:
        if k in entries:
            return entries[k]
    if len(entries) == 1:
        return next(iter(entries.values()))
    raise ClassEmbeddingError(f"{path}: no class-embedding table: expected one of the keys {list(_KEYS)} or a "
                              f"single entry, found {sorted(entries)[:8]}")


def load_class_embeddings(path: str | os.PathLike) -> np.ndarray:
    """The [num_classes, dim] float32 table stored in `path` (see module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise ClassEmbeddingError(f"{p}: no such class-embedding file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            table = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                table = _pick({k: z[k] for k in z.files}, p)
        elif suffix == ".pkl":
            from radgan_jax.tools import safe_unpickle as su

            data = su.load_pickle(p)
            obj = _pick(data, p) if isinstance(data, dict) else data
            table = obj if isinstance(obj, np.ndarray) else su.module_state_dict(obj).get("weight")
        elif suffix in (".pth", ".pt", ".bin", ".safetensors"):
            from radgan_jax.tools.torch_state_dict import load_state_dict

            table = _pick(dict(load_state_dict(p)), p)
        else:
            raise ClassEmbeddingError(f"{p}: unknown class-embedding file type {suffix!r} "
                                      "(.pkl, .pth, .pt, .bin, .safetensors, .npy, .npz)")
    except ClassEmbeddingError:
        raise
    except Exception as e:  # a corrupt or foreign file: say which
        raise ClassEmbeddingError(f"{p}: cannot read a class-embedding table: {type(e).__name__}: {e}") from None
    table = None if table is None else np.asarray(table)
    if table is None or table.ndim != 2 or not np.issubdtype(table.dtype, np.floating):
        raise ClassEmbeddingError(f"{p}: expected a 2-D float table [num_classes, dim], got "
                                  f"{None if table is None else (table.shape, table.dtype)}")
    if not np.isfinite(table).all():
        raise ClassEmbeddingError(f"{p}: the class-embedding table holds NaN or Inf")
    return np.ascontiguousarray(table, dtype=np.float32)


def _check(table: np.ndarray, want: tuple[int, ...], what: str, source: str) -> None:
    if tuple(table.shape) != tuple(want):
        raise ClassEmbeddingError(f"{source}: table of shape {tuple(table.shape)} but {what} needs {tuple(want)}")


def put_generator_table(params: dict[str, Any], table: np.ndarray, source: str = "class embedding") -> dict:
    """G params with `mapping.embed.weight` replaced by `table` (same shape)."""
    mapping = dict(params["mapping"])
    embed = dict(mapping["embed"])
    _check(table, np.shape(embed["weight"]), "the generator's mapping.embed (model.embed_num x model.embed_dim)",
           source)
    embed["weight"] = table.copy()
    mapping["embed"] = embed
    return {**params, "mapping": mapping}


def put_head_tables(params: dict[str, Any], table: np.ndarray, source: str = "class embedding") -> dict:
    """D params with every conditional mini disc's `embed` table (any `*_disc` subtree) replaced by `table`."""
    count = 0

    def walk(node: Any, inside_disc: bool) -> Any:
        nonlocal count
        if not isinstance(node, dict):
            return node
        out = {}
        for k, v in node.items():
            if k == "embed" and inside_disc and not isinstance(v, dict):
                _check(table, np.shape(v), "the discriminator heads' embed", source)
                out[k] = table.copy()
                count += 1
            else:
                out[k] = walk(v, inside_disc or k.endswith("_disc"))
        return out

    new = walk(dict(params), False)
    if not count:
        raise ClassEmbeddingError(f"{source}: the discriminator has no conditional heads with an 'embed' table")
    return new


__all__ = ["ClassEmbeddingError", "load_class_embeddings", "put_generator_table", "put_head_tables"]
