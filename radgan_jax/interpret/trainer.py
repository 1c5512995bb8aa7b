"""Interpreter training state and pure steps: features are recomputed from ws by the frozen generator inside the
step (never stored), the class vector is the generator's class embedding of c.

`InterpState` is the one pytree a run saves and resumes (step, params, BN running stats, spectral-norm u/v, Adam
state). `make_train_step` / `make_eval_fn` return functions of (state, batch) / (variables, ws, c) whose compiled
core takes the generator variables as a jit *argument* (`functools.partial` of the jitted function): the
generator's weights are never baked into the executable as constants, so one compilation serves any generator of
the same spec, and the weights live once, replicated, on the devices. With a mesh, the batch is sharded over the
mesh's batch axes and everything else replicated; BatchNorm statistics are then global-batch statistics (XLA
all-reduces the means), so the numbers do not depend on the device count beyond float summation order.

Optimizer: Adam, lr 1e-4 (the BigDatasetGAN paper's setting; its train.py default is 1e-3 with 5000 iterations).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from radgan_jax.interpret.features import FeatureGroup, class_embedding, collect_features, synthesize_with_features
from radgan_jax.interpret.losses import dice_per_label, predict_labels, segmentation_loss
from radgan_jax.models.interpreter import Interpreter
from radgan_jax.models.stylegan_xl.generator import Generator
from radgan_jax.parallel.sharding import batch_sharding, host_from_global, pad_to_multiple, replicated

MUTABLE = ("batch_stats", "spectral")
PAPER_LR = 1e-4  # BigDatasetGAN paper: Adam, lr 1e-4, batch 4


class InterpState(flax.struct.PyTreeNode):
    """Everything a training run carries from step to step (saved and restored as one pytree)."""

    step: jax.Array  # optimizer steps done
    params: Any
    batch_stats: Any
    spectral: Any
    opt_state: Any

    def variables(self) -> dict[str, Any]:
        """The interpreter's variable collections ({'params', 'batch_stats', 'spectral'}) for `apply`."""
        return {"params": self.params, "batch_stats": self.batch_stats, "spectral": self.spectral}


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """`interpret.losses.segmentation_loss` settings: CE/BCE plus `dice_weight` x soft Dice."""

    num_labels: int  # background included (the label map's size)
    dice_weight: float = 0.0
    batch_dice: bool = True


@functools.lru_cache(maxsize=8)
def adam(lr: float = PAPER_LR) -> optax.GradientTransformation:
    """Adam with torch's defaults (betas 0.9/0.999, eps 1e-8) at `lr`. Cached: the same lr gives the same object,
    so jitted steps built from it are reused (compiled once per process)."""
    return optax.adam(float(lr))


def create_state(variables: Mapping[str, Any], tx: optax.GradientTransformation) -> InterpState:
    """Fresh state from `init_interpreter`'s variables."""
    params = variables["params"]
    return InterpState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats", {}),
                       spectral=variables.get("spectral", {}), opt_state=tx.init(params))


def _batch_shardings(mesh: Any) -> dict[str, Any]:
    return {"ws": batch_sharding(mesh, 3), "c": batch_sharding(mesh, 1), "masks": batch_sharding(mesh, 3)}


def train_step(gen: Generator, model: Interpreter, tx: optax.GradientTransformation, loss_cfg: LossConfig,
               groups: Sequence[FeatureGroup], gen_variables: Mapping, state: InterpState,
               batch: Mapping[str, jax.Array]) -> tuple[InterpState, dict[str, jax.Array]]:
    """One Adam step on batch {ws [B, num_ws, w_dim], c int [B], masks int [B, H, W]} (pure)."""
    feats = collect_features(gen, gen_variables, batch["ws"], groups)
    y = class_embedding(gen, gen_variables, batch["c"])
    masks = batch["masks"].astype(jnp.int32)

    def loss_fn(params):
        logits, updates = model.apply({**state.variables(), "params": params}, feats, y, train=True,
                                      mutable=list(MUTABLE))
        loss = segmentation_loss(logits, masks, dice_weight=loss_cfg.dice_weight, batch_dice=loss_cfg.batch_dice)
        return loss, (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    upd, opt_state = tx.update(grads, state.opt_state, state.params)
    new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, upd),
                        batch_stats=updates["batch_stats"], spectral=updates["spectral"], opt_state=opt_state)
    dice = jnp.nanmean(dice_per_label(predict_labels(logits), masks, loss_cfg.num_labels))
    return new, {"loss": loss, "dice": dice}


@functools.lru_cache(maxsize=16)
def _jitted_train_step(gen: Generator, model: Interpreter, tx: optax.GradientTransformation, loss_cfg: LossConfig,
                       groups: tuple[FeatureGroup, ...], mesh: Any) -> Callable:
    fn = functools.partial(train_step, gen, model, tx, loss_cfg, groups)
    if mesh is None:
        return jax.jit(fn, donate_argnums=(1,))
    rep = replicated(mesh)
    return jax.jit(fn, in_shardings=(rep, rep, _batch_shardings(mesh)), out_shardings=(rep, rep),
                   donate_argnums=(1,))


def make_train_step(gen: Generator, gen_variables: Mapping, model: Interpreter, tx: optax.GradientTransformation,
                    loss_cfg: LossConfig, groups: Sequence[FeatureGroup], mesh: Any = None
                    ) -> Callable[[InterpState, Mapping[str, jax.Array]], tuple[InterpState, dict[str, jax.Array]]]:
    """`step(state, batch) -> (state, {'loss', 'dice'})`, jitted (batch-sharded over `mesh` when given). The
    state passed in is donated (do not reuse it). Compiled once per (gen, model, tx, loss_cfg, groups, mesh)."""
    jitted = _jitted_train_step(gen, model, tx, loss_cfg, tuple(groups), mesh)
    gen_variables = jax.device_put(gen_variables, replicated(mesh)) if mesh is not None else gen_variables
    return functools.partial(jitted, gen_variables)


def eval_fn(gen: Generator, model: Interpreter, groups: Sequence[FeatureGroup], with_images: bool,
            gen_variables: Mapping, variables: Mapping, ws: jax.Array, c: jax.Array) -> Any:
    """Predicted labels int32 [N, H, W] (and the images [N, H, W, ch] float32 when `with_images`), eval mode."""
    img, feats = synthesize_with_features(gen, gen_variables, ws, groups)
    y = class_embedding(gen, gen_variables, c)
    labels = predict_labels(model.apply(dict(variables), feats, y, train=False))
    return (labels, img) if with_images else labels


@functools.lru_cache(maxsize=16)
def _jitted_eval(gen: Generator, model: Interpreter, groups: tuple[FeatureGroup, ...], with_images: bool,
                 mesh: Any) -> Callable:
    fn = functools.partial(eval_fn, gen, model, groups, with_images)
    if mesh is None:
        return jax.jit(fn)
    rep = replicated(mesh)
    out = (batch_sharding(mesh, 3), batch_sharding(mesh, 4)) if with_images else batch_sharding(mesh, 3)
    return jax.jit(fn, in_shardings=(rep, rep, batch_sharding(mesh, 3), batch_sharding(mesh, 1)), out_shardings=out)


def make_eval_fn(gen: Generator, gen_variables: Mapping, model: Interpreter, groups: Sequence[FeatureGroup],
                 mesh: Any = None, with_images: bool = False) -> Callable[..., Any]:
    """`predict(variables, ws, c) -> labels [N, H, W]` (or `(labels, images)`), jitted, batch-independent
    (BN running statistics), batch-sharded over `mesh` when given (N must then split over its batch axes)."""
    jitted = _jitted_eval(gen, model, tuple(groups), bool(with_images), mesh)
    gen_variables = jax.device_put(gen_variables, replicated(mesh)) if mesh is not None else gen_variables
    return functools.partial(jitted, gen_variables)


def predict_all(predict: Callable[..., Any], variables: Mapping, ws: np.ndarray, c: np.ndarray, batch_size: int,
                mesh: Any = None) -> Any:
    """`predict` (from `make_eval_fn`) over host arrays in fixed-size batches (the last padded by repeating its
    last row, the padding dropped): numpy labels [N, H, W] (or (labels, images))."""
    from radgan_jax.parallel.sharding import global_from_host

    n = len(ws)
    if n == 0:
        raise ValueError("predict_all: no samples")
    batch = max(1, min(int(batch_size), n))
    batch = pad_to_multiple(batch, mesh) if mesh is not None else batch
    put = (lambda x: global_from_host(mesh, x)) if mesh is not None else jnp.asarray
    outs = []
    for s in range(0, n, batch):
        w, cc = np.asarray(ws[s:s + batch], np.float32), np.asarray(c[s:s + batch], np.int32)
        pad = batch - len(w)
        if pad:
            w, cc = np.concatenate([w, np.repeat(w[-1:], pad, 0)]), np.concatenate([cc, np.repeat(cc[-1:], pad, 0)])
        res = predict(variables, put(w), put(cc))
        res = res if isinstance(res, tuple) else (res,)
        outs.append([host_from_global(r)[:batch - pad] for r in res])
    merged = tuple(np.concatenate(parts) for parts in zip(*outs, strict=True))
    return merged if len(merged) > 1 else merged[0]


def epoch_order(key: jax.Array, epoch: int, num_samples: int) -> np.ndarray:
    """The sample order of `epoch`: a permutation that is a pure function of (key, epoch) (resume-exact)."""
    from radgan_jax import rng

    return np.asarray(jax.random.permutation(rng.derive(key, "interpret/shuffle", step=int(epoch)), num_samples))


def epoch_batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Full batches of `order` (the remainder < batch_size is dropped, as the original's drop_last=True: BN in
    train mode wants equal batches, and equal shapes compile once)."""
    steps = len(order) // int(batch_size)
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(steps)]
