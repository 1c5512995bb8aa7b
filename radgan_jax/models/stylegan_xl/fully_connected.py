"""StyleGAN2/3 `FullyConnectedLayer` with equalized learning rate (runtime weight/bias gains).

Stored weight = N(0, 1) * weight_init / lr_multiplier and bias = bias_init / lr_multiplier; at run time
the layer uses weight * lr_multiplier / sqrt(in_features) and bias * lr_multiplier (Karras et al. 2018,
"equalized learning rate"; `training/networks_stylegan3_resetting.py::FullyConnectedLayer`).
Layout: `weight` is [in, out] (the transpose of the original's [out, in]).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LRELU_GAIN = float(np.sqrt(2))  # bias_act 'lrelu' default gain


def lrelu(x: jax.Array, slope: float = 0.2, gain: float = LRELU_GAIN) -> jax.Array:
    return jnp.where(x >= 0, x, x * slope) * gain


class FullyConnected(nn.Module):
    in_features: int
    out_features: int
    activation: str = "linear"  # 'linear' | 'lrelu'
    lr_multiplier: float = 1.0
    weight_init: float = 1.0
    bias_init: float | Sequence[float] = 0.0
    use_bias: bool = True
    precision: jax.lax.Precision | None = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.activation not in ("linear", "lrelu"):
            raise ValueError(f"unknown activation {self.activation!r}; expected 'linear' or 'lrelu'")
        scale = self.weight_init / self.lr_multiplier
        weight = self.param("weight", lambda k, s: jax.random.normal(k, s, jnp.float32) * scale,
                            (self.in_features, self.out_features))
        w = weight.astype(x.dtype) * (self.lr_multiplier / np.sqrt(self.in_features))
        x = jnp.matmul(x, w, precision=self.precision)
        if self.use_bias:
            init = np.broadcast_to(np.asarray(self.bias_init, np.float32), [self.out_features])
            bias = self.param("bias", lambda k, s: jnp.asarray(init / self.lr_multiplier), (self.out_features,))
            x = x + bias.astype(x.dtype) * self.lr_multiplier
        if self.activation == "lrelu":
            x = lrelu(x)
        return x
