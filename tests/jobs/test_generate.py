"""mode=generate end to end: converter CLI + generate CLI reproduce the official images; seeds, files, grids,
batch-size and device-count invariance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from radgan_jax.configs_common import generate_config
from radgan_jax.jobs import generate
from radgan_jax.models.stylegan_xl.generator import Generator
from radgan_jax.models.stylegan_xl.sampling import input_transform, one_hot, to_uint8, z_from_seed
from radgan_jax.parallel.mesh import make_mesh
from radgan_jax.tools.convert_stylegan_xl import convert
from tests.jax_utils import jit_apply

GOLDEN_FILES = ("params.npz", "config.json", "z.npy", "c.npy")


def _env(repo_root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{repo_root}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


@pytest.fixture(scope="module")
def golden32_ckpt(golden_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "golden32"
    convert(golden_dir / "stylegan_xl_32" / "params.npz", out)
    return out


def test_acceptance_commands_reproduce_official_image(golden_dir: Path, repo_root: Path, tmp_path: Path):
    """Acceptance 2, verbatim: convert params.npz + config.json, then generate from z.npy/c.npy at psi 0.7."""
    for name in GOLDEN_FILES:
        (tmp_path / name).symlink_to(golden_dir / "stylegan_xl_32" / name)
    (tmp_path / "configs").symlink_to(repo_root / "configs")
    env = _env(repo_root)
    convert_cmd = [sys.executable, "-m", "radgan_jax.tools.convert_stylegan_xl", "--src", "params.npz",
                   "--config", "config.json", "--out", "CKPT"]
    r = subprocess.run(convert_cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "L16_32_3" in r.stdout  # the layer table of the converted model is printed
    gen_cmd = [sys.executable, "-m", "radgan_jax.main", "--config=configs/generate.py", "--workdir=OUT",
               "--config.checkpoint=CKPT", "--config.z_file=z.npy", "--config.c_file=c.npy",
               "--config.truncation_psi=0.7", "--config.out_npy=img.npy"]
    r = subprocess.run(gen_cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    img = np.load(tmp_path / "img.npy")
    ref = np.load(golden_dir / "stylegan_xl_32" / "img_psi0.7_const.npy")
    assert img.dtype == np.float32 and img.shape == ref.shape == (4, 3, 32, 32)
    np.testing.assert_allclose(img, ref, atol=1e-5, rtol=0)


def _config(**kw):
    config = generate_config()
    config.update(kw)
    return config


def test_seeds_classes_files_and_grids(golden32_ckpt: Path, tmp_path: Path):
    config = _config(checkpoint=str(golden32_ckpt), classes="1,3", seeds="5-7", truncation_psi=0.7,
                     batch_size=4)
    generate.run(config, str(tmp_path))
    pngs = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert pngs == [f"class{c:03d}_seed{s:04d}.png" for c in (1, 3) for s in (5, 6, 7)]
    data = np.load(tmp_path / "images.npz")
    assert data["images"].shape == (6, 32, 32, 3)
    assert data["label"].tolist() == [1, 1, 1, 3, 3, 3] and data["seed"].tolist() == [5, 6, 7] * 2
    # Seeds mean what they mean in gen_images.py: z = RandomState(seed).randn(1, z_dim), one-hot class.
    spec, variables, _ = generate.load_model(config)
    z = np.concatenate([z_from_seed(s, spec.z_dim) for s in (5, 6, 7)] * 2)
    np.testing.assert_array_equal(data["z"], z)
    direct = jit_apply(Generator(spec), variables, z, one_hot([1, 1, 1, 3, 3, 3], spec.c_dim), truncation_psi=0.7)
    np.testing.assert_allclose(data["images"], np.asarray(direct), atol=1e-5)
    png = np.asarray(Image.open(tmp_path / "images" / "class003_seed0006.png"))
    np.testing.assert_array_equal(png, to_uint8(data["images"][4]))
    for c in (1, 3):  # 3 images -> a 2x2 grid (width ceil(sqrt(3))), the empty cell black
        grid = np.asarray(Image.open(tmp_path / f"grid_class{c:03d}.png"))
        assert grid.shape == (64, 64, 3) and not grid[32:, 32:].any()
    assert (tmp_path / "generate_summary.json").is_file()


def test_grayscale_random_class_and_transform(golden32_ckpt: Path, tmp_path: Path):
    config = _config(checkpoint=str(golden32_ckpt), seeds="0,1", grayscale=True, translate="0.1,-0.2",
                     rotate=15.0)
    generate.run(config, str(tmp_path))
    data = np.load(tmp_path / "images.npz")
    rnd = [int(np.random.RandomState(s).randint(4)) for s in (0, 1)]  # gen_images.py without --class
    assert data["label"].tolist() == rnd
    files = sorted((tmp_path / "images").iterdir())
    assert [Image.open(f).mode for f in files] == ["L", "L"]
    spec, variables, _ = generate.load_model(config)
    direct = jit_apply(Generator(spec), variables, data["z"], one_hot(rnd, 4),
                                   transform=input_transform((0.1, -0.2), 15.0))
    np.testing.assert_allclose(data["images"], np.asarray(direct), atol=1e-5)


def test_same_images_for_any_batch_size_and_device_count(golden32_ckpt: Path):
    """Acceptance 4 (8 fake CPU devices from conftest vs 1) and batch-size invariance."""
    assert jax.device_count() == 8, "conftest forces 8 host devices"
    config = _config(checkpoint=str(golden32_ckpt))
    spec, variables, _ = generate.load_model(config)
    gen = Generator(spec)
    n = 11  # not a multiple of any batch: exercises the padded last batch
    z = np.concatenate([z_from_seed(s, spec.z_dim) for s in range(n)])
    c = one_hot([s % 4 for s in range(n)], spec.c_dim)
    kw = dict(psi=0.7, cutoff=None, transform=input_transform(), progress=False)
    mesh8, mesh1 = make_mesh(config.mesh), make_mesh(config.mesh, devices=jax.devices()[:1])
    assert mesh8.devices.size == 8 and mesh1.devices.size == 1
    ref = generate.generate_arrays(gen, variables, mesh1, z, c, batch_size=1, **kw)
    for mesh, batch in [(mesh1, 4), (mesh8, 8), (mesh8, 16), (mesh8, 3)]:
        out = generate.generate_arrays(gen, variables, mesh, z, c, batch_size=batch, **kw)
        assert out.shape == (n, 32, 32, 3)
        np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0, err_msg=f"{mesh.devices.size} devices, b{batch}")


def test_builtin_demo_config_runs(repo_root: Path, tmp_path: Path):
    """README's main command (built-in demo: no input files)."""
    r = subprocess.run([sys.executable, "-m", "radgan_jax.main", "--config=configs/demo.py",
                        f"--workdir={tmp_path}", "--config.seeds=0-3"], cwd=repo_root, env=_env(repo_root),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    grids = sorted(p.name for p in tmp_path.glob("grid_*.png"))
    assert grids == [f"grid_class{c:03d}.png" for c in range(4)]
    images = np.load(tmp_path / "images.npz")["images"]
    assert images.shape == (16, 32, 32, 3) and np.isfinite(images).all() and images.std() > 0.01


@pytest.mark.parametrize("kw,match", [
    (dict(), "set --config.checkpoint"),
    (dict(builtin="nope"), "unknown built-in generator 'nope'"),
    (dict(builtin="demo32", classes="2,9"), r"classes \[9\] outside \[0, 4\)"),
    (dict(builtin="demo32", translate="1"), "translate must be 2 comma-separated numbers"),
    (dict(builtin="demo32", seeds=""), "seeds is empty"),
])
def test_bad_generate_configs_fail_clearly(tmp_path: Path, kw: dict, match: str):
    with pytest.raises((ValueError, KeyError), match=match):
        generate.run(_config(**kw), str(tmp_path))


def test_bad_latent_files_fail_clearly(golden32_ckpt: Path, tmp_path: Path):
    np.save(tmp_path / "z.npy", np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match=r"z.npy: z must be \[N, 64\], got \(2, 7\)"):
        generate.run(_config(checkpoint=str(golden32_ckpt), z_file=str(tmp_path / "z.npy")), str(tmp_path))
    np.save(tmp_path / "z.npy", np.zeros((2, 64), np.float32))
    np.save(tmp_path / "c.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="also set --config.c_file"):
        generate.run(_config(checkpoint=str(golden32_ckpt), z_file=str(tmp_path / "z.npy")), str(tmp_path))
    with pytest.raises(ValueError, match=r"c.npy: c must be \[2, 4\], got \(3, 4\)"):
        generate.run(_config(checkpoint=str(golden32_ckpt), z_file=str(tmp_path / "z.npy"),
                             c_file=str(tmp_path / "c.npy")), str(tmp_path))


def test_classes_by_label_of_the_papers_table(tmp_path: Path):
    """--config.classes accepts Table S1 labels; the product comes from c_dim (6 = gastro) or config.product."""
    from radgan_jax.checkpoint import save_generator
    from radgan_jax.models.stylegan_xl.generator import init_generator, stem_generator_spec

    spec = stem_generator_spec(z_dim=8, c_dim=6, w_dim=16, img_resolution=16, channel_base=64, channel_max=16,
                               num_layers=4)
    ckpt = tmp_path / "gastro16"
    save_generator(ckpt, init_generator(spec, jax.random.key(0)), spec)
    config = _config(checkpoint=str(ckpt), classes="polyps,Z-Line,0", seeds="1", write_png=False, batch_size=8)
    generate.run(config, str(tmp_path / "out"))
    assert np.load(tmp_path / "out" / "images.npz")["label"].tolist() == [2, 5, 0]
    with pytest.raises(ValueError, match="did you mean: polyps"):
        generate.run(_config(checkpoint=str(ckpt), classes="polypps", seeds="1"), str(tmp_path / "o2"))
    with pytest.raises(ValueError, match="has 124 classes but this generator has c_dim=6"):
        generate.run(_config(checkpoint=str(ckpt), classes="abd_normal", product="ctmr"), str(tmp_path / "o3"))


def test_class_labels_need_a_known_product(golden32_ckpt: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="neither ctmr .124. nor gastro .6.: set --config.product"):
        generate.run(_config(checkpoint=str(golden32_ckpt), classes="abd_normal"), str(tmp_path))
