"""nnU-Net v2's optimizer: SGD (Nesterov, momentum 0.99, weight decay 3e-5), grad-norm clip 12, PolyLR per epoch.

nnunetv2 2.8.1 `nnUNetTrainer`:
  * `configure_optimizers`: torch.optim.SGD(params, initial_lr=1e-2, weight_decay=3e-5, momentum=0.99,
    nesterov=True) on every parameter (norm scales and biases included), PolyLRScheduler(optimizer, 1e-2,
    num_epochs) from `training/lr_scheduler/polylr.py`.
  * `train_step`: loss.backward(); clip_grad_norm_(params, 12); optimizer.step().
  * `on_train_epoch_start`: lr_scheduler.step(current_epoch) -> lr = 1e-2 * (1 - epoch / num_epochs) ** 0.9, then
    `num_iterations_per_epoch` (250) steps at that lr.

torch's SGD adds the weight decay to the (already clipped) gradient, g <- g + wd * p, then buf <- m * buf + g,
g <- g + m * buf (Nesterov), p <- p - lr * g. That is optax `add_decayed_weights` -> `trace(nesterov=True)`
-> scale by -lr, after a clip that copies torch's formula: g * min(1, max_norm / (||g|| + 1e-6))
(optax's clip_by_global_norm omits the 1e-6).

Learning-rate schedule, design choice: the lr is a function of the *epoch*, and by default the epoch is
derived inside the optimizer from its own step count, epoch = count // iterations_per_epoch. nnU-Net's epochs
are exactly `num_iterations_per_epoch` optimizer steps, so this reproduces `lr_scheduler.step(current_epoch)`
while keeping the train step pure: the lr lives in the optimizer state (which is checkpointed), so resuming
from any step gives the same lr without the trainer re-deriving it, and the jitted step needs no extra input.
A trainer that prefers to feed the epoch explicitly builds the optimizer with `iterations_per_epoch=None` and
calls `set_epoch(opt_state, epoch, ...)` at each epoch start (nnU-Net's exact call pattern); the lr is then a
hyperparameter in the state (optax.inject_hyperparams) that the optimizer leaves unchanged.
Either way `current_lr(opt_state)` reads the lr the next step uses (for logging, as nnU-Net logs 'lrs').
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

# nnUNetTrainer.__init__ / configure_optimizers / train_step constants.
INITIAL_LR = 1e-2
WEIGHT_DECAY = 3e-5
MOMENTUM = 0.99
GRAD_CLIP_NORM = 12.0
POLY_EXPONENT = 0.9  # nnunetv2 PolyLRScheduler default
NUM_EPOCHS = 1000
NUM_ITERATIONS_PER_EPOCH = 250


def poly_lr(epoch: int | jax.Array, initial_lr: float = INITIAL_LR, max_epochs: int = NUM_EPOCHS,
            exponent: float = POLY_EXPONENT) -> jax.Array:
    """nnunetv2 PolyLRScheduler.step(epoch): initial_lr * (1 - epoch / max_epochs) ** exponent.

    Computed as (max_epochs - epoch) / max_epochs so that float32 keeps full relative precision near the end
    (1 - 999/1000 in float32 loses ~4 digits; torch computes in float64).
    """
    remaining = jnp.asarray(max_epochs - jnp.asarray(epoch), jnp.float32)
    return initial_lr * (remaining / max_epochs) ** exponent


def poly_lr_schedule(initial_lr: float = INITIAL_LR, max_epochs: int = NUM_EPOCHS,
                     iterations_per_epoch: int = NUM_ITERATIONS_PER_EPOCH,
                     exponent: float = POLY_EXPONENT) -> optax.Schedule:
    """optax schedule of the step count: poly_lr(count // iterations_per_epoch), constant within an epoch."""
    if iterations_per_epoch < 1:
        raise ValueError(f"iterations_per_epoch must be >= 1, got {iterations_per_epoch}")

    def schedule(count):
        return poly_lr(jnp.asarray(count) // iterations_per_epoch, initial_lr, max_epochs, exponent)

    return schedule


class ClipGradNormState(NamedTuple):
    """Stateless (clip_grad_norm_ keeps nothing)."""


def clip_grad_norm_torch(max_norm: float = GRAD_CLIP_NORM) -> optax.GradientTransformation:
    """torch.nn.utils.clip_grad_norm_(params, max_norm): g * min(1, max_norm / (global_l2_norm(g) + 1e-6))."""

    def init_fn(params):
        del params
        return ClipGradNormState()

    def update_fn(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        coef = jnp.minimum(max_norm / (norm + 1e-6), 1.0)
        return jax.tree_util.tree_map(lambda g: (g * coef).astype(g.dtype), updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def _sgd_chain(learning_rate: Any, momentum: float, weight_decay: float, clip_norm: float | None,
               ) -> optax.GradientTransformation:
    parts = [] if clip_norm is None else [clip_grad_norm_torch(clip_norm)]
    parts += [optax.add_decayed_weights(weight_decay), optax.trace(decay=momentum, nesterov=True),
              optax.scale_by_learning_rate(learning_rate)]
    return optax.chain(*parts)


def nnunet_sgd(initial_lr: float = INITIAL_LR, max_epochs: int = NUM_EPOCHS,
               iterations_per_epoch: int | None = NUM_ITERATIONS_PER_EPOCH, *, momentum: float = MOMENTUM,
               weight_decay: float = WEIGHT_DECAY, clip_norm: float | None = GRAD_CLIP_NORM,
               exponent: float = POLY_EXPONENT) -> optax.GradientTransformation:
    """nnUNetTrainer's optimizer as one optax transformation (clip -> +wd*p -> Nesterov momentum -> * -lr).

    `iterations_per_epoch` given: lr = poly_lr(count // iterations_per_epoch) (derived from the step count).
    `iterations_per_epoch=None`: lr starts at poly_lr(0) and changes only through `set_epoch` (explicit epoch).
    The lr sits in `opt_state.hyperparams['learning_rate']` in both cases.
    """
    if iterations_per_epoch is None:
        lr: Any = float(poly_lr(0, initial_lr, max_epochs, exponent))
    else:
        lr = poly_lr_schedule(initial_lr, max_epochs, iterations_per_epoch, exponent)
    return optax.inject_hyperparams(_sgd_chain, static_args=("momentum", "weight_decay", "clip_norm"))(
        learning_rate=lr, momentum=momentum, weight_decay=weight_decay, clip_norm=clip_norm)


def set_epoch(opt_state: Any, epoch: int | jax.Array, initial_lr: float = INITIAL_LR,
              max_epochs: int = NUM_EPOCHS, exponent: float = POLY_EXPONENT) -> Any:
    """Explicit-epoch mode: the state with lr = poly_lr(epoch) (nnU-Net's lr_scheduler.step(current_epoch)).

    Only meaningful for `nnunet_sgd(iterations_per_epoch=None)`: with a count-derived schedule every update
    recomputes the lr from the step count and this value would be ignored. Works on a traced epoch (jit).
    """
    hp = getattr(opt_state, "hyperparams", None)
    if hp is None or "learning_rate" not in hp:
        raise ValueError("opt_state has no hyperparams['learning_rate']: build it with nnunet_sgd(...)")
    new = dict(hp)
    new["learning_rate"] = jnp.asarray(poly_lr(epoch, initial_lr, max_epochs, exponent),
                                       dtype=jnp.asarray(hp["learning_rate"]).dtype)
    return opt_state._replace(hyperparams=new)


def current_lr(opt_state: Any) -> jax.Array:
    """The lr in the optimizer state: the one the last update used (after init: step 0's), or set by set_epoch.

    In count-derived mode the *next* update uses poly_lr(count // iterations_per_epoch) (`opt_state.count`).
    """
    return opt_state.hyperparams["learning_rate"]
