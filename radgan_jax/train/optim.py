"""Adam optimizers of StyleGAN-XL training (optax), matching torch.optim.Adam and the official schedule.

Official settings (autonomousvision/stylegan-xl 4241ff9):
  * train.py L182-183: both G and D use `torch.optim.Adam(betas=[0, 0.99], eps=1e-8)`;
    L199-200: G lr 0.0025 (StyleGAN3-based XL configs), D lr 0.002 (`--dlr`).
  * training_loop.py L118-119: `G_reg_interval=4`, `D_reg_interval=16`. train.py only overrides G_reg_interval for
    `--cfg stylegan2`, so the XL run keeps both defaults and both optimizers are built through the lazy-regularization
    branch (L241-246): `mb_ratio = reg_interval / (reg_interval + 1)`, `lr *= mb_ratio`,
    `betas = [beta ** mb_ratio ...]`. This happens even though the D has no regularizer (loss.py L89: the 'Dreg'
    phase returns at once) and the G path-length term only exists in stem stages after 1M images (loss.py L124;
    `pl_weight = 0` for superres, train.py L312).
  * training_loop.py L344-354: before `opt.step()` the flattened gradients go through
    `nan_to_num(nan=0, posinf=1e5, neginf=-1e5)`; `nan_to_num=True` reproduces that here.
  * A phase that produced no gradient ('Dreg' always; 'Greg' before 1M images or with pl_weight 0) leaves every
    `param.grad` None, and torch Adam then skips those parameters: no step count, no moment decay. The caller must
    therefore not call `update` for such a phase; applying zero gradients instead would advance the Adam state.
  * Superres stages freeze mapping and stem (loss.py L98-101: `train_head_only`); frozen leaves get no gradient in
    torch, so they never move and own no Adam state. `trainable_mask` reproduces this with `optax.multi_transform`
    + `set_to_zero`, whose masked state stores nothing for frozen leaves.

optax.adam matches torch: update = -lr * m_hat / (sqrt(v_hat) + eps), eps outside the sqrt (optax `eps_root=0`),
bias corrections 1 - beta**t for both moments; with beta1 = 0 the first moment is just the gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

G_LR = 0.0025  # train.py L199 (StyleGAN-XL)
D_LR = 0.002  # train.py L152/L200
BETAS = (0.0, 0.99)  # train.py L182-183
EPS = 1e-8
G_REG_INTERVAL = 4  # training_loop.py L118 (not overridden for XL)
D_REG_INTERVAL = 16  # training_loop.py L119 (not overridden for XL)
NAN_TO_NUM_LIMIT = 1e5  # training_loop.py L350: misc.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5)

_TRAIN, _FREEZE = "train", "freeze"


def lazy_reg_hparams(lr: float, betas: Sequence[float], reg_interval: int | None) -> tuple[float, tuple[float, ...]]:
    """(lr, betas) after the lazy-regularization rescaling (training_loop.py L241-245); unchanged for None."""
    if len(betas) != 2:
        raise ValueError(f"betas must be (beta1, beta2), got {tuple(betas)}")
    if reg_interval is None:
        return float(lr), tuple(float(b) for b in betas)
    if reg_interval < 1:
        raise ValueError(f"reg_interval must be >= 1 or None, got {reg_interval}")
    mb_ratio = reg_interval / (reg_interval + 1)
    return lr * mb_ratio, tuple(b**mb_ratio for b in betas)


def sanitize_grads(limit: float = NAN_TO_NUM_LIMIT) -> optax.GradientTransformation:
    """NaN -> 0, +inf -> +limit, -inf -> -limit on every gradient leaf (training_loop.py L350). Stateless."""

    def update_fn(updates, state, params=None):
        del params
        clean = jax.tree.map(lambda g: jnp.nan_to_num(g, nan=0.0, posinf=limit, neginf=-limit), updates)
        return clean, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _labels(mask: Any) -> Any:
    def to_label(m: Any) -> str:
        if not isinstance(m, (bool, np.bool_)):
            raise ValueError(f"trainable_mask leaves must be Python/NumPy bools, got {type(m).__name__}: {m!r}")
        return _TRAIN if bool(m) else _FREEZE

    return jax.tree.map(to_label, mask)


def make_optimizer(
    lr: float,
    betas: Sequence[float] = BETAS,
    eps: float = EPS,
    reg_interval: int | None = None,
    trainable_mask: Any | Callable[[Any], Any] | None = None,
    nan_to_num: bool = True,
) -> optax.GradientTransformation:
    """torch.optim.Adam as built by the official training loop, with optional freezing.

    `reg_interval` applies the lazy-regularization rescaling of `lr` and `betas` (use `G_REG_INTERVAL` /
    `D_REG_INTERVAL` to reproduce StyleGAN-XL). `trainable_mask` is a pytree of bools matching the params (or a
    function params -> such a pytree); False leaves receive zero updates and hold no optimizer state.
    """
    lr, (b1, b2) = lazy_reg_hparams(lr, betas, reg_interval)
    adam = optax.adam(learning_rate=lr, b1=b1, b2=b2, eps=eps, eps_root=0.0)
    inner = optax.chain(sanitize_grads(), adam) if nan_to_num else adam
    if trainable_mask is None:
        return inner
    labels = (lambda params: _labels(trainable_mask(params))) if callable(trainable_mask) else _labels(trainable_mask)
    return optax.multi_transform({_TRAIN: inner, _FREEZE: optax.set_to_zero()}, labels)


def make_g_optimizer(trainable_mask: Any = None, lr: float = G_LR) -> optax.GradientTransformation:
    """The StyleGAN-XL generator optimizer: Adam(0.0025, (0, 0.99)) rescaled for G_reg_interval 4."""
    return make_optimizer(lr, BETAS, EPS, G_REG_INTERVAL, trainable_mask)


def make_d_optimizer(trainable_mask: Any = None, lr: float = D_LR) -> optax.GradientTransformation:
    """The projected-D optimizer: Adam(0.002, (0, 0.99)) rescaled for D_reg_interval 16; mask out feature nets."""
    return make_optimizer(lr, BETAS, EPS, D_REG_INTERVAL, trainable_mask)
