"""Everything a GAN training run builds before its first step: models, optimizers, state on the mesh, the jitted
step, and the helpers that sample from G_ema. Pure setup; the job (jobs/train_gan.py) owns files and the loop."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from radgan_jax import rng
from radgan_jax.parallel.sharding import global_from_host, host_from_global, pad_to_multiple, replicated
from radgan_jax.train import gan_models, guidance, optim
from radgan_jax.train.ema import default_ema_kimg
from radgan_jax.train.gan_state import GanState, create_gan_state
from radgan_jax.train.gan_steps import GanStepConfig, make_gan_step


@dataclasses.dataclass
class GanSetup:
    spec: Any
    generator: Any
    discriminator: Any
    head_only: bool
    state: GanState
    step_cfg: GanStepConfig
    step_fn: Any  # BoundStep: jitted (state, batch, do_pl) -> (state, metrics)
    pl_weight: float
    state_sharding: Any


@dataclasses.dataclass
class BoundStep:
    """The jitted step with its frozen extra inputs (the guidance classifier's variables) bound."""

    jitted: Any
    cls_variables: Any = None

    def __call__(self, state: GanState, batch: Any, do_pl: bool = False) -> tuple[GanState, dict]:
        return self.jitted(state, batch, do_pl=do_pl, cls_variables=self.cls_variables)

    def lower(self, state: GanState, batch: Any, do_pl: bool = False) -> Any:
        return self.jitted.lower(state, batch, do_pl=do_pl, cls_variables=self.cls_variables)


def guidance_classifier(train_cfg: Any, head_only: bool, c_dim: int, mesh: Any) -> tuple[Any, Any]:
    """(classifier, replicated variables) when train.cls_weight > 0, else (None, None)."""
    if not float(train_cfg.get("cls_weight", 0.0)):
        return None, None
    if not head_only:
        raise gan_models.ModelSetupError(
            "train.cls_weight > 0 in the stem stage: classifier guidance is for super-resolution stages only, as in "
            "the original (train.py L296); set it on the 32 px and later stages")
    if c_dim <= 1:
        raise gan_models.ModelSetupError("train.cls_weight > 0 needs a class-conditional model (c_dim > 1)")
    try:
        classifier, variables = guidance.load_guidance_classifier(str(train_cfg.cls_model),
                                                                  str(train_cfg.cls_weights), c_dim)
    except guidance.GuidanceError as e:
        raise gan_models.ModelSetupError(str(e)) from None
    return classifier, jax.device_put(variables, replicated(mesh))


def pl_weight_of(train_cfg: Any, head_only: bool) -> float:
    """-1 = the original's choice: 2.0 for the stem, 0 for superres stages (train.py L293, L312)."""
    w = float(train_cfg.pl_weight)
    return (0.0 if head_only else 2.0) if w < 0 else w


def build(config: Any, mesh: Any, class_probs: tuple[float, ...] | None) -> GanSetup:
    tc, res = config.train, int(config.model.resolution)
    seed_key = rng.root_key(int(config.seed))
    class_table = gan_models.class_embedding_table(str(tc.get("class_embedding", "")))
    spec, g_vars, g_mask, head_only = gan_models.build_generator(config.model, tc.prev_stage_checkpoint,
                                                                 rng.derive(seed_key, "init/G"), class_table)
    generator = gan_models.generator_module(spec, str(tc.synthesis_dtype))
    discriminator = gan_models.make_discriminator(config.discriminator, res)
    d_vars = gan_models.init_discriminator(discriminator, config.discriminator, res, spec.c_dim,
                                           rng.derive(seed_key, "init/D"), class_table)
    g_tx = optim.make_optimizer(float(tc.g_lr), reg_interval=optim.G_REG_INTERVAL, trainable_mask=g_mask)
    d_tx = optim.make_optimizer(float(tc.d_lr), reg_interval=optim.D_REG_INTERVAL)
    state = create_gan_state(g_vars, d_vars, g_tx, d_tx)
    state_sharding = jax.tree.map(lambda _: replicated(mesh), state)
    state = jax.device_put(state, state_sharding)

    batch = int(tc.batch_size)
    micro = int(tc.micro_batch) or batch
    mode = str(tc.unroll_rounds)
    if mode not in ("auto", "unroll", "scan"):
        raise ValueError(f"train.unroll_rounds must be 'auto', 'unroll' or 'scan', got {mode!r}")
    unroll = jax.default_backend() == "cpu" if mode == "auto" else mode == "unroll"
    pl_weight = pl_weight_of(tc, head_only)
    step_cfg = GanStepConfig(
        batch_size=batch, micro_batch=micro, c_dim=spec.c_dim, z_dim=spec.z_dim, class_probs=class_probs,
        grad_divisor=float(tc.grad_divisor), loss_reduction=str(tc.loss_reduction),
        blur_init_sigma=float(tc.blur_init_sigma), blur_fade_kimg=float(tc.blur_fade_kimg), pl_weight=pl_weight,
        ema_kimg=default_ema_kimg(batch) if float(tc.ema_kimg) < 0 else float(tc.ema_kimg),
        ema_rampup=None if float(tc.ema_rampup) < 0 else float(tc.ema_rampup), unroll_rounds=unroll,
        cls_weight=float(tc.get("cls_weight", 0.0)))
    classifier, cls_variables = guidance_classifier(tc, head_only, spec.c_dim, mesh)
    fn = make_gan_step(generator, discriminator, step_cfg, g_tx, d_tx, rng.derive(seed_key, "train"), classifier)
    jitted = jax.jit(fn, static_argnames=("do_pl",), out_shardings=(state_sharding, replicated(mesh)))
    step_fn = BoundStep(jitted, cls_variables)
    return GanSetup(spec, generator, discriminator, head_only, state, step_cfg, step_fn, pl_weight, state_sharding)


def abstract_state(state: GanState) -> GanState:
    """Restore target: shapes, dtypes and shardings of `state`."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def ema_sampler(generator: Any, mesh: Any) -> Any:
    """`sample(ema_variables, z, c) -> host uint8 images`: G_ema at psi 1 on the mesh (rows padded to the
    batch shards and dropped again)."""

    @jax.jit
    def run(variables, z, c):
        img = generator.apply(variables, z, c)
        return jnp.clip(jnp.round(img * 127.5 + 128), 0, 255).astype(jnp.uint8)

    def sample(variables: Any, z: np.ndarray, c: np.ndarray) -> np.ndarray:
        n = z.shape[0]
        m = pad_to_multiple(n, mesh)
        zp = np.concatenate([z, np.zeros((m - n,) + z.shape[1:], z.dtype)])
        cp = np.concatenate([c, np.repeat(c[:1], m - n, 0)])
        return host_from_global(run(variables, global_from_host(mesh, zp), global_from_host(mesh, cp)))[:n]

    return sample


def grid_latents(seed: int, z_dim: int, c_dim: int, per_class: int, max_classes: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed latents of the sample grid: (z, one-hot c, labels) for `per_class` images of the first classes."""
    classes = min(c_dim, max_classes)
    labels = np.repeat(np.arange(classes), per_class)
    z = np.asarray(jax.random.normal(rng.derive(rng.root_key(seed), "samples/z"), (labels.size, z_dim)))
    return z.astype(np.float32), np.eye(c_dim, dtype=np.float32)[labels], labels
