"""TrainingReporter: TensorBoard event contents, stats.jsonl + resume truncation, non-main silence, console text."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from radgan_jax.train.reporting import STATS_FILE, TENSORBOARD_DIR, TrainingReporter, format_time


def _read_events(logdir):
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(str(logdir), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    return {tag: [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}


def _read_stats(workdir):
    return [json.loads(line) for line in (workdir / STATS_FILE).read_text().splitlines()]


def test_scalars_and_images_reach_tensorboard_and_stats(tmp_path) -> None:
    rep = TrainingReporter(tmp_path, total_kimg=12, is_main_process=True, progress=False)
    for tick in range(3):
        rep.write_scalars(step=tick * 50, kimg=tick * 4.0,
                          scalars={"Loss/G/loss": 1.5 + tick, "Loss/D/loss": np.float32(0.25 * tick), "fd": math.nan})
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    grey = np.full((6, 7, 1), 9, np.uint8)
    rep.write_images(100, {"fakes": rgb, "grey": grey})
    with pytest.raises(ValueError, match="uint8"):
        rep.write_images(100, {"bad": rgb.astype(np.float32)})
    rep.close()
    rep.close()  # idempotent

    assert len(list((tmp_path / TENSORBOARD_DIR).glob("events.out.tfevents.*"))) == 1
    events = _read_events(tmp_path / TENSORBOARD_DIR)
    assert [(s, float(v)) for s, v in events["Loss/G/loss"]] == [(0, 1.5), (50, 2.5), (100, 3.5)]
    assert [(s, float(v)) for s, v in events["Loss/D/loss"]] == [(0, 0.0), (50, 0.25), (100, 0.5)]
    assert all(math.isnan(float(v)) for _, v in events["fd"])
    # Image summaries are [width, height, png...] string tensors.
    (step, img), = events["fakes"]
    assert step == 100 and img[:2].tolist() == [b"5", b"4"]
    (_, img), = events["grey"]
    assert img[:2].tolist() == [b"7", b"6"]

    stats = _read_stats(tmp_path)
    assert [r["kimg"] for r in stats] == [0.0, 4.0, 8.0]
    assert stats[1] == {"kimg": 4.0, "step": 50, "Loss/G/loss": 2.5, "Loss/D/loss": 0.25, "fd": None}


def test_stats_append_across_runs_and_truncate_after_resume_point(tmp_path) -> None:
    rep = TrainingReporter(tmp_path, 100, True, use_tensorboard=False, progress=False)
    for kimg in (0.0, 4.0, 8.0, 12.0):
        rep.write_scalars(int(kimg * 10), kimg, {"loss": kimg})
    rep.close()
    with open(tmp_path / STATS_FILE, "a") as f:
        f.write('{"kimg": 16.0, "st')  # torn by a crash mid-write

    rep = TrainingReporter(tmp_path, 100, True, use_tensorboard=False, progress=False)
    assert rep.truncate_after(8.0) == 3
    assert [r["kimg"] for r in _read_stats(tmp_path)] == [0.0, 4.0, 8.0]
    rep.write_scalars(120, 12.0, {"loss": -1.0})  # the resumed run continues the same file
    rep.close()
    assert [(r["kimg"], r["loss"]) for r in _read_stats(tmp_path)] == [(0.0, 0.0), (4.0, 4.0), (8.0, 8.0),
                                                                      (12.0, -1.0)]
    assert not list(tmp_path.glob("*.tmp"))
    assert not (tmp_path / TENSORBOARD_DIR).exists()


def test_non_main_process_writes_nothing_and_shows_no_bar(tmp_path, capsys) -> None:
    workdir = tmp_path / "run"
    rep = TrainingReporter(workdir, 10, is_main_process=False)
    rep.write_scalars(0, 0.0, {"loss": 1.0})
    rep.write_images(0, {"x": np.zeros((2, 2, 3), np.uint8)})
    rep.update_progress(5.0)
    line = rep.print_status({"tick": 0, "kimg": 0.0})
    assert rep.truncate_after(0.0) == 0
    rep.close()
    assert line == "tick 0  kimg 0.0"
    assert not workdir.exists()
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_non_main_process_and_module_import_do_not_load_tensorflow(tmp_path) -> None:
    code = ("import sys\n"
            "from radgan_jax.train.reporting import TrainingReporter\n"
            f"r = TrainingReporter({str(tmp_path)!r}, 10, False)\n"
            f"r2 = TrainingReporter({str(tmp_path)!r}, 10, True, use_tensorboard=False, progress=False)\n"
            "r.write_scalars(0, 0.0, {'a': 1.0}); r2.write_scalars(0, 0.0, {'a': 1.0}); r.close(); r2.close()\n"
            "sys.exit(1 if [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'clu')] else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]


def test_progress_bar_and_status_line(tmp_path, capsys) -> None:
    rep = TrainingReporter(tmp_path, 20, True, use_tensorboard=False, postfix_keys=["Loss/G/loss", "fd"])
    rep.write_scalars(10, 4.0, {"Loss/G/loss": 1.23456, "Loss/D/loss": 9.0, "fd": 42.0})
    rep.update_progress(4.0)
    assert rep._bar is not None and rep._bar.n == 4.0
    rep.update_progress(25.0)  # clamped to total
    assert rep._bar.n == 20.0
    line = rep.print_status({"tick": 3, "kimg": 12.0, "time": 62.4, "sec/tick": 20.123, "sec/kimg": 1.6789,
                             "augment": 0.1, "note": "ok", "misc": 1234.5678})
    rep.close()
    assert line == ("tick 3  kimg 12.0  time 1m 02s  sec/tick 20.1  sec/kimg 1.68  augment 0.100  note ok  "
                    "misc 1235")
    out = capsys.readouterr()
    assert line in out.out
    assert "kimg" in out.err and "Loss/G/loss=1.235" in out.err and "fd=42" in out.err
    assert "Loss/D/loss" not in out.err


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (42.4, "42s"), (59.6, "1m 00s"), (62, "1m 02s"),
                                           (3599, "59m 59s"), (2 * 3600 + 5 * 60 + 10, "2h 05m"),
                                           (23 * 3600 + 59 * 60, "23h 59m"), (3 * 86400 + 4 * 3600 + 59, "3d 04h"),
                                           (12 * 86400, "12d 00h")])
def test_format_time(seconds, text) -> None:
    assert format_time(seconds) == text
