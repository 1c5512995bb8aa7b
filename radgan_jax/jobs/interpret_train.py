"""`mode=interpret_train`: the BigDatasetGAN feature interpreter on a frozen generator's features.

    python -m radgan_jax.main --config=configs/interpret/train.py --workdir=OUT \
        --config.checkpoint=GEN --config.annotations=ANNOT_DIR [--config.labels=liver,kidney]

Reads the annotated set (an `interpret_export` folder with filled masks, or an `AnnotatedSet` .npz), checks it was
made on this generator (digest) and, when `labels` is given, with that label map; then trains with Adam (lr 1e-4,
batch 4, 100 epochs: the paper's setting). Features are recomputed from each sample's ws inside the jitted step
(`interpret/trainer.py`); the batch is sharded over the mesh, generator and interpreter replicated. Writes into
WORKDIR:
  checkpoints/         orbax: InterpState + history, every `checkpoint_every` epochs (resume: rerun the command)
  interpreter/         the trained head + meta (labels, generator digest and path, feature shapes, training stats):
                       `interpret.model_io.load_interpreter`
  training_log.jsonl   one line per epoch (loss, train-batch Dice, time)
  loss_curve.png       loss and Dice per epoch
  previews/NAME.png    per training image: annotation overlay | prediction overlay (annotation outlined)
  train_dice.json      eval-mode Dice of every training image
The sample order of epoch e is a permutation drawn from (seed, e) alone, so a run killed at any point and rerun
ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from radgan_jax import rng
from radgan_jax.checkpoint import Checkpointer
from radgan_jax.eval import plots
from radgan_jax.interpret import annotate, model_io
from radgan_jax.interpret import trainer as tr
from radgan_jax.interpret.features import class_embedding, feature_groups
from radgan_jax.interpret.losses import dice_per_label, num_logits
from radgan_jax.models.interpreter import Interpreter, init_interpreter
from radgan_jax.models.stylegan_xl.generator import Generator
from radgan_jax.parallel.mesh import make_mesh
from radgan_jax.parallel.sharding import global_from_host, num_batch_shards, pad_to_multiple, replicated

STATE_ITEM = "interp_state"
PREVIEW_MIN_SIZE = 128


def load_generator_from_config(config: Any) -> tuple[Any, Any, str]:
    """(spec, variables, source) from `config.checkpoint` (a generator checkpoint dir) or `config.builtin`."""
    from radgan_jax.jobs.generate import load_model

    if not config.checkpoint and not config.builtin:
        raise SystemExit("interpret_train: set --config.checkpoint=DIR (the generator checkpoint the annotated images "
                         "were exported from) or --config.builtin=NAME")
    sub = ml_collections.ConfigDict({"checkpoint": str(config.checkpoint), "builtin": str(config.builtin),
                                     "checkpoint_step": int(config.checkpoint_step), "seed": int(config.builtin_seed)})
    try:
        return load_model(sub)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise SystemExit(f"interpret_train: generator {config.checkpoint or config.builtin}: {e}") from e


def load_training_set(config: Any, spec: Any, variables: Any) -> annotate.AnnotatedSet:
    """The validated annotated set for this generator (clear SystemExit on anything unusable)."""
    if not config.annotations:
        raise SystemExit("interpret_train: set --config.annotations=DIR (an interpret_export folder with masks) or "
                         "an .npz of an AnnotatedSet")
    try:
        labels = annotate.parse_labels(config.labels) if config.labels else None
        ds = annotate.load_annotated_set(config.annotations, spec, variables, labels,
                                         allow_empty=bool(config.allow_empty))
    except ValueError as e:  # AnnotationError lists every bad file
        raise SystemExit(f"interpret_train: {e}") from e
    where = config.annotations
    res = (spec.img_resolution, spec.img_resolution)
    if len(ds) == 0:
        raise SystemExit(f"interpret_train: {where}: the annotated set is empty")
    if ds.masks.shape[1:] != res:
        raise SystemExit(f"interpret_train: {where}: masks are {ds.masks.shape[1:]}, the generator makes {res} images")
    valid = sorted(ds.labels.values())
    if ds.masks.min() < 0 or ds.masks.max() > valid[-1]:
        raise SystemExit(f"interpret_train: {where}: mask values {sorted(np.unique(ds.masks).tolist())} outside the "
                         f"label map {ds.labels}")
    return ds


def _check_batch(config: Any, n: int, mesh: Any) -> int:
    batch, shards = int(config.batch_size), num_batch_shards(mesh)
    if batch < 1 or batch > n:
        raise SystemExit(f"interpret_train: batch size {batch} needs 1..{n} (the number of annotated samples); set "
                         "--config.batch_size")
    if batch % shards:
        raise SystemExit(f"interpret_train: batch size {batch} does not split over the {shards} devices of the mesh's "
                         f"batch axes (mesh {dict(mesh.shape)}); set --config.batch_size to a multiple of {shards} "
                         f"(e.g. {pad_to_multiple(batch, mesh)}) or --config.mesh.data to a divisor of {batch}")
    return batch


@functools.lru_cache(maxsize=8)
def _init_fn(model: Interpreter, groups: tuple, y_dim: int):
    """Jitted `init_interpreter` (compiled once per model/feature shapes in a process)."""
    return jax.jit(lambda key: init_interpreter(model, groups, y_dim, key))


def _widths(text: str) -> tuple[int, int, int]:
    try:
        widths = tuple(int(w) for w in str(text).split(","))
    except ValueError:
        widths = ()
    if len(widths) != 3 or min(widths) < 1:
        raise SystemExit(f"interpret_train: --config.widths={text!r}: give three positive ints 'low,mid,high'")
    return widths  # type: ignore[return-value]


def _plot(path: Path, history: list[dict]) -> None:
    x = [h["epoch"] for h in history]
    plots.plot_curves(path, {"train loss": (x, [h["loss"] for h in history]),
                             "train batch Dice": (x, [h["dice"] for h in history])},
                      title="interpreter training", xlabel="epoch", ylabel="loss / Dice")


def _write_previews(out: Path, names: list[str], images: np.ndarray, preds: np.ndarray, masks: np.ndarray) -> None:
    from PIL import Image

    from radgan_jax.seg.export import overlay, side_by_side

    out.mkdir(parents=True, exist_ok=True)
    for name, img, pred, mask in zip(names, images, preds, masks, strict=True):
        img = img if img.shape[-1] == 3 else img[..., 0]
        pic = side_by_side([overlay(img, mask), overlay(img, pred, mask)])
        scale = max(1, PREVIEW_MIN_SIZE // pic.shape[0])  # small generators: enlarge (nearest) so one can see
        pic = np.repeat(np.repeat(pic, scale, axis=0), scale, axis=1)
        Image.fromarray(pic).save(out / f"{name}.png")


def run(config: Any, workdir: str) -> None:
    wd = Path(workdir)
    spec, gen_vars, source = load_generator_from_config(config)
    ds = load_training_set(config, spec, gen_vars)
    digest = annotate.generator_digest(spec, gen_vars)
    try:
        mesh = make_mesh(config.mesh)
    except ValueError as e:
        raise SystemExit(f"interpret_train: config.mesh: {e}") from e
    n, epochs = len(ds), int(config.epochs)
    batch = _check_batch(config, n, mesh)
    gen = Generator(spec, compute_dtype=str(config.compute_dtype))
    groups = feature_groups(spec, include_input=bool(config.include_input))
    model = Interpreter(num_outputs=num_logits(len(ds.labels)), widths=_widths(config.widths))
    y_dim = int(jax.eval_shape(lambda v, c: class_embedding(gen, v, c), gen_vars, ds.c[:1]).shape[-1])
    seed_key = rng.root_key(int(config.seed))
    tx = tr.adam(float(config.lr))
    loss_cfg = tr.LossConfig(num_labels=len(ds.labels), dice_weight=float(config.dice_weight))

    init = _init_fn(model, tuple(groups), y_dim)
    init_key = rng.derive(seed_key, "interpret/init")
    gen_vars = jax.device_put(gen_vars, replicated(mesh))
    step_fn = tr.make_train_step(gen, gen_vars, model, tx, loss_cfg, groups, mesh)
    run_meta = {"generator_digest": digest, "num_samples": n, "batch_size": batch, "labels": ds.labels,
                "seed": int(config.seed), "widths": list(model.widths), "include_input": bool(config.include_input)}

    ckpt = Checkpointer(wd / "checkpoints", max_to_keep=1, async_save=False)
    history: list[dict] = []
    start = 0
    if ckpt.latest_step() is None:
        state = jax.device_put(tr.create_state(init(init_key), tx), replicated(mesh))
    else:
        meta = ckpt.metadata()
        clash = {k: (meta.get(k), v) for k, v in run_meta.items() if meta.get(k) != v}
        if clash:
            raise SystemExit(f"interpret_train: {ckpt.directory} holds a run with other settings "
                             f"{ {k: a for k, (a, _) in clash.items()} } than this one "
                             f"{ {k: b for k, (_, b) in clash.items()} }; use another --workdir")
        shapes = jax.eval_shape(lambda k: tr.create_state(init(k), tx), init_key)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated(mesh)), shapes)
        items, meta, _ = ckpt.restore(targets={STATE_ITEM: abstract})
        state, history, start = items[STATE_ITEM], list(meta["history"]), int(meta["epoch"])
        if start > epochs:
            raise SystemExit(f"interpret_train: {ckpt.directory} is at epoch {start}, beyond --config.epochs={epochs}")
        logging.info("resumed from %s at epoch %d", ckpt.directory, start)
    is_main = jax.process_index() == 0
    if is_main:  # the log holds exactly the epochs of the state we continue from
        wd.mkdir(parents=True, exist_ok=True)
        (wd / "training_log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    steps = n // batch
    logging.info("interpret_train: %d samples (%s), labels %s, %d epochs x %d steps of %d; generator %s (%s)", n,
                 config.annotations, ds.labels, epochs, steps, batch, source, digest)
    bar = None
    if config.progress and is_main:
        from tqdm import tqdm

        bar = tqdm(total=epochs * steps, initial=min(start, epochs) * steps, desc="interpret_train", unit="step")

    shuffle_key = rng.derive(seed_key, "interpret/order")
    for epoch in range(start, epochs):
        t0 = time.time()
        metrics = []
        for idx in tr.epoch_batches(tr.epoch_order(shuffle_key, epoch, n), batch):
            b = {"ws": ds.ws[idx], "c": ds.c[idx], "masks": ds.masks[idx]}
            state, m = step_fn(state, {k: global_from_host(mesh, v) for k, v in b.items()})
            metrics.append(m)
            if bar is not None:
                bar.update(1)
        metrics = jax.device_get(metrics)
        row = {"epoch": epoch, "loss": float(np.mean([m["loss"] for m in metrics])),
               "dice": float(np.nanmean([m["dice"] for m in metrics])), "steps": len(metrics),
               "epoch_time_s": time.time() - t0}
        history.append(row)
        if bar is not None:
            bar.set_postfix(loss=f"{row['loss']:.4f}", dice=f"{row['dice']:.3f}")
        if is_main:
            with open(wd / "training_log.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            _plot(wd / "loss_curve.png", history)
        if epoch == epochs - 1 or (epoch + 1) % int(config.checkpoint_every) == 0:
            ckpt.save(epoch + 1, {STATE_ITEM: state}, metadata={**run_meta, "epoch": epoch + 1, "history": history},
                      force=True)
    if bar is not None:
        bar.close()
    ckpt.close()

    variables = jax.device_get(state.variables())
    predict = tr.make_eval_fn(gen, gen_vars, model, groups, mesh, with_images=True)
    preds, images = tr.predict_all(predict, variables, ds.ws, ds.c, max(batch, 16), mesh)
    dice = np.nanmean(np.asarray(dice_per_label(preds, ds.masks, len(ds.labels))), axis=1)
    train_dice = float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan")
    if is_main:
        (wd / "train_dice.json").write_text(json.dumps(
            {"mean": train_dice, "per_sample": {nm: float(d) for nm, d in zip(ds.names, dice, strict=True)}}, indent=1))
        k = min(int(config.num_previews), n)
        _write_previews(wd / "previews", ds.names[:k], images[:k], preds[:k], ds.masks[:k])
    meta = model_io.InterpreterMeta(
        labels=dict(ds.labels), num_outputs=model.num_outputs, y_dim=y_dim, generator_digest=digest,
        feature_shapes={g.name: [g.resolution, g.resolution, g.channels] for g in groups}, widths=model.widths,
        include_input=bool(config.include_input), generator_checkpoint=str(config.checkpoint or source),
        extra={"epochs": epochs, "batch_size": batch, "lr": float(config.lr), "dice_weight": float(config.dice_weight),
               "seed": int(config.seed), "num_samples": n, "annotations": str(config.annotations),
               "final_loss": history[-1]["loss"] if history else float("nan"), "train_dice_eval": train_dice})
    with Checkpointer(wd / "interpreter", max_to_keep=None) as ck:
        done = ck.latest_step() == epochs
    if not done:  # a rerun after a finished run leaves the (identical) interpreter in place
        model_io.save_interpreter(wd / "interpreter", variables, meta, step=epochs)
    logging.info("interpret_train: done; final loss %.4f, eval-mode Dice on the training images %.4f; outputs in %s",
                 meta.extra["final_loss"], train_dice, wd)
