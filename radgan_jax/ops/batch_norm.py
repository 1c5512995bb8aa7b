"""BatchNorm with torch `BatchNorm2d` semantics, NHWC (channels last), used by every ported torch network.

Why not `flax.linen.BatchNorm`: in train mode torch normalises with the biased batch variance but moves the
running variance toward the UNBIASED one (x n/(n-1)); flax uses the biased one for both. On small maps that
is far outside the reference tolerances (e.g. 64/63 at the 8x8 maps of EfficientNet's construction forward).
`momentum` is torch's (weight of the new batch statistic). Batch statistics are plain means over every
axis but the last: under `jax.jit` with a batch-sharded input that is the mean over the GLOBAL batch
(mesh-invariant). `axis_name` (inside shard_map/pmap) keeps per-device statistics like the original's DDP and
averages only the running-stat update across devices.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class TorchBatchNorm(nn.Module):
    epsilon: float = 1e-5
    momentum: float = 0.1
    axis_name: str | None = None
    track_count: bool = False  # keep torch's num_batches_tracked (needed to round-trip official states)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        count = (self.variable("batch_stats", "num_batches_tracked", lambda: jnp.zeros((), jnp.int32))
                 if self.track_count else None)
        if train:
            axes = tuple(range(x.ndim - 1))
            xf = x.astype(jnp.float32)
            mean = jnp.mean(xf, axes)
            var = jnp.mean(jnp.square(xf - mean), axes)
            if not self.is_initializing():
                n = x.size // c
                m = self.momentum
                new_mean = (1 - m) * ra_mean.value + m * mean
                new_var = (1 - m) * ra_var.value + m * var * (n / max(n - 1, 1))
                if self.axis_name is not None:
                    new_mean = jax.lax.pmean(new_mean, self.axis_name)
                    new_var = jax.lax.pmean(new_var, self.axis_name)
                ra_mean.value, ra_var.value = new_mean, new_var
                if count is not None:
                    count.value = count.value + 1
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (x - mean.astype(x.dtype)) * jax.lax.rsqrt(var + self.epsilon).astype(x.dtype)
        return y * scale.astype(x.dtype) + bias.astype(x.dtype)
