"""seg_train: nnU-Net v2's 2D training of one fold, data-parallel over the mesh (nnUNetTrainer, 2.8.1).

    python -m radgan_jax.main --config=configs/seg/train.py --config.plans=PLANS_DIR --config.fold=0 \
        --workdir=runs/seg_fold0 [--config.epochs=100] [--config.pretrained=CKPT_DIR]

Reads a seg_plan output (nnUNetPlans.json, dataset.json, preprocessed cases), the 5-fold split
(PLANS_DIR/splits_final.json: a user file wins; else nnU-Net's KFold, grouped by patient when the raw dataset
has case_groups.json), and trains: `iterations_per_epoch` (250) augmented batches, then `val_iterations` (50)
validation batches for the pseudo Dice, per epoch. Writes into WORKDIR:
  checkpoints/          orbax: SegState + history, every `checkpoint_every` epochs and at the end (resume: rerun)
  checkpoint_best/      params of the best EMA pseudo Dice (nnU-Net's checkpoint_best), checkpoint_final/ too
  progress.png          losses, pseudo Dice and its EMA, learning rate per epoch (nnU-Net's progress.png)
  training_log.jsonl    one line per epoch
A kill at any point loses at most the epochs since the last checkpoint; the rerun ends bit-identical to an
uninterrupted run (every draw is a function of (seed, step)).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from radgan_jax import rng
from radgan_jax.checkpoint import Checkpointer
from radgan_jax.eval import plots
from radgan_jax.models.unet import init_unet, unet_from_plan
from radgan_jax.parallel.mesh import make_mesh
from radgan_jax.parallel.sharding import (
    global_from_host,
    host_from_global,
    num_batch_shards,
    pad_to_multiple,
    replicated,
)
from radgan_jax.seg import online_eval, optim, splits, trainer
from radgan_jax.seg.augment import augment_config_from_plan
from radgan_jax.seg.losses import deep_supervision_scales
from radgan_jax.seg.preprocessed import PreprocessedDataset, PreprocessedError
from radgan_jax.seg.sampler import PatchSampler, step_rng

SPLITS_FILE = "splits_final.json"
PLAN_FILES = (("nnUNetPlans.json", "plans.json"), ("dataset.json", "dataset.json"),
              ("raw_dataset.json", "raw_dataset.json"))


def fold_cases(config: Any, ds: PreprocessedDataset) -> tuple[list[str], list[str]]:
    """(train ids, val ids) of `config.fold` from PLANS_DIR/splits_final.json (created as nnU-Net does)."""
    path = Path(config.splits_file) if config.splits_file else ds.root / SPLITS_FILE
    groups = splits.read_case_groups(config.raw_dataset) if config.raw_dataset else None
    split_list, _ = splits.get_or_create_splits(path, ds.case_ids, groups)
    fold = config.fold if str(config.fold) == "all" else int(config.fold)
    return splits.fold_keys(split_list, fold, ds.case_ids)


def _load_pretrained(path: str, params: Any) -> Any:
    with Checkpointer(path, max_to_keep=None) as ck:
        if ck.latest_step() is None:
            raise ValueError(f"config.pretrained={path}: no checkpoint there")
        items, _, _ = ck.restore()
    source = items["params"] if "params" in items else items["seg_state"]["params"]
    new, loaded = trainer.pretrained_params(params, source)
    logging.info("pretrained: %d arrays from %s (segmentation heads stay fresh)", len(loaded), path)
    return new


class _Epochs:
    """Per-epoch log (nnU-Net's logger): train/val loss, pseudo Dice per class, mean, EMA, lr, time."""

    def __init__(self, history: list[dict]) -> None:
        self.history = history

    @property
    def best_ema(self) -> float | None:
        values = [h["ema_fg_dice"] for h in self.history if np.isfinite(h["ema_fg_dice"])]
        return max(values) if values else None

    def add(self, row: dict) -> bool:
        """Appends an epoch; True when its EMA pseudo Dice is a new best."""
        best = self.best_ema
        prev = self.history[-1]["ema_fg_dice"] if self.history else None
        row["ema_fg_dice"] = online_eval.ema_fg_dice(prev, row["mean_fg_dice"])
        self.history.append(row)
        return best is None or row["ema_fg_dice"] > best

    def plot(self, path: Path) -> None:
        x = [h["epoch"] for h in self.history]
        curves = {"train loss": (x, [h["train_loss"] for h in self.history]),
                  "val loss": (x, [h["val_loss"] for h in self.history]),
                  "pseudo dice": (x, [h["mean_fg_dice"] for h in self.history]),
                  "pseudo dice (EMA)": (x, [h["ema_fg_dice"] for h in self.history])}
        plots.plot_curves(path, curves, title="nnU-Net progress", xlabel="epoch", ylabel="loss / Dice")


def run(config: Any, workdir: str) -> None:
    wd = Path(workdir)
    try:
        ds = PreprocessedDataset(config.plans)
        train_ids, val_ids = fold_cases(config, ds)
    except (PreprocessedError, ValueError) as e:
        raise SystemExit(f"seg_train: {e}") from e
    plan = ds.configuration
    epochs, iters, val_iters = int(config.epochs), int(config.iterations_per_epoch), int(config.val_iterations)
    batch = int(config.batch_size) or int(plan["batch_size"])
    patch = tuple(int(p) for p in plan["patch_size"])
    try:
        mesh = make_mesh(config.mesh)
    except ValueError as e:
        raise SystemExit(f"seg_train: config.mesh: {e}") from e
    shards = num_batch_shards(mesh)
    if batch % shards:  # a NamedSharding cannot split a batch unevenly (nnU-Net's DDP would)
        source = ("--config.batch_size" if int(config.batch_size)
                  else f"the plan's batch_size ({ds.root / 'nnUNetPlans.json'})")
        raise SystemExit(f"seg_train: batch size {batch} (from {source}) does not split over the {shards} devices of "
                         f"the mesh's batch axes (mesh {dict(mesh.shape)}, {jax.device_count()} devices); set "
                         f"--config.batch_size to a multiple of {shards}, e.g. {pad_to_multiple(batch, mesh)}")
    module = unet_from_plan(plan, ds.num_input_channels, ds.num_segmentation_heads,
                            compute_dtype=str(config.compute_dtype))
    seed_key = rng.root_key(int(config.seed))
    params = init_unet(module, rng.derive(seed_key, "seg/init"))["params"]
    if config.pretrained:
        params = _load_pretrained(str(config.pretrained), params)
    tx = optim.nnunet_sgd(max_epochs=epochs, iterations_per_epoch=iters)
    aug = augment_config_from_plan(plan) if config.augment else None
    strides = plan["architecture"]["arch_kwargs"]["strides"]
    step_cfg = trainer.SegStepConfig(batch_dice=bool(plan["batch_dice"]),
                                     ds_scales=tuple(tuple(s) for s in deep_supervision_scales(strides)),
                                     augment=aug, ignore_label=ds.ignore_label)
    initial = aug.initial_patch_size if aug is not None else patch
    fg, ign = ds.foreground_labels, ds.ignore_label is not None
    train_sampler = PatchSampler(ds.load, train_ids, batch, initial, patch, fg, has_ignore_label=ign)
    val_sampler = PatchSampler(ds.load, val_ids or train_ids, batch, patch, patch, fg, has_ignore_label=ign)

    state = trainer.create_seg_state(params, tx)
    state_sharding = jax.tree.map(lambda _: replicated(mesh), state)
    state = jax.device_put(state, state_sharding)
    train_step = jax.jit(trainer.make_train_step(module.apply, tx, step_cfg, rng.derive(seed_key, "seg/train")),
                         out_shardings=(state_sharding, replicated(mesh)))
    val_step = jax.jit(trainer.make_val_step(module.apply, step_cfg), out_shardings=replicated(mesh))

    ckpt = Checkpointer(wd / "checkpoints", max_to_keep=1, async_save=False)
    log = _Epochs([])
    start = 0
    if ckpt.latest_step() is not None:
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        items, meta, _ = ckpt.restore(targets={"seg_state": abstract})
        state, log, start = items["seg_state"], _Epochs(meta["history"]), int(meta["epoch"])
        logging.info("resumed from %s at epoch %d", ckpt.directory, start)
    if jax.process_index() == 0:  # the log holds exactly the epochs of the state we continue from
        wd.mkdir(parents=True, exist_ok=True)
        for src, dst in PLAN_FILES:  # nnU-Net's results folder layout: seg_predict needs no --config.plans
            if (ds.root / src).is_file():
                shutil.copyfile(ds.root / src, wd / dst)
        (wd / "training_log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in log.history))
    logging.info("fold %s: %d train / %d val cases; patch %s (crops %s), batch %d, %d epochs x %d iterations",
                 config.fold, len(train_ids), len(val_ids), patch, initial, batch, epochs, iters)
    is_main = jax.process_index() == 0
    bar = None
    if config.progress and is_main:
        from tqdm import tqdm

        bar = tqdm(total=epochs * iters, initial=start * iters, desc="seg_train", unit="it")

    def batch_arrays(sampler: PatchSampler, rs: np.random.RandomState) -> dict[str, jax.Array]:
        data, seg, _ = sampler.batch(rs)  # every host draws the whole global batch, keeps its rows
        return {"data": global_from_host(mesh, data), "seg": global_from_host(mesh, seg)}

    seed = int(config.seed)
    for epoch in range(start, epochs):
        t0 = time.time()
        lr = float(optim.poly_lr(epoch, max_epochs=epochs))
        losses = []
        for it in range(iters):
            step = epoch * iters + it
            state, m = train_step(state, batch_arrays(train_sampler, step_rng(seed, step, purpose=0)))
            losses.append(m["loss"])
            if bar is not None:
                bar.update(1)
        counts, val_losses = None, []
        for it in range(val_iters):
            out = val_step(state.params, batch_arrays(val_sampler, step_rng(seed, epoch * val_iters + it, purpose=1)))
            out = {k: host_from_global(v) for k, v in out.items()}
            val_losses.append(float(out["loss"]))
            c = np.stack([out["tp"], out["fp"], out["fn"]])
            counts = c if counts is None else counts + c
        per_class, mean = online_eval.pseudo_dice(*counts) if counts is not None else ([], float("nan"))
        row = {"epoch": epoch, "train_loss": float(np.mean([float(v) for v in losses])),
               "val_loss": float(np.mean(val_losses)) if val_losses else float("nan"),
               "dice_per_class": per_class, "mean_fg_dice": mean, "lr": lr, "epoch_time_s": time.time() - t0}
        improved = log.add(row)
        if bar is not None:
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", dice=f"{mean:.3f}", ema=f"{row['ema_fg_dice']:.3f}")
        if is_main:
            with open(wd / "training_log.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            log.plot(wd / "progress.png")
        if improved:
            _save_params(wd / "checkpoint_best", state.params, {"epoch": epoch, "ema_fg_dice": row["ema_fg_dice"]})
        last = epoch == epochs - 1
        if last or (epoch + 1) % int(config.checkpoint_every) == 0:
            ckpt.save(epoch + 1, {"seg_state": state}, metadata={"epoch": epoch + 1, "history": log.history},
                      force=True)
    if bar is not None:
        bar.close()
    ckpt.wait()
    ckpt.close()
    if not (wd / "checkpoint_final").exists():
        _save_params(wd / "checkpoint_final", state.params, {"epoch": epochs})
    if config.final_validation and val_ids:
        raw_root = config.raw_dataset or raw_dataset_of(ds)
        summary = final_validation(wd / "validation", ds, plan, state.params, val_ids, raw_root, is_main,
                                   bool(config.progress))
        logging.info("validation (sliding window, %d cases): foreground mean Dice %.4f", len(val_ids),
                     summary["foreground_mean"]["Dice"])
    logging.info("seg_train: done; best EMA pseudo Dice %s; outputs in %s", log.best_ema, wd)


def raw_dataset_of(ds: PreprocessedDataset) -> str:
    """The raw dataset seg_plan planned (recorded in PLANS_DIR/raw_dataset.json)."""
    path = ds.root / "raw_dataset.json"
    if not path.is_file():
        raise SystemExit(f"seg_train: {path} missing: set --config.raw_dataset=RAW_DATASET_DIR for the validation "
                         "references (or --config.final_validation=False)")
    return str(json.loads(path.read_text())["path"])


def final_validation(out: Path, ds: PreprocessedDataset, plan: dict, params: Any, val_ids: list[str],
                     raw_root: str, is_main: bool, progress: bool) -> dict:
    """nnUNetTrainer.perform_actual_validation: sliding-window prediction of every validation case (Gaussian,
    mirroring), exported to the raw geometry, against the raw labels -> summary.json; plus overlay PNGs."""
    from PIL import Image

    from radgan_jax.seg import evaluate, export, inference
    from radgan_jax.seg.raw_dataset import open_raw_dataset

    raw = open_raw_dataset(raw_root)
    module = unet_from_plan(plan, ds.num_input_channels, ds.num_segmentation_heads, deep_supervision=False)
    apply_fn = lambda p, x: module.apply({"params": p}, x)  # noqa: E731 - one object: compiled once per shape
    patch = [int(p) for p in plan["patch_size"]]
    refs, preds = {}, {}
    ids = val_ids
    if progress and is_main:
        from tqdm import tqdm

        ids = tqdm(val_ids, desc="validation", unit="case")
    if is_main:
        (out / "overlays").mkdir(parents=True, exist_ok=True)
    for case_id in ids:
        case = ds.load(case_id)
        image = np.moveaxis(case.data, 0, -1)  # [C, Z, H, W] -> [Z, H, W, C]: a 2D net predicts every slice
        logits = np.asarray(inference.predict_sliding_window(apply_fn, params, image, patch), np.float32)
        seg = export.logits_to_raw_segmentation(np.moveaxis(logits, -1, 0), ds.properties(case_id), ds.plans)
        raw_data, raw_seg, _ = raw.load(case_id)
        if raw_seg is None:
            raise SystemExit(f"seg_train validation: raw case {case_id} of {raw_root} has no label file")
        preds[case_id], refs[case_id] = seg, raw_seg[0].astype(np.int16)  # (Z, Y, X); Z = 1 for an image
        if is_main:
            z = int(np.argmax((refs[case_id] > 0).sum(axis=(1, 2))))  # the slice with the most foreground
            img = np.moveaxis(raw_data[:, z], 0, -1)
            pic = export.side_by_side([export.overlay(img, refs[case_id][z]),
                                       export.overlay(img, preds[case_id][z], refs[case_id][z])])
            Image.fromarray(pic).save(out / "overlays" / f"{case_id}.png")
    if is_main:  # nnU-Net's validation/CASE<ending>: what seg_evaluate's cross-validation mode gathers
        from radgan_jax.jobs.seg_evaluate import save_validation_predictions

        save_validation_predictions(out, {c: (p[0] if p.shape[0] == 1 else p) for c, p in preds.items()}, raw_root)
    labels = ds.foreground_labels
    summary = evaluate.compute_metrics_on_cases(refs, preds, labels, ds.ignore_label)
    if is_main:
        evaluate.save_summary_json(summary, out / "summary.json")
    return summary


def _save_params(path: Path, params: Any, meta: dict) -> None:
    with Checkpointer(path, max_to_keep=1, async_save=False) as ck:
        if ck.latest_step() != int(meta["epoch"]):  # a rerun after a kill may reach the same best again
            ck.save(int(meta["epoch"]), {"params": params}, metadata=meta, force=True)
