"""G_ema: decay schedule and update semantics of training_loop.py L360-369 (stylegan-xl 4241ff9)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radgan_jax.train.ema import copy_buffers, default_ema_kimg, ema_beta, update_ema, update_ema_variables


def test_default_ema_kimg_follows_train_py() -> None:
    assert default_ema_kimg(32) == 10.0
    assert default_ema_kimg(256) == 80.0


def test_beta_rampup_then_constant() -> None:
    batch, kimg = 64, default_ema_kimg(64)  # 20 kimg -> 20_000 images
    # First step: cur_nimg 0 -> ema_nimg clamps to 1e-8 -> beta underflows to exactly 0 (G_ema = G).
    assert ema_beta(batch, 0, kimg) == 0.0
    # Ramp-up active: ema_nimg = 10_000 * 0.05 = 500 < 20_000 -> 0.5 ** (64 / 500).
    assert ema_beta(batch, 10_000, kimg) == pytest.approx(0.5 ** (64 / 500), rel=1e-15)
    assert ema_beta(batch, 10_000, kimg) == pytest.approx(0.91509917, abs=1e-8)  # exp(-0.128 ln 2)
    # Ramp-up ends where cur_nimg * 0.05 reaches 20_000, i.e. at 400_000 images; constant afterwards.
    const = 0.5 ** (64 / 20_000)
    for nimg in (400_000, 1_000_000, 10**8):
        assert ema_beta(batch, nimg, kimg) == pytest.approx(const, rel=1e-15)
    assert ema_beta(batch, 399_000, kimg) < const
    # ema_rampup None (resume, train.py L247): constant from the first step.
    assert ema_beta(batch, 0, kimg, None) == pytest.approx(const, rel=1e-15)


def test_beta_traced_matches_python() -> None:
    f = jax.jit(lambda n: ema_beta(64, n, 20.0))
    for nimg in (0, 10_000, 2_000_000):
        np.testing.assert_allclose(float(f(jnp.int32(nimg))), ema_beta(64, nimg, 20.0), rtol=1e-6)


def test_beta_rejects_bad_batch() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        ema_beta(0, 10, 1.0)


def test_three_steps_by_hand() -> None:
    ema = {"w": jnp.array([1.0, -2.0], jnp.float32)}
    g_steps = [np.array([3.0, 0.0]), np.array([5.0, 4.0]), np.array([-1.0, 2.0])]
    betas = [0.0, 0.5, 0.75]
    # p.lerp(p_ema, b) = p + b * (p_ema - p):
    #   step 1 (beta 0): [3, 0];  step 2: [5 + .5*(3-5), 4 + .5*(0-4)] = [4, 2]
    #   step 3: [-1 + .75*(4+1), 2 + .75*(2-2)] = [2.75, 2]
    expected = [[3.0, 0.0], [4.0, 2.0], [2.75, 2.0]]
    step = jax.jit(update_ema)
    for g, b, want in zip(g_steps, betas, expected):
        ema = step(ema, {"w": jnp.asarray(g, jnp.float32)}, b)
        np.testing.assert_array_equal(np.asarray(ema["w"]), np.array(want, np.float32))


def test_dtype_preserved_and_structure_checked() -> None:
    ema = {"a": jnp.ones((2,), jnp.bfloat16), "b": jnp.zeros((), jnp.float32)}
    g = {"a": jnp.full((2,), 3.0, jnp.bfloat16), "b": jnp.ones((), jnp.float32)}
    out = update_ema(ema, g, jnp.float32(0.5))
    assert out["a"].dtype == jnp.bfloat16 and out["b"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out["a"], np.float32), [2.0, 2.0])
    assert float(out["b"]) == 0.5
    with pytest.raises(ValueError, match="structure"):
        update_ema(ema, {"a": g["a"]}, 0.5)


def test_buffers_copied_not_averaged() -> None:
    ema_vars = {
        "params": {"mapping": {"fc0": {"weight": jnp.zeros((2, 2))}}},
        "buffers": {"mapping": {"w_avg": jnp.zeros((3,))}, "L0": {"magnitude_ema": jnp.ones(())}},
    }
    g_vars = {
        "params": {"mapping": {"fc0": {"weight": jnp.full((2, 2), 4.0)}}},
        "buffers": {"mapping": {"w_avg": jnp.array([1.0, 2.0, 3.0])}, "L0": {"magnitude_ema": jnp.array(7.0)}},
    }
    out = jax.jit(update_ema_variables)(ema_vars, g_vars, 0.25)
    np.testing.assert_array_equal(np.asarray(out["params"]["mapping"]["fc0"]["weight"]), np.full((2, 2), 3.0))
    np.testing.assert_array_equal(np.asarray(out["buffers"]["mapping"]["w_avg"]), [1.0, 2.0, 3.0])
    assert float(out["buffers"]["L0"]["magnitude_ema"]) == 7.0
    # copy_ keeps the destination dtype.
    copied = copy_buffers({"x": jnp.zeros((2,), jnp.bfloat16)}, {"x": jnp.array([1.5, 2.5], jnp.float32)})
    assert copied["x"].dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="collections"):
        update_ema_variables(ema_vars, {"params": g_vars["params"]}, 0.5)
