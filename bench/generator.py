"""Generator throughput: img/s, FLOPs/image (XLA cost analysis) and achieved GFLOP/s.

    python bench/generator.py                 # golden-sized 16/32 models + paper-size stem and 32/64 heads
    python bench/generator.py --dtypes float32,bfloat16 --batches 8,64    # e.g. on a GPU

Cases: the golden configurations (train.py --cbase 256 --cmax 64 --syn_layers 10, c_dim 4: 16 px stem and
its 32 px head) and the paper-size generator (syn_layers 10, channel_base 65536, channel_max 1024: 1024
channels at 16 px) with its 32 and 64 px heads. Random-initialised weights (throughput does not depend on
values). Prints a table and one JSON line. A case whose estimated time (from the batch-8 run) exceeds
--max-seconds is skipped and reported as such, so the default run finishes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from radgan_jax.models.stylegan_xl.from_config import spec_chain_from_config, stylegan_xl_config  # noqa: E402
from radgan_jax.models.stylegan_xl.generator import Generator, init_generator  # noqa: E402

GOLDEN = dict(z_dim=64, w_dim=512, c_dim=4, syn_layers=10, channel_base=512, channel_max=128, stem_batch_size=64)
PAPER = dict(c_dim=124, syn_layers=10, channel_base=65536, channel_max=1024)
CASES = {
    "golden16": (GOLDEN, 16),
    "golden32": (GOLDEN, 32),
    "paper16": (PAPER, 16),
    "paper32": (PAPER, 32),
    "paper64": (PAPER, 64),
}


def build(case: str, dtype: str):
    kw, res = CASES[case]
    spec = spec_chain_from_config(stylegan_xl_config(resolution=res, **kw))[-1]
    gen = Generator(spec, compute_dtype=dtype)
    variables = init_generator(spec, jax.random.key(0))
    return spec, gen, variables


def measure(gen, spec, variables, batch: int, min_time: float) -> dict:
    z = jax.random.normal(jax.random.key(1), (batch, spec.z_dim))
    c = jax.nn.one_hot(jnp.arange(batch) % max(spec.c_dim, 1), spec.c_dim) if spec.c_dim else None
    fn = jax.jit(lambda v, z, c: gen.apply(v, z, c, truncation_psi=0.7))
    t0 = time.perf_counter()
    compiled = fn.lower(variables, z, c).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    compiled(variables, z, c).block_until_ready()  # warm-up
    times = []
    while sum(times) < min_time or len(times) < 2:
        t0 = time.perf_counter()
        compiled(variables, z, c).block_until_ready()
        times.append(time.perf_counter() - t0)
        if len(times) >= 20:
            break
    sec = float(np.median(times))
    return dict(batch=batch, sec_per_batch=sec, img_per_s=batch / sec, flops_per_img=flops / batch,
                gflops_per_s=flops / sec / 1e9, compile_s=compile_s, iters=len(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--batches", default="8,64")
    p.add_argument("--dtypes", default=None, help="default: float32 on CPU, float32,bfloat16 on GPU/TPU")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timed runs per case")
    p.add_argument("--max-seconds", type=float, default=60.0, help="skip cases estimated to take longer")
    args = p.parse_args()
    backend = jax.default_backend()
    dtypes = (args.dtypes or ("float32" if backend == "cpu" else "float32,bfloat16")).split(",")
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for case in args.cases.split(","):
        for dtype in dtypes:
            spec, gen, variables = build(case, dtype)
            per_img = None
            for batch in batches:
                if per_img is not None and per_img * batch * 3 > args.max_seconds:
                    rows.append(dict(case=case, dtype=dtype, batch=batch, skipped=True,
                                     reason=f"est. {per_img * batch * 3:.0f}s > --max-seconds"))
                    continue
                r = measure(gen, spec, variables, batch, args.min_time)
                per_img = r["sec_per_batch"] / batch
                rows.append(dict(case=case, dtype=dtype, res=spec.img_resolution, **r))
    hdr = (f"{'case':<10}{'dtype':<10}{'res':>5}{'batch':>7}{'img/s':>10}"
           f"{'GFLOP/img':>11}{'GFLOP/s':>9}{'compile s':>10}")
    print(f"generator throughput on {backend} ({jax.devices()[0].device_kind}, {platform.node()})")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        if r.get("skipped"):
            print(f"{r['case']:<10}{r['dtype']:<10}{'':>5}{r['batch']:>7}  skipped: {r['reason']}")
            continue
        print(f"{r['case']:<10}{r['dtype']:<10}{r['res']:>5}{r['batch']:>7}{r['img_per_s']:>10.2f}"
              f"{r['flops_per_img'] / 1e9:>11.3f}{r['gflops_per_s']:>9.1f}{r['compile_s']:>10.1f}")
    print(json.dumps({"bench": "generator", "backend": backend, "device": jax.devices()[0].device_kind,
                      "results": rows}))


if __name__ == "__main__":
    main()
