"""Grow a StyleGAN-XL generator by one superresolution stage (`SuperresGenerator` of the original).

A stage-N generator is built from the stage-N/2 variables: the critically sampled layers and the old
ToRGB are dropped, `head_layers + 1` new layers are appended (original naming and rates, see
`layer_specs.superres_synthesis_spec`), and the mapping, `w_avg` and surviving stem layers are copied
unchanged. In training, only the head is updated (`train_head_only=True`); `trainable_mask` says which
leaves those are, and `reinit_stem` copies the frozen part again from the previous stage at every
(re)start, as the original's `reinit_stem()` does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from radgan_jax.models.stylegan_xl.generator import GeneratorSpec, init_generator
from radgan_jax.models.stylegan_xl.layer_specs import head_layer_names, superres_synthesis_spec


def superres_spec(prev: GeneratorSpec, head_layers: int = 7, up_factor: int = 2) -> GeneratorSpec:
    return dataclasses.replace(prev, synthesis=superres_synthesis_spec(prev.synthesis, head_layers, up_factor))


def _copy_frozen(dst: dict[str, Any], src: dict[str, Any], prev: GeneratorSpec, new: GeneratorSpec) -> dict:
    """Copies mapping, synthesis input and every surviving stem layer from `src` into `dst`."""
    out = jax.tree.map(lambda x: x, dst)  # shallow structural copy
    heads = set(head_layer_names(prev.synthesis, new.synthesis))
    for col in ("params", "buffers"):
        if col not in src:
            continue
        out[col] = dict(out[col])
        out[col]["mapping"] = src[col]["mapping"]
        syn = dict(out[col]["synthesis"])
        for name, value in src[col]["synthesis"].items():
            if name == "input" or (name in syn and name not in heads):
                if jax.tree.map(np.shape, syn[name]) != jax.tree.map(np.shape, value):
                    raise ValueError(f"stem layer {name}: shapes differ between stages")
                syn[name] = value
        out[col]["synthesis"] = syn
    return out


def grow_generator(
    prev_spec: GeneratorSpec,
    prev_variables: dict[str, Any],
    key: jax.Array,
    head_layers: int = 7,
    up_factor: int = 2,
) -> tuple[GeneratorSpec, dict[str, Any]]:
    """(spec, variables) of stage 2x from stage x: new head freshly initialised, the rest copied."""
    new_spec = superres_spec(prev_spec, head_layers, up_factor)
    fresh = init_generator(new_spec, key)
    return new_spec, _copy_frozen(fresh, prev_variables, prev_spec, new_spec)


def reinit_stem(variables: dict[str, Any], prev_spec: GeneratorSpec, prev_variables: dict[str, Any],
                spec: GeneratorSpec) -> dict[str, Any]:
    """The original's `reinit_stem()`: restore mapping and stem layers from the previous stage."""
    return _copy_frozen(variables, prev_variables, prev_spec, spec)


def trainable_mask(spec: GeneratorSpec, params: dict[str, Any], head_only: bool, train_input: bool = True
                   ) -> dict[str, Any]:
    """Pytree of bools over `params`: True for leaves the optimizer updates.

    A stem stage trains everything. A superres stage (head_only) trains the layers its last growth step added
    (`stages[-1]`) and, by default, the Fourier-feature input: the original's `train_head_only`
    (training/loss.py, Gmain) freezes `mapping` and every layer in `synthesis.layer_names` except the head, but
    `synthesis.input` is not in `layer_names` and keeps the `requires_grad_(True)` of training_loop.py, so it
    trains. `train_input=False` freezes it too.
    """
    stages = spec.synthesis.stages
    if not head_only or not stages or stages[-1][1] == 0:
        return jax.tree.map(lambda _: True, params)
    trainable = set(_last_stage_heads(spec)) | ({"input"} if train_input else set())

    def mark(path, _):
        names = [getattr(p, "key", None) for p in path]
        return len(names) >= 2 and names[0] == "synthesis" and names[1] in trainable

    return jax.tree_util.tree_map_with_path(mark, params)


def _last_stage_heads(spec: GeneratorSpec) -> tuple[str, ...]:
    _, head_layers, _ = spec.synthesis.stages[-1]
    return spec.synthesis.layer_names[-(head_layers + 1):]
