"""The labeled-data factory (interpret/factory.py, interpret/uncertainty.py, jobs/interpret_sample.py) on the demo32
generator with random-init interpreters: the latent rule and chunk plan, DatasetGAN's JSD uncertainty and filter,
the written nnU-Net / TFDS datasets, byte-identical files for 1 vs 2 devices, after a stop + a simulated kill, and
(slow) for 2 jax.distributed processes; nnU-Net's own integrity check (slow)."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs.interpret.sample import get_config
from radgan_jax.checkpoint import save_generator
from radgan_jax.data.verify import verify_dataset
from radgan_jax.interpret import factory
from radgan_jax.interpret.annotate import generator_digest
from radgan_jax.interpret.features import feature_groups
from radgan_jax.interpret.losses import predict_labels
from radgan_jax.interpret.model_io import InterpreterMeta, save_interpreter
from radgan_jax.interpret.uncertainty import (
    pixel_jsd,
    sample_uncertainty,
    select_most_uncertain,
    top_count,
    top_fraction_mean,
)
from radgan_jax.jobs.interpret_sample import sample_dataset
from radgan_jax.models.interpreter import Interpreter, init_interpreter
from radgan_jax.models.stylegan_xl.builtin import builtin_generator
from radgan_jax.models.stylegan_xl.sampling import to_uint8

LABELS = {"background": 0, "liver": 1, "kidney": 2}
WORKER = Path(__file__).with_name("factory_worker.py")
# 2 classes x 10 samples in chunks of 6 (the last chunk short, chunks span classes), 2 rows per device and step.
RUN = dict(classes="0,2", num_per_class=10, chunk_size=6, per_device_batch=2, filter_fraction=0.2,
           overlays_per_class=3, progress=False)


# ---- pure parts: latent rule, plan, uncertainty, filter ----

def test_latent_rule_plan_and_case_ids():
    z = factory.sample_z(7, 3, 42, 16)
    np.testing.assert_array_equal(z, np.random.RandomState([7, 3, 42]).randn(1, 16).astype(np.float32))
    for other in (factory.sample_z(7, 2, 42, 16), factory.sample_z(8, 3, 42, 16), factory.sample_z(7, 3, 41, 16)):
        assert not np.array_equal(z, other)
    plan = factory.SamplePlan((5, 1, 3), num_per_class=7, chunk_size=4)
    assert (plan.num_samples, plan.chunks_per_class, plan.num_chunks) == (21, 2, 6)
    rows = [plan.chunk_rows(j) for j in range(plan.num_chunks)]
    got = [(int(k), int(i)) for ks, idx in rows for k, i in zip(ks, idx)]
    assert got == [(k, i) for k in (5, 1, 3) for i in range(7)]  # class-major, every sample once
    assert [r[1].tolist() for r in rows[:3]] == [[0, 1, 2, 3], [4, 5, 6], [0, 1, 2, 3]]  # one class per chunk
    assert plan.host_chunks(0, 4) == [0, 4] and plan.host_chunks(3, 4) == [3]
    ks, idx, n = plan.render_rows(1, 4)  # the class's last chunk, extended past M = 7 to its batch group
    assert (ks.tolist(), idx.tolist(), n) == ([5] * 4, [4, 5, 6, 7], 3)
    with pytest.raises(ValueError, match="multiple of per_device_batch"):
        plan.render_rows(0, 3)
    assert sum(plan.host_samples(p, 4) for p in range(4)) == 21
    ids = [factory.case_id(k, i) for k, i in got]
    assert ids[7] == "class001_000000"
    assert factory.case_id(12, 3) < factory.case_id(12, 10) < factory.case_id(100, 0)  # string order = numeric
    with pytest.raises(ValueError, match="classes .* repeat"):
        factory.SamplePlan((1, 1), 4, 5)


def test_jsd_of_identical_members_is_zero():
    p = jax.nn.softmax(jnp.asarray(np.random.default_rng(0).standard_normal((1, 2, 6, 5, 3)), jnp.float32))
    probs = jnp.concatenate([p, p, p])
    np.testing.assert_array_equal(np.asarray(pixel_jsd(probs)), 0.0)
    np.testing.assert_array_equal(np.asarray(sample_uncertainty(probs)), 0.0)


def test_jsd_hand_computed_toy_case():
    # Pixel a: (1, 0) vs (0, 1): mixture (.5, .5), entropies 0 -> JSD = ln 2 (the maximum for 2 members).
    # Pixel b: (.5, .5) vs (.9, .1): H(.7, .3) - (H(.5, .5) + H(.9, .1)) / 2.
    def h(*p):
        return -sum(x * math.log(x) for x in p if x > 0)

    want_b = h(.7, .3) - (h(.5, .5) + h(.9, .1)) / 2
    assert abs(want_b - 0.1017492) < 1e-6
    probs = jnp.asarray([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.9, 0.1]]])  # [members, pixels, K]
    np.testing.assert_allclose(np.asarray(pixel_jsd(probs)), [math.log(2), want_b], rtol=1e-6)
    # Sample score = mean of the top 10% pixels (DatasetGAN): 20 pixels -> the 2 largest.
    assert (top_count(20), top_count(9), top_count(100)) == (2, 1, 10)
    x = jnp.arange(40, dtype=jnp.float32).reshape(2, 4, 5)
    np.testing.assert_allclose(np.asarray(top_fraction_mean(x)), [18.5, 38.5])
    # The same through sample_uncertainty: one 2x2 image, 4 pixels -> top 1 = ln 2.
    img = jnp.asarray([[[1.0, 0.0], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]], [[0.0, 1.0], [0.9, 0.1], [0.5, 0.5],
                                                                         [0.5, 0.5]]]).reshape(2, 1, 2, 2, 2)
    np.testing.assert_allclose(np.asarray(sample_uncertainty(img)), [math.log(2)], rtol=1e-6)


def test_filter_drops_exactly_the_top_fraction():
    scores = [0.5, 0.9, 0.9, 0.1, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6]
    ids = [f"c{i:02d}" for i in range(10)]
    res = select_most_uncertain(scores, ids, 0.3)
    assert np.flatnonzero(res.drop).tolist() == [1, 2, 7] and res.thresholds == {"all": 0.8}
    kept = [s for s, d in zip(scores, res.drop) if not d]
    assert max(kept) <= res.thresholds["all"]
    tie = select_most_uncertain(scores, ids, 0.1)  # 0.9 twice, one to drop: the smaller case id goes
    assert np.flatnonzero(tie.drop).tolist() == [1]
    tie_rev = select_most_uncertain(scores[::-1], ids[::-1], 0.1)  # input order does not matter
    assert [ids[::-1][i] for i in np.flatnonzero(tie_rev.drop)] == ["c01"]
    groups = ["a", "b"] * 5  # a (even rows): .5 .9 .3 .2 .4 ; b (odd rows): .9 .1 .7 .8 .6
    per = select_most_uncertain(scores, ids, 0.4, groups)
    assert np.flatnonzero(per.drop).tolist() == [0, 1, 2, 7] and per.num_dropped == {"a": 2, "b": 2}
    assert per.thresholds == {"a": 0.5, "b": 0.8}
    assert select_most_uncertain(scores, ids, 0.0).drop.sum() == 0
    assert select_most_uncertain(np.arange(100) / 100, [f"x{i}" for i in range(100)], 0.29).drop.sum() == 29
    with pytest.raises(ValueError, match="case ids repeat"):
        select_most_uncertain([1, 2], ["a", "a"], 0.5)


def test_decode_masks_single_and_ensemble():
    rng = np.random.default_rng(1)
    a, b = (jnp.asarray(rng.standard_normal((2, 4, 4, 3)), jnp.float32) for _ in range(2))
    m, s = factory.decode_masks([a])
    np.testing.assert_array_equal(np.asarray(m), np.asarray(predict_labels(a)))
    np.testing.assert_array_equal(np.asarray(s), 0.0)
    m2, s2 = factory.decode_masks([a, b])
    mean = (jax.nn.softmax(a) + jax.nn.softmax(b)) / 2
    np.testing.assert_array_equal(np.asarray(m2), np.argmax(np.asarray(mean), -1))
    assert np.all(np.asarray(s2) > 0)
    one = jnp.asarray(rng.standard_normal((2, 4, 4, 1)), jnp.float32)  # binary: sigmoid > 0.5
    np.testing.assert_array_equal(np.asarray(factory.decode_masks([one, one])[0]), np.asarray(one[..., 0] > 0))


# ---- the job on demo32 ----

def _interpreter(groups, y_dim: int, seed: int, digest: str, out: Path) -> Path:
    model = Interpreter(3, (16, 8, 8))
    v = jax.device_get(init_interpreter(model, groups, y_dim, jax.random.key(seed, impl="rbg")))
    # Random init in eval mode gives logits ~ +-4000 (one-hot probabilities, every JSD ln 2 or 0); an output BN gain
    # of 1e-4 brings them to O(1) so that the members' probabilities overlap and the scores vary.
    v["params"]["out_bn"]["scale"] = v["params"]["out_bn"]["scale"] * 1e-4
    meta = InterpreterMeta(labels=LABELS, num_outputs=3, y_dim=y_dim, generator_digest=digest, widths=(16, 8, 8),
                           feature_shapes={g.name: [g.resolution, g.resolution, g.channels] for g in groups})
    save_interpreter(out, v, meta)
    return out


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("factory")
    spec, gv = builtin_generator("demo32", jax.random.key(0, impl="rbg"))
    gv = jax.device_get(gv)
    save_generator(root / "gen", gv, spec)
    groups, digest = feature_groups(spec), generator_digest(spec, gv)
    y_dim = spec.z_dim  # the class embedding's width
    interps = [_interpreter(groups, y_dim, s, digest, root / f"interp{s}") for s in (1, 2)]
    other = _interpreter(groups, y_dim, 3, "sha256:" + "0" * 64, root / "interp_other_gen")
    return dict(root=root, spec=spec, variables=gv, gen=root / "gen", interps=interps, other=other)


def _config(assets: dict, **kw):
    config = get_config()
    config.update(dict(checkpoint=str(assets["gen"]), interpreters=",".join(map(str, assets["interps"])), **RUN))
    config.update(kw)
    return config


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run_a(assets) -> Path:
    """The reference run: 2 devices, uninterrupted."""
    out = assets["root"] / "run_a"
    summary = sample_dataset(_config(assets), str(out), devices=jax.devices()[:2])
    assert summary["num_samples"] == 20 and summary["num_dropped"] == 4
    return out


def test_written_dataset(assets, run_a: Path):
    ds = run_a / "nnunet_raw" / "Dataset501_RadImageGANLabeled"
    report = verify_dataset(ds, progress=False)
    assert report.ok, report.to_text()
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["labels"] == LABELS and meta["numTraining"] == 16 and meta["file_ending"] == ".png"
    # Uncertainty per sample; the filter dropped the 2 most uncertain of each class (20% of 10), files moved aside.
    recs = [json.loads(x) for p in sorted((run_a / "uncertainty").glob("*.jsonl")) for x in p.read_text().split("\n")
            if x]
    assert [r["case"] for r in recs] == [factory.case_id(k, i) for k in (0, 2) for i in range(10)]
    assert len({r["uncertainty"] for r in recs}) == 20 and all(0 < r["uncertainty"] <= math.log(2) for r in recs)
    filt = json.loads((run_a / "filter.json").read_text())
    for k in (0, 2):
        cls = sorted((r for r in recs if r["class"] == k), key=lambda r: -r["uncertainty"])
        assert [c for c in filt["dropped"] if c.startswith(f"class{k:03d}")] == sorted(r["case"] for r in cls[:2])
        assert filt["thresholds"][f"class{k:03d}"] == cls[1]["uncertainty"]
        for r in cls[:2]:
            assert not (ds / "labelsTr" / f"{r['case']}.png").exists()
            assert (run_a / "filtered_out" / ds.relative_to(run_a) / "labelsTr" / f"{r['case']}.png").is_file()
    # A sample is a pure function of (seed, class, index): re-render one directly and compare with its files.
    spec = assets["spec"]
    from radgan_jax.interpret.model_io import load_interpreter
    from radgan_jax.models.stylegan_xl.generator import Generator
    from radgan_jax.parallel.mesh import make_mesh

    loaded = [load_interpreter(d) for d in assets["interps"]]
    render = factory.Renderer(Generator(spec), assets["variables"], [m for m, _, _ in loaded],
                              [v for _, v, _ in loaded], feature_groups(spec), make_mesh(None, jax.devices()[:1]),
                              per_device_batch=2)
    kept = next(r for r in recs if r["case"] not in filt["dropped"] and r["class"] == 2)
    # ... rendered with its batch group {2p, 2p + 1} (the batch-global style RMS of StyleGAN3: factory.py).
    slot = kept["index"] % 2
    idx = kept["index"] - slot + np.arange(2)
    out = render(factory.latents(0, np.array([2, 2]), idx, spec.z_dim), np.array([2, 2]))
    img = np.asarray(Image.open(ds / "imagesTr" / f"{kept['case']}_0000.png"))
    np.testing.assert_array_equal(img, to_uint8(out.images[slot]))
    mask = np.asarray(Image.open(ds / "labelsTr" / f"{kept['case']}.png"))
    np.testing.assert_array_equal(mask, out.masks[slot])
    assert set(np.unique(mask)) <= set(LABELS.values()) and len(np.unique(mask)) > 1
    np.testing.assert_allclose(out.uncertainty[slot], kept["uncertainty"], rtol=0, atol=0)
    # TFDS: the same 16 pairs (image, mask, class label, id), readable without TensorFlow.
    import tensorflow_datasets as tfds

    source = tfds.builder_from_directory(str(run_a / "tfds" / "radimageganlabeled_32px" / "1.0.0")
                                         ).as_data_source(split="train")
    assert len(source) == 16
    rows = {r["id"].decode() if isinstance(r["id"], bytes) else r["id"]: r for r in source}
    assert set(rows) == {r["case"] for r in recs} - set(filt["dropped"])
    row = rows[kept["case"]]
    np.testing.assert_array_equal(row["image"], img)
    np.testing.assert_array_equal(row["mask"][..., 0], mask)
    assert int(row["label"]) == 2 and float(row["uncertainty"]) == np.float32(kept["uncertainty"])
    # Previews: overlays of samples 0..2 per class; a grid per class = image row over overlay row.
    assert len(list((run_a / "overlays").glob("*_overlay.png"))) == 6
    grid = np.asarray(Image.open(run_a / "grid_class002.png"))
    assert grid.shape == (64, 96, 3)
    np.testing.assert_array_equal(grid[:32, :32], np.asarray(Image.open(run_a / "overlays" /
                                                                      "class002_000000_image.png").convert("RGB")))


def test_same_files_on_one_device_after_a_stop_and_a_kill(assets, run_a: Path, tmp_path: Path):
    """1 device instead of 2; stopped after 1 chunk; then a 'kill' in the middle of chunk 2 (staging junk, a
    truncated moved file, a half-written done record); the rerun completes: every file byte-identical."""
    out = tmp_path / "run_b"
    one = jax.devices()[:1]
    assert sample_dataset(_config(assets, max_chunks=1), str(out), devices=one) is None
    assert sorted(p.name for p in (out / "chunks").glob("*.done")) == ["chunk-000000.done"]
    (out / "chunks" / "chunk-000001.partial" / "nnunet").mkdir(parents=True)
    (out / "chunks" / "chunk-000001.partial" / "junk.png").write_bytes(b"x")
    img_dir = out / "nnunet_raw" / "Dataset501_RadImageGANLabeled" / "imagesTr"
    img_dir.joinpath("class000_000007_0000.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # truncated
    (out / "chunks" / "chunk-000001.done.tmp").write_text("{")
    summary = sample_dataset(_config(assets), str(out), devices=one)
    assert summary["num_written"] == 16
    a, b = _tree(run_a), _tree(out)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    # A second rerun finds the run complete and changes nothing.
    assert sample_dataset(_config(assets), str(out), devices=one)["num_written"] == 16
    assert _tree(out) == b


def test_refusals(assets, run_a: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="trained on generator sha256:0000.*use the generator it was trained on"):
        sample_dataset(_config(assets, interpreters=str(assets["other"])), str(tmp_path / "x"))
    with pytest.raises(ValueError, match="other settings.*num_per_class"):
        sample_dataset(_config(assets, num_per_class=11), str(run_a))
    with pytest.raises(ValueError, match="filter_fraction needs an ensemble"):
        sample_dataset(_config(assets, interpreters=str(assets["interps"][0])), str(tmp_path / "y"))
    with pytest.raises(ValueError, match="set --config.interpreters"):
        sample_dataset(_config(assets, interpreters=""), str(tmp_path / "z"))
    with pytest.raises(ValueError, match="formats"):
        sample_dataset(_config(assets, formats="nnunet,zip"), str(tmp_path / "w"))


@pytest.mark.slow
def test_nnunet_verify_dataset_integrity(run_a: Path, tmp_path: Path, monkeypatch):
    pytest.importorskip("nnunetv2")
    monkeypatch.setenv("nnUNet_raw", str(run_a / "nnunet_raw"))
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(run_a / "nnunet_raw" / "Dataset501_RadImageGANLabeled"), num_processes=1)


@pytest.mark.slow
def test_two_processes_write_the_same_files(assets, run_a: Path, repo_root: Path, tmp_path: Path):
    """2 jax.distributed processes x 1 CPU device (chunks round-robin, process 0 finalises) vs 1 process x 2."""
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(dict(checkpoint=str(assets["gen"]), interpreters=",".join(map(str, assets["interps"])),
                                   **RUN)))
    out = tmp_path / "run_mp"
    port = random.randint(20000, 40000)
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
               PYTHONPATH=str(repo_root))
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(port), "2", str(i), str(cfg), str(out)],
                              cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert all(p.returncode == 0 for p in procs), "\n----\n".join(log[-3000:] for log in logs)
    a, b = _tree(run_a), _tree(out)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []


def test_sample_bytes_do_not_depend_on_m_classes_or_chunking(assets, run_a: Path, tmp_path: Path):
    """Class 2 alone, M = 7 (its last batch group extended past M), chunks of 4: the same bytes as in run A."""
    out = tmp_path / "run_c"
    sample_dataset(_config(assets, classes="2", num_per_class=7, chunk_size=4, filter_fraction=0.0,
                           formats="nnunet"), str(out), devices=jax.devices()[:2])
    a = {Path(k).name: v for k, v in _tree(run_a).items() if "Tr/class002_" in k}
    b = {Path(k).name: v for k, v in _tree(out).items() if "Tr/class002_" in k}
    assert len(b) == 14 and all(a[k] == v for k, v in b.items())


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_same_files(assets, repo_root: Path, tmp_path: Path):
    """A real `kill -9` of a running job (after >= 3 of its 40 chunks are done), then a rerun in this process: the
    same files as an uninterrupted run."""
    run = dict(RUN, num_per_class=40, chunk_size=2, filter_fraction=0.1)
    ref = tmp_path / "ref"
    sample_dataset(_config(assets, **run), str(ref), devices=jax.devices()[:1])
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(dict(checkpoint=str(assets["gen"]), interpreters=",".join(map(str, assets["interps"])),
                                   **run)))
    out = tmp_path / "killed"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
               PYTHONPATH=str(repo_root))
    proc = subprocess.Popen([sys.executable, str(WORKER), str(random.randint(20000, 40000)), "1", "0", str(cfg),
                             str(out)], cwd=repo_root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while len(list((out / "chunks").glob("*.done"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    done = len(list((out / "chunks").glob("*.done")))
    assert 3 <= done < 40 and not (out / "factory_done.json").exists(), f"{done} chunks done before the kill"
    sample_dataset(_config(assets, **run), str(out), devices=jax.devices()[:2])
    a, b = _tree(ref), _tree(out)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
