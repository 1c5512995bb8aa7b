"""The paper's preprocessing: segmentation resize, CT window, MR scaling, StyleGAN-XL dataset transform."""

from __future__ import annotations

import numpy as np
import pytest

from radgan_jax.data.base import Case
from radgan_jax.data.preprocess import (
    gan_preprocess,
    paper_resize,
    resize_case,
    scale_intensity,
    to_uint8,
    to_unit_range,
    window_ct,
)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("channels", [None, 3])
def test_paper_resize_shape_and_dtype(dtype, channels):
    shape = (288, 384) if channels is None else (288, 384, channels)
    image = (np.random.default_rng(0).random(shape) * 200).astype(dtype)
    mask = np.zeros((288, 384), np.uint8)
    out, out_mask = paper_resize(image, mask, 512)
    assert out.shape == (512, 512) + shape[2:] and out.dtype == dtype
    assert out_mask.shape == (512, 512) and out_mask.dtype == np.uint8
    assert paper_resize(image, None, 320)[1] is None


def test_paper_resize_is_smooth_and_keeps_floats():
    # Bicubic reproduces a linear ramp exactly away from the borders (a nearest/box filter would step).
    w, size = 100, 256
    ramp = np.tile(np.linspace(-3.0, 5.0, w, dtype=np.float32), (40, 1))
    out, _ = paper_resize(ramp, None, size)
    src_x = (np.arange(size) + 0.5) * w / size - 0.5          # pixel-centre geometry
    expected = -3.0 + 8.0 * src_x / (w - 1)
    inner = slice(8, size - 8)
    np.testing.assert_allclose(out[20, inner], expected[inner], atol=2e-4)
    assert len(np.unique(out[20])) > w   # interpolated values, not copies of the input's


def test_paper_resize_integer_images_are_rounded_and_clipped():
    img = np.zeros((50, 50), np.uint8)
    img[:, 25:] = 255                    # a hard edge: bicubic overshoots, which must clip, not wrap
    out, _ = paper_resize(img, None, 137)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    const = np.full((30, 41, 3), 77, np.uint8)
    assert np.all(paper_resize(const, None, 64)[0] == 77)


def test_paper_resize_mask_nearest_keeps_label_set_and_aligns():
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 5, (288, 384)).astype(np.uint8)
    _, up = paper_resize(np.zeros((288, 384, 3), np.uint8), mask, 512)
    assert set(np.unique(up)) == set(np.unique(mask))        # upsampling: every label, no new value
    _, down = paper_resize(np.zeros((288, 384), np.float32), mask, 64)
    assert set(np.unique(down)) <= set(np.unique(mask))      # downsampling: never a new value
    # Image and mask keep the same geometry: a square blob stays where the mask says.
    blob = np.zeros((288, 384), np.uint8)
    blob[100:180, 150:260] = 1
    img, m = paper_resize(blob.astype(np.float32), blob, 512)
    inter = np.logical_and(img > 0.5, m == 1).sum()
    union = np.logical_or(img > 0.5, m == 1).sum()
    assert inter / union > 0.98


def test_paper_resize_errors():
    with pytest.raises(ValueError, match="2D image"):
        paper_resize(np.zeros((2, 3, 4, 5)), None, 8)
    with pytest.raises(ValueError, match="mask shape"):
        paper_resize(np.zeros((10, 12)), np.zeros((10, 11), np.uint8), 8)


def test_resize_case_volume_scales_spacing():
    vol = np.random.default_rng(2).random((4, 256, 200)).astype(np.float32)
    mask = (vol > 0.5).astype(np.uint8)
    case = Case("v", vol, mask, spacing=(7.7, 1.25, 1.5), meta={"spatial_dims": 3})
    out = resize_case(case, 512)
    assert out.image.shape == (4, 512, 512) and out.mask.shape == (4, 512, 512)
    assert out.image.dtype == np.float32
    np.testing.assert_allclose(out.spacing, (7.7, 1.25 * 256 / 512, 1.5 * 200 / 512))
    # 2D case: (Y, X) spacing
    flat = resize_case(Case("s", vol[0], mask[0], spacing=(1.0, 2.0)), 128)
    assert flat.image.shape == (128, 128)
    np.testing.assert_allclose(flat.spacing, (2.0, 200 * 2.0 / 128))


def test_window_ct():
    hu = np.array([-1000, -160, 40, 240, 3000], np.int16)
    out = window_ct(hu)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(window_ct(np.array([-1350.0, 150.0]), level=-600, width=1500), [0.0, 1.0])
    with pytest.raises(ValueError, match="width"):
        window_ct(hu, width=0)


def test_scale_intensity_is_robust():
    x = np.linspace(0, 1000, 10001).astype(np.float32)
    x[0], x[-1] = -1e6, 1e6                       # outliers do not decide the scale
    out = scale_intensity(x)
    assert out.dtype == np.float32 and out.min() == 0 and out.max() == 1
    assert abs(float(out[5000]) - 0.5) < 1e-3
    assert np.all(scale_intensity(np.full((4, 4), 7.0)) == 0)


def test_uint8_and_unit_range():
    np.testing.assert_array_equal(to_uint8(np.array([-0.5, 0, 0.5, 1, 2])), [0, 0, 128, 255, 255])
    u = to_unit_range(np.array([0, 255], np.uint8))
    assert u.dtype == np.float32
    np.testing.assert_allclose(u, [-1, 1])


def test_gan_preprocess_grayscale_uint8_kept_and_three_channels():
    img = np.random.default_rng(3).integers(0, 256, (64, 64)).astype(np.uint8)
    out = gan_preprocess(img, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], img)   # same size: no resampling, values kept


def test_gan_preprocess_transforms():
    img = np.zeros((64, 128), np.uint8)
    img[:, :32] = 255
    img[:, 96:] = 255                                      # bright borders left and right
    crop = gan_preprocess(img, 32)                         # default center-crop: the central 64x64 square
    assert crop.max() == 0
    stretch = gan_preprocess(img, 32, transform="stretch")
    assert stretch[:, 0].min() == 255 and stretch[:, -1].min() == 255
    wide = gan_preprocess(img, 32, transform="center-crop-wide")
    assert wide.shape == (32, 32, 3)
    assert wide[:8].max() == 0 and wide[24:].max() == 0   # letterbox bars: the 2:1 image is 16 rows tall
    assert wide[8:24, 0].min() == 255
    with pytest.raises(ValueError, match="unknown transform"):
        gan_preprocess(img, 32, transform="crop")


def test_gan_preprocess_intensities():
    hu = np.full((16, 16), -1000.0, np.float32)
    hu[:, 8:] = 1000.0
    ct = gan_preprocess(hu, 16, modality="CT")
    assert ct[:, :8].max() == 0 and ct[:, 8:].min() == 255
    windowed = gan_preprocess(np.full((8, 8), 40.0), 8, window=(40.0, 400.0))
    assert np.all(windowed == 128)
    mr = gan_preprocess(np.linspace(0, 1300, 32 * 32).reshape(32, 32).astype(np.uint16), 32)
    assert mr.min() == 0 and mr.max() == 255
    rgba = np.zeros((8, 8, 4), np.uint8)                   # fully transparent -> white, as the official tool
    assert np.all(gan_preprocess(rgba, 8) == 255)
    with pytest.raises(ValueError, match="expects"):
        gan_preprocess(np.zeros((8, 8, 2), np.uint8), 8)
