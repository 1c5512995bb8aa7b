"""Small built-in generators that need no input files (demo runs, smoke tests, benchmarks)."""

from __future__ import annotations

from collections.abc import Callable

import jax

from radgan_jax.models.stylegan_xl.from_config import spec_from_config, stylegan_xl_config
from radgan_jax.models.stylegan_xl.generator import GeneratorSpec, init_generator

# name -> hyper-parameter overrides of stylegan_xl_config (registry, not an if-chain).
BUILTIN: dict[str, dict] = {
    # 4 classes, 16 px stem + one 32 px head; a few hundred thousand parameters: runs in seconds on CPU.
    "demo32": dict(resolution=32, z_dim=32, w_dim=128, c_dim=4, syn_layers=6, channel_base=2048,
                   channel_max=64, head_layers=4, embed_num=16, embed_dim=32, stem_batch_size=64),
}


def builtin_spec(name: str) -> GeneratorSpec:
    if name not in BUILTIN:
        raise KeyError(f"unknown built-in generator {name!r}; available: {sorted(BUILTIN)}")
    return spec_from_config(stylegan_xl_config(**BUILTIN[name]))


def builtin_generator(name: str, key: jax.Array) -> tuple[GeneratorSpec, dict]:
    """Randomly initialised built-in generator (the original's init distributions), deterministic in `key`."""
    spec = builtin_spec(name)
    return spec, init_generator(spec, key)


BuiltinFactory = Callable[[str, jax.Array], tuple[GeneratorSpec, dict]]
