"""Generator EMA (G_ema) of StyleGAN-XL training, as pure functions over pytrees.

Official semantics (autonomousvision/stylegan-xl 4241ff9, training/training_loop.py L360-369), run once per
training step *after* all G/D phases of that step and *before* `cur_nimg += batch_size` (L372):

    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    ema_beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
    for p_ema, p in zip(G_ema.parameters(), G.parameters()): p_ema.copy_(p.lerp(p_ema, ema_beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):       b_ema.copy_(b)

Defaults: `ema_kimg = batch_size * 10 / 32` (train.py L217), `ema_rampup = 0.05` (training_loop.py L117), set to
None when resuming (train.py L247). At the very first step `cur_nimg == 0`, so beta == 0 and G_ema becomes an
exact copy of G. Parameters are averaged; buffers (w_avg, magnitude_ema, freqs/phases, ...) are copied.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

EMA_RAMPUP = 0.05  # training_loop.py L117
PARAMS_COLLECTION = "params"


def default_ema_kimg(batch_size: int) -> float:
    """`c.ema_kimg = c.batch_size * 10 / 32` (train.py L217): half-life of 10 kimg at batch 32, scaled."""
    return batch_size * 10 / 32


def ema_beta(batch_size: int, cur_nimg: Any, ema_kimg: float, ema_rampup: float | None = EMA_RAMPUP) -> Any:
    """EMA decay of one step (training_loop.py L362-365).

    `cur_nimg` is the number of images seen *before* this step. Python numbers give a Python float computed like
    the original (float64); a jax `cur_nimg` (e.g. traced inside a jitted step) gives a float32 jax scalar.
    """
    if batch_size <= 0:
        raise ValueError(f"ema_beta: batch_size must be positive, got {batch_size}")
    if isinstance(cur_nimg, (int, float)):
        ema_nimg = ema_kimg * 1000
        if ema_rampup is not None:
            ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
        return 0.5 ** (batch_size / max(ema_nimg, 1e-8))
    ema_nimg = jnp.asarray(ema_kimg * 1000, jnp.float32)
    if ema_rampup is not None:
        ema_nimg = jnp.minimum(ema_nimg, jnp.asarray(cur_nimg, jnp.float32) * ema_rampup)
    return jnp.power(jnp.float32(0.5), batch_size / jnp.maximum(ema_nimg, 1e-8))


def _check_same_structure(a: Any, b: Any, what: str) -> None:
    sa, sb = jax.tree.structure(a), jax.tree.structure(b)
    if sa != sb:
        raise ValueError(f"{what}: G_ema and G pytrees differ in structure:\n  ema: {sa}\n  G:   {sb}")


def _lerp_leaf(p_ema: jax.Array, p: jax.Array, beta: Any) -> jax.Array:
    """`p.lerp(p_ema, beta)` = p + beta * (p_ema - p), computed in >= float32 and stored in p_ema's dtype."""
    dtype = jnp.result_type(p_ema)
    if not jnp.issubdtype(dtype, jnp.floating):
        return jnp.asarray(p, dtype)  # integer leaves cannot be averaged; torch has none among parameters
    work = jnp.promote_types(dtype, jnp.float32)
    p_w, e_w = jnp.asarray(p, work), jnp.asarray(p_ema, work)
    return (p_w + jnp.asarray(beta, work) * (e_w - p_w)).astype(dtype)


def update_ema(ema_params: Any, params: Any, beta: Any) -> Any:
    """New G_ema parameters: every leaf `p + beta * (p_ema - p)` (training_loop.py L366-367). Pure and jit-able."""
    _check_same_structure(ema_params, params, "update_ema")
    return jax.tree.map(lambda e, p: _lerp_leaf(e, p, beta), ema_params, params)


def copy_buffers(ema_buffers: Any, buffers: Any) -> Any:
    """New G_ema buffers: G's buffers copied as they are (`b_ema.copy_(b)`, training_loop.py L368-369).

    Like `copy_`, the destination keeps its dtype. Averaging a buffer such as `w_avg` would be wrong: it is
    itself an EMA of W maintained by G's mapping network, and G_ema must truncate toward exactly that value.
    """
    _check_same_structure(ema_buffers, buffers, "copy_buffers")
    return jax.tree.map(lambda e, b: jnp.asarray(b, jnp.result_type(e)), ema_buffers, buffers)


def update_ema_variables(ema_variables: dict[str, Any], variables: dict[str, Any], beta: Any) -> dict[str, Any]:
    """Whole flax variable dicts: the `params` collection is averaged, every other collection is copied."""
    if set(ema_variables) != set(variables):
        raise ValueError(f"update_ema_variables: collections differ: ema {sorted(ema_variables)} vs "
                         f"G {sorted(variables)}")
    out = {}
    for name, value in variables.items():
        if name == PARAMS_COLLECTION:
            out[name] = update_ema(ema_variables[name], value, beta)
        else:
            out[name] = copy_buffers(ema_variables[name], value)
    return out
