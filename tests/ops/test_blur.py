"""D-input blur: schedule, taps, and the filter against scipy and torch references of the official formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from radgan_jax.ops import blur as bl
from radgan_jax.ops.blur import blur_filter, blur_half_size, blur_sigma

# Jitted entry points: one compile per shape/sigma instead of one per small op (slices, pads) in eager mode.
blur_images = jax.jit(bl.blur_images, static_argnums=1)
blur_traced = jax.jit(lambda x, s: bl.blur_images_traced(x, s, max_sigma=2.0))


def test_schedule_train_py_defaults():
    # train.py: blur_init_sigma=2, blur_fade_kimg=300 -> linear fade to 0 at 300k images, then 0.
    assert blur_sigma(0) == 2.0
    assert blur_sigma(150_000) == pytest.approx(1.0)
    assert blur_sigma(300_000) == 0.0
    assert blur_sigma(1_000_000) == 0.0
    assert blur_sigma(75_000, 4.0, 100) == pytest.approx(1.0)
    # loss.py only fades when blur_fade_kimg > 1: 0 and 1 both mean "no blur".
    assert blur_sigma(0, 2.0, 1) == 0.0 and blur_sigma(0, 2.0, 0) == 0.0


def test_schedule_traced_matches_python():
    nimg = jnp.array([0, 60_000, 150_000, 299_999, 400_000])
    got = jax.jit(blur_sigma)(nimg)
    np.testing.assert_allclose(got, [blur_sigma(int(n)) for n in nimg], rtol=1e-6)


def test_taps_by_hand():
    # sigma=1: k=floor(3)=3, taps 2^-(i^2) = 1/512, 1/16, 1/2, 1, 1/2, 1/16, 1/512, over their sum 2.12890625.
    expected = np.array([1 / 512, 1 / 16, 1 / 2, 1, 1 / 2, 1 / 16, 1 / 512]) / 2.12890625
    np.testing.assert_allclose(blur_filter(1.0), expected, rtol=1e-6)
    assert blur_filter(2.0).shape == (13,) and blur_filter(0.5).shape == (3,)
    assert blur_half_size(0.33) == 0 and blur_half_size(0.34) == 1
    for s in (0.4, 0.9, 1.7, 2.0):
        assert blur_filter(s).sum() == pytest.approx(1.0, abs=1e-6)


def test_small_sigma_is_identity():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 12, 10, 3)), jnp.float32)
    np.testing.assert_array_equal(bl.blur_images(x, 0.3), x)
    np.testing.assert_array_equal(bl.blur_images(x, 0.0), x)
    np.testing.assert_allclose(blur_traced(x, jnp.float32(0.3)), x, atol=0)


@pytest.fixture
def images():
    return np.random.default_rng(1).normal(size=(2, 12, 10, 3)).astype(np.float32)


def scipy_reference(x_nhwc, sigma):
    """Official formula written independently: float32 taps, zero-padded 'same' separable filter."""
    k = int(np.floor(sigma * 3))
    f = np.exp2(-np.square(np.arange(-k, k + 1, dtype=np.float32) / np.float32(sigma)))
    f = f / f.sum()
    y = ndimage.correlate1d(x_nhwc.astype(np.float64), f, axis=2, mode="constant", cval=0.0)
    return ndimage.correlate1d(y, f, axis=1, mode="constant", cval=0.0)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.37, 2.0])
def test_matches_scipy(images, sigma):
    ref = scipy_reference(images, sigma)
    np.testing.assert_allclose(blur_images(jnp.asarray(images), sigma), ref, atol=2e-6)


def test_matches_torch_conv2d(images):
    torch = pytest.importorskip("torch")
    sigma = 2.0  # 13 taps on a 12x10 image: the zero padding matters everywhere
    f = torch.arange(-6.0, 7.0).div(sigma).square().neg().exp2()  # the loss.py expression
    f = f / f.sum()
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    c = x.shape[1]
    y = torch.nn.functional.conv2d(x, f[None, None, None, :].repeat(c, 1, 1, 1), padding=(0, 6), groups=c)
    y = torch.nn.functional.conv2d(y, f[None, None, :, None].repeat(c, 1, 1, 1), padding=(6, 0), groups=c)
    np.testing.assert_allclose(blur_images(jnp.asarray(images), sigma), y.numpy().transpose(0, 2, 3, 1), atol=2e-6)


def test_constant_interior_preserved_and_edges_darkened():
    x = jnp.ones((1, 20, 20, 1))
    y = np.asarray(blur_images(x, 1.0))[0, :, :, 0]
    np.testing.assert_allclose(y[3:-3, 3:-3], 1.0, rtol=1e-6)  # normalised taps keep DC away from borders
    assert y[0, 0] < y[0, 10] < 1.0  # zero padding, not reflection


def test_traced_matches_static_under_one_jit(images):
    x = jnp.asarray(images)
    for sigma in (0.2, 0.5, 1.37, 2.0):
        np.testing.assert_allclose(blur_traced(x, jnp.float32(sigma)), blur_images(x, sigma), atol=2e-6)
    assert blur_traced._cache_size() == 1  # sigma fades without recompiling


def test_gradient_flows_through_blur(images):
    g = jax.jit(jax.grad(lambda x: jnp.sum(bl.blur_images(x, 1.0) ** 2)))(jnp.asarray(images))
    assert np.all(np.isfinite(g)) and np.any(g != 0)


def test_rejects_non_nhwc():
    with pytest.raises(ValueError, match="NHWC"):
        bl.blur_images(jnp.zeros((8, 8, 3)), 1.0)
