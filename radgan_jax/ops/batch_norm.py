"""BatchNorm with torch `BatchNorm2d` semantics, NHWC (channels last), used by every ported torch network.

Why not `flax.linen.BatchNorm`: in train mode torch normalises with the biased batch variance but moves the
running variance toward the UNBIASED one (x n/(n-1)); flax uses the biased one for both. On small maps that
is far outside the reference tolerances (e.g. 64/63 at the 8x8 maps of EfficientNet's construction forward).
`momentum` is torch's (weight of the new batch statistic). Batch statistics are plain means over every
axis but the last: under `jax.jit` with a batch-sharded input that is the mean over the GLOBAL batch
(mesh-invariant). `axis_name` (inside shard_map/pmap) keeps per-device statistics like the original's DDP and
averages only the running-stat update across devices.
`group_size` gets the same per-GPU statistics without shard_map, and independent of the mesh: the batch is cut
into consecutive groups of `group_size` rows (the original's `batch_gpu`), each normalised by its own
statistics ("ghost" batch norm), and the running statistics move by the mean of the groups' updates.
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
    group_size: int = 0  # >0: statistics per group of this many rows (see module docstring); 0: whole batch

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
            xf = x.astype(jnp.float32)
            groups = self._num_groups(x.shape[0])
            xg = xf.reshape((groups, x.shape[0] // groups) + x.shape[1:])
            axes = tuple(range(1, xg.ndim - 1))
            mean = jnp.mean(xg, axes)  # (groups, c)
            var = jnp.mean(jnp.square(xg - mean.reshape((groups,) + (1,) * (xg.ndim - 2) + (c,))), axes)
            if not self.is_initializing():
                n = xg[0].size // c
                m = self.momentum
                new_mean = (1 - m) * ra_mean.value + m * jnp.mean(mean, 0)
                new_var = (1 - m) * ra_var.value + m * jnp.mean(var, 0) * (n / max(n - 1, 1))
                if self.axis_name is not None:
                    new_mean = jax.lax.pmean(new_mean, self.axis_name)
                    new_var = jax.lax.pmean(new_var, self.axis_name)
                ra_mean.value, ra_var.value = new_mean, new_var
                if count is not None:
                    count.value = count.value + 1
            inv = jax.lax.rsqrt(var + self.epsilon)
            bshape = (groups,) + (1,) * (xg.ndim - 2) + (c,)
            y = (xg - mean.reshape(bshape)) * inv.reshape(bshape)
            y = y.reshape(x.shape).astype(x.dtype)
            return y * scale.astype(x.dtype) + bias.astype(x.dtype)
        mean, var = ra_mean.value, ra_var.value
        y = (x - mean.astype(x.dtype)) * jax.lax.rsqrt(var + self.epsilon).astype(x.dtype)
        return y * scale.astype(x.dtype) + bias.astype(x.dtype)

    def _num_groups(self, n: int) -> int:
        if self.group_size <= 0 or self.group_size >= n:
            return 1
        if n % self.group_size:
            raise ValueError(f"TorchBatchNorm: batch of {n} rows does not split into groups of {self.group_size}")
        return n // self.group_size
