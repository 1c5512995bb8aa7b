"""Hinge losses with hand-computed numbers and the reduction semantics of stylegan-xl training/loss.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radgan_jax.train import gan_losses as gl
from radgan_jax.train.gan_losses import path_length_penalty, pl_noise_scale

# Jitted once per input structure: much cheaper on CPU than dispatching every small op eagerly.
d_hinge_loss = jax.jit(gl.d_hinge_loss, static_argnames="reduction")
g_hinge_loss = jax.jit(gl.g_hinge_loss, static_argnames=("reduction", "cls_weight"))
classifier_guidance_loss = jax.jit(gl.classifier_guidance_loss)

# One backbone, N=2 samples, L=2 logits each.
REAL = jnp.array([[0.5, 2.0], [-1.0, 1.0]])  # relu(1 - l) = [[0.5, 0], [2, 0]] -> per-sample means 0.25, 1.0
FAKE = jnp.array([[0.0, -3.0], [1.0, -1.0]])  # relu(1 + l) = [[1, 0], [2, 0]] -> per-sample means 0.5, 1.0


def test_d_hinge_by_hand():
    loss, m = d_hinge_loss([REAL], [FAKE])
    assert float(m["Loss/D/loss_real"]) == pytest.approx(1.25)  # 0.25 + 1.0 (summed over samples)
    assert float(m["Loss/D/loss_fake"]) == pytest.approx(1.5)  # 0.5 + 1.0
    assert float(loss) == pytest.approx(2.75) and float(m["Loss/D/loss"]) == pytest.approx(2.75)
    assert float(m["Loss/scores/real"]) == pytest.approx(0.625)  # mean of the 4 real logits
    assert float(m["Loss/signs/fake"]) == pytest.approx(-0.25)  # signs 0, -1, 1, -1


def test_d_hinge_batch_mean_variant():
    loss, m = d_hinge_loss([REAL], [FAKE], reduction="batch_mean")
    assert float(m["Loss/D/loss_real"]) == pytest.approx(0.625)
    assert float(loss) == pytest.approx(1.375)


def test_g_hinge_by_hand():
    loss, m = g_hinge_loss([jnp.array([[1.0, 3.0], [-2.0, 0.0]])])  # -l means: -2, +1
    assert float(loss) == pytest.approx(-1.0) and float(m["Loss/G/loss"]) == pytest.approx(-1.0)
    loss_bm, _ = g_hinge_loss([jnp.array([[1.0, 3.0], [-2.0, 0.0]])], reduction="batch_mean")
    assert float(loss_bm) == pytest.approx(-0.5)


def test_saturated_logits_give_zero_d_loss():
    loss, _ = d_hinge_loss([jnp.full((3, 5), 1.0)], [jnp.full((3, 5), -1.0)])
    assert float(loss) == 0.0


def test_sum_over_backbones_and_per_backbone_logit_means():
    # Backbone B has 4 logits per sample, A has 1: each backbone is averaged over its own logits, then summed.
    a = jnp.array([[0.0], [0.0]])  # relu(1 - 0) = 1 per sample -> 2
    b = jnp.array([[3.0, 3.0, -1.0, -1.0], [1.0, 1.0, 1.0, 1.0]])  # per-sample means 1.0, 0 -> 1
    loss, m = d_hinge_loss([a, b], [jnp.full((1, 1), -1.0)])
    assert float(m["Loss/D/loss_real"]) == pytest.approx(3.0)
    loss_bm, m_bm = d_hinge_loss([a, b], [jnp.full((1, 1), -1.0)], reduction="batch_mean")
    assert float(m_bm["Loss/D/loss_real"]) == pytest.approx(1.5)  # 1 + 0.5


def test_scaling_invariances():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 16))
    y = jax.random.normal(jax.random.PRNGKey(1), (4, 16))
    base, _ = d_hinge_loss([x], [y])
    dup_batch, _ = d_hinge_loss([jnp.concatenate([x, x])], [jnp.concatenate([y, y])])
    dup_logits, _ = d_hinge_loss([jnp.concatenate([x, x], 1)], [jnp.concatenate([y, y], 1)])
    dup_backbones, _ = d_hinge_loss([x, x], [y, y])
    # Official semantics: sum over samples (doubles with the batch), mean over logits, sum over backbones.
    np.testing.assert_allclose(dup_batch, 2 * base, rtol=1e-6)
    np.testing.assert_allclose(dup_logits, base, rtol=1e-6)
    np.testing.assert_allclose(dup_backbones, 2 * base, rtol=1e-6)
    bm, _ = d_hinge_loss([x], [y], reduction="batch_mean")
    bm_dup, _ = d_hinge_loss([jnp.concatenate([x, x])], [jnp.concatenate([y, y])], reduction="batch_mean")
    np.testing.assert_allclose(bm_dup, bm, rtol=1e-6)
    np.testing.assert_allclose(base, 4 * bm, rtol=1e-6)


def test_trailing_axes_flattened_per_sample():
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 1, 4, 4))
    a, _ = g_hinge_loss([x])
    b, _ = g_hinge_loss([x.reshape(2, 16)])
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_gradients_per_logit():
    # d/dl of relu(1 - l) summed over samples, averaged over L=2 logits: -1/2 where 1 - l > 0, else 0.
    g = jax.jit(jax.grad(lambda r: gl.d_hinge_loss([r], [FAKE])[0]))(REAL)
    np.testing.assert_allclose(g, [[-0.5, 0.0], [-0.5, 0.0]])


def test_classifier_guidance():
    ce = classifier_guidance_loss(jnp.zeros((2, 2)), jnp.array([[1.0, 0.0], [0.0, 1.0]]))
    assert float(ce) == pytest.approx(np.log(2.0))
    loss, m = g_hinge_loss([jnp.array([[1.0, 3.0], [-2.0, 0.0]])], guidance_loss=ce, cls_weight=0.5)
    assert float(loss) == pytest.approx(-1.0 + 0.5 * np.log(2.0))
    assert float(m["Loss/G/guidance_loss"]) == pytest.approx(np.log(2.0))
    with pytest.raises(ValueError, match="guidance_loss"):
        gl.g_hinge_loss([REAL], cls_weight=1.0)


def test_path_length_penalty_by_hand():
    grads = jnp.array([[[3.0, 4.0], [3.0, 4.0]]])  # each ws row has |g|^2 = 25 -> length 5
    pen, new_mean, lengths = jax.jit(path_length_penalty)(grads, jnp.float32(0.0))
    assert float(lengths[0]) == pytest.approx(5.0)
    assert float(new_mean) == pytest.approx(0.05)  # lerp(0, 5, 0.01)
    assert float(pen[0]) == pytest.approx(4.95**2)
    # The official penalty differentiates through the updated mean: P = (0.99 L)^2, dL/dg = g / (num_ws * L).
    g = jax.jit(jax.grad(lambda x: path_length_penalty(x, jnp.float32(0.0))[0].sum()))(grads)
    np.testing.assert_allclose(g, 0.9801 * grads, rtol=1e-5)
    assert pl_noise_scale(16, 16) == pytest.approx(1 / 16)


def test_errors_are_explicit():
    with pytest.raises(ValueError, match="reduction"):
        gl.d_hinge_loss([REAL], [FAKE], reduction="mean")
    with pytest.raises(ValueError, match="list"):
        gl.g_hinge_loss(REAL)
    with pytest.raises(ValueError, match="list"):
        gl.g_hinge_loss([])
    with pytest.raises(ValueError, match="pl_grads"):
        path_length_penalty(jnp.zeros((2, 3)), jnp.float32(0.0))
