"""Pretrained class-embedding tables from local files (tools/class_embeddings.py) and their use at init."""

from __future__ import annotations

import pickle
from pathlib import Path

import jax
import numpy as np
import pytest

from radgan_jax.tools import class_embeddings as ce


def _table(k: int = 16, d: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randn(k, d).astype(np.float32)


def test_official_pickle_is_read_without_running_code(tmp_path: Path):
    torch = pytest.importorskip("torch")
    embed = torch.nn.Embedding(1000, 320)  # what in_embeddings/tf_efficientnet_lite0.pkl holds
    with open(tmp_path / "tf_efficientnet_lite0.pkl", "wb") as f:
        pickle.dump({"embed": embed}, f)
    table = ce.load_class_embeddings(tmp_path / "tf_efficientnet_lite0.pkl")
    np.testing.assert_array_equal(table, embed.weight.detach().numpy())
    torch.save({"embed.weight": embed.weight.detach()}, tmp_path / "table.pth")
    np.testing.assert_array_equal(ce.load_class_embeddings(tmp_path / "table.pth"), table)


def test_numpy_files_and_refusals(tmp_path: Path):
    t = _table()
    np.save(tmp_path / "t.npy", t)
    np.savez(tmp_path / "t.npz", embed=t, other=np.zeros(3))
    np.savez(tmp_path / "single.npz", anything=t)
    for name in ("t.npy", "t.npz", "single.npz"):
        np.testing.assert_array_equal(ce.load_class_embeddings(tmp_path / name), t)
    np.save(tmp_path / "flat.npy", t[0])
    np.savez(tmp_path / "two.npz", a=t, b=t)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    (tmp_path / "t.csv").write_text("1,2")
    bad = {"missing.npy": "no such class-embedding file", "flat.npy": "expected a 2-D float table",
           "two.npz": "no class-embedding table", "junk.pkl": "cannot read a class-embedding table",
           "t.csv": "unknown class-embedding file type"}
    for name, msg in bad.items():
        with pytest.raises(ce.ClassEmbeddingError, match=msg) as e:
            ce.load_class_embeddings(tmp_path / name)
        assert name in str(e.value)


def test_tables_initialise_generator_and_every_discriminator_head(tmp_path: Path):
    from configs import quickstart
    from radgan_jax.train import gan_models

    config = quickstart.get_config()
    g_table = _table(16, 32)  # quickstart: embed_num 16, embed_dim 32
    _, g_vars, _, _ = gan_models.build_generator(config.model, "", jax.random.key(0), g_table)
    np.testing.assert_array_equal(g_vars["params"]["mapping"]["embed"]["weight"], g_table)
    # the D's variable tree (shapes only: no compile) with every conditional mini disc's 1000 x 320 table
    module = gan_models.make_discriminator(config.discriminator, 16)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(1), np.zeros((2, 16, 16, 3), np.float32),
                                                np.zeros((2, 4), np.float32), train=False))
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), dict(shapes["params"]))
    d_table = _table(1000, 320, seed=1)
    new = ce.put_head_tables(params, d_table, "t")
    heads = new["tf_efficientnet_lite0_disc"]
    assert len(heads) == 3
    for disc in heads.values():
        np.testing.assert_array_equal(disc["embed"], d_table)
    assert not any(np.shares_memory(a, d_table) for a in (d["embed"] for d in heads.values()))
    with pytest.raises(ce.ClassEmbeddingError, match=r"\(16, 32\).*needs \(1000, 320\)"):
        ce.put_head_tables(params, g_table, "t")
    with pytest.raises(gan_models.ModelSetupError, match=r"\(1000, 320\).*needs \(16, 32\)"):
        gan_models.build_generator(config.model, "", jax.random.key(0), d_table)
    with pytest.raises(gan_models.ModelSetupError, match="train.class_embedding.*missing.pkl"):
        gan_models.class_embedding_table(str(tmp_path / "missing.pkl"))
