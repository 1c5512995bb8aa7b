"""`mode=data_verify`: integrity check of a dataset folder, optionally moving the bad files aside.

    python -m radgan_jax.main --config=configs/data/verify.py --workdir=OUT \
        --config.dataset=DIR [--config.format=NAME] [--config.quarantine=True]

Prints the report (format found, counts, problems grouped by kind with their files) and writes
OUT/verify_report.json and OUT/verify_report.txt. Exit status: 0 when nothing wrong is left in the dataset
(clean, or every bad file quarantined), 1 otherwise; a missing folder, an unknown format or an unrecognised
layout is a one-line error (status 1) instead of a traceback.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import Any

from radgan_jax.data.base import DataError
from radgan_jax.data.verify import verify_dataset


def parse_reader_options(text: str) -> dict[str, Any]:
    """'threshold=128,mode=L' -> {'threshold': 128, 'mode': 'L'} (values as Python literals, else strings)."""
    out: dict[str, Any] = {}
    for part in (p.strip() for p in str(text or "").split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"reader_options: expected key=value, got {part!r}")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def run(config, workdir: str) -> None:
    if not config.dataset:
        sys.exit("data_verify: set --config.dataset=DIR (the dataset folder to check)")
    qdir = None
    if config.quarantine:
        qdir = Path(config.quarantine_dir or os.path.join(workdir, "quarantine")).absolute()
    try:
        report = verify_dataset(config.dataset, config.format, quarantine_dir=qdir, progress=config.progress,
                                reader_options=parse_reader_options(config.reader_options))
    except (DataError, ValueError) as e:
        sys.exit(f"data_verify: {e}")
    text = report.to_text(max_per_kind=int(config.max_listed))
    print(text)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "verify_report.txt"), "w") as f:
        f.write(report.to_text(max_per_kind=10**9) + "\n")
    with open(os.path.join(workdir, "verify_report.json"), "w") as f:
        f.write(report.to_json() + "\n")
    if qdir is not None:
        n_paths = sum(len(r["moved_to"]) for r in report.quarantined)
        print(f"quarantined {len(report.quarantined)} item(s), {n_paths} path(s) moved to {qdir}")
    if not report.ok:
        hint = "" if qdir is not None else " (or rerun with --config.quarantine=True to move the bad files aside)"
        sys.exit(f"data_verify: {len(report.remaining)} problem(s) left in {config.dataset}; "
                 f"see {os.path.join(workdir, 'verify_report.txt')}{hint}")
