"""nnU-Net v2's training and validation iterations as pure functions over a `SegState` pytree (jitted over a mesh).

nnunetv2 2.8.1 nnUNetTrainer:
  * `train_step`: the loader's batch of `initial_patch_size` crops goes through the training transforms
    (seg/augment.py, on device here: one key per sample), the network with deep supervision, DC_and_CE on every
    output against the nearest-exact downsampled targets (seg/losses.py), backward, clip_grad_norm_(12), SGD
    (seg/optim.py: lr = PolyLR of the epoch, derived from the optimizer's step count).
  * `validation_step`: crops of the final patch size, no augmentation (only the DS targets), the same loss, and
    tp/fp/fn of argmax on the highest-resolution output (seg/online_eval.py).
Batches come in nnU-Net's layout (data [B, C, H, W], seg [B, 1, H, W]); the steps move channels last.
All randomness is `rng.derive(seed_key, purpose, step=...)`: a resumed run draws exactly what an
uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from radgan_jax import rng
from radgan_jax.seg import losses, online_eval
from radgan_jax.seg.augment import AugmentConfig, augment


class SegState(flax.struct.PyTreeNode):
    step: jax.Array  # optimizer steps done (epoch = step // iterations_per_epoch)
    params: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class SegStepConfig:
    batch_dice: bool
    ds_scales: tuple[tuple[float, ...], ...]  # deep-supervision target scales, highest resolution first
    augment: AugmentConfig | None  # None: no augmentation (tests, ablations)
    ignore_label: int | None = None
    deep_supervision: bool = True


def create_seg_state(params: Any, tx: optax.GradientTransformation) -> SegState:
    return SegState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def _channels_last(data: jax.Array, seg: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.moveaxis(data, 1, -1).astype(jnp.float32), jnp.moveaxis(seg, 1, -1).astype(jnp.int32)


def _targets(seg: jax.Array, cfg: SegStepConfig) -> list[jax.Array] | jax.Array:
    if not cfg.deep_supervision:
        return seg
    return losses.downsample_seg_for_ds(seg, cfg.ds_scales)


def _loss(outputs: Any, seg: jax.Array, cfg: SegStepConfig) -> jax.Array:
    outs = list(outputs) if cfg.deep_supervision else outputs
    return losses.nnunet_loss(outs, _targets(seg, cfg), batch_dice=cfg.batch_dice, ignore_label=cfg.ignore_label)


def make_train_step(apply_fn: Callable[..., Any], tx: optax.GradientTransformation, cfg: SegStepConfig,
                    seed_key: jax.Array) -> Callable[[SegState, dict[str, jax.Array]], tuple[SegState, dict]]:
    """`step(state, {'data': [B, C, S0, S1], 'seg': [B, 1, S0, S1]}) -> (state, {'loss', 'lr'})`."""

    def step(state: SegState, batch: dict[str, jax.Array]) -> tuple[SegState, dict[str, jax.Array]]:
        data, seg = _channels_last(batch["data"], batch["seg"])
        if cfg.augment is not None:
            keys = jax.random.split(rng.derive(seed_key, "seg/augment", step=state.step), data.shape[0])
            data, seg = jax.vmap(functools.partial(augment, cfg=cfg.augment))(keys, data, seg)
        else:
            seg = jnp.where(seg == -1, 0, seg)  # RemoveLabelTansform(-1, 0)

        def loss_fn(params):
            return _loss(apply_fn({"params": params}, data), seg, cfg)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state)
        return new, {"loss": loss}

    return step


def make_val_step(apply_fn: Callable[..., Any], cfg: SegStepConfig
                  ) -> Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]]:
    """`val(params, batch) -> {'loss', 'tp', 'fp', 'fn'}` (counts per foreground class, summed over the batch)."""

    def val(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        data, seg = _channels_last(batch["data"], batch["seg"])
        seg = jnp.where(seg == -1, 0, seg)
        outputs = apply_fn({"params": params}, data)
        loss = _loss(outputs, seg, cfg)
        top = outputs[0] if cfg.deep_supervision else outputs
        tp, fp, fn = online_eval.tp_fp_fn(top, seg, cfg.ignore_label)
        return {"loss": loss, "tp": tp, "fp": fp, "fn": fn}

    return val


def pretrained_params(target: Any, source: Any, head_prefix: Sequence[str] = ("decoder_seg_layers",)
                      ) -> tuple[Any, list[str]]:
    """nnU-Net's `-pretrained_weights` (load_pretrained_weights): every parameter of `source` except the
    segmentation heads replaces `target`'s, with matching shapes required. Returns (params, loaded paths)."""
    flat_t = dict(jax.tree_util.tree_flatten_with_path(target)[0])
    flat_s = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(source)[0]}
    loaded, out = [], []
    for path, value in flat_t.items():
        key = jax.tree_util.keystr(path)
        is_head = any(f"'{h}" in key for h in head_prefix)
        if is_head:
            out.append(value)
            continue
        if key not in flat_s:
            raise ValueError(f"pretrained weights lack {key} (the architectures differ: same plan needed)")
        if tuple(flat_s[key].shape) != tuple(value.shape):
            raise ValueError(f"pretrained {key} has shape {tuple(flat_s[key].shape)}, the network {tuple(value.shape)}")
        out.append(jnp.asarray(flat_s[key], value.dtype))
        loaded.append(key)
    treedef = jax.tree_util.tree_structure(target)
    return jax.tree_util.tree_unflatten(treedef, out), loaded


__all__ = ["SegState", "SegStepConfig", "create_seg_state", "make_train_step", "make_val_step", "pretrained_params"]
