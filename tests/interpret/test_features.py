"""Generator features for the interpreter: grouping, crop, agreement with the raw synthesis outputs, sharding."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radgan_jax.interpret.features import (
    FeatureLayer,
    _feature_layer,
    class_embedding,
    collect_features,
    crop_layer,
    feature_groups,
    format_groups,
    resize_bilinear,
    synthesize_with_features,
)
from radgan_jax.models.stylegan_xl.builtin import builtin_generator, builtin_spec
from radgan_jax.models.stylegan_xl.from_config import spec_from_config, stylegan_xl_config
from radgan_jax.models.stylegan_xl.generator import Generator, init_generator
from radgan_jax.parallel.mesh import make_mesh
from radgan_jax.parallel.sharding import batch_sharding, replicated


def _key(seed: int) -> jax.Array:
    """RBG keys: XLA:CPU compiles threefry once per parameter shape, which dominates generator init here."""
    return jax.random.key(seed, impl="rbg")


TINY_STEM = dict(resolution=16, z_dim=16, w_dim=32, c_dim=3, syn_layers=3, channel_base=512, channel_max=16,
                 embed_num=4, embed_dim=8, stem_batch_size=64)


@pytest.fixture(scope="module")
def demo32():
    spec, variables = builtin_generator("demo32", _key(0))
    gen = Generator(spec)
    z = jnp.asarray(np.random.default_rng(1).standard_normal((4, spec.z_dim)), jnp.float32)
    c = jax.nn.one_hot(jnp.array([0, 1, 2, 3]), spec.c_dim)
    ws = jax.jit(functools.partial(gen.apply, method=Generator.map))(variables, z, c)
    return gen, variables, ws, c


@pytest.fixture(scope="module")
def demo32_features(demo32):
    """(images, grouped features) from one jitted `synthesize_with_features` call."""
    gen, variables, ws, _ = demo32
    return jax.jit(functools.partial(synthesize_with_features, gen))(variables, ws)


def test_groups_demo32_and_stem():
    spec = builtin_spec("demo32")
    groups = feature_groups(spec)
    # Every layer of the 32 px demo runs at 16 or 32 px > 32/4: one "high" group at 32 px; ToRGB left out.
    assert [g.name for g in groups] == ["high"]
    (high,) = groups
    assert high.resolution == 32
    assert high.layer_names == tuple(n for n in spec.synthesis.layer_names if n != "L9_32_3")
    assert high.channels == 8 * 64
    assert [f.margin for f in high.layers] == [10] * 7 + [0]  # L0..L7 have the 10 px margin, L8 is image-sized
    with_input = feature_groups(spec, include_input=True)[0]
    assert with_input.layer_names[0] == "input" and with_input.channels == 9 * 64

    stem = spec_from_config(stylegan_xl_config(**TINY_STEM))
    (g,) = feature_groups(stem)
    assert g.name == "high" and g.resolution == 16
    assert g.layer_names == stem.synthesis.layer_names[:-1]
    assert {f.sampling_rate for f in g.layers} == {16}


@pytest.mark.parametrize("res,sizes", [(512, (32, 128, 512)), (256, (16, 64, 256)), (64, (None, 16, 64))])
def test_groups_scale_bigdatasetgan_rule(res, sizes):
    # BigDatasetGAN groups BigGAN-512 features at 32 / 128 / 512 px (res/16, res/4, res).
    spec = spec_from_config(stylegan_xl_config(resolution=res))
    groups = {g.name: g for g in feature_groups(spec)}
    expect = {n: s for n, s in zip(("low", "mid", "high"), sizes, strict=True) if s is not None}
    assert {n: g.resolution for n, g in groups.items()} == expect
    bounds = {"low": (0, res // 16), "mid": (res // 16, res // 4), "high": (res // 4, res)}
    for name, g in groups.items():
        lo, hi = bounds[name]
        assert all(lo < f.sampling_rate <= hi for f in g.layers), name
        assert max(f.sampling_rate for f in g.layers) == g.resolution  # as the original: finest layer's size
    n_layers = sum(len(g.layers) for g in groups.values())
    assert n_layers == len(spec.synthesis.layers) - 1  # all but ToRGB
    table = format_groups(list(groups.values()))
    assert all(n in table for n in spec.synthesis.layer_names[:-1])


def test_crop_equals_slicing_margin():
    spec = builtin_spec("demo32")
    layers = {f.name: f for f in feature_groups(spec)[0].layers}
    x = np.random.default_rng(3).standard_normal((2, 52, 52, 64)).astype(np.float32)
    np.testing.assert_array_equal(crop_layer(x, layers["L6_52_64"]), x[:, 10:42, 10:42])
    y = np.random.default_rng(4).standard_normal((2, 32, 32, 64)).astype(np.float32)
    np.testing.assert_array_equal(crop_layer(y, layers["L8_32_64"]), y)
    with pytest.raises(ValueError, match="L6_52_64"):
        crop_layer(y, layers["L6_52_64"])
    with pytest.raises(ValueError, match="Lbad"):
        _feature_layer("Lbad", 4, 37, 16)  # odd margin: cannot be centred on the image
    assert FeatureLayer("a", 1, 36, 16).margin == 10


def _upsample_bilinear_np(x: np.ndarray, size: int) -> np.ndarray:
    """torch F.interpolate(mode='bilinear', align_corners=False) upsampling, written out in numpy."""
    n_in = x.shape[1]
    src = np.maximum((np.arange(size) + 0.5) * n_in / size - 0.5, 0)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = (src - i0)[None, :, None, None]
    x = x[:, i0] * (1 - w) + x[:, i1] * w
    w = (src - i0)[None, None, :, None]
    return x[:, :, i0] * (1 - w) + x[:, :, i1] * w


def test_collect_features_matches_raw_synthesis(demo32, demo32_features):
    gen, variables, ws, _ = demo32
    img, feats = demo32_features
    raw_fn = functools.partial(gen.apply, return_features=True, method=Generator.synthesize)
    ref_img, raw = jax.jit(raw_fn)(variables, ws)
    np.testing.assert_allclose(img, ref_img, atol=1e-5)
    parts = []
    for name in gen.spec.synthesis.layer_names[:-1]:  # by hand: slice the margin, upsample to 32, concat
        x = np.asarray(raw[name], np.float64)
        if x.shape[1] != 32:  # 36 px at 16 px/unit, 52 px at 32 px/unit: 10 px margins
            x = x[:, 10:-10, 10:-10]
        parts.append(_upsample_bilinear_np(x, 32) if x.shape[1] != 32 else x)
    expect = np.concatenate(parts, axis=-1)
    assert set(feats) == {"high"} and feats["high"].shape == (4, 32, 32, 512)
    np.testing.assert_allclose(feats["high"], expect, atol=1e-4, rtol=1e-4)


def test_features_jit_and_two_device_batch_sharding_agree(demo32, demo32_features):
    gen, variables, ws, _ = demo32
    fn = functools.partial(collect_features, gen)
    ref = demo32_features[1]
    mesh = make_mesh({"data": 2}, devices=jax.devices()[:2])
    sharded = jax.jit(fn, in_shardings=(replicated(mesh), batch_sharding(mesh, 3)),
                      out_shardings=batch_sharding(mesh, 4))
    out = sharded(jax.device_put(variables, replicated(mesh)), jax.device_put(ws, batch_sharding(mesh, 3)))
    assert len(out["high"].sharding.device_set) == 2
    np.testing.assert_allclose(out["high"], ref["high"], atol=1e-5, rtol=1e-5)


def test_class_embedding_is_what_the_mapping_conditions_on(demo32):
    gen, variables, _, c = demo32
    z = jnp.asarray(np.random.default_rng(5).standard_normal((4, gen.spec.z_dim)), jnp.float32)
    _, inter = gen.apply(variables, z, c, method=Generator.map, mutable=["intermediates"])
    ref = inter["intermediates"]["mapping"]["embed_proj_normalized"][0]
    y = class_embedding(gen, variables, c)
    assert y.shape == (4, gen.spec.z_dim)
    np.testing.assert_allclose(y, ref, atol=1e-6)
    np.testing.assert_allclose(class_embedding(gen, variables, jnp.array([0, 1, 2, 3])), y, atol=1e-6)
    assert not np.allclose(y[0], y[1])
    with pytest.raises(ValueError, match="one-hot"):
        class_embedding(gen, variables, jnp.zeros((4, 7)))


def test_stem_only_generator_features():
    spec = spec_from_config(stylegan_xl_config(**TINY_STEM))
    variables = init_generator(spec, _key(7))
    gen = Generator(spec)
    w = np.random.default_rng(8).standard_normal((2, 1, spec.w_dim)).astype(np.float32)
    ws = jnp.broadcast_to(jnp.asarray(w), (2, spec.num_ws, spec.w_dim))
    img, feats = jax.jit(functools.partial(synthesize_with_features, gen))(variables, ws)
    (g,) = feature_groups(spec)
    assert img.shape == (2, 16, 16, 3)
    assert feats["high"].shape == (2, 16, 16, g.channels)
    assert np.isfinite(np.asarray(feats["high"])).all()
    assert class_embedding(gen, variables, jnp.array([0, 2])).shape == (2, spec.z_dim)


def test_layerwise_features_are_the_cropped_layers(demo32, demo32_features):
    """layerwise=True: each group's cropped layer outputs at their own size (the largest resized to the group's
    resolution); resizing and concatenating them gives the default features exactly."""
    gen, variables, ws, _ = demo32
    _, grouped = demo32_features
    lw = jax.jit(functools.partial(collect_features, gen, layerwise=True))(variables, ws)
    for g in feature_groups(gen.spec):
        parts = lw[g.name]
        assert len(parts) == len(g.layers)
        assert [p.shape[-1] for p in parts] == [f.channels for f in g.layers]
        assert max(p.shape[1] for p in parts) == g.resolution
        rebuilt = jnp.concatenate([resize_bilinear(p, g.resolution) for p in parts], axis=-1)
        np.testing.assert_allclose(np.asarray(rebuilt), np.asarray(grouped[g.name]), atol=1e-6, rtol=0)
