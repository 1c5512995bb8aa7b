"""Optimizers: torch.optim.Adam parity, lazy-regularization rescaling, grad sanitising and freezing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from radgan_jax.train.optim import (
    D_REG_INTERVAL,
    G_REG_INTERVAL,
    lazy_reg_hparams,
    make_d_optimizer,
    make_g_optimizer,
    make_optimizer,
)


def test_lazy_reg_numbers_by_hand() -> None:
    # G: mb_ratio = 4/5 -> lr 0.0025 * 0.8 = 0.002, beta2 = 0.99 ** 0.8; beta1 0 stays 0.
    lr, (b1, b2) = lazy_reg_hparams(0.0025, (0.0, 0.99), G_REG_INTERVAL)
    assert lr == pytest.approx(0.002, rel=1e-15) and b1 == 0.0
    assert b2 == pytest.approx(np.exp(0.8 * np.log(0.99)), rel=1e-15)
    assert b2 == pytest.approx(0.99199197, abs=1e-8)
    # D: mb_ratio = 16/17 -> lr 0.002 * 16/17.
    lr, (_, b2) = lazy_reg_hparams(0.002, (0.0, 0.99), D_REG_INTERVAL)
    assert lr == pytest.approx(0.0018823529411764706, rel=1e-15)
    assert b2 == pytest.approx(0.99 ** (16 / 17), rel=1e-15)
    assert lazy_reg_hparams(0.1, (0.5, 0.9), None) == (0.1, (0.5, 0.9))
    with pytest.raises(ValueError, match="reg_interval"):
        lazy_reg_hparams(0.1, (0.0, 0.99), 0)


def _run_optax(opt: optax.GradientTransformation, params: dict, grads: list[dict]) -> dict:
    state = opt.init(params)
    step = jax.jit(lambda p, s, g: _apply(opt, p, s, g))
    for g in grads:
        params, state = step(params, state, g)
    return params


def _apply(opt, params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state


@pytest.mark.parametrize("reg_interval", [None, G_REG_INTERVAL, D_REG_INTERVAL])
def test_matches_torch_adam(reg_interval: int | None) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p0 = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=(5,)).astype(np.float32)}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) * 10 ** rng.uniform(-3, 1) for k, v in p0.items()}
             for _ in range(5)]
    lr, betas = lazy_reg_hparams(0.0025, (0.0, 0.99), reg_interval)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    topt = torch.optim.Adam(list(tp.values()), lr=lr, betas=betas, eps=1e-8)
    for g in grads:
        for k, t in tp.items():
            t.grad = torch.tensor(g[k])
        topt.step()
    opt = make_optimizer(0.0025, (0.0, 0.99), 1e-8, reg_interval)
    out = _run_optax(opt, jax.tree.map(jnp.asarray, p0), [jax.tree.map(jnp.asarray, g) for g in grads])
    for k in p0:
        np.testing.assert_allclose(np.asarray(out[k]), tp[k].detach().numpy(), rtol=0, atol=1e-6)
        assert not np.allclose(np.asarray(out[k]), p0[k])  # it actually moved


def test_nan_and_inf_grads_sanitised() -> None:
    params = {"w": jnp.zeros((3,), jnp.float32)}
    grads = {"w": jnp.array([jnp.nan, jnp.inf, -jnp.inf], jnp.float32)}
    out = _run_optax(make_optimizer(0.1), params, [grads])
    # Adam step 1 with beta1 0: -lr * g / (|g| + eps) -> 0 for the NaN (now 0), -/+lr for +/-1e5.
    np.testing.assert_allclose(np.asarray(out["w"]), [0.0, -0.1, 0.1], rtol=1e-6)
    raw = _run_optax(make_optimizer(0.1, nan_to_num=False), params, [grads])
    assert np.isnan(np.asarray(raw["w"])).all()


def test_frozen_leaf_bit_identical_and_stateless() -> None:
    rng = np.random.default_rng(1)
    params = {"mapping": {"w": jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)},
              "head": {"w": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}}
    mask = {"mapping": {"w": False}, "head": {"w": True}}
    grads = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params) for _ in range(3)]
    opt = make_optimizer(0.01, reg_interval=G_REG_INTERVAL, trainable_mask=mask)
    out = _run_optax(opt, params, grads)
    np.testing.assert_array_equal(np.asarray(out["mapping"]["w"]), np.asarray(params["mapping"]["w"]))
    assert np.abs(np.asarray(out["head"]["w"]) - np.asarray(params["head"]["w"])).min() > 1e-4
    # Only the trainable leaf owns Adam moments (mu, nu): 2 * 4 floats (plus scalar step counts).
    sizes = [x.size for x in jax.tree.leaves(opt.init(params)) if hasattr(x, "size") and x.ndim > 0]
    assert sum(sizes) == 2 * 4
    # Same result with a callable mask (params -> mask).
    out2 = _run_optax(make_optimizer(0.01, reg_interval=G_REG_INTERVAL, trainable_mask=lambda p: mask), params, grads)
    np.testing.assert_array_equal(np.asarray(out2["head"]["w"]), np.asarray(out["head"]["w"]))


def test_bad_mask_leaf_is_rejected() -> None:
    with pytest.raises(ValueError, match="trainable_mask"):
        make_optimizer(0.01, trainable_mask={"w": 1}).init({"w": jnp.zeros(2)})


def test_xl_presets_use_official_numbers() -> None:
    params = {"w": jnp.zeros((2,), jnp.float32)}
    grads = {"w": jnp.array([1.0, -2.0], jnp.float32)}
    # First Adam step with beta1 0 moves each leaf by -lr * sign(g) (up to eps): lr after rescaling.
    g_out = _run_optax(make_g_optimizer(), params, [grads])
    np.testing.assert_allclose(np.asarray(g_out["w"]), [-0.002, 0.002], rtol=1e-5)
    d_out = _run_optax(make_d_optimizer(), params, [grads])
    np.testing.assert_allclose(np.asarray(d_out["w"]), [-0.002 * 16 / 17, 0.002 * 16 / 17], rtol=1e-5)
