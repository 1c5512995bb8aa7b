"""upfirdn2d / filtered_lrelu against a direct torch transcription of the original's reference semantics."""

import numpy as np
import pytest

from radgan_jax.ops.filtered_lrelu import filtered_lrelu
from radgan_jax.ops.filters import design_lowpass_filter
from radgan_jax.ops.upfirdn2d import upfirdn2d

torch = pytest.importorskip("torch")
F = torch.nn.functional


def torch_upfirdn2d(x, f, up=1, down=1, padding=(0, 0, 0, 0), gain=1.0, flip=False):
    """Step-by-step NCHW reference: zero-stuff, pad/crop, filter (conv), decimate."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x0, x1, y0, y1 = padding
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    f = torch.as_tensor(np.array(f if f is not None else np.ones([1, 1], np.float32)))
    f = f * gain ** (f.ndim / 2)
    if not flip:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 1:
        x = F.conv2d(x, f[None, None, None, :].repeat(c, 1, 1, 1), groups=c)
        x = F.conv2d(x, f[None, None, :, None].repeat(c, 1, 1, 1), groups=c)
    else:
        x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    return x[:, :, ::down, ::down]


CASES = [
    # (in_size, up, down, padding, taps)
    (36, 2, 2, (9, 8, 9, 8), 12),
    (36, 2, 2, (-11, -12, -11, -12), 12),
    (16, 4, 2, (-6, -9, -6, -9), 24),
    (16, 1, 1, (0, 0, 0, 0), 1),
    (10, 2, 1, (3, -2, -1, 4), 6),
    (9, 3, 3, (1, 2, 0, 5), 7),
    (20, 1, 2, (2, 3, -1, 4), 8),
    (17, 1, 4, (0, 0, 0, 0), 5),
    (12, 4, 1, (7, -3, 2, 2), 16),
    (13, 2, 1, (-4, -5, 0, 0), 4),
]


@pytest.mark.parametrize("size,up,down,padding,taps", CASES)
def test_upfirdn2d_matches_reference(size, up, down, padding, taps):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, size, size + 1)).astype(np.float32)
    f = rng.standard_normal(taps).astype(np.float32) if taps > 1 else None
    ref = torch_upfirdn2d(torch.from_numpy(x), f, up, down, padding, gain=up**2).numpy()
    out = np.asarray(upfirdn2d(x.transpose(0, 2, 3, 1), f, up=up, down=down, padding=padding, gain=up**2))
    np.testing.assert_allclose(out.transpose(0, 3, 1, 2), ref, atol=2e-5, rtol=1e-5)


def test_upfirdn2d_nonseparable_and_flip():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    f = rng.standard_normal((5, 4)).astype(np.float32)
    for flip in (False, True):
        ref = torch_upfirdn2d(torch.from_numpy(x), f, 2, 1, (2, 1, 0, 3), flip=flip).numpy()
        out = upfirdn2d(x.transpose(0, 2, 3, 1), f, up=2, padding=(2, 1, 0, 3), flip_filter=flip)
        np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), ref, atol=2e-5)


def test_filtered_lrelu_matches_reference():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((2, 4, 36, 36)) * 200).astype(np.float32)  # large: exercises the clamp
    b = rng.standard_normal(4).astype(np.float32)
    fu = design_lowpass_filter(12, 2.0, 12.0, 32.0)
    fd = design_lowpass_filter(12, 2.38, 11.2, 32.0)
    xt = torch.from_numpy(x) + torch.from_numpy(b)[None, :, None, None]
    y = torch_upfirdn2d(xt, fu, 2, 1, (9, 8, 9, 8), gain=4)
    y = (F.leaky_relu(y, 0.2) * np.sqrt(2)).clamp(-256, 256)
    ref = torch_upfirdn2d(y, fd, 1, 2).numpy()
    out = filtered_lrelu(x.transpose(0, 2, 3, 1), fu, fd, b, up=2, down=2, padding=(9, 8, 9, 8), clamp=256)
    np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), ref, atol=1e-4, rtol=1e-5)
    assert np.abs(ref).max() > 100  # the clamp region is really reached


def test_bad_arguments_raise_clear_errors():
    x = np.zeros((1, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="NHWC"):
        upfirdn2d(x[0], None)
    with pytest.raises(ValueError, match="padding"):
        upfirdn2d(x, None, padding=(1, 2, 3))
    with pytest.raises(ValueError, match="smaller than the filter"):
        upfirdn2d(x, np.ones(12, np.float32))
