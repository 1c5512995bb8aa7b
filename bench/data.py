"""GAN input pipeline throughput (decode + shuffle + xflip + batch) vs the generator's forward throughput.

    python bench/data.py                              # 2000 phantoms at 256 px; 16/64/256 px; workers 0,2
    python bench/data.py --num 20000 --workers 0,8 --batch 256      # e.g. on a TPU/GPU host

Builds a TFDS/ArrayRecord GAN dataset (radgan_jax.data.tfds_build) of N built-in phantoms (CT/MR abdomen,
lumbar MR, endoscopy RGB: radgan_jax.data.phantoms; `--source noise`: smooth random ellipses plus pixel noise)
in a temporary folder, then times `GanInputPipeline` batches per resolution and worker count (the first batch,
which starts the workers, is not timed). In the same run it measures a small random StyleGAN-XL generator's
forward pass (bench/generator.py's golden configuration) at 16 and 64 px.

Feeding assumption: one training step costs about 3 generator forwards per image (forward + backward of G
and of the projected D), so training consumes at most forward img/s / 3 real images per second; the pipeline
can feed training when its img/s is at least that. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import generator as gen_bench  # noqa: E402  (bench/generator.py: GOLDEN, measure)

from radgan_jax.data.base import Case  # noqa: E402
from radgan_jax.data.pipeline import GanInputPipeline  # noqa: E402
from radgan_jax.data.tfds_build import build_gan_datasets  # noqa: E402
from radgan_jax.models.stylegan_xl.from_config import spec_chain_from_config, stylegan_xl_config  # noqa: E402
from radgan_jax.models.stylegan_xl.generator import Generator, init_generator  # noqa: E402

TRAIN_COST_IN_FORWARDS = 3  # fwd+bwd of G and D per image ~ 3 G forwards (stated in the output)


def synthetic_cases(num: int, size: int, seed: int = 0, classes: int = 4):
    """Structured noise: a few bright/dark ellipses on a smooth background, plus pixel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(num):
        coarse = rng.normal(size=(5, 5)).astype(np.float32)
        img = np.kron(coarse, np.ones((size // 5 + 1, size // 5 + 1), np.float32))[:size, :size] * 20 + 100
        for _ in range(rng.integers(2, 6)):
            cy, cx = rng.uniform(0.2, 0.8, size=2)
            ry, rx = rng.uniform(0.05, 0.3, size=2)
            img += ((yy - cy) ** 2 / ry**2 + (xx - cx) ** 2 / rx**2 < 1) * rng.uniform(-80, 120)
        img += rng.normal(scale=6, size=img.shape)
        yield Case(f"syn{i:06d}", np.clip(img, 0, 255).astype(np.uint8), label=i % classes)


def measure_pipeline(data: Path, res: int, workers: int, batch: int, min_time: float, max_batches: int) -> dict:
    pipe = GanInputPipeline(data, res, global_batch_size=batch, seed=0, xflip=True, shard_index=0, shard_count=1,
                            worker_count=workers)
    t0 = time.perf_counter()
    next(pipe)  # starts threads / worker processes
    first_s = time.perf_counter() - t0
    n, t0 = 0, time.perf_counter()
    while n < 3 or (time.perf_counter() - t0 < min_time and n < max_batches):
        next(pipe)
        n += 1
    sec = time.perf_counter() - t0
    pipe.close()
    return dict(res=res, workers=workers, batch=batch, batches=n, img_per_s=n * batch / sec, first_batch_s=first_s)


def measure_generator(res: int, batch: int, min_time: float) -> dict:
    spec = spec_chain_from_config(stylegan_xl_config(resolution=res, **gen_bench.GOLDEN))[-1]
    gen = Generator(spec, compute_dtype="float32")
    variables = init_generator(spec, jax.random.key(0))
    r = gen_bench.measure(gen, spec, variables, batch, min_time)
    return dict(res=res, batch=batch, fwd_img_per_s=r["img_per_s"],
                train_img_per_s=r["img_per_s"] / TRAIN_COST_IN_FORWARDS)


def phantom_cases(num: int, size: int, seed: int = 0):
    """The built-in phantoms, all kinds in turn (grey CT/MR and RGB endoscopy), one class per kind."""
    from radgan_jax.data.phantoms import PHANTOM_KINDS, render

    kinds = sorted(PHANTOM_KINDS)
    for i in range(num):
        case = render(kinds[i % len(kinds)], seed + i, size)
        img = np.clip(np.rint(case.image * 255), 0, 255).astype(np.uint8)
        yield Case(f"ph{i:06d}", img, label=i % len(kinds))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num", type=int, default=2000, help="synthetic images in the dataset")
    p.add_argument("--source", choices=("phantoms", "noise"), default="phantoms")
    p.add_argument("--source-size", type=int, default=256, help="pixel size of the synthetic originals")
    p.add_argument("--resolutions", default="16,64,256")
    p.add_argument("--workers", default="0,2", help="grain worker processes to compare (0: threads in-process)")
    p.add_argument("--batch", type=int, default=64, help="global = local batch (one host)")
    p.add_argument("--gen-resolutions", default="16,64,256", help="generator forward throughput at these (golden cfg)")
    p.add_argument("--gen-batch", type=int, default=8)
    p.add_argument("--min-time", type=float, default=3.0, help="seconds of timed batches per case")
    p.add_argument("--max-batches", type=int, default=200)
    p.add_argument("--data-dir", default=None, help="keep the dataset here (default: a temporary folder)")
    args = p.parse_args()
    resolutions = [int(r) for r in args.resolutions.split(",")]
    tmp = None if args.data_dir else tempfile.TemporaryDirectory(prefix="radgan_bench_data_")
    data = Path(args.data_dir or tmp.name)
    t0 = time.perf_counter()
    cases = (phantom_cases if args.source == "phantoms" else synthetic_cases)(args.num, args.source_size)
    build_gan_datasets(cases, data, name="bench", resolutions=resolutions,
                       class_names=["a", "b", "c", "d"], xflip=True, progress=False)
    build_s = time.perf_counter() - t0
    sizes = {r: sum(f.stat().st_size for f in (data / f"bench_{r}px").rglob("*.array_record*")) for r in resolutions}
    rows = [measure_pipeline(data, r, int(w), args.batch, args.min_time, args.max_batches)
            for r in resolutions for w in args.workers.split(",")]
    gens = {g["res"]: g for g in (measure_generator(int(r), args.gen_batch, args.min_time / 2)
                                  for r in args.gen_resolutions.split(","))}
    for row in rows:
        g = gens.get(row["res"])
        row["train_img_per_s"] = None if g is None else g["train_img_per_s"]
        row["can_feed"] = None if g is None else bool(row["img_per_s"] >= g["train_img_per_s"])
    backend = jax.default_backend()
    print(f"GAN input pipeline on {platform.node()} ({os.cpu_count()} CPUs), generator on {backend} "
          f"({jax.devices()[0].device_kind}); {args.num} {args.source} {args.source_size} px images, xflip, "
          f"build {build_s:.1f}s ({args.num * len(resolutions) / build_s:.0f} img/s over {len(resolutions)} res)")
    print(f"assumption: training consumes <= generator forward img/s / {TRAIN_COST_IN_FORWARDS} "
          "(fwd+bwd of G and D per image)")
    hdr = (f"{'res':>5}{'MiB':>8}{'workers':>9}{'batch':>7}{'pipe img/s':>12}{'1st batch s':>13}"
           f"{'train img/s':>13}  feeds?")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        train = "n/a" if r["train_img_per_s"] is None else f"{r['train_img_per_s']:.1f}"
        feeds = "n/a (no generator measured)" if r["can_feed"] is None else ("yes" if r["can_feed"] else "NO")
        print(f"{r['res']:>5}{sizes[r['res']] / 2**20:>8.1f}{r['workers']:>9}{r['batch']:>7}{r['img_per_s']:>12.0f}"
              f"{r['first_batch_s']:>13.2f}{train:>13}  {feeds}")
    for g in gens.values():
        print(f"generator (golden cfg, random weights) {g['res']} px batch {g['batch']}: forward "
              f"{g['fwd_img_per_s']:.1f} img/s -> training ~{g['train_img_per_s']:.1f} img/s")
    print(json.dumps({"bench": "data", "backend": backend, "device": jax.devices()[0].device_kind,
                      "cpus": os.cpu_count(), "num_images": args.num, "build_s": build_s,
                      "dataset_bytes": {str(k): v for k, v in sizes.items()}, "pipeline": rows,
                      "generator": list(gens.values()), "train_cost_in_forwards": TRAIN_COST_IN_FORWARDS}))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
