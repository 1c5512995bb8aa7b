"""Spectral normalisation with the semantics of `torch.nn.utils.spectral_norm` (the legacy hook API).

The projected discriminator's convs use it (`pg_modules/blocks.py::conv2d`). State per weight, as in torch:

* `weight_orig` (here: the Flax param `kernel`) is the trainable weight;
* `u` (size = out) and `v` (size = the other dims flattened) are non-trainable unit vectors (torch buffers
  `weight_u`, `weight_v`), initialised as normalize(randn) with no warm-up iterations.

The weight matrix is the weight with dimension `dim` moved first and the rest flattened in torch order:
dim=0 for Conv2d/Linear weights (out, in*kh*kw); torch uses dim=1 for ConvTranspose weights (their layout is
(in, out, kh, kw), so dim 1 is the output channel). In train mode each forward first does `n_power_iterations`
power iterations, `v = normalize(W^T u)`, `u = normalize(W v)` (eps 1e-12, F.normalize's clamp), without
gradient, and stores u, v; then sigma = u . (W v) (with gradient through W only) and the weight used is W/sigma.
In eval mode the stored u, v are used as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-12  # torch.nn.utils.spectral_norm default eps
_HI = jax.lax.Precision.HIGHEST  # fp32 matmuls on every backend, as torch's CPU mv


def l2_normalize(x: jax.Array, eps: float = EPS) -> jax.Array:
    """`torch.nn.functional.normalize(x, dim=0, eps)` for a vector: x / max(||x||, eps)."""
    return x / jnp.maximum(jnp.linalg.norm(x), eps)


def weight_matrix(weight: jax.Array, dim: int = 0) -> jax.Array:
    """torch's `_reshape_weight_to_matrix`: move `dim` first, flatten the rest (row-major, torch layout)."""
    if dim != 0:
        weight = jnp.moveaxis(weight, dim, 0)
    return weight.reshape(weight.shape[0], -1)


def spectral_normalize(weight: jax.Array, u: jax.Array, v: jax.Array, *, update: bool,
                       n_power_iterations: int = 1, dim: int = 0,
                       eps: float = EPS) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Return (weight / sigma, u, v) for a weight in torch layout (e.g. OIHW); u, v are the new (or, with
    update=False, the unchanged) power-iteration vectors. No gradient flows into u and v (torch: no_grad)."""
    mat = weight_matrix(weight, dim)
    if update:
        m = jax.lax.stop_gradient(mat)
        for _ in range(n_power_iterations):
            v = l2_normalize(jnp.matmul(m.T, u, precision=_HI), eps)
            u = l2_normalize(jnp.matmul(m, v, precision=_HI), eps)
    u = jax.lax.stop_gradient(u)
    v = jax.lax.stop_gradient(v)
    sigma = jnp.dot(u, jnp.matmul(mat, v, precision=_HI), precision=_HI)
    return weight / sigma, u, v


def torch_default_init(fan_in: int) -> Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]:
    """PyTorch's default Conv2d/Linear init for weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (kaiming_uniform with a=sqrt(5) gives exactly this bound for the weight)."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class SpectralNormConv(nn.Module):
    """`spectral_norm(nn.Conv2d(...))` on NHWC input.

    Variables: params `kernel` (kh, kw, in, out) and `bias` (out); collection `spectral`: `u` (out) and `v`
    (in*kh*kw, flattened in torch's (in, kh, kw) order so official buffers load unchanged).
    Call with `update_stats=True` (torch train mode) and `mutable=['spectral']` to run and store one power
    iteration; with False the stored u, v are used (torch eval mode). During `init` no iteration is done.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    use_bias: bool = True
    n_power_iterations: int = 1
    eps: float = EPS

    @nn.compact
    def __call__(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
        k, cin = self.kernel_size, x.shape[-1]
        fan_in = cin * k * k
        kernel = self.param("kernel", torch_default_init(fan_in), (k, k, cin, self.features))
        u_var = self.variable("spectral", "u",
                              lambda: l2_normalize(jax.random.normal(self.make_rng("params"), (self.features,))))
        v_var = self.variable("spectral", "v",
                              lambda: l2_normalize(jax.random.normal(self.make_rng("params"), (fan_in,))))
        w_oihw = jnp.transpose(kernel, (3, 2, 0, 1))
        update = update_stats and not self.is_initializing()
        w_sn, u, v = spectral_normalize(w_oihw, u_var.value, v_var.value, update=update,
                                        n_power_iterations=self.n_power_iterations, eps=self.eps)
        if update:
            u_var.value, v_var.value = u, v
        p = self.padding
        y = jax.lax.conv_general_dilated(
            x, jnp.transpose(w_sn, (2, 3, 1, 0)).astype(x.dtype), (self.stride, self.stride), [(p, p), (p, p)],
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HI)
        if self.use_bias:
            bias = self.param("bias", torch_default_init(fan_in), (self.features,))
            y = y + bias.astype(y.dtype)
        return y
