"""Training reports: TensorBoard scalars/images, `stats.jsonl`, a kimg progress bar and StyleGAN status lines.

Only the main process reports; every other process gets a reporter that does nothing (no files, no bar), so the
training loop can call it unconditionally on all hosts.

TensorFlow policy (README): nothing under `radgan_jax/train` may import TensorFlow at module import. clu's
TensorBoard writer needs it, so `clu.metric_writers` is imported lazily, only when the main process actually asks
for TensorBoard; `use_tensorboard=False` (or any non-main process) never loads TensorFlow.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

STATS_FILE = "stats.jsonl"
TENSORBOARD_DIR = "tensorboard"
_KIMG_EPS = 1e-6  # kimg is a float computed from nimg / 1e3: compare with a little slack

# Per-field number formats of the status line (training_loop.py of StyleGAN2-ADA / StyleGAN-XL).
_STATUS_FORMATS = {"tick": "d", "kimg": ".1f", "sec/tick": ".1f", "sec/kimg": ".2f", "maintenance": ".1f",
                   "cpumem": ".2f", "gpumem": ".2f", "reserved": ".2f", "augment": ".3f"}


def format_time(seconds: float) -> str:
    """Human-readable duration, like dnnlib.util.format_time_brief: '42s', '1m 02s', '2h 05m', '3d 04h'."""
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 60 * 60:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 24 * 60 * 60:
        return f"{s // 3600}h {(s // 60) % 60:02d}m"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h"


def _format_value(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if key == "time":
        return format_time(value)
    fmt = _STATUS_FORMATS.get(key)
    if fmt == "d":
        return str(int(value))
    if fmt is not None:
        return format(float(value), fmt)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return format(float(value), ".4g")


def _to_float(value: Any) -> float:
    """Python float from a Python/numpy/jax scalar (jax arrays support float())."""
    return float(np.asarray(value))


def _json_number(value: float) -> float | None:
    # Strict JSON has no NaN/Infinity: store null so `jq`/pandas read every line.
    return value if math.isfinite(value) else None


class TrainingReporter:
    """All per-tick reporting of a training run, in one object.

    Args:
      workdir: run directory; receives `stats.jsonl` and `tensorboard/` (main process only).
      total_kimg: length of the run, the progress bar's total.
      is_main_process: only the main process writes files and shows a bar (`jax.process_index() == 0`).
      use_tensorboard: write TensorBoard event files through clu's default metric writer.
      progress: show a tqdm bar over kimg on stderr.
      postfix_keys: scalars shown in the bar's postfix; default: the first three of the latest tick.
    """

    def __init__(self, workdir: str | os.PathLike, total_kimg: float, is_main_process: bool,
                 use_tensorboard: bool = True, progress: bool = True,
                 postfix_keys: Sequence[str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.total_kimg = float(total_kimg)
        self.is_main_process = bool(is_main_process)
        self.stats_path = self.workdir / STATS_FILE
        self.postfix_keys = tuple(postfix_keys) if postfix_keys is not None else None
        self._latest: dict[str, float] = {}
        self._writer: Any = None
        self._bar: tqdm | None = None
        if not self.is_main_process:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        if use_tensorboard:
            self._writer = _make_tensorboard_writer(self.workdir / TENSORBOARD_DIR)
        if progress:
            self._bar = tqdm(total=self.total_kimg, unit="kimg", dynamic_ncols=True, file=sys.stderr,
                             bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} kimg [{elapsed}<{remaining}{postfix}]")

    # -- scalars -------------------------------------------------------------------------------------------------

    def write_scalars(self, step: int, kimg: float, scalars: Mapping[str, Any]) -> None:
        """One tick's scalars -> TensorBoard (x axis: `step`) and one `stats.jsonl` line."""
        values = {str(k): _to_float(v) for k, v in scalars.items()}
        self._latest = values
        if not self.is_main_process:
            return
        if self._writer is not None:
            self._writer.write_scalars(int(step), values)
        record = {"kimg": float(kimg), "step": int(step), **{k: _json_number(v) for k, v in values.items()}}
        # Open/append/close per tick: ticks are rare, and a crash never leaves an unflushed buffer behind.
        with open(self.stats_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_after(self, kimg: float) -> int:
        """On resume: drop `stats.jsonl` lines past `kimg` (and a torn last line); returns how many were kept.

        The training loop appends again from the resume point, so the file stays one monotonic series.
        """
        if not self.is_main_process or not self.stats_path.exists():
            return 0
        kept = []
        for line in self.stats_path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash mid-write
            if isinstance(record, dict) and float(record.get("kimg", math.inf)) <= kimg + _KIMG_EPS:
                kept.append(line)
        tmp = self.stats_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.stats_path)  # atomic: a crash here leaves the old or the new file, never half
        return len(kept)

    # -- images --------------------------------------------------------------------------------------------------

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """uint8 [H, W, C] (C = 1 or 3) images -> TensorBoard image summaries."""
        if not self.is_main_process or self._writer is None:
            return
        batch = {}
        for key, image in images.items():
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
                raise ValueError(f"write_images[{key!r}]: expected uint8 [H, W, 1|3], got {image.dtype} "
                                 f"{image.shape}")
            batch[key] = image[None]
        self._writer.write_images(int(step), batch)

    # -- console -------------------------------------------------------------------------------------------------

    def update_progress(self, cur_kimg: float) -> None:
        """Move the bar to `cur_kimg` (absolute, so a resumed run starts where it left off)."""
        if self._bar is None:
            return
        self._bar.n = min(float(cur_kimg), self.total_kimg)
        keys = self.postfix_keys if self.postfix_keys is not None else tuple(self._latest)[:3]
        postfix = {k: f"{self._latest[k]:.4g}" for k in keys if k in self._latest}
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.refresh()

    @staticmethod
    def status_line(fields: Mapping[str, Any]) -> str:
        """StyleGAN-style tick line: 'tick 3  kimg 12.0  time 1m 02s  sec/tick 20.1  sec/kimg 1.68'.

        Values are formatted by key ('time' in seconds -> format_time, kimg .1f, sec/kimg .2f, ...); strings are
        printed as given and other numbers with 4 significant digits.
        """
        return "  ".join(f"{key} {_format_value(key, value)}" for key, value in fields.items())

    def print_status(self, fields: Mapping[str, Any]) -> str:
        """Format and print the status line (main process only; above the bar so it is not garbled)."""
        line = self.status_line(fields)
        if self.is_main_process:
            if self._bar is not None:
                self._bar.write(line, file=sys.stdout)
            else:
                print(line, flush=True)
        return line

    # -- lifetime ------------------------------------------------------------------------------------------------

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer and the bar; safe to call twice."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> TrainingReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _make_tensorboard_writer(logdir: Path) -> Any:
    """clu's default writer (TensorBoard event files + absl logging), imported lazily (TensorFlow policy)."""
    from clu import metric_writers  # pulls in TensorFlow: keep it off module import

    logdir.mkdir(parents=True, exist_ok=True)
    return metric_writers.create_default_writer(os.fspath(logdir), just_logging=False)
