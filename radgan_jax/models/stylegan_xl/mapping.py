"""StyleGAN-XL mapping network: z + ImageNet class embedding -> w, with per-class w_avg and truncation.

Faithful to `MappingNetwork` of stylegan-xl (`training/networks_stylegan3_resetting.py`):
- z is normalised by its 2nd moment; the class enters as a row of a 1000x320 embedding table looked up
  with `c.argmax(1)` (the table ships with StyleGAN-XL as ImageNet class embeddings of
  tf_efficientnet_lite0), projected by an lrelu FC to z_dim, normalised, and concatenated after z;
- `num_layers` lrelu FC layers with lr multiplier 0.01;
- `w_avg` is per class ([c_dim, w_dim]); truncation lerps each sample toward its own class centre, on ws
  rows [:truncation_cutoff]; the EMA update runs sequentially over the batch, so a class that appears
  twice is updated twice, as the original's Python loop does.
State: params {embed, embed_proj, fc0..}, buffers {w_avg}.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from radgan_jax.models.stylegan_xl.fully_connected import FullyConnected


def normalize_2nd_moment(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=1, keepdims=True) + eps)


def torch_lerp(start: jax.Array, end: jax.Array, weight: float) -> jax.Array:
    """torch.lerp's formula (it switches form at weight 0.5 for accuracy), to match it to the last ulp."""
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


class EmbeddingTable(nn.Module):
    """`torch.nn.Embedding` equivalent whose table is param `weight` [num, dim] (init N(0, 1))."""

    num: int
    dim: int

    @nn.compact
    def __call__(self, idx: jax.Array) -> jax.Array:
        table = self.param("weight", lambda k, s: jax.random.normal(k, s, jnp.float32), (self.num, self.dim))
        return jnp.take(table, idx, axis=0)


class MappingNetwork(nn.Module):
    z_dim: int
    c_dim: int
    w_dim: int
    num_ws: int
    num_layers: int = 2
    lr_multiplier: float = 0.01
    w_avg_beta: float = 0.998
    embed_num: int = 1000  # rows of the ImageNet class-embedding table
    embed_dim: int = 320

    def setup(self):
        # torch.nn.Embedding default init N(0, 1); real runs load the shipped table (see tools/).
        self.embed = EmbeddingTable(self.embed_num, self.embed_dim)
        if self.c_dim > 0:
            if self.c_dim > self.embed_num:
                raise ValueError(f"c_dim={self.c_dim} exceeds the {self.embed_num}-row class-embedding table")
            self.embed_proj = FullyConnected(self.embed_dim, self.z_dim, activation="lrelu")
        features = [self.z_dim * (2 if self.c_dim > 0 else 1)] + [self.w_dim] * self.num_layers
        self.fcs = [FullyConnected(features[i], features[i + 1], activation="lrelu",
                                   lr_multiplier=self.lr_multiplier, name=f"fc{i}")
                    for i in range(self.num_layers)]
        shape = (self.c_dim, self.w_dim) if self.c_dim > 0 else (self.w_dim,)
        self.w_avg = self.variable("buffers", "w_avg", lambda: jnp.zeros(shape, jnp.float32))

    def embed_class(self, c: jax.Array) -> jax.Array:
        """Class vector (one-hot or scores, [N, c_dim]) -> normalised projected embedding [N, z_dim]."""
        rows = self.embed(jnp.argmax(c, axis=1))
        proj = self.embed_proj(rows)
        self.sow("intermediates", "embed_rows", rows)
        self.sow("intermediates", "embed_proj_out", proj)
        return normalize_2nd_moment(proj)

    def __call__(
        self,
        z: jax.Array,
        c: jax.Array | None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> jax.Array:
        """[N, z_dim], [N, c_dim] -> ws [N, num_ws, w_dim]."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [N, {self.z_dim}], got {z.shape}")
        x = normalize_2nd_moment(z.astype(jnp.float32))
        self.sow("intermediates", "z_normalized", x)
        labels = None
        if self.c_dim > 0:
            if c is None or c.shape != (z.shape[0], self.c_dim):
                raise ValueError(f"c must be [N, {self.c_dim}] (one-hot), got {None if c is None else c.shape}")
            labels = jnp.argmax(c, axis=1)
            y = self.embed_class(c)
            self.sow("intermediates", "embed_proj_normalized", y)
            x = jnp.concatenate([x, y], axis=1)
        self.sow("intermediates", "fc_input_concat", x)
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            self.sow("intermediates", f"fc{i}_out", x)

        if update_emas:
            self.w_avg.value = self._updated_w_avg(x, labels)

        cutoff = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
        ws = jnp.broadcast_to(x[:, None, :], (x.shape[0], self.num_ws, self.w_dim))
        if truncation_psi != 1:
            centre = self.w_avg.value[labels] if labels is not None else self.w_avg.value[None]
            centre = jnp.broadcast_to(centre[:, None, :], ws.shape)
            truncated = torch_lerp(centre, ws, truncation_psi)
            rows = (jnp.arange(self.num_ws) < cutoff)[None, :, None]
            ws = jnp.where(rows, truncated, ws)
        return ws

    def _updated_w_avg(self, x: jax.Array, labels: jax.Array | None) -> jax.Array:
        x = jax.lax.stop_gradient(x)
        if labels is None:
            return torch_lerp(jnp.mean(x, axis=0), self.w_avg.value, self.w_avg_beta)

        def step(w_avg, xi_label):
            xi, label = xi_label
            return w_avg.at[label].set(torch_lerp(xi, w_avg[label], self.w_avg_beta)), None

        w_avg, _ = jax.lax.scan(step, self.w_avg.value, (x, labels))
        return w_avg
