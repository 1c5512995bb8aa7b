"""Helpers shared by the generator golden tests: load a golden folder into our generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from radgan_jax.models.stylegan_xl.generator import Generator
from radgan_jax.models.stylegan_xl.official_names import from_official_state_dict
from radgan_jax.models.stylegan_xl.official_spec import arch_from_official_config, spec_from_arch

GOLDEN_GENERATORS = ("stylegan_xl_16", "stylegan_xl_32")


def load_golden_generator(folder: Path):
    """-> (Generator module, variables, config dict, state_dict) built only from the golden files."""
    config = json.loads((folder / "config.json").read_text())
    state_dict = dict(np.load(folder / "params.npz"))
    spec = spec_from_arch(arch_from_official_config(config, state_dict), source=str(folder))
    variables = from_official_state_dict(state_dict, spec, source=str(folder / "params.npz"))
    return Generator(spec), variables, config, state_dict


def nchw(x) -> np.ndarray:
    return np.asarray(x).transpose(0, 3, 1, 2)
