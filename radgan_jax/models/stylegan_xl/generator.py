"""StyleGAN-XL generator = mapping + synthesis, described entirely by a JSON-able `GeneratorSpec`.

The spec is what a checkpoint stores next to the weights, so a generator of any stage (16 px stem or a
superres chain) can be rebuilt from the checkpoint alone.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from radgan_jax.models.stylegan_xl.layer_specs import SynthesisSpec, stem_synthesis_spec
from radgan_jax.models.stylegan_xl.mapping import MappingNetwork
from radgan_jax.models.stylegan_xl.synthesis import SynthesisNetwork

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class MappingSpec:
    num_layers: int = 2
    lr_multiplier: float = 0.01
    w_avg_beta: float = 0.998
    embed_num: int = 1000
    embed_dim: int = 320


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
    z_dim: int
    c_dim: int
    synthesis: SynthesisSpec
    mapping: MappingSpec = MappingSpec()

    @property
    def w_dim(self) -> int:
        return self.synthesis.w_dim

    @property
    def img_resolution(self) -> int:
        return self.synthesis.img_resolution

    @property
    def img_channels(self) -> int:
        return self.synthesis.img_channels

    @property
    def num_ws(self) -> int:
        return self.synthesis.num_ws

    def to_dict(self) -> dict[str, Any]:
        return {"z_dim": self.z_dim, "c_dim": self.c_dim, "mapping": dataclasses.asdict(self.mapping),
                "synthesis": self.synthesis.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GeneratorSpec:
        unknown = set(d) - {"z_dim", "c_dim", "mapping", "synthesis"}
        if unknown:
            raise ValueError(f"unknown generator spec keys {sorted(unknown)}")
        return cls(z_dim=int(d["z_dim"]), c_dim=int(d["c_dim"]), mapping=MappingSpec(**d.get("mapping", {})),
                   synthesis=SynthesisSpec.from_dict(d["synthesis"]))


def stem_generator_spec(
    z_dim: int = 64,
    c_dim: int = 0,
    w_dim: int = 512,
    img_resolution: int = 16,
    img_channels: int = 3,
    mapping: MappingSpec | None = None,
    **synthesis_kwargs: Any,
) -> GeneratorSpec:
    """Spec of a StyleGAN-XL stem (`Generator`), kwargs as train.py passes them."""
    syn = stem_synthesis_spec(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                              **synthesis_kwargs)
    return GeneratorSpec(z_dim=z_dim, c_dim=c_dim, synthesis=syn, mapping=mapping or MappingSpec())


class Generator(nn.Module):
    """z [N, z_dim], c [N, c_dim] one-hot -> image [N, res, res, ch] in ~[-1, 1] (NHWC, float32)."""

    spec: GeneratorSpec
    compute_dtype: str = "float32"  # synthesis layers flagged use_fp16 run in this dtype

    def setup(self):
        m = self.spec.mapping
        self.mapping = MappingNetwork(
            z_dim=self.spec.z_dim, c_dim=self.spec.c_dim, w_dim=self.spec.w_dim, num_ws=self.spec.num_ws,
            num_layers=m.num_layers, lr_multiplier=m.lr_multiplier, w_avg_beta=m.w_avg_beta,
            embed_num=m.embed_num, embed_dim=m.embed_dim)
        if self.compute_dtype not in DTYPES:
            raise ValueError(f"compute_dtype {self.compute_dtype!r} not in {sorted(DTYPES)}")
        dtype = DTYPES[self.compute_dtype]
        self.synthesis = SynthesisNetwork(self.spec.synthesis, None if dtype == jnp.float32 else dtype)

    def __call__(
        self,
        z: jax.Array,
        c: jax.Array | None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        transform: jax.Array | None = None,
    ) -> jax.Array:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, transform=transform)

    def map(self, z, c, truncation_psi=1.0, truncation_cutoff=None, update_emas=False):
        return self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                            update_emas=update_emas)

    def synthesize(self, ws, update_emas=False, transform=None, return_features=False):
        return self.synthesis(ws, update_emas=update_emas, transform=transform,
                              return_features=return_features)


def init_generator(spec: GeneratorSpec, key: jax.Array, compute_dtype: str = "float32") -> dict[str, Any]:
    """Fresh variables {'params': ..., 'buffers': ...} for `spec` (the original's init distributions)."""
    g = Generator(spec, compute_dtype)
    z = jnp.zeros((1, spec.z_dim), jnp.float32)
    c = jnp.zeros((1, spec.c_dim), jnp.float32) if spec.c_dim else None
    return jax.jit(g.init)({"params": key}, z, c)
