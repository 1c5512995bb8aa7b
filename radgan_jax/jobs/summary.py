"""`mode=summary`: print (and write) the generator of a config -- per-layer spec table, parameter counts.

    python -m radgan_jax.main --config=configs/ctmr_512.py:64 --workdir=DIR
writes DIR/generator_spec.json (the spec a checkpoint of this stage will carry) and DIR/summary.txt.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import logging

from radgan_jax.models.stylegan_xl.from_config import spec_chain_from_config
from radgan_jax.models.stylegan_xl.generator import init_generator
from radgan_jax.models.stylegan_xl.layer_specs import format_table, head_layer_names


def count_parameters(spec) -> dict[str, int]:
    shapes = jax.eval_shape(lambda k: init_generator(spec, k), jax.random.key(0))
    return {col: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree))) for col, tree in shapes.items()}


def run(config, workdir: str) -> None:
    chain = spec_chain_from_config(config.model)
    spec = chain[-1]
    counts = count_parameters(spec)
    lines = [f"StyleGAN-XL generator, {spec.img_resolution}px, c_dim={spec.c_dim}, num_ws={spec.num_ws}",
             f"growth: {' -> '.join(str(s.img_resolution) for s in chain)}",
             f"parameters: {counts.get('params', 0):,}  buffers: {counts.get('buffers', 0):,}"]
    if len(chain) > 1:
        head = head_layer_names(chain[-2].synthesis, spec.synthesis)
        lines.append(f"trainable head of this stage: {', '.join(head)}")
    lines += ["", format_table(spec.synthesis)]
    text = "\n".join(lines)
    print(text)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "summary.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(workdir, "generator_spec.json"), "w") as f:
        json.dump(spec.to_dict(), f, indent=1)
    logging.info("wrote %s", os.path.join(workdir, "generator_spec.json"))
