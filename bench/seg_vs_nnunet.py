"""Ours vs real nnunetv2 on the same real 2D data, plan, split and budget: validation Dice and iterations/s.

    python bench/seg_vs_nnunet.py [--size 128] [--epochs 4] [--iters 50] [--val-iters 10] [--out DIR]
    python bench/seg_vs_nnunet.py --size 512 --epochs 100 --iters 250 --val-iters 50     # the paper's setting (GPU)

Data: CVC-ClinicDB (612 colonoscopy frames + polyp masks, $RADGAN_SHARED/data) converted by our data_convert job
to an nnU-Net raw dataset resized to SIZE x SIZE. Both sides then plan it (our seg_plan, nnunetv2's planner +
DefaultPreprocessor; the plans are compared), take fold 0 of the same splits_final.json, train for the same
epochs x iterations (+ validation iterations) and run nnU-Net's final validation (sliding window with mirroring,
export, summary.json). Printed side by side: foreground-mean validation Dice (ours must be within 0.02 of
nnunetv2's at a converged budget), training iterations/s after the first epoch (compile / warm-up excluded) and
the ratio. nnunetv2 runs on torch's device (CUDA when present, else CPU); ours on JAX's default backend.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATASET_ID = 601

NNUNET_CHILD = textwrap.dedent("""
    import json, os, sys, time
    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprint_dataset,
        plan_experiment_dataset, preprocess_dataset)
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    dataset_id, epochs, iters, val_iters, threads = (int(a) for a in sys.argv[1:6])
    splits = sys.argv[6]
    torch.set_num_threads(threads)
    extract_fingerprint_dataset(dataset_id, check_dataset_integrity=True, clean=True, verbose=False)
    plan_experiment_dataset(dataset_id)
    preprocess_dataset(dataset_id, configurations=('2d',), num_processes=(2,))
    pre = os.path.join(os.environ['nnUNet_preprocessed'], next(d for d in os.listdir(os.environ['nnUNet_preprocessed'])
                                                               if d.startswith('Dataset%03d' % dataset_id)))
    import shutil; shutil.copy(splits, os.path.join(pre, 'splits_final.json'))
    plans = json.load(open(os.path.join(pre, 'nnUNetPlans.json')))
    dataset_json = json.load(open(os.path.join(pre, 'dataset.json')))

    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    plans['continue_training'] = False  # what nnunetv2.run.run_training adds before building the trainer
    t = nnUNetTrainer(dict(plans), '2d', 0, dataset_json, device=device)
    t.num_epochs, t.num_iterations_per_epoch, t.num_val_iterations_per_epoch = epochs, iters, val_iters
    t.run_training()
    t.perform_actual_validation(False)
    lg = getattr(t.logger, 'local_logger', t.logger).my_fantastic_logging
    times = [e - s for s, e in zip(lg['epoch_start_timestamps'], lg['epoch_end_timestamps'])]
    summary = json.load(open(os.path.join(t.output_folder, 'validation', 'summary.json')))
    print('RESULT ' + json.dumps({'epoch_times': times, 'dice': summary['foreground_mean']['Dice'],
                                   'plan': plans['configurations']['2d'], 'device': str(device)}))
""")


def _run(cmd: list[str], env: dict | None = None, cwd: Path = REPO) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def _main_cmd(config: str, workdir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "radgan_jax.main", f"--config={config}", f"--workdir={workdir}", *overrides]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--val-iters", type=int, default=10)
    p.add_argument("--max-cases", type=int, default=0, help="first N frames only (0: all 612)")
    p.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default="")
    p.add_argument("--skip-nnunet", action="store_true")
    p.add_argument("--reuse", action="store_true", help="keep our finished plan and run in --out")
    args = p.parse_args()
    shared = Path(os.environ.get("RADGAN_SHARED", REPO.parent / "shared"))
    frames = shared / "data" / "CVC-ClinicDB"
    if not frames.is_dir():
        sys.exit(f"{frames} not found: set RADGAN_SHARED")
    import tempfile

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="seg_vs_nnunet_"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    budget = f"{args.epochs} epochs x ({args.iters} train + {args.val_iters} val) iterations, {args.size}x{args.size}"
    print(f"# budget: {budget}; workdir {out}", flush=True)

    raw_root = out / "convert" / "nnUNet_raw"
    if not raw_root.is_dir():
        _run(_main_cmd("configs/data/convert.py", out / "convert", f"--config.dataset={frames}",
                       "--config.target=nnunet", f"--config.dataset_id={DATASET_ID}", "--config.dataset_name=CVC",
                       f"--config.resize={args.size}", f"--config.max_cases={args.max_cases}",
                       "--config.progress=False"), env)
    raw = next(raw_root.glob(f"Dataset{DATASET_ID}_*"))
    plans_dir = out / "ours_plan"
    if not (args.reuse and (plans_dir / "nnUNetPlans.json").is_file()):
        _run(_main_cmd("configs/seg/plan.py", plans_dir, f"--config.dataset={raw}", "--config.num_workers=2",
                       "--config.progress=False"), env)
    from radgan_jax.seg import splits as splits_lib

    case_ids = sorted(p.stem for p in (plans_dir / "nnUNetPlans_2d").glob("*.npz"))
    split_file = plans_dir / "splits_final.json"
    splits_lib.get_or_create_splits(split_file, case_ids)

    t0 = time.time()
    run_dir = out / "ours_fold0"
    if not (args.reuse and (run_dir / "validation" / "summary.json").is_file()):
            _run(_main_cmd("configs/seg/train.py", run_dir, f"--config.plans={plans_dir}", "--config.fold=0",
                       f"--config.epochs={args.epochs}", f"--config.iterations_per_epoch={args.iters}",
                       f"--config.val_iterations={args.val_iters}", "--config.progress=False"), env)
    ours_wall = time.time() - t0
    log = [json.loads(line) for line in (run_dir / "training_log.jsonl").read_text().splitlines()]
    ours_dice = json.loads((run_dir / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"]
    ours_ips = _its_per_s([r["epoch_time_s"] for r in log], args.iters + args.val_iters)
    ours_plan = json.loads((plans_dir / "nnUNetPlans.json").read_text())["configurations"]["2d"]

    ref = None
    if not args.skip_nnunet:
        nn_env = dict(env, nnUNet_raw=str(raw_root), nnUNet_preprocessed=str(out / "nnUNet_preprocessed"),
                      nnUNet_results=str(out / "nnUNet_results"), nnUNet_n_proc_DA="1")
        text = _run([sys.executable, "-c", NNUNET_CHILD, str(DATASET_ID), str(args.epochs), str(args.iters),
                     str(args.val_iters), str(args.torch_threads), str(split_file)], nn_env)
        ref = json.loads(next(line for line in text.splitlines() if line.startswith("RESULT "))[7:])

    keys = ("patch_size", "batch_size", "batch_dice", "normalization_schemes", "spacing")
    rows = [("validation Dice (foreground mean)", f"{ours_dice:.4f}", f"{ref['dice']:.4f}" if ref else "-"),
            ("train+val iterations/s (epochs >= 1)", f"{ours_ips:.3f}",
             f"{_its_per_s(ref['epoch_times'], args.iters + args.val_iters):.3f}" if ref else "-"),
            ("plan " + "/".join(keys), str([ours_plan[k] for k in keys]),
             str([ref["plan"][k] for k in keys]) if ref else "-")]
    print(f"\n{'':40s} {'radgan_jax':>28s} {'nnunetv2':>28s}")
    for name, a, b in rows:
        print(f"{name:40s} {a:>28s} {b:>28s}")
    result = {"bench": "seg_vs_nnunet", "budget": budget, "ours_dice": ours_dice, "ours_its_per_s": ours_ips,
              "ours_wall_s": ours_wall, "jax_backend": _backend(), "host": platform.node()}
    if ref:
        ref_ips = _its_per_s(ref["epoch_times"], args.iters + args.val_iters)
        result.update(nnunet_dice=ref["dice"], nnunet_its_per_s=ref_ips, nnunet_device=ref["device"],
                      dice_diff=ours_dice - ref["dice"], speed_ratio=ours_ips / ref_ips if ref_ips else None,
                      same_plan=all(ours_plan[k] == ref["plan"][k] for k in keys))
    print(json.dumps(result))
    return 0


def _its_per_s(epoch_times: list[float], its_per_epoch: int) -> float:
    times = epoch_times[1:] or epoch_times  # epoch 0 holds compilation / warm-up
    return its_per_epoch * len(times) / sum(times)


def _backend() -> str:
    import jax

    return jax.default_backend()


if __name__ == "__main__":
    sys.exit(main())
