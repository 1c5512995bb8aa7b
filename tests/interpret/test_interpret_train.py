"""`interpret_train` end to end on demo32: an AnnotatedSet made by program (ws from the mapping, masks by a rule on
the image) trains, the loss falls, every output is written, the saved interpreter predicts exactly what the trained
state predicts; resume is exact (in process: 2 + 2 epochs == 4 straight; slow: kill -9 + rerun of the command);
and a set from another generator, another label map or an empty set is refused with a clear message."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from radgan_jax.checkpoint import Checkpointer, save_generator
from radgan_jax.interpret import annotate, model_io
from radgan_jax.interpret import trainer as tr
from radgan_jax.interpret.features import feature_groups
from radgan_jax.jobs import interpret_train
from radgan_jax.models.stylegan_xl.builtin import builtin_generator
from radgan_jax.models.stylegan_xl.generator import Generator
from radgan_jax.parallel.mesh import make_mesh

REPO = Path(__file__).resolve().parents[2]
LABELS = {"background": 0, "bright": 1, "dark": 2}
N = 8  # 2 steps of 4 per epoch
EPOCHS = 4


def _config(**kw):
    spec = importlib.util.spec_from_file_location("interpret_train_config", REPO / "configs/interpret/train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.update(dict(epochs=EPOCHS, batch_size=4, widths="8,8,8", lr=1e-3, progress=False,
                       num_previews=4, dice_weight=0.5, checkpoint_every=2))
    config.mesh.update(dict(data=4, tensor=-1))  # 8 test devices: the batch of 4 split 4 ways
    config.update(kw)
    return config


def make_set(spec, variables, n: int, seed: int = 0) -> annotate.AnnotatedSet:
    """n demo32 samples: ws from the mapping; masks by a rule on (c, ws): a disc of class-dependent radius is
    label 1, the rows below a ws-dependent line are label 2."""
    gen = Generator(spec)
    z = jax.random.normal(jax.random.key(seed), (n, spec.z_dim))
    c = np.arange(n, dtype=np.int32) % spec.c_dim
    ws = np.asarray(jax.jit(functools.partial(gen.apply, method=Generator.map))(variables, z,
                                                                                jax.nn.one_hot(c, spec.c_dim)))
    res = spec.img_resolution
    yy, xx = np.mgrid[:res, :res] - (res - 1) / 2
    disc = (yy ** 2 + xx ** 2)[None] <= (res / 8 + 2 * c[:, None, None]) ** 2
    line = np.where(ws[:, 0, 0] > 0, res * 3 // 4, res * 5 // 8)
    masks = np.where(disc, 1, np.where(np.arange(res)[None, :, None] >= line[:, None, None], 2, 0)).astype(np.int32)
    return annotate.AnnotatedSet(ws=ws.astype(np.float32), c=c, masks=masks, names=[f"s{i:03d}" for i in range(n)],
                                 labels=dict(LABELS), generator_digest=annotate.generator_digest(spec, variables))


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("interpret_train")
    spec, variables = builtin_generator("demo32", jax.random.key(0))
    variables = jax.device_get(variables)
    save_generator(root / "gen", variables, spec)  # the runs load it (fast) instead of re-initialising demo32
    ds = make_set(spec, variables, N)
    ds.save_npz(root / "set.npz")
    work = root / "run"
    interpret_train.run(_config(checkpoint=str(root / "gen"), annotations=str(root / "set.npz")), str(work))
    return dict(root=root, gen=root / "gen", npz=root / "set.npz", spec=spec, variables=variables, ds=ds, work=work)


def _state_leaves(workdir: Path) -> dict[str, np.ndarray]:
    with Checkpointer(workdir / "checkpoints", max_to_keep=None) as ck:
        items, meta, step = ck.restore()
    assert step == meta["epoch"] == EPOCHS
    flat = jax.tree_util.tree_flatten_with_path(items[interpret_train.STATE_ITEM])[0]
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in flat}


def _log(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "training_log.jsonl").read_text().splitlines()]


def test_trains_writes_outputs_and_round_trips(setup):
    work, ds = setup["work"], setup["ds"]
    rows = _log(work)
    assert [r["epoch"] for r in rows] == list(range(EPOCHS)) and all(r["steps"] == N // 4 for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"], [r["loss"] for r in rows]
    assert (work / "loss_curve.png").stat().st_size > 0
    assert sorted(p.name for p in (work / "previews").glob("*.png")) == [f"{n}.png" for n in ds.names[:4]]
    summary = json.loads((work / "train_dice.json").read_text())
    assert set(summary["per_sample"]) == set(ds.names) and 0.0 <= summary["mean"] <= 1.0

    module, variables, meta = model_io.load_interpreter(work / "interpreter")
    assert meta.labels == LABELS and meta.num_outputs == 3 and meta.widths == (8, 8, 8)
    assert meta.generator_digest == ds.generator_digest and meta.extra["epochs"] == EPOCHS
    model_io.check_generator(meta, annotate.generator_digest(setup["spec"], setup["variables"]))
    groups = feature_groups(setup["spec"])
    assert meta.feature_shapes == {g.name: [g.resolution, g.resolution, g.channels] for g in groups}

    with Checkpointer(work / "checkpoints", max_to_keep=None) as ck:
        items, _, _ = ck.restore()
    state = items[interpret_train.STATE_ITEM]
    trained = {"params": state["params"], "batch_stats": state["batch_stats"], "spectral": state["spectral"]}
    gen, mesh = Generator(setup["spec"]), make_mesh(_config().mesh)  # as the job: its compiled eval is reused
    predict = tr.make_eval_fn(gen, setup["variables"], module, groups, mesh, with_images=True)
    a, _ = tr.predict_all(predict, variables, ds.ws, ds.c, 16, mesh)
    b, _ = tr.predict_all(predict, trained, ds.ws, ds.c, 16, mesh)
    np.testing.assert_array_equal(a, b)
    assert a.shape == ds.masks.shape and set(np.unique(a)) <= set(LABELS.values())


def test_resume_in_process_is_exact(setup, tmp_path):
    config = _config(checkpoint=str(setup["gen"]), annotations=str(setup["npz"]))
    config.epochs = EPOCHS // 2
    interpret_train.run(config, str(tmp_path))
    assert len(_log(tmp_path)) == EPOCHS // 2
    config.epochs = EPOCHS  # rerun of a longer schedule continues from the checkpoint at epoch 2
    interpret_train.run(config, str(tmp_path))
    a, b = _state_leaves(setup["work"]), _state_leaves(tmp_path)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k} differs after 2 + 2 epochs")
    assert [r["loss"] for r in _log(tmp_path)] == [r["loss"] for r in _log(setup["work"])]
    config.seed = 1  # a workdir holds one run: other settings are refused, not mixed in
    with pytest.raises(SystemExit, match="other settings"):
        interpret_train.run(config, str(tmp_path))


def test_refusals(setup, tmp_path):
    ds, gen = setup["ds"], str(setup["gen"])

    def refused(match: str, ds_: annotate.AnnotatedSet | None = None, **kw) -> None:
        npz = setup["npz"]
        if ds_ is not None:
            npz = tmp_path / f"{match.split()[0]}.npz"
            ds_.save_npz(npz)
        with pytest.raises(SystemExit, match=match):
            interpret_train.run(_config(checkpoint=gen, annotations=str(npz), **kw), str(tmp_path / "work"))
        assert not (tmp_path / "work" / "checkpoints").exists()  # refused before anything is written

    other = dataclasses.replace(ds, generator_digest="sha256:" + "0" * 64)  # annotated on another generator
    refused("made with generator", other)
    refused("labels", labels="liver,kidney")
    refused("empty", dataclasses.replace(ds, ws=ds.ws[:0], c=ds.c[:0], masks=ds.masks[:0], names=[]))
    refused("does not split", batch_size=3)
    refused("needs 1..8", batch_size=16)
    refused("masks are", dataclasses.replace(ds, masks=ds.masks[:, :16, :16]))
    with pytest.raises(SystemExit, match="annotations"):
        interpret_train.run(_config(checkpoint=gen), str(tmp_path / "work"))
    with pytest.raises(SystemExit, match="generator"):
        interpret_train.run(_config(annotations=str(setup["npz"])), str(tmp_path / "work"))


def _cmd(gen: Path, npz: Path, workdir: Path) -> list[str]:
    return [sys.executable, "-m", "radgan_jax.main", "--config=configs/interpret/train.py", f"--workdir={workdir}",
            f"--config.checkpoint={gen}", f"--config.annotations={npz}", "--config.epochs=6", "--config.widths=8,8,8",
            "--config.lr=0.001", "--config.progress=False", "--config.num_previews=2"]


@pytest.mark.slow  # ~2-3 min: three processes compile the step
def test_kill_9_then_rerun_is_bit_identical(setup, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=str(setup["root"] / "cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    env.pop("XLA_FLAGS", None)  # one CPU device: the default mesh takes the batch of 4 whole
    ref = tmp_path / "ref"
    cmd = functools.partial(_cmd, setup["gen"], setup["npz"])
    subprocess.run(cmd(ref), cwd=REPO, env=env, check=True, capture_output=True, timeout=900)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    target = int(np.random.default_rng(int(time.time())).integers(1, 5))  # after the checkpoint of epoch 1..4
    ck_dir, deadline = killed / "checkpoints", time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        done = [int(p.name) for p in ck_dir.glob("*") if p.name.isdigit()] if ck_dir.exists() else []
        if done and max(done) >= target:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run(cmd(killed), cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from" in rerun.stderr

    def leaves(workdir: Path) -> dict[str, np.ndarray]:
        _, variables, _ = model_io.load_interpreter(workdir / "interpreter")
        return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(variables)[0]}

    a, b = leaves(ref), leaves(killed)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k} differs after kill -9 + rerun")
    assert [r["loss"] for r in _log(killed)] == [r["loss"] for r in _log(ref)]
