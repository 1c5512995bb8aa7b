"""Our spectral norm equals torch.nn.utils.spectral_norm: u, v, normalised weight and conv output."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radgan_jax.ops.spectral_norm import SpectralNormConv, spectral_normalize

torch = pytest.importorskip("torch")


def _torch_sn_conv(cin, cout, k, stride, pad, bias, seed=0):
    torch.manual_seed(seed)
    return torch.nn.utils.spectral_norm(torch.nn.Conv2d(cin, cout, k, stride, pad, bias=bias))


def _ours_from_torch(m, bias):
    params = {"kernel": jnp.asarray(m.weight_orig.detach().numpy().transpose(2, 3, 1, 0))}
    if bias:
        params["bias"] = jnp.asarray(m.bias.detach().numpy())
    return {"params": params, "spectral": {"u": jnp.asarray(m.weight_u.numpy()), "v": jnp.asarray(m.weight_v.numpy())}}


@pytest.mark.parametrize("bias", [True, False])
def test_conv_matches_torch_train_then_eval(bias):
    cin, cout, k = 6, 5, 4
    m = _torch_sn_conv(cin, cout, k, 2, 1, bias)
    ours = SpectralNormConv(cout, k, stride=2, padding=1, use_bias=bias)
    variables = _ours_from_torch(m, bias)
    rng = np.random.default_rng(0)
    apply = jax.jit(lambda v, x, t: ours.apply(v, x, update_stats=t, mutable=["spectral"]), static_argnums=2)
    m.train()
    for step in range(3):  # k train forwards from the same state: u, v, output agree at every step
        x = rng.standard_normal((2, cin, 8, 8)).astype(np.float32)
        with torch.no_grad():
            ref = m(torch.from_numpy(x)).numpy()
        y, state = apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)), True)
        variables = {"params": variables["params"], "spectral": state["spectral"]}
        np.testing.assert_allclose(np.asarray(y).transpose(0, 3, 1, 2), ref, atol=1e-5, err_msg=f"step {step}")
        np.testing.assert_allclose(state["spectral"]["u"], m.weight_u.numpy(), atol=1e-6)
        np.testing.assert_allclose(state["spectral"]["v"], m.weight_v.numpy(), atol=1e-6)
        w_oihw = jnp.transpose(variables["params"]["kernel"], (3, 2, 0, 1))
        w_sn, _, _ = spectral_normalize(w_oihw, state["spectral"]["u"], state["spectral"]["v"], update=False)
        np.testing.assert_allclose(w_sn, m.weight.detach().numpy(), atol=1e-6)  # torch's W / sigma of this step
    m.eval()
    x = rng.standard_normal((2, cin, 8, 8)).astype(np.float32)
    u_before = m.weight_u.clone().numpy()
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(m.weight_u.numpy(), u_before)  # torch eval does not iterate
    y, state = apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)), False)
    np.testing.assert_allclose(np.asarray(y).transpose(0, 3, 1, 2), ref, atol=1e-5)
    np.testing.assert_array_equal(state["spectral"]["u"], variables["spectral"]["u"])
    np.testing.assert_array_equal(state["spectral"]["v"], variables["spectral"]["v"])


def test_conv_transpose_dim1_weight():
    """torch uses dim=1 for ConvTranspose weights (in, out, kh, kw); our pure function with dim=1 agrees."""
    torch.manual_seed(1)
    m = torch.nn.utils.spectral_norm(torch.nn.ConvTranspose2d(3, 7, 4, 2, 1))
    w0 = m.weight_orig.detach().numpy().copy()
    u0, v0 = m.weight_u.numpy().copy(), m.weight_v.numpy().copy()
    assert u0.shape == (7,) and v0.shape == (3 * 16,)
    m.train()
    with torch.no_grad():
        m(torch.zeros(1, 3, 2, 2))
    w_sn, u, v = spectral_normalize(jnp.asarray(w0), jnp.asarray(u0), jnp.asarray(v0), update=True, dim=1)
    np.testing.assert_allclose(w_sn, m.weight.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(u, m.weight_u.numpy(), atol=1e-6)
    np.testing.assert_allclose(v, m.weight_v.numpy(), atol=1e-6)


def test_init_state_is_unit_and_no_gradient_through_uv():
    ours = SpectralNormConv(4, 3, padding=1)
    x = jnp.ones((1, 5, 5, 2))
    variables = jax.jit(ours.init)(jax.random.PRNGKey(0), x)
    assert variables["spectral"]["u"].shape == (4,) and variables["spectral"]["v"].shape == (2 * 9,)
    np.testing.assert_allclose(jnp.linalg.norm(variables["spectral"]["u"]), 1.0, rtol=1e-6)

    def loss(u):
        w = jnp.ones((4, 2, 3, 3))
        return spectral_normalize(w, u, variables["spectral"]["v"], update=True)[0].sum()

    assert float(jnp.abs(jax.jit(jax.grad(loss))(variables["spectral"]["u"])).sum()) == 0.0
