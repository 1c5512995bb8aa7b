"""StyleGAN-XL generator hyper-parameters as a ConfigDict, and the spec they build (stem + heads).

Defaults are the original train.py's for `--cfg stylegan3-t --cond True` (z_dim 64, w_dim 512, 2 mapping
layers, channel_base 32768*2, channel_max 512*2 -- train.py doubles both for StyleGAN-XL --, conv_kernel 3,
head_layers 7, up_factor 2) with the RadImageGAN stem of 10 synthesis layers at 16 px.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from radgan_jax.models.stylegan_xl.generator import GeneratorSpec, MappingSpec, stem_generator_spec
from radgan_jax.models.stylegan_xl.superres import superres_spec


def stylegan_xl_config(**overrides: Any) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(dict(
        resolution=16,            # output resolution of this stage (16, 32, ..., 512)
        stem_resolution=16,
        z_dim=64,
        w_dim=512,
        c_dim=0,
        img_channels=3,
        mapping_layers=2,
        syn_layers=10,            # train.py --syn_layers (RadImageGAN: 10)
        channel_base=65536,       # train.py --cbase 32768, doubled for StyleGAN-XL
        channel_max=1024,         # train.py --cmax 512, doubled for StyleGAN-XL
        conv_kernel=3,            # stylegan3-t
        use_radial_filters=False,
        stem_batch_size=2048,     # sets magnitude_ema_beta = 0.5 ** (batch / 20k), as train.py
        head_layers=7,            # train.py --head_layers
        up_factor=2,              # train.py --up_factor
        embed_num=1000,           # ImageNet class-embedding table rows
        embed_dim=320,
    ))
    for k, v in overrides.items():
        if k not in cfg:
            raise KeyError(f"unknown generator hyper-parameter {k!r}; valid: {sorted(cfg.keys())}")
        cfg[k] = v
    return cfg


def stem_spec_from_config(cfg: Any) -> GeneratorSpec:
    return stem_generator_spec(
        z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.stem_resolution,
        img_channels=cfg.img_channels,
        mapping=MappingSpec(num_layers=cfg.mapping_layers, embed_num=cfg.embed_num, embed_dim=cfg.embed_dim),
        channel_base=cfg.channel_base, channel_max=cfg.channel_max, num_layers=cfg.syn_layers,
        conv_kernel=cfg.conv_kernel, use_radial_filters=cfg.use_radial_filters,
        magnitude_ema_beta=0.5 ** (cfg.stem_batch_size / (20 * 1e3)))


def spec_chain_from_config(cfg: Any) -> list[GeneratorSpec]:
    """[stem spec, 2x spec, ..., spec at cfg.resolution]."""
    res, stem = int(cfg.resolution), int(cfg.stem_resolution)
    if res < stem or res % stem or (res // stem) & (res // stem - 1):
        raise ValueError(f"resolution {res} must be the stem resolution {stem} times a power of "
                         f"{cfg.up_factor}")
    chain = [stem_spec_from_config(cfg)]
    while chain[-1].img_resolution < res:
        chain.append(superres_spec(chain[-1], head_layers=cfg.head_layers, up_factor=cfg.up_factor))
        if chain[-1].img_resolution > res:
            raise ValueError(f"resolution {res} is not reachable from {stem} with up_factor {cfg.up_factor}")
    return chain


def spec_from_config(cfg: Any) -> GeneratorSpec:
    return spec_chain_from_config(cfg)[-1]
