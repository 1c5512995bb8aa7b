"""Hinge GAN losses of the projected discriminator, path-length penalty and classifier guidance (pure JAX).

Reduction semantics of the official code (autonomousvision/stylegan-xl 4241ff9):
  * `MultiScaleD.forward` (pg_modules/discriminator.py L147-152) returns, per backbone, a tensor [N, L] (the
    flattened logits of its mini discs concatenated: L = 4 discs x 4x4 = 64 at 224 input).
  * `ProjectedDiscriminator.forward` (L193-211) does `logits += tensor` into a Python list. `list += tensor`
    iterates the tensor's first axis, so the list holds one [L] entry **per sample per backbone** (N * B entries).
  * loss.py L147 / L161 / L107: `sum(relu(1 + l).mean() for l in logits)`, `sum(relu(1 - l).mean() ...)`,
    `sum((-l).mean() ...)`: each entry is averaged over its L logits, then entries are **summed** over samples
    and backbones. So  loss = sum_b sum_n mean_l(...), which grows linearly with the per-GPU batch N.
  * `gain` (the phase interval) is ignored by ProjectedGANLoss, and training_loop.py L339-349 sums gradients over
    the `batch_gpu` rounds of a step and averages over GPUs; the reported 'Loss/D/loss' is loss_Dgen + loss_Dreal.
`reduction='sum_samples'` (default) reproduces this; `reduction='batch_mean'` divides every backbone's term by N
(i.e. sum_b mean_{n,l}), which makes the loss independent of the batch size (learning rates then differ by N).

Metrics mirror the official `training_stats.report` names (loss.py L114-118, L150-151, L164-166); scores/signs are
means over all logits of all backbones (training_stats reports element means).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

REDUCTIONS = ("sum_samples", "batch_mean")
PL_DECAY = 0.01  # loss.py L54
PL_BATCH_SHRINK = 2  # loss.py L53
PL_START_NIMG = 1_000_000  # loss.py L124: the penalty starts after 1M images


def _check(logits: Sequence[jax.Array], what: str, reduction: str) -> list[jax.Array]:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{what}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if isinstance(logits, jax.Array) or not len(logits):
        raise ValueError(f"{what}: expected a non-empty list of per-backbone logits arrays [N, ...]")
    out = []
    for b, l in enumerate(logits):
        if l.ndim < 1 or l.shape[0] == 0:
            raise ValueError(f"{what}: backbone {b} logits have shape {l.shape}; expected [N, ...] with N >= 1")
        out.append(jnp.reshape(l, (l.shape[0], -1)).astype(jnp.float32))  # = .view(N, -1) in MultiScaleD
    return out


def _reduce(per_logit: list[jax.Array], reduction: str) -> jax.Array:
    """sum_b sum_n mean_l (sum_samples) or sum_b mean_n mean_l (batch_mean) of per-logit terms [N, L]."""
    total = jnp.zeros((), jnp.float32)
    for t in per_logit:
        per_sample = jnp.mean(t, axis=1)  # one official list entry = one sample of one backbone
        total = total + (jnp.sum(per_sample) if reduction == "sum_samples" else jnp.mean(per_sample))
    return total


def _score_metrics(logits: list[jax.Array], tag: str) -> dict[str, jax.Array]:
    flat = jnp.concatenate([jnp.ravel(l) for l in logits])
    return {f"Loss/scores/{tag}": jnp.mean(flat), f"Loss/signs/{tag}": jnp.mean(jnp.sign(flat))}


def d_hinge_loss(logits_real: Sequence[jax.Array], logits_fake: Sequence[jax.Array],
                 reduction: str = "sum_samples") -> tuple[jax.Array, dict[str, jax.Array]]:
    """Discriminator hinge loss: relu(1 - real) + relu(1 + fake), reduced as in the module docstring.

    `logits_real` / `logits_fake`: one array [N, ...] per backbone (trailing axes are flattened per sample).
    Real and fake batches may differ in size. Returns (loss_Dgen + loss_Dreal, metrics).
    """
    real = _check(logits_real, "d_hinge_loss(logits_real)", reduction)
    fake = _check(logits_fake, "d_hinge_loss(logits_fake)", reduction)
    loss_real = _reduce([jax.nn.relu(1 - l) for l in real], reduction)  # loss.py L161
    loss_fake = _reduce([jax.nn.relu(1 + l) for l in fake], reduction)  # loss.py L147
    loss = loss_fake + loss_real
    metrics = {"Loss/D/loss": loss, "Loss/D/loss_real": loss_real, "Loss/D/loss_fake": loss_fake}
    metrics.update(_score_metrics(real, "real"))
    metrics.update(_score_metrics(fake, "fake"))
    return loss, metrics


def g_hinge_loss(logits_fake: Sequence[jax.Array], reduction: str = "sum_samples",
                 guidance_loss: jax.Array | None = None,
                 cls_weight: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Generator loss -logits (loss.py L107), plus `cls_weight * guidance_loss` when cls_weight != 0 (L110-114).

    `guidance_loss` is the classifier-guidance cross entropy (`classifier_guidance_loss`); train.py uses it only
    for super-resolution stages of a conditional model (L296, L313), with weight `--cls_weight` (default 0).
    """
    fake = _check(logits_fake, "g_hinge_loss(logits_fake)", reduction)
    loss = _reduce([-l for l in fake], reduction)
    metrics = _score_metrics(fake, "fake")
    if cls_weight:
        if guidance_loss is None:
            raise ValueError("g_hinge_loss: cls_weight is non-zero but no guidance_loss was given")
        loss = loss + cls_weight * guidance_loss
        metrics["Loss/G/guidance_loss"] = guidance_loss
    metrics["Loss/G/loss"] = loss
    return loss, metrics


def classifier_guidance_loss(class_logits: jax.Array, c_onehot: jax.Array) -> jax.Array:
    """Mean cross entropy of a frozen classifier's logits [N, K] against `argmax(c)` (loss.py L64, L112).

    The classifier (deit_small_distilled_patch16_224 in train.py L297) sees `normalize((img + 1) / 2)` resized to
    224; running it is the caller's job. `torch.nn.CrossEntropyLoss` averages over the batch.
    """
    labels = jnp.argmax(c_onehot, axis=1)
    logp = jax.nn.log_softmax(class_logits.astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def pl_noise_scale(height: int, width: int) -> float:
    """The path-length noise is `randn(img.shape) / sqrt(H * W)` (loss.py L129)."""
    return 1.0 / float(height * width) ** 0.5


def path_length_penalty(pl_grads: jax.Array, pl_mean: jax.Array,
                        pl_decay: float = PL_DECAY) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Path-length penalty from `d sum(img * noise) / d ws` of shape [N, num_ws, w_dim] (loss.py L132-135).

    lengths = sqrt(mean_ws(sum_wdim(g^2))); new_pl_mean = pl_mean + (mean(lengths) - pl_mean) * pl_decay (lerp);
    penalty = (lengths - new_pl_mean)^2 per sample; as in the official code the gradient also flows through
    new_pl_mean here. Returns (penalty [N], new_pl_mean, lengths [N]). The caller stores
    `stop_gradient(new_pl_mean)` (`pl_mean.copy_(pl_mean.detach())`) and minimises
    `mean(penalty) * pl_weight` (L137-140); SG-XL does NOT multiply by the G reg interval (`gain` is unused),
    uses pl_weight=2 in the stem stage and 0 for super-resolution (train.py L293, L312), on half the batch
    (PL_BATCH_SHRINK), only once cur_nimg >= 1e6 (PL_START_NIMG), in the 'Greg' phase every G_reg_interval=4 steps.
    """
    if pl_grads.ndim != 3:
        raise ValueError(f"path_length_penalty: pl_grads must be [N, num_ws, w_dim], got shape {pl_grads.shape}")
    lengths = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(pl_grads), axis=2), axis=1))
    new_mean = pl_mean + (jnp.mean(lengths) - pl_mean) * pl_decay
    return jnp.square(lengths - new_mean), new_mean, lengths
