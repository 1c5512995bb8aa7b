"""One StyleGAN-XL training iteration as a pure function `(state, batch) -> (state, metrics)`, jitted over a mesh.

The order is the original's phase loop (training_loop.py L306-369, loss.py) with G_reg_interval 4 and
D_reg_interval 16, so the phases are [Gmain, Greg, Dmain, Dreg]:
  1. Gmain: G's hinge loss through the D (train mode: BN statistics and spectral-norm power iteration move),
     plus classifier guidance when cls_weight > 0 (train/guidance.py).
  2. Greg (every 4th iteration, stem stage, after 1 M images, pl_weight > 0): path-length penalty on half the
     batch; a second Adam step of G. The caller decides (`do_pl`, a static flag: two compiled variants).
  3. Dmain: fakes from G with `update_emas=True` on the mapping only (tracks the per-class `w_avg`; the
     synthesis EMAs stay frozen: "enabling emas leads to collapse with PG", loss.py L71), then D on fakes and on
     reals (two train-mode forwards), hinge loss, Adam step of the D heads.
  4. Dreg: a no-op in ProjectedGANLoss (no gradient, so no optimizer step: see train/optim.py).
  5. G_ema: lerp of the parameters, copy of the buffers (ema.py); cur_nimg += batch; step += 1.
Each phase draws its own latents and classes (the original draws len(phases) * batch latents per iteration);
classes follow the training set's label frequencies (`training_set.get_label(randint(len))`).

Gradient accumulation (`micro_batch` < batch, the original's `batch_gpu` rounds): every phase runs its rounds
in a `lax.scan`, summing gradients; BN state, spectral vectors, `w_avg` and `pl_mean` move round by round as in
the original. Round r takes rows r, r+A, r+2A, ... of the batch, so every round is spread over all devices.

Gradient scale. The original sums per-sample hinge terms over each GPU's rounds and averages over GPUs, so its
gradient is sum_{all samples} / num_gpus. We sum over the global batch and divide by `grad_divisor` (the GPU
count of the run being reproduced). Adam (beta1 = 0) is nearly invariant to this scale; it only matters against
eps and nan_to_num's 1e5 clamp. Mesh-invariant by construction: nothing depends on how many devices run it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from radgan_jax import rng
from radgan_jax.ops.blur import blur_images_traced, blur_sigma
from radgan_jax.train import ema as ema_lib
from radgan_jax.train.gan_losses import (
    PL_BATCH_SHRINK,
    PL_DECAY,
    d_hinge_loss,
    g_hinge_loss,
    path_length_penalty,
    pl_noise_scale,
)
from radgan_jax.train.gan_state import D_MUTABLE, GanState


@dataclasses.dataclass(frozen=True)
class GanStepConfig:
    batch_size: int  # global images per iteration
    micro_batch: int  # global images per accumulation round (= batch_size: no accumulation)
    c_dim: int
    z_dim: int
    class_probs: tuple[float, ...] | None = None  # gen_c distribution; None: uniform
    grad_divisor: float = 8.0  # the original's GPU count (gradients are averaged over its GPUs)
    loss_reduction: str = "sum_samples"
    blur_init_sigma: float = 2.0  # train.py L291
    blur_fade_kimg: float = 300.0  # train.py L292
    pl_weight: float = 2.0  # train.py L293 (0 in superres stages, L312)
    pl_batch_shrink: int = PL_BATCH_SHRINK
    pl_decay: float = PL_DECAY
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    unroll_rounds: bool = False  # see _sum_scan
    cls_weight: float = 0.0  # classifier guidance in Gmain (train/guidance.py); needs a classifier

    def __post_init__(self):
        if self.batch_size <= 0 or self.micro_batch <= 0 or self.batch_size % self.micro_batch:
            raise ValueError(f"batch_size {self.batch_size} must be a positive multiple of micro_batch "
                             f"{self.micro_batch}")
        if self.c_dim <= 0:
            raise ValueError("GAN training here is class-conditional: c_dim must be > 0")
        if self.class_probs is not None and len(self.class_probs) != self.c_dim:
            raise ValueError(f"class_probs has {len(self.class_probs)} entries for c_dim {self.c_dim}")
        if self.pl_weight and self.micro_batch % self.pl_batch_shrink:
            raise ValueError(f"micro_batch {self.micro_batch} must be divisible by pl_batch_shrink "
                             f"{self.pl_batch_shrink}")

    @property
    def rounds(self) -> int:
        return self.batch_size // self.micro_batch


def _rounds(x: jax.Array, rounds: int) -> jax.Array:
    """[B, ...] -> [A, B/A, ...] with round r = rows r, r+A, r+2A, ... (each round spread over all shards)."""
    b = x.shape[0]
    return jnp.swapaxes(x.reshape((b // rounds, rounds) + x.shape[1:]), 0, 1)


def _sum_scan(fn: Callable, carry: Any, xs: Any, rounds: int, unroll: bool) -> tuple[Any, Any, Any]:
    """Runs `fn(carry, x) -> (carry, grads, metrics)` over rounds; sums grads, averages metrics.

    `unroll`: a Python loop (one copy of the graph per round) instead of `lax.scan`. XLA:CPU runs convolutions
    inside a while loop ~4x slower (measured: 6.3 s vs 1.3 s per step of the quickstart model), GPU/TPU do not."""

    def body(acc, x):
        carry, g_sum = acc
        carry, grads, metrics = fn(carry, x)
        g_sum = grads if g_sum is None else jax.tree.map(jnp.add, g_sum, grads)
        return (carry, g_sum), metrics

    if rounds == 1 or unroll:
        acc, ms = (carry, None), []
        for r in range(rounds):
            acc, m = body(acc, jax.tree.map(lambda a, r=r: a[r], xs))
            ms.append(m)
        return acc[0], acc[1], jax.tree.map(lambda *v: sum(v) / rounds, *ms)
    first = jax.tree.map(lambda a: a[0], xs)
    (carry, g0), m0 = body((carry, None), first)
    rest = jax.tree.map(lambda a: a[1:], xs)
    (carry, grads), ms = jax.lax.scan(body, (carry, g0), rest)
    metrics = jax.tree.map(lambda a, b: (a + jnp.sum(b, 0)) / rounds, m0, ms)
    return carry, grads, metrics


def make_gan_step(generator: Any, discriminator: Any, cfg: GanStepConfig, g_tx: optax.GradientTransformation,
                  d_tx: optax.GradientTransformation, seed_key: jax.Array, classifier: Any = None
                  ) -> Callable[..., tuple[GanState, dict]]:
    """`step(state, batch, do_pl=False, cls_variables=None) -> (state, metrics)`; batch = {'image': uint8
    [B,H,W,3], 'label': [B]}. `classifier` (a `guidance.GuidanceClassifier`) with `cfg.cls_weight` > 0 adds
    classifier guidance to Gmain; its frozen variables come in as `cls_variables` (an argument, not a constant
    baked into the compiled step).

    Not jitted here: `gan_setup.build` (or plain `jax.jit(..., static_argnames='do_pl')`) does that.
    """
    a = cfg.rounds
    if cfg.cls_weight and classifier is None:
        raise ValueError("GanStepConfig.cls_weight is non-zero but no guidance classifier was given")
    logp = (jnp.log(jnp.asarray(cfg.class_probs, jnp.float32)) if cfg.class_probs is not None
            else jnp.zeros((cfg.c_dim,), jnp.float32))

    def draw_latents(step, phase: str, n: int):
        z = jax.random.normal(rng.derive(seed_key, f"gen_z/{phase}", step=step), (n, cfg.z_dim), jnp.float32)
        labels = jax.random.categorical(rng.derive(seed_key, f"gen_c/{phase}", step=step), logp, shape=(n,))
        return z, jax.nn.one_hot(labels, cfg.c_dim, dtype=jnp.float32)

    def run_d(d_vars, img, c, sigma, key):
        img = blur_images_traced(img, sigma, max_sigma=max(cfg.blur_init_sigma, 0.0))  # loss.py run_D
        return discriminator.apply(d_vars, img, c, train=True, key=key, mutable=list(D_MUTABLE))

    def g_main(state: GanState, sigma, step, cls_variables):
        z, c = draw_latents(step, "Gmain", cfg.batch_size)
        keys = jax.random.split(rng.derive(seed_key, "augment/Gmain", step=step), a)

        def one(d_state, x):
            z_r, c_r, k_r = x

            def loss_fn(g_params):
                img = generator.apply({"params": g_params, **state.g_buffers}, z_r, c_r)
                logits, new_d = run_d(state.d_variables(d_state), img, c_r, sigma, k_r)
                loss, metrics = g_hinge_loss(logits, cfg.loss_reduction)
                if cfg.cls_weight:
                    # Each original GPU adds cls_weight * (its mean CE) and gradients are averaged over GPUs: the
                    # guidance gradient is cls_weight * d(mean CE of the round), whatever grad_divisor is.
                    ce = classifier.loss(cls_variables, img, c_r)
                    loss = loss + cfg.cls_weight * cfg.grad_divisor * ce
                    metrics = {**metrics, "Loss/G/guidance_loss": ce, "Loss/G/loss": loss}
                return loss / cfg.grad_divisor, (new_d, metrics)

            (_, (new_d, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
            return new_d, grads, metrics

        d_state, grads, metrics = _sum_scan(one, state.d_state, (_rounds(z, a), _rounds(c, a), keys), a,
                                            cfg.unroll_rounds)
        updates, g_opt = g_tx.update(grads, state.g_opt_state, state.g_params)
        return state.replace(g_params=optax.apply_updates(state.g_params, updates), g_opt_state=g_opt,
                             d_state=d_state), metrics

    def g_pl(state: GanState, step):
        z, c = draw_latents(step, "Greg", cfg.batch_size)
        z, c = _rounds(z, a)[:, :cfg.micro_batch // cfg.pl_batch_shrink], _rounds(c, a)[:, :cfg.micro_batch //
                                                                                    cfg.pl_batch_shrink]
        keys = jax.random.split(rng.derive(seed_key, "pl_noise", step=step), a)

        def one(pl_mean, x):
            z_r, c_r, k_r = x

            def loss_fn(g_params):
                g_vars = {"params": g_params, **state.g_buffers}
                ws = generator.apply(g_vars, z_r, c_r, method=generator.map)
                synth = lambda w: generator.apply(g_vars, w, method=generator.synthesize)  # noqa: E731
                img, vjp = jax.vjp(synth, ws)
                noise = jax.random.normal(k_r, img.shape, img.dtype) * pl_noise_scale(img.shape[1], img.shape[2])
                (pl_grads,) = vjp(noise)  # d sum(img * noise) / d ws, differentiable (create_graph=True)
                penalty, new_mean, lengths = path_length_penalty(pl_grads, pl_mean, cfg.pl_decay)
                loss = jnp.mean(penalty) * cfg.pl_weight
                return loss, (jax.lax.stop_gradient(new_mean), {"Loss/pl_penalty": jnp.mean(penalty),
                                                                 "Loss/G/reg": loss})

            (_, (new_mean, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
            return new_mean, grads, metrics

        pl_mean, grads, metrics = _sum_scan(one, state.pl_mean, (z, c, keys), a, cfg.unroll_rounds)
        updates, g_opt = g_tx.update(grads, state.g_opt_state, state.g_params)
        return state.replace(g_params=optax.apply_updates(state.g_params, updates), g_opt_state=g_opt,
                             pl_mean=pl_mean), metrics

    def d_main(state: GanState, batch, sigma, step):
        z, c = draw_latents(step, "Dmain", cfg.batch_size)
        real = batch["image"].astype(jnp.float32) / 127.5 - 1  # training_loop.py L312
        real_c = jax.nn.one_hot(batch["label"], cfg.c_dim, dtype=jnp.float32)  # label -1 -> all zeros
        keys = jax.random.split(rng.derive(seed_key, "augment/Dmain", step=step), 2 * a).reshape(a, 2)

        def mapped_then_synth(module, z, c):  # run_G(update_emas=True): only the mapping tracks w_avg
            return module.synthesize(module.map(z, c, update_emas=True), update_emas=False)

        def one(carry, x):
            d_state, g_buffers = carry
            z_r, c_r, real_r, real_c_r, k_r = x
            fake, upd = generator.apply({"params": state.g_params, **g_buffers}, z_r, c_r,
                                        method=mapped_then_synth, mutable=["buffers"])
            fake = jax.lax.stop_gradient(fake)
            g_buffers = {**g_buffers, **upd}

            def loss_fn(d_params):
                vars_ = {"params": {**state.d_frozen, **d_params}}
                logits_fake, st = run_d({**vars_, **d_state}, fake, c_r, sigma, k_r[0])
                logits_real, st = run_d({**vars_, **st}, real_r, real_c_r, sigma, k_r[1])
                loss, metrics = d_hinge_loss(logits_real, logits_fake, cfg.loss_reduction)
                return loss / cfg.grad_divisor, (st, metrics)

            (_, (new_d, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d_params)
            return (new_d, g_buffers), grads, metrics

        xs = (_rounds(z, a), _rounds(c, a), _rounds(real, a), _rounds(real_c, a), keys)
        (d_state, g_buffers), grads, metrics = _sum_scan(one, (state.d_state, state.g_buffers), xs, a,
                                                         cfg.unroll_rounds)
        updates, d_opt = d_tx.update(grads, state.d_opt_state, state.d_params)
        return state.replace(d_params=optax.apply_updates(state.d_params, updates), d_opt_state=d_opt,
                             d_state=d_state, g_buffers=g_buffers), metrics

    def step_fn(state: GanState, batch: dict[str, jax.Array], do_pl: bool = False, cls_variables: Any = None
                ) -> tuple[GanState, dict]:
        step = state.step
        sigma = blur_sigma(state.cur_nimg, cfg.blur_init_sigma, cfg.blur_fade_kimg)
        state, metrics = g_main(state, sigma, step, cls_variables)
        if do_pl:
            state, pl_metrics = g_pl(state, step)
            metrics = {**metrics, **pl_metrics}
        g_fake = {f"G/{k}" if k.startswith("Loss/scores") or k.startswith("Loss/signs") else k: v
                  for k, v in metrics.items()}
        state, d_metrics = d_main(state, batch, sigma, step)
        beta = ema_lib.ema_beta(cfg.batch_size, state.cur_nimg, cfg.ema_kimg, cfg.ema_rampup)
        state = state.replace(
            ema_params=ema_lib.update_ema(state.ema_params, state.g_params, beta),
            ema_buffers=ema_lib.copy_buffers(state.ema_buffers, state.g_buffers),
            cur_nimg=state.cur_nimg + cfg.batch_size, step=step + 1)
        out = {**g_fake, **d_metrics, "Progress/blur_sigma": jnp.asarray(sigma, jnp.float32),
               "Progress/ema_beta": jnp.asarray(beta, jnp.float32), "Loss/pl_mean": state.pl_mean}
        return state, out

    return step_fn


def pl_due(step: int, cur_nimg: int, pl_weight: float, g_reg_interval: int = 4, start_nimg: int = 1_000_000
           ) -> bool:
    """Does iteration `step` run the Greg phase? (phase interval 4, loss.py L124: cur_nimg >= 1e6, weight > 0)."""
    return bool(pl_weight) and step % g_reg_interval == 0 and cur_nimg >= start_nimg


def class_probs_from_counts(counts: Any) -> tuple[float, ...] | None:
    """Label frequencies -> probabilities for gen_c (None for no counts)."""
    if counts is None:
        return None
    c = np.asarray(counts, np.float64)
    if c.ndim != 1 or c.sum() <= 0 or (c < 0).any():
        raise ValueError(f"class counts must be non-negative with a positive sum, got {counts}")
    return tuple(float(v) for v in c / c.sum())


__all__ = ["GanStepConfig", "make_gan_step", "pl_due", "class_probs_from_counts"]
