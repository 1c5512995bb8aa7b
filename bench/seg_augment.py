"""nnU-Net 2D training augmentation throughput: ours (jit + vmap, one call per batch) vs nnU-Net's pipeline.

    python bench/seg_augment.py                     # batch 12, 256x256 patch (301x301 initial), 3 channels
    python bench/seg_augment.py --patch 512 --channels 1 --min-time 10

Ours: `jax.jit(jax.vmap(augment))` on [B, S, S, C] float32 + [B, S, S, 1] int16 with fresh keys per batch
(every transform is computed for every sample and selected by its flag). Reference: nnunetv2 2.8.1
`nnUNetTrainer.get_training_transforms` (batchgeneratorsv2 0.3.6) applied sample by sample on torch tensors
with torch limited to `--torch-threads` (nnU-Net's data loader runs each worker with 1 thread and uses
nnUNet_n_proc_DA worker processes). Both include the deep-supervision targets of a 7-stage plan.
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from radgan_jax.seg import augment as A  # noqa: E402
from radgan_jax.seg import losses as L  # noqa: E402


def make_batch(batch: int, size: tuple[int, int], channels: int, seed: int = 0):
    from scipy.ndimage import gaussian_filter
    r = np.random.default_rng(seed)
    data = gaussian_filter(r.standard_normal((batch, channels, *size)), 3, axes=(2, 3)).astype(np.float32) * 5
    seg = np.argmax(gaussian_filter(r.standard_normal((batch, 3, *size)), 8, axes=(2, 3)), 1).astype(np.int16)
    seg[:, :8] = -1
    return data, seg[:, None]


def timed(fn, min_time: float, min_iters: int = 3) -> tuple[float, int]:
    n, t0 = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t0 < min_time:
        fn(n)
        n += 1
    return (time.perf_counter() - t0) / n, n


def bench_ours(cfg, data, seg, scales, min_time):
    d = jnp.asarray(data.transpose(0, 2, 3, 1))
    s = jnp.asarray(seg.transpose(0, 2, 3, 1))
    root = jax.random.key(0)

    @jax.jit
    def step(i, d, s):
        keys = jax.random.split(jax.random.fold_in(root, i), d.shape[0])
        out_d, out_s = jax.vmap(functools.partial(A.augment, cfg=cfg))(keys, d, s)
        return out_d, L.downsample_seg_for_ds(out_s, scales)

    t0 = time.perf_counter()
    jax.block_until_ready(step(0, d, s))
    compile_s = time.perf_counter() - t0
    sec, n = timed(lambda i: jax.block_until_ready(step(i + 1, d, s)), min_time)
    return dict(impl="radgan_jax (jit+vmap)", sec_per_batch=sec, batches=n, samples_per_s=data.shape[0] / sec,
                compile_s=compile_s)


def bench_nnunet(cfg, data, seg, scales, min_time, threads):
    import torch
    with tempfile.TemporaryDirectory() as tmp:
        for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            os.environ.setdefault(v, tmp)
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    torch.set_num_threads(threads)
    pipe = nnUNetTrainer.get_training_transforms(cfg.patch_size, cfg.rotation, scales, cfg.mirror_axes, False)

    def run(_):
        for b in range(data.shape[0]):
            pipe(image=torch.from_numpy(data[b].copy()), segmentation=torch.from_numpy(seg[b].copy()))

    run(0)  # warm-up (GaussianBlur benchmark=True times fft vs conv on first use)
    sec, n = timed(run, min_time)
    return dict(impl=f"nnunetv2 2.8.1 / batchgeneratorsv2 ({threads} torch thread)", sec_per_batch=sec, batches=n,
                samples_per_s=data.shape[0] / sec, compile_s=0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--patch", type=int, default=256)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--min-time", type=float, default=5.0, help="seconds of timed batches per implementation")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--skip-nnunet", action="store_true")
    args = p.parse_args()
    cfg = A.augment_config_from_plan({"patch_size": [args.patch, args.patch]})
    scales = L.deep_supervision_scales([[1, 1]] + [[2, 2]] * 6)
    data, seg = make_batch(args.batch, cfg.initial_patch_size, args.channels)
    rows = [bench_ours(cfg, data, seg, scales, args.min_time)]
    if not args.skip_nnunet:
        rows.append(bench_nnunet(cfg, data, seg, scales, args.min_time, args.torch_threads))
    backend = jax.default_backend()
    print(f"nnU-Net 2D augmentation, batch {args.batch}, patch {cfg.patch_size} from {cfg.initial_patch_size}, "
          f"{args.channels} ch; {platform.node()} ({os.cpu_count()} CPUs), JAX on {backend} "
          f"({jax.devices()[0].device_kind})")
    hdr = f"{'implementation':<52}{'s/batch':>10}{'samples/s':>11}{'compile s':>11}{'batches':>9}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['impl']:<52}{r['sec_per_batch']:>10.3f}{r['samples_per_s']:>11.1f}{r['compile_s']:>11.1f}"
              f"{r['batches']:>9}")
    print(json.dumps({"bench": "seg_augment", "backend": backend, "device": jax.devices()[0].device_kind,
                      "cpus": os.cpu_count(), "batch": args.batch, "patch": list(cfg.patch_size),
                      "initial_patch": list(cfg.initial_patch_size), "channels": args.channels, "rows": rows}))


if __name__ == "__main__":
    main()
