"""GAN training: mesh invariance, bit-identical reruns, kill -9 + resume, and the pieces the step relies on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radgan_jax.ops import upfirdn2d as ufd
from radgan_jax.ops.batch_norm import TorchBatchNorm

REPO = Path(__file__).resolve().parents[2]


def _env(devices: int | None = None, cache: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    if cache is not None:  # later runs of the same program reuse the compiled steps
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


# ---------------------------------------------------------------------------------------------- building blocks
def test_batch_norm_groups_are_independent_batches():
    x = jax.random.normal(jax.random.key(0), (6, 5, 5, 3)) * 2 + 1
    grouped = TorchBatchNorm(group_size=2)
    v = grouped.init(jax.random.key(1), x)
    y, upd = grouped.apply(v, x, train=True, mutable=["batch_stats"])
    whole = TorchBatchNorm()
    parts, means, vars_ = [], [], []
    for g in range(3):
        yg, ug = whole.apply(v, x[2 * g:2 * g + 2], train=True, mutable=["batch_stats"])
        parts.append(yg)
        means.append(ug["batch_stats"]["mean"])
        vars_.append(ug["batch_stats"]["var"])
    np.testing.assert_allclose(y, jnp.concatenate(parts), atol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], np.mean(means, 0), atol=1e-6)
    np.testing.assert_allclose(upd["batch_stats"]["var"], np.mean(vars_, 0), atol=1e-6)
    with pytest.raises(ValueError, match="groups of 4"):
        TorchBatchNorm(group_size=4).apply(v, x, train=True, mutable=["batch_stats"])


@pytest.mark.parametrize("up,down,pad", [(1, 1, (2, 1)), (2, 1, (5, 4)), (1, 2, (5, 5)), (2, 1, (-3, -4)),
                                         (1, 2, (-2, 3)), (4, 1, (7, 6))])
def test_fir_custom_vjp_equals_autodiff_first_and_second_order(up, down, pad):
    taps = np.linspace(0.1, 1.0, 8).astype(np.float32)
    x = jax.random.normal(jax.random.key(0), (2, 11, 3))
    w = jax.random.normal(jax.random.key(1), ufd._fir_1d_plain(x, taps, 1, up, down, pad).shape)

    def loss(fir):
        return lambda x: jnp.sum(jnp.sin(fir(x, taps, 1, up, down, pad)) * w)

    g_custom = jax.grad(loss(ufd._fir_1d))(x)
    g_plain = jax.grad(loss(ufd._fir_1d_plain))(x)
    np.testing.assert_allclose(g_custom, g_plain, atol=1e-5)
    # second order (path-length regularization differentiates through the backward)
    h_custom = jax.grad(lambda x: jnp.sum(jax.grad(loss(ufd._fir_1d))(x) ** 2))(x)
    h_plain = jax.grad(lambda x: jnp.sum(jax.grad(loss(ufd._fir_1d_plain))(x) ** 2))(x)
    np.testing.assert_allclose(h_custom, h_plain, atol=1e-4)


def test_pl_due_schedule():
    from radgan_jax.train.gan_steps import pl_due

    assert not pl_due(0, 999_999, 2.0)  # loss.py: only once cur_nimg >= 1e6
    assert pl_due(4, 1_000_000, 2.0) and not pl_due(5, 1_000_000, 2.0)  # every G_reg_interval = 4 iterations
    assert not pl_due(8, 2_000_000, 0.0)  # superres stages: pl_weight 0


# ---------------------------------------------------------------------------------------------- acceptance 2
@pytest.mark.slow  # ~8 min on 2 cores: four compilations of the full step for an 8-device mesh
def test_steps_agree_on_8_and_1_devices_and_rerun_is_bit_identical(tmp_path):
    """3 full iterations (Gmain, Greg on the 2nd, Dmain with 2 accumulation rounds, EMA) of a tiny GAN."""
    out = tmp_path / "states.npz"
    subprocess.run([sys.executable, str(REPO / "tests/train/gan_run_worker.py"), str(out)], check=True,
                   env=_env(devices=8, cache=tmp_path / "jax_cache"), cwd=REPO, timeout=900)
    z = np.load(out)
    assert int(z["num_devices"]) == 8
    keys = sorted(k[1:] for k in z.files if k.startswith("a"))
    assert any("g_params" in k for k in keys) and any("d_params" in k for k in keys)
    for k in keys:  # same mesh, same config: the same bits
        np.testing.assert_array_equal(z["a" + k], z["c" + k], err_msg=f"{k}: two runs on the same mesh differ")
    # 8 vs 1 device: only the reduction order differs. Documented tolerances (docs/ARCHITECTURE.md):
    #  * losses and scores: 5e-5; G, G_ema (every element): 2e-4 after 3 iterations;
    #  * D heads: Adam with beta1 = 0 steps by ~lr * sign(g) where |g| ~ eps, so a near-zero gradient element
    #    whose sign differs in the last bits moves by up to 2 lr per step: mean |diff| <= 1e-6 and < 0.1% of
    #    the elements above 1e-5 (measured: 4.5e-7 and 0.03%).
    for k in keys:
        a, b = z["a" + k].astype(np.float64), z["b" + k].astype(np.float64)
        if not np.issubdtype(z["a" + k].dtype, np.floating):
            np.testing.assert_array_equal(a, b, err_msg=k)
        elif k.startswith("metric"):
            np.testing.assert_allclose(a, b, atol=5e-5, rtol=1e-4, err_msg=k)
        elif k.startswith((".g_params", ".ema_params", ".g_buffers", ".ema_buffers", ".pl_mean")):
            np.testing.assert_allclose(a, b, atol=2e-4, rtol=0, err_msg=k)
    d = np.concatenate([np.abs(z["a" + k].astype(np.float64) - z["b" + k]).ravel() for k in keys
                        if k.startswith(".d_params")])
    assert d.mean() <= 1e-6 and (d > 1e-5).mean() < 1e-3 and d.max() <= 3 * 2 * 0.002, (d.mean(), d.max())
    assert float(z["a.step"]) == 3 and float(z["a.cur_nimg"]) == 24
    assert float(z["a.pl_mean"]) > 0  # the Greg phase ran
    moved = [k for k in keys if k.startswith(".g_params") and
             not np.array_equal(z["a" + k], z["a.ema_params" + k[len(".g_params"):]])]
    assert moved, "G did not move away from G_ema"


# ---------------------------------------------------------------------------------------------- acceptance 3
def _train_cmd(workdir: Path, total_kimg: float, *extra: str) -> list[str]:
    return [sys.executable, "-m", "radgan_jax.main", "--config=configs/quickstart.py", f"--workdir={workdir}",
            "--config.discriminator.weights.tf_efficientnet_lite0=random", "--config.discriminator.input_size=32",
            "--config.discriminator.projector_im_res=32", "--config.data.builtin_per_class=6",
            "--config.metrics.fd_effnet=False", "--config.tensorboard=False", "--config.progress=False",
            f"--config.train.total_kimg={total_kimg}", "--config.train.kimg_per_tick=0.016",
            "--config.checkpoint.every_kimg=0.016", "--config.checkpoint.keep=2", "--config.samples.every_ticks=2",
            "--config.train.blur_fade_kimg=0.05", *extra]


def _final_state(workdir: Path) -> tuple[int, dict[str, np.ndarray]]:
    from radgan_jax.checkpoint import Checkpointer

    with Checkpointer(workdir / "checkpoints", max_to_keep=None) as ck:
        items, meta, step = ck.restore()
    flat = jax.tree_util.tree_flatten_with_path(items["gan_state"])[0]
    return step, {jax.tree_util.keystr(p): np.asarray(x) for p, x in flat}


@pytest.mark.slow  # ~300 s on 2 cores (4 training processes); run with -m slow
def test_kill_9_then_resume_is_bit_identical(tmp_path):
    cache = tmp_path / "jax_cache"
    total = 0.064  # 8 iterations of batch 8, a checkpoint every 2
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(ref, total), check=True, env=_env(cache=cache), cwd=REPO, timeout=900,
                   capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed, total), env=_env(cache=cache), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rng = np.random.default_rng(int(time.time()))
    target = int(rng.integers(2, 6))  # kill after the checkpoint of iteration `target` (or a later one)
    deadline = time.time() + 600
    ck_dir = killed / "checkpoints"
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name) for p in ck_dir.glob("*") if p.name.isdigit()] if ck_dir.exists() else []
        if steps and max(steps) >= target:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [int(p.name) for p in ck_dir.glob("*") if p.name.isdigit()]
    assert done and max(done) < 8, done
    # Preemption: SIGTERM after the resumed run's next checkpoint -> it saves where it is and exits 0.
    log = tmp_path / "preempted.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(_train_cmd(killed, total), env=_env(cache=cache), cwd=REPO, stdout=f, stderr=f)
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            steps = [int(p.name) for p in ck_dir.glob("*") if p.name.isdigit()]
            if max(steps) > max(done):
                break
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "resumed from" in text
    if "preempted" in text:  # (the signal may land after the last step: then the run simply finished)
        assert not (killed / "generator").exists()
    rerun = subprocess.run(_train_cmd(killed, total), check=True, env=_env(cache=cache), cwd=REPO, timeout=900,
                           capture_output=True, text=True)
    assert "resumed from" in rerun.stderr or "finished" in text
    step_a, a = _final_state(ref)
    step_b, b = _final_state(killed)
    assert step_a == step_b == 8
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k} differs after kill -9 + resume")
    assert (ref / "generator").is_dir() and (killed / "generator").is_dir()
    assert (killed / "samples" / "reals.png").is_file()


@pytest.mark.parametrize("guidance", [False, pytest.param(True, marks=pytest.mark.slow)])  # slow: +~60 s
def test_superres_stage_grows_the_stem_and_trains_only_the_head(tmp_path, guidance):
    """A 32 px stage from a 16 px stem checkpoint: mapping and stem layers stay frozen, the head and the
    synthesis input train (loss.py train_head_only), no pl regularization (pl_weight 0), D is fresh. With
    classifier guidance on (a local 4-class EfficientNet-Lite0), Gmain's reported guidance loss is the cross
    entropy of that classifier on the images G made from the step's Gmain latents."""
    from radgan_jax import rng
    from radgan_jax.checkpoint import save_generator
    from radgan_jax.models.stylegan_xl.from_config import spec_chain_from_config
    from radgan_jax.models.stylegan_xl.generator import init_generator
    from radgan_jax.parallel.mesh import make_mesh
    from radgan_jax.parallel.sharding import global_from_host
    from radgan_jax.train import gan_setup
    from tests.train.gan_run_worker import tiny_config
    from tests.train.test_guidance import lite0_classifier_file

    config = tiny_config(micro_batch=8)
    config.model.resolution = 32
    config.model.head_layers = 3
    stem_spec = spec_chain_from_config(config.model)[0]
    save_generator(tmp_path / "stem", init_generator(stem_spec, jax.random.key(3)), stem_spec)
    config.train.prev_stage_checkpoint = str(tmp_path / "stem")
    if guidance:
        config.train.cls_weight = 0.5
        config.train.cls_model = "tf_efficientnet_lite0"
        config.train.cls_weights = str(lite0_classifier_file(tmp_path / "cls.npz", 4))
    mesh = make_mesh({"data": -1})
    setup = gan_setup.build(config, mesh, class_probs=None)
    assert setup.head_only and setup.pl_weight == 0.0
    before = jax.tree.map(np.asarray, setup.state.g_params)
    batch = {"image": np.random.RandomState(0).randint(0, 256, (8, 32, 32, 3)).astype(np.uint8),
             "label": np.arange(8) % 4}
    state, metrics = setup.step_fn(setup.state, jax.tree.map(lambda a: global_from_host(mesh, a), batch), do_pl=False)
    assert np.isfinite(float(metrics["Loss/D/loss"]))
    assert ("Loss/G/guidance_loss" in metrics) == guidance
    if guidance:  # Gmain draws z from 'gen_z/Gmain' and uniform classes from 'gen_c/Gmain' at step 0
        train_key = rng.derive(rng.root_key(int(config.seed)), "train")
        z = jax.random.normal(rng.derive(train_key, "gen_z/Gmain", step=0), (8, setup.spec.z_dim))
        labels = jax.random.categorical(rng.derive(train_key, "gen_c/Gmain", step=0), jnp.zeros(4), shape=(8,))
        c = jax.nn.one_hot(labels, 4)
        img = setup.generator.apply(setup.state.g_variables, z, c)
        classifier, cls_vars = gan_setup.guidance_classifier(config.train, True, 4, mesh)
        np.testing.assert_allclose(float(metrics["Loss/G/guidance_loss"]),
                                   float(classifier.loss(cls_vars, img, c)), rtol=1e-5)
    after = jax.tree.map(np.asarray, state.g_params)
    heads = set(setup.spec.synthesis.layer_names[-4:]) | {"input"}  # head_layers + 1 new layers
    flat_b = dict(jax.tree_util.tree_flatten_with_path(before)[0])
    for path, value in jax.tree_util.tree_flatten_with_path(after)[0]:
        names = [getattr(p, "key", None) for p in path]
        trainable = names[0] == "synthesis" and names[1] in heads
        changed = not np.array_equal(value, flat_b[path])
        if not trainable:
            assert not changed, f"frozen {jax.tree_util.keystr(path)} moved"
    assert any(not np.array_equal(v, flat_b[p]) for p, v in jax.tree_util.tree_flatten_with_path(after)[0]
               if getattr(p[0], "key", None) == "synthesis" and getattr(p[1], "key", None) in heads)
