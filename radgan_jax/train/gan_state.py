"""The whole mutable state of StyleGAN-XL training as one pytree (what a checkpoint holds, what a step returns).

Mirrors what the original keeps across iterations (training_loop.py): G, G_ema, D and their Adam states,
`cur_nimg`, `batch_idx` and the path-length mean `pl_mean` (loss.py L55). The discriminator is split into its
trainable heads (`d_params`: every `<backbone>_disc`) and the frozen feature networks + random projectors
(`d_frozen`); only the heads have an optimizer, and gradients are never formed for the frozen part.
Random keys are not state: every draw is `rng.derive(seed_key, purpose, step=step)`, so a resumed run draws
exactly the numbers an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

D_MUTABLE = ("batch_stats", "spectral")  # D collections a train-mode forward updates


class GanState(flax.struct.PyTreeNode):
    step: jax.Array  # batch_idx: optimizer iterations done
    cur_nimg: jax.Array  # real images shown so far (int32: 2.1e9 images ~ 85x the paper's 25 M)
    g_params: Any
    g_buffers: Any  # every non-'params' generator collection ('buffers': w_avg, magnitude EMAs, filters)
    ema_params: Any
    ema_buffers: Any
    d_params: Any  # trainable: {'<bb>_disc': ...}
    d_frozen: Any  # {'<bb>_pretrained': ..., '<bb>_scratch': ...}
    d_state: Any  # {'batch_stats': ..., 'spectral': ...}
    g_opt_state: Any
    d_opt_state: Any
    pl_mean: jax.Array

    @property
    def g_variables(self) -> dict[str, Any]:
        return {"params": self.g_params, **self.g_buffers}

    @property
    def ema_variables(self) -> dict[str, Any]:
        return {"params": self.ema_params, **self.ema_buffers}

    def d_variables(self, d_state: Any | None = None) -> dict[str, Any]:
        params = {**self.d_frozen, **self.d_params}
        return {"params": params, **(self.d_state if d_state is None else d_state)}


def split_d_variables(variables: Mapping[str, Any]) -> tuple[dict, dict, dict]:
    """D variables -> (trainable head params, frozen params, mutable state collections)."""
    params = dict(variables["params"])
    heads = {k: v for k, v in params.items() if k.endswith("_disc")}
    frozen = {k: v for k, v in params.items() if not k.endswith("_disc")}
    if not heads:
        raise ValueError(f"discriminator params have no '<backbone>_disc' heads: {sorted(params)}")
    state = {k: v for k, v in variables.items() if k in D_MUTABLE}
    extra = sorted(set(variables) - {"params", *D_MUTABLE})
    if extra:
        raise ValueError(f"unexpected discriminator collections {extra}")
    return heads, frozen, state


def create_gan_state(g_variables: Mapping[str, Any], d_variables: Mapping[str, Any], g_tx: Any, d_tx: Any
                     ) -> GanState:
    """Step 0: G_ema starts as a copy of G (training_loop.py L153: `copy.deepcopy(G)`)."""
    g_params = g_variables["params"]
    g_buffers = {k: v for k, v in g_variables.items() if k != "params"}
    d_params, d_frozen, d_state = split_d_variables(d_variables)
    copy = lambda t: jax.tree.map(jnp.array, t)  # noqa: E731 - distinct buffers for G and G_ema
    return GanState(
        step=jnp.zeros((), jnp.int32), cur_nimg=jnp.zeros((), jnp.int32),
        g_params=g_params, g_buffers=g_buffers, ema_params=copy(g_params), ema_buffers=copy(g_buffers),
        d_params=d_params, d_frozen=d_frozen, d_state=d_state,
        g_opt_state=g_tx.init(g_params), d_opt_state=d_tx.init(d_params),
        pl_mean=jnp.zeros((), jnp.float32))

