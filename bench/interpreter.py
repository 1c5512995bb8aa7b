"""Labeled-data factory (issue 7): labeled pairs/s at 64 and 256 px, and peak host memory while writing N pairs.

    python bench/interpreter.py                                  # accelerator: 64/256 px, memory over 10,000 pairs
    python bench/interpreter.py --num 1000 --mem-size 32 --e2e-num 32     # CPU-sized

Models: built-in-style random-init StyleGAN-XL generators (the demo32 hyper-parameters grown to 64 / 256 px with
`stylegan_xl_config` + `spec_from_config`, 4 classes) and a small random interpreter (widths 32/16/16, 3 labels);
`--members 2` times an ensemble (mean probabilities + JSD uncertainty). Throughput does not depend on the values.
- render pairs/s: `interpret.factory.Renderer` alone (mapping, synthesis with features, interpreter(s), mask
  decoding, images + masks back on the host), 4 steps of per-device batches on every local device per call, after
  compilation;
- written pairs/s: the whole `interpret_sample` job (checkpoint loading, rendering, nnU-Net PNGs, TFDS shards,
  jsonl, overlays, finalisation) over `--e2e-num` pairs, after a one-chunk warm-up job that compiles;
- memory: the job (loading its checkpoints, compiling, writing) run in a fresh subprocess writing `--num` pairs of
  one class at `--mem-size` px; RSS (current and the `ru_maxrss` high-water) sampled when 10%, 50% and 100% of
  the pairs are written. Flat = memory does not grow
  with M (the job streams chunk by chunk).
Prints a table and one JSON line (bench convention).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from radgan_jax.interpret.annotate import generator_digest  # noqa: E402
from radgan_jax.interpret.features import feature_groups  # noqa: E402
from radgan_jax.models.interpreter import Interpreter, init_interpreter  # noqa: E402
from radgan_jax.models.stylegan_xl.builtin import BUILTIN  # noqa: E402
from radgan_jax.models.stylegan_xl.from_config import spec_from_config, stylegan_xl_config  # noqa: E402
from radgan_jax.models.stylegan_xl.generator import Generator, init_generator  # noqa: E402

WIDTHS = (32, 16, 16)
LABELS = {"background": 0, "liver": 1, "kidney": 2}


def build(res: int, members: int):
    kw = dict(BUILTIN["demo32"], resolution=res)
    spec = spec_from_config(stylegan_xl_config(**kw))
    gen_vars = jax.device_get(init_generator(spec, jax.random.key(0, impl="rbg")))
    groups = feature_groups(spec)
    models = [Interpreter(len(LABELS), WIDTHS) for _ in range(members)]
    interp = [jax.device_get(init_interpreter(m, groups, spec.z_dim, jax.random.key(1 + i, impl="rbg")))
              for i, m in enumerate(models)]
    return spec, gen_vars, groups, models, interp


def save_assets(spec, gen_vars, groups, interp, root: Path) -> tuple[Path, list[Path]]:
    from radgan_jax.checkpoint import save_generator
    from radgan_jax.interpret.model_io import InterpreterMeta, save_interpreter

    save_generator(root / "gen", gen_vars, spec)
    digest = generator_digest(spec, gen_vars)
    dirs = []
    for i, v in enumerate(interp):
        meta = InterpreterMeta(labels=LABELS, num_outputs=len(LABELS), y_dim=spec.z_dim, generator_digest=digest,
                               widths=WIDTHS, feature_shapes={g.name: [g.resolution, g.resolution, g.channels]
                                                              for g in groups})
        save_interpreter(root / f"interp{i}", v, meta)
        dirs.append(root / f"interp{i}")
    return root / "gen", dirs


def render_rate(spec, gen_vars, groups, models, interp, batch: int, min_time: float) -> dict:
    from radgan_jax.interpret import factory
    from radgan_jax.parallel.mesh import make_mesh

    mesh = make_mesh(None, jax.local_devices())
    r = factory.Renderer(Generator(spec), gen_vars, models, interp, groups, mesh, psi=0.7, per_device_batch=batch)
    n = 4 * r.step_rows  # 4 steps per call: dispatched ahead of the host transfers, as in a chunk
    ks, idx = np.zeros(n, np.int64), np.arange(n)
    z = factory.latents(0, ks, idx, spec.z_dim)
    t0 = time.perf_counter()
    r(z, ks)
    compile_s = time.perf_counter() - t0
    times = []
    while sum(times) < min_time or len(times) < 2:
        t0 = time.perf_counter()
        r(z, ks)
        times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    return dict(rows_per_call=n, render_pairs_per_s=n / sec, first_call_s=compile_s, iters=len(times))


def job_config(gen: Path, interps: list[Path], num: int, batch: int, chunk: int, formats: str):
    from configs.interpret.sample import get_config

    config = get_config()
    config.update(dict(checkpoint=str(gen), interpreters=",".join(map(str, interps)), classes="0",
                       num_per_class=num, per_device_batch=batch, chunk_size=chunk, formats=formats,
                       overlays_per_class=4, progress=False))
    return config


def e2e_rate(gen: Path, interps: list[Path], num: int, batch: int, chunk: int, formats: str, workdir: Path) -> dict:
    """Job wall time for `num` pairs, after a one-chunk warm-up job (same programs: compiled once per process)."""
    from radgan_jax.jobs.interpret_sample import sample_dataset

    sample_dataset(job_config(gen, interps, chunk, batch, chunk, formats), str(workdir / "warmup"))
    t0 = time.perf_counter()
    sample_dataset(job_config(gen, interps, num, batch, chunk, formats), str(workdir / "timed"))
    total = time.perf_counter() - t0
    return dict(e2e_pairs=num, e2e_pairs_per_s=num / total, e2e_total_s=total)


def _rss_mib() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2 ** 20
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _reset_peak() -> None:
    """Linux: reset this process's RSS high-water mark (a child inherits its parent's through fork + exec)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_mib() -> float:
    """RSS high-water mark: VmHWM (resettable), else ru_maxrss (KiB on Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_worker(args) -> None:
    """Subprocess: run the job over --num pairs on the checkpoints saved in --worker-dir, print the RSS samples
    as one JSON line (a fresh process: its high-water mark is the job's own)."""
    from radgan_jax.jobs.interpret_sample import sample_dataset

    root = Path(args.worker_dir)
    gen, interps = root / "gen", [root / f"interp{i}" for i in range(args.members)]
    _reset_peak()
    marks = sorted({max(1, args.num // 10), max(1, args.num // 2), args.num})
    samples = [dict(pairs=0, rss_mib=_rss_mib(), peak_mib=_peak_mib(), t=0.0)]
    t0 = time.perf_counter()

    def on_chunk(n: int) -> None:
        while marks and n >= marks[0]:
            samples.append(dict(pairs=n, rss_mib=_rss_mib(), peak_mib=_peak_mib(), t=time.perf_counter() - t0))
            marks.pop(0)

    sample_dataset(job_config(gen, interps, args.num, args.batch, args.chunk, args.formats), str(root / "out"),
                   on_chunk=on_chunk)
    print("MEMORY " + json.dumps(dict(samples=samples, final_peak_mib=_peak_mib())), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="64,256", help="resolutions for the pairs/s rows")
    p.add_argument("--members", type=int, default=1, help="interpreters (> 1: ensemble with JSD uncertainty)")
    p.add_argument("--batch", type=int, default=8, help="per-device batch")
    p.add_argument("--chunk", type=int, default=256, help="chunk size of the job")
    p.add_argument("--formats", default="nnunet,tfds")
    p.add_argument("--min-time", type=float, default=2.0, help="seconds of timed render calls per size")
    p.add_argument("--e2e-num", type=int, default=1024, help="pairs the end-to-end job writes per size (0: skip)")
    p.add_argument("--num", type=int, default=10000, help="pairs written for the memory measurement (0: skip)")
    p.add_argument("--mem-size", type=int, default=64, help="resolution of the memory run")
    p.add_argument("--worker-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker_dir:
        memory_worker(args)
        return
    backend = jax.default_backend()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for res in (int(s) for s in args.sizes.split(",") if s):
            spec, gen_vars, groups, models, interp = build(res, args.members)
            row = dict(res=res, members=args.members, **render_rate(spec, gen_vars, groups, models, interp,
                                                                     args.batch, args.min_time))
            if args.e2e_num:
                root = Path(tmp) / f"r{res}"
                gen, interps = save_assets(spec, gen_vars, groups, interp, root)
                chunk = min(args.chunk, max(args.batch, args.e2e_num // 4 // args.batch * args.batch))
                row.update(e2e_rate(gen, interps, args.e2e_num, args.batch, chunk, args.formats, root / "out"))
            rows.append(row)
        memory = None
        if args.num:
            spec, gen_vars, groups, _, interp = build(args.mem_size, args.members)
            save_assets(spec, gen_vars, groups, interp, Path(tmp) / "mem")
            cmd = [sys.executable, os.path.abspath(__file__), "--worker-dir", str(Path(tmp) / "mem"), "--num",
                   str(args.num), "--mem-size", str(args.mem_size), "--members", str(args.members), "--batch",
                   str(args.batch), "--chunk", str(args.chunk), "--formats", args.formats]
            r = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in r.stdout.splitlines() if x.startswith("MEMORY ")]
            if r.returncode or not line:
                raise RuntimeError(f"memory worker failed (rc {r.returncode}):\n{r.stderr[-3000:]}")
            memory = json.loads(line[-1][len("MEMORY "):])
    print(f"labeled-data factory on {backend} ({jax.devices()[0].device_kind}, {jax.local_device_count()} devices, "
          f"{platform.node()}); per-device batch {args.batch}, {args.members} interpreter(s), formats {args.formats}")
    hdr = f"{'res':>5}{'rows/call':>10}{'render pairs/s':>16}{'first call s':>14}{'written pairs/s':>17}{'pairs':>7}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        e2e = r.get("e2e_pairs_per_s")
        print(f"{r['res']:>5}{r['rows_per_call']:>10}{r['render_pairs_per_s']:>16.2f}{r['first_call_s']:>14.1f}"
              f"{'-' if e2e is None else f'{e2e:.2f}':>17}{r.get('e2e_pairs', 0):>7}")
    if memory:
        print(f"\nhost memory while writing {args.num} pairs at {args.mem_size} px (chunk {args.chunk}):")
        print(f"{'pairs':>8}{'RSS MiB':>10}{'peak RSS MiB':>14}{'elapsed s':>11}")
        for s in memory["samples"]:
            print(f"{s['pairs']:>8}{s['rss_mib']:>10.0f}{s['peak_mib']:>14.0f}{s['t']:>11.1f}")
    print(json.dumps({"bench": "interpreter", "backend": backend, "device": jax.devices()[0].device_kind,
                      "devices": jax.local_device_count(), "members": args.members, "per_device_batch": args.batch,
                      "formats": args.formats, "results": rows, "memory": memory and dict(
                          memory, num=args.num, resolution=args.mem_size, chunk=args.chunk)}))


if __name__ == "__main__":
    main()
