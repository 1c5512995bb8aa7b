"""DiffAugment against a numpy transcription (NCHW, like the official training/diffaug.py) of the same formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radgan_jax.ops import diffaugment as da

# --- numpy references written from stylegan-xl training/diffaug.py (NCHW, explicit draws) --------------------


def np_brightness(x, u):
    return x + (u.reshape(-1, 1, 1, 1) - 0.5)


def np_saturation(x, u):
    m = x.mean(axis=1, keepdims=True)
    return (x - m) * (u.reshape(-1, 1, 1, 1) * 2) + m


def np_contrast(x, u):
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - m) * (u.reshape(-1, 1, 1, 1) + 0.5) + m


def np_translation(x, tx, ty):
    n, _, h, w = x.shape
    gb, gx, gy = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    gx = np.clip(gx + tx.reshape(-1, 1, 1) + 1, 0, h + 1)
    gy = np.clip(gy + ty.reshape(-1, 1, 1) + 1, 0, w + 1)
    x_pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    return x_pad.transpose(0, 2, 3, 1)[gb, gx, gy].transpose(0, 3, 1, 2)


def np_cutout(x, ox, oy, ratio=0.2):
    n, _, h, w = x.shape
    cs = int(h * ratio + 0.5), int(w * ratio + 0.5)
    gb, gx, gy = np.meshgrid(np.arange(n), np.arange(cs[0]), np.arange(cs[1]), indexing="ij")
    gx = np.clip(gx + ox.reshape(-1, 1, 1) - cs[0] // 2, 0, h - 1)
    gy = np.clip(gy + oy.reshape(-1, 1, 1) - cs[1] // 2, 0, w - 1)
    mask = np.ones((n, h, w), x.dtype)
    mask[gb, gx, gy] = 0
    return x * mask[:, None]


# One jitted entry point for the whole file: compiling the graph once is much cheaper than op-by-op dispatch.
aug = jax.jit(da.diff_augment, static_argnames="policy")
draw = jax.jit(da.sample_params, static_argnums=(1, 2, 3))
translate = jax.jit(da.translate)
cutout = jax.jit(da.cutout)


def nchw(x):
    return np.asarray(x).transpose(0, 3, 1, 2)


def nhwc(x):
    return np.asarray(x).transpose(0, 2, 3, 1)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (5, 16, 12, 3)).astype(np.float32)  # H != W to catch axis mix-ups


def test_color_ops_match_reference(batch):
    u = np.array([0.0, 0.25, 0.5, 0.9, 0.999], np.float32)
    x = nchw(batch)
    for fn, ref in ((da.brightness, np_brightness), (da.saturation, np_saturation), (da.contrast, np_contrast)):
        np.testing.assert_allclose(nchw(jax.jit(fn)(batch, u)), ref(x, u), atol=1e-6)


def test_obvious_color_values():
    x = jnp.full((1, 2, 2, 3), 0.3)
    # brightness u=0.75 adds 0.25; a grey image is unchanged by saturation and contrast.
    np.testing.assert_allclose(da.brightness(x, jnp.array([0.75])), 0.55, atol=1e-6)
    np.testing.assert_allclose(da.saturation(x, jnp.array([0.9])), 0.3, atol=1e-6)
    np.testing.assert_allclose(da.contrast(x, jnp.array([0.1])), 0.3, atol=1e-6)
    # saturation u=0 makes every pixel its channel mean: (0, 0.3, 0.6) -> 0.3.
    y = jnp.array([0.0, 0.3, 0.6]).reshape(1, 1, 1, 3)
    np.testing.assert_allclose(da.saturation(y, jnp.array([0.0])), 0.3 * np.ones((1, 1, 1, 3)), atol=1e-6)


@pytest.mark.parametrize("th,tw", [(0, 0), (2, -1), (-2, 2), (1, 0), (-2, -2)])
def test_translate_matches_reference(batch, th, tw):
    n = batch.shape[0]
    shifts = np.stack([np.arange(n) % 5 - 2 + th, np.full(n, tw)], 1).clip(-2, 2).astype(np.int32)
    ref = np_translation(nchw(batch), shifts[:, 0], shifts[:, 1])
    np.testing.assert_array_equal(nchw(translate(batch, shifts)), ref)


def test_translate_direction():
    x = jnp.arange(4.0).reshape(1, 4, 1, 1)
    # Output row i reads input row i + t: t=+1 moves content up and zero-fills the bottom.
    np.testing.assert_array_equal(np.ravel(da.translate(x, jnp.array([[1, 0]]))), [1, 2, 3, 0])
    np.testing.assert_array_equal(np.ravel(da.translate(x, jnp.array([[-1, 0]]))), [0, 0, 1, 2])


def test_cutout_matches_reference(batch):
    n, h, w, _ = batch.shape
    cut = (da.cutout_size(h), da.cutout_size(w))  # (3, 2): odd and even sizes
    assert cut == (3, 2)
    # Every offset in the official ranges, including the clamped borders.
    for oh in range(h + (1 - cut[0] % 2)):
        ow = np.array([(oh + k) % (w + 1 - cut[1] % 2) for k in range(n)], np.int32)
        offs = np.stack([np.full(n, oh), ow], 1).astype(np.int32)
        ref = np_cutout(nchw(batch), offs[:, 0], offs[:, 1])
        np.testing.assert_array_equal(nchw(cutout(batch, offs)), ref)


def test_cutout_obvious_square():
    x = jnp.ones((1, 10, 10, 1))  # cutout side int(10 * 0.2 + 0.5) = 2 -> rows/cols o-1 .. o
    out = np.asarray(da.cutout(x, jnp.array([[5, 3]])))[0, :, :, 0]
    expected = np.ones((10, 10))
    expected[4:6, 2:4] = 0
    np.testing.assert_array_equal(out, expected)


def test_sizes_round_half_up():
    assert [da.translation_shift(s) for s in (16, 32, 224, 4)] == [2, 4, 28, 1]
    assert [da.cutout_size(s) for s in (16, 32, 256, 2)] == [3, 6, 51, 0]


def test_full_policy_equals_reference_with_same_draws(batch):
    key = jax.random.PRNGKey(3)
    params = draw(key, batch.shape, jnp.float32, da.DEFAULT_POLICY)
    out = aug(jnp.asarray(batch), key)
    p = {k: np.asarray(v) for k, v in params.items()}
    ref = np_contrast(np_saturation(np_brightness(nchw(batch), p["brightness"]), p["saturation"]), p["contrast"])
    ref = np_translation(ref, p["translation"][:, 0], p["translation"][:, 1])
    ref = np_cutout(ref, p["cutout"][:, 0], p["cutout"][:, 1])
    np.testing.assert_allclose(nchw(out), ref, atol=2e-6)


def test_draw_ranges_cover_official_bounds():
    params = draw(jax.random.PRNGKey(0), (4000, 16, 16, 3), jnp.float32, da.DEFAULT_POLICY)
    t = np.asarray(params["translation"])
    assert t.min() == -2 and t.max() == 2  # randint(-2, 3)
    c = np.asarray(params["cutout"])  # cutout side 3 (odd) -> randint(0, 16)
    assert c.min() == 0 and c.max() == 15
    even = np.asarray(draw(jax.random.PRNGKey(1), (4000, 10, 10, 3), jnp.float32, "cutout")["cutout"])  # side 2
    # -> randint(0, 11)
    assert even.min() == 0 and even.max() == 10
    for name in ("brightness", "saturation", "contrast"):
        u = np.asarray(params[name])
        assert u.shape == (4000,) and 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.03


def test_deterministic_and_key_dependent(batch):
    x = jnp.asarray(batch)
    a = aug(x, jax.random.PRNGKey(7))
    b = aug(x, jax.random.PRNGKey(7))
    c = aug(x, jax.random.PRNGKey(8))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype


def test_each_sample_own_draw():
    # Identical samples must come out different: the draws are per sample, not per batch.
    x = jnp.broadcast_to(jnp.linspace(-1, 1, 16 * 16 * 3).reshape(1, 16, 16, 3), (6, 16, 16, 3))
    out = np.asarray(aug(x, jax.random.PRNGKey(0)))
    for i in range(1, 6):
        assert not np.allclose(out[0], out[i])


def test_grad_flows(batch):
    x = jnp.asarray(batch)
    key = jax.random.PRNGKey(4)
    g = jax.jit(jax.grad(lambda y: jnp.sum(da.diff_augment(y, key))))(x)
    assert np.all(np.isfinite(g)) and np.any(g != 0)


def test_policy_subsets_and_errors(batch):
    x = jnp.asarray(batch)
    key = jax.random.PRNGKey(5)
    np.testing.assert_array_equal(da.diff_augment(x, key, policy=""), x)
    p = draw(key, x.shape, jnp.float32, "translation")
    np.testing.assert_array_equal(aug(x, key, policy="translation"), translate(x, p["translation"]))
    assert set(draw(key, x.shape, jnp.float32, "cutout")) == {"cutout"}
    with pytest.raises(ValueError, match="unknown augmentation"):
        da.diff_augment(x, key, policy="color,flip")
    with pytest.raises(ValueError, match="NHWC"):
        da.diff_augment(x[0], key)


def test_bfloat16_input():
    x = jnp.zeros((2, 8, 8, 3), jnp.bfloat16)
    out = aug(x, jax.random.PRNGKey(0))
    assert out.dtype == jnp.bfloat16 and out.shape == x.shape
