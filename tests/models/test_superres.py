"""Superresolution growth: 16 -> 32 reproduces the official SuperresGenerator; 16 -> 32 -> 64 builds."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from radgan_jax.models.stylegan_xl.generator import Generator, init_generator, stem_generator_spec
from radgan_jax.models.stylegan_xl.layer_specs import head_layer_names, layer_specs_equal
from radgan_jax.models.stylegan_xl.superres import grow_generator, reinit_stem, superres_spec, trainable_mask
from tests.jax_utils import jit_apply
from tests.models.golden_generator import load_golden_generator, nchw


@pytest.fixture(scope="module")
def golden16_32(golden_dir):
    return load_golden_generator(golden_dir / "stylegan_xl_16"), load_golden_generator(golden_dir / "stylegan_xl_32")


def _leaves(tree):
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_grow_16_to_32_matches_official_superres(golden16_32, golden_dir):
    (g16, v16, _, _), (g32, v32, _, _) = golden16_32
    spec, grown = grow_generator(g16.spec, v16, jax.random.key(1), head_layers=7, up_factor=2)
    assert not layer_specs_equal(spec.synthesis.layers, g32.spec.synthesis.layers)
    assert spec.synthesis.stages == ((16, 0, 1), (32, 7, 2))
    # Same tree and shapes as the converted official 32 model.
    assert jax.tree.map(np.shape, grown) == jax.tree.map(np.shape, v32)
    heads = set(head_layer_names(g16.spec.synthesis, spec.synthesis))
    assert heads == {"L9_36_38", "L10_52_32", "L11_52_27", "L12_52_23", "L13_52_19", "L14_52_16",
                     "L15_32_16", "L16_32_3"}
    # Stem and mapping copied bit for bit from the 16 model.
    g_leaves, s_leaves = _leaves(grown), _leaves(v16)
    for k, v in g_leaves.items():
        if not any(h in k for h in heads):
            np.testing.assert_array_equal(v, s_leaves[k], err_msg=k)
    # Fresh head initialised like the original: bias 0, affine bias 1, magnitude_ema 1, weights ~ N(0, 1).
    for h in heads:
        np.testing.assert_array_equal(grown["params"]["synthesis"][h]["bias"], 0)
        np.testing.assert_array_equal(grown["params"]["synthesis"][h]["affine"]["bias"], 1)
        assert float(grown["buffers"]["synthesis"][h]["magnitude_ema"]) == 1.0
    w = grown["params"]["synthesis"]["L10_52_32"]["weight"]
    assert abs(float(np.std(w)) - 1) < 0.1
    # With the official head weights dropped in, the grown generator IS the official 32 model.
    for col in ("params", "buffers"):
        for h in heads:
            grown[col]["synthesis"][h] = v32[col]["synthesis"][h]
    folder = golden_dir / "stylegan_xl_32"
    z, c = np.load(folder / "z.npy"), np.load(folder / "c.npy")
    img = jit_apply(Generator(spec), grown, z, c, truncation_psi=0.7)
    np.testing.assert_allclose(nchw(img), np.load(folder / "img_psi0.7_const.npy"), atol=1e-5, rtol=0)


def test_trainable_mask_and_reinit_stem(golden16_32):
    (g16, v16, _, _), _ = golden16_32
    spec, grown = grow_generator(g16.spec, v16, jax.random.key(2))
    mask = _leaves(trainable_mask(spec, grown["params"], head_only=True))
    heads = set(head_layer_names(g16.spec.synthesis, spec.synthesis))
    for k, m in mask.items():  # the head, and the Fourier input (as the original's train_head_only leaves it)
        assert bool(m) == (any(f"['{h}']" in k for h in heads) or "['synthesis']['input']" in k), k
    frozen_input = _leaves(trainable_mask(spec, grown["params"], head_only=True, train_input=False))
    for k, m in frozen_input.items():
        assert bool(m) == any(f"['{h}']" in k for h in heads), k
    assert all(_leaves(trainable_mask(g16.spec, v16["params"], head_only=True)).values())
    # A "trained" copy whose stem drifted gets the stem back from the previous stage.
    drifted = jax.tree.map(lambda x: x + 1.0, grown)
    restored = reinit_stem(drifted, g16.spec, v16, spec)
    np.testing.assert_array_equal(restored["params"]["mapping"]["fc0"]["weight"],
                                  v16["params"]["mapping"]["fc0"]["weight"])
    np.testing.assert_array_equal(restored["params"]["synthesis"]["L10_52_32"]["weight"],
                                  drifted["params"]["synthesis"]["L10_52_32"]["weight"])


def test_chain_16_32_64_official_naming():
    stem = stem_generator_spec(z_dim=8, c_dim=3, w_dim=16, img_resolution=16, channel_base=64, channel_max=16,
                               num_layers=6)
    s32 = superres_spec(stem, head_layers=5)
    s64 = superres_spec(s32, head_layers=4)
    names = s64.synthesis.layer_names
    # Stem L0..L6: L4..L6 are critically sampled and dropped -> stem_len 5, the 32 head is L5..L10;
    # its critical L8..L10 are dropped -> stem_len 8, the 64 head is L8..L12 (index 4 never reappears).
    assert [int(n.split("_")[0][1:]) for n in names] == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12]
    assert [n.split("_")[1] for n in names][-3:] == ["84", "64", "64"]
    assert names[-1].endswith("_3") and s32.synthesis.layer_names[-1] == "L10_32_3"
    assert s64.num_ws == len(names) + 1 and s64.img_resolution == 64
    v = init_generator(s64, jax.random.key(0))
    z = np.random.RandomState(0).randn(2, 8).astype(np.float32)
    img = jit_apply(Generator(s64), v, z, np.eye(3, dtype=np.float32)[[0, 2]])
    assert img.shape == (2, 64, 64, 3) and np.isfinite(np.asarray(img)).all()


def test_bad_growth_arguments():
    stem = stem_generator_spec(z_dim=8, c_dim=0, w_dim=16, img_resolution=16, num_layers=6)
    with pytest.raises(ValueError, match="up_factor"):
        superres_spec(stem, head_layers=7, up_factor=3)
    with pytest.raises(ValueError, match="head_layers"):
        superres_spec(stem, head_layers=2)
