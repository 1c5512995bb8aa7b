"""FID Inception: flax model + converter vs a plain-torch FID Inception (random weights), preprocessing, uint8.

The torch reference below is written from the structure of pytorch-fid's ``fid_inception_v3`` (torchvision
Inception3 with FIDInceptionA/C/E) and NVIDIA's TorchScript preprocessing (affine_grid/grid_sample with the
shifted theta, then ``(x - 128) / 128``). Weights are random (seed 0); the BN running stats come from one
train-mode pass on the test images (so activations stay O(1) through 94 layers) and are then perturbed.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
tnn = torch.nn

from radgan_jax.eval.inception_fid import images_to_uint8, make_feature_fn  # noqa: E402
from radgan_jax.models.inception_fid import preprocess_images  # noqa: E402
from radgan_jax.tools.convert_inception import ConversionError, convert, load_inception, main  # noqa: E402

# ---- plain torch reference -------------------------------------------------------------------------------

class _Conv(tnn.Module):
    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = tnn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = tnn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg3(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _A(tnn.Module):
    def __init__(self, cin: int, pool: int):
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = _Conv(cin, 48, 1), _Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = _Conv(64, 96, 3, padding=1), _Conv(96, 96, 3, padding=1)
        self.branch_pool = _Conv(cin, pool, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg3(x))], 1)


class _B(tnn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1, self.branch3x3dbl_2 = _Conv(cin, 64, 1), _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class _C(tnn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        h, v = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = _Conv(cin, 192, 1)
        self.branch7x7_1, self.branch7x7_2, self.branch7x7_3 = _Conv(cin, c7, 1), _Conv(c7, c7, **h), _Conv(
            c7, 192, **v)
        self.branch7x7dbl_1, self.branch7x7dbl_2 = _Conv(cin, c7, 1), _Conv(c7, c7, **v)
        self.branch7x7dbl_3, self.branch7x7dbl_4 = _Conv(c7, c7, **h), _Conv(c7, c7, **v)
        self.branch7x7dbl_5 = _Conv(c7, 192, **h)
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_2(self.branch7x7dbl_1(x))
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(bd)))
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg3(x))], 1)


class _D(tnn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = _Conv(cin, 192, 1), _Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class _E(tnn.Module):
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _Conv(cin, 320, 1)
        self.branch3x3_1 = _Conv(cin, 384, 1)
        self.branch3x3_2a, self.branch3x3_2b = _Conv(384, 384, (1, 3), padding=(0, 1)), _Conv(
            384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1, self.branch3x3dbl_2 = _Conv(cin, 448, 1), _Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a, self.branch3x3dbl_3b = _Conv(384, 384, (1, 3), padding=(0, 1)), _Conv(
            384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd), self.branch_pool(pooled)], 1)


class _TorchFIDInception(tnn.Module):
    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3, self.Conv2d_2a_3x3 = _Conv(3, 32, 3, stride=2), _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1, self.Conv2d_4a_3x3 = _Conv(64, 80, 1), _Conv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _A(192, 32), _A(256, 64), _A(288, 64)
        self.Mixed_6a = _B(288)
        self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e = (_C(768, c) for c in (128, 160, 160, 192))
        self.Mixed_7a = _D(768)
        self.Mixed_7b, self.Mixed_7c = _E(1280, False), _E(2048, True)
        self.fc = tnn.Linear(2048, 1008)

    def forward(self, x):  # x: preprocessed NCHW
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        features = x.mean((2, 3))
        return features, self.fc(features)


def _torch_nvidia_preprocess(img):
    """NVIDIA's TorchScript: img NCHW float in [0, 255] -> 299x299 grid_sample with shifted theta, (x-128)/128."""
    n, c, h, w = img.shape
    theta = torch.eye(2, 3)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / 299
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / 299
    grid = F.affine_grid(theta.unsqueeze(0).repeat(n, 1, 1), [n, c, 299, 299], align_corners=False)
    x = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (x - 128) / 128


def _torch_pytorch_fid_preprocess(img):
    x = F.interpolate(img / 255, size=(299, 299), mode="bilinear", align_corners=False)
    return 2 * x - 1


def _nchw(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32))


def _images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """uint8 NHWC: smooth random structure plus pixel noise (edges and flat areas both matter to a resize)."""
    coarse = rng.uniform(0, 255, (n, 8, 8, 3))
    smooth = np.kron(coarse, np.ones((1, -(-size // 8), -(-size // 8), 1)))[:, :size, :size]
    return np.clip(smooth + rng.normal(0, 30, smooth.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    small, big = _images(rng, 2, 64), _images(rng, 1, 299)
    ref = _TorchFIDInception()
    bns = [m for m in ref.modules() if isinstance(m, tnn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
            bn.momentum = 1.0  # the train pass below sets the running stats to its batch statistics
        ref.train()
        ref(torch.cat([_torch_nvidia_preprocess(_nchw(small)), _torch_nvidia_preprocess(_nchw(big))]))
        ref.eval()
        for bn in bns:
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.8, 1.25))
            bn.running_mean.add_(0.1 * torch.randn_like(bn.running_mean) * bn.running_var.sqrt())
    d = tmp_path_factory.mktemp("inception")
    src = d / "pt_inception-test.pth"
    torch.save(ref.state_dict(), src)
    assert main(["--src", str(src), "--out", str(d / "conv")]) == 0
    variables = load_inception(d / "conv")
    return dict(ref=ref, small=small, big=big, src=src, dir=d, variables=variables)


def test_features_and_logits_match_torch(setup):
    ref, fn = setup["ref"], make_feature_fn(setup["variables"], return_logits=True)
    for images in (setup["small"], setup["big"]):
        with torch.no_grad():
            want_f, want_l = (t.numpy() for t in ref(_torch_nvidia_preprocess(_nchw(images))))
        got_f, got_l = (np.asarray(a) for a in fn(images))
        assert got_f.shape == (len(images), 2048) and got_l.shape == (len(images), 1008)
        assert got_f.dtype == np.float32 and 0.1 < np.abs(want_f).mean() < 10  # O(1): the tolerance means something
        np.testing.assert_allclose(got_f, want_f, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(got_l, want_l, atol=1e-4, rtol=1e-4)


def test_converter_sidecar_and_cli_messages(setup, capsys: pytest.CaptureFixture):
    import json

    from radgan_jax.tools.files import sha256_file

    meta = json.loads((setup["dir"] / "conv" / "inception_fid.json").read_text())
    assert meta["source_sha256"] == sha256_file(setup["src"]) and meta["kind"] == "inception_fid"
    assert main(["--src", str(setup["src"]), "--out", str(setup["dir"] / "conv")]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err
    assert main(["--src", str(setup["dir"] / "absent.pth"), "--out", str(setup["dir"] / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convert_inception: error:") and "absent.pth: no such file" in err


@pytest.mark.parametrize("edit, message", [
    ("missing", r"bad\.npz: missing key 'Mixed_6c\.branch7x7_2\.conv\.weight'"),
    ("shape", r"bad\.npz: 'fc\.weight' has shape \(1000, 2048\) where the FID Inception expects \(1008, 2048\)"),
    ("conv_shape", r"bad\.npz: 'Mixed_5b\.branch_pool\.conv\.weight' has shape \(64, 192, 1, 1\) where the FID "
                   r"Inception expects \(32, 192, 1, 1\)"),
    ("extra", r"bad\.npz: unexpected key 'head\.weight'"),
])
def test_converter_errors_name_key_and_file(setup, tmp_path: Path, edit: str, message: str):
    sd = {k: v.numpy() for k, v in setup["ref"].state_dict().items()}
    if edit == "missing":
        del sd["Mixed_6c.branch7x7_2.conv.weight"]
    elif edit == "shape":
        sd["fc.weight"] = sd["fc.weight"][:1000]
    elif edit == "conv_shape":
        sd["Mixed_5b.branch_pool.conv.weight"] = np.zeros((64, 192, 1, 1), np.float32)
    else:
        sd["head.weight"] = np.zeros(3, np.float32)
    np.savez(tmp_path / "bad.npz", **sd)
    with pytest.raises(ConversionError, match=message):
        convert(tmp_path / "bad.npz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_load_inception_refuses_missing_and_foreign_files(tmp_path: Path):
    with pytest.raises(ConversionError, match=r"nowhere\.npz: no FID Inception weights there; obtain "
                                              r"pt_inception-2015-12-05-6726825d\.pth .*convert_inception"):
        load_inception(tmp_path / "nowhere.npz")
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    with pytest.raises(ConversionError, match=r"foreign\.npz: missing array 'batch_stats/Conv2d_1a_3x3/bn/mean'"):
        load_inception(tmp_path / "foreign.npz")


def test_load_inception_checks_shapes(setup, tmp_path: Path):
    with np.load(setup["dir"] / "conv" / "inception_fid.npz") as f:
        flat = dict(f)
    flat["params/fc/bias"] = flat["params/fc/bias"][:1000]
    np.savez(tmp_path / "edited.npz", **flat)
    with pytest.raises(ConversionError, match=r"edited\.npz: 'params/fc/bias' has shape \(1000,\), expected \(1008,\)"):
        load_inception(tmp_path / "edited.npz")


def test_feature_fn_repeats_grey_channels(monkeypatch: pytest.MonkeyPatch):
    import flax.linen as nn

    import radgan_jax.eval.inception_fid as fid

    class ChannelMeans(nn.Module):  # stands in for the Inception: exposes what make_feature_fn feeds it
        preprocess: str = "tf"

        def __call__(self, x, return_logits=False):
            assert x.dtype == np.float32 and x.shape[-1] == 3
            return x.mean((1, 2))

    monkeypatch.setattr(fid, "InceptionFID", ChannelMeans)
    grey = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 1), dtype=np.uint8)
    got = np.asarray(fid.make_feature_fn({})(grey))
    np.testing.assert_allclose(got, np.repeat(grey.astype(np.float32).mean((1, 2)), 3, axis=-1), rtol=1e-6)
    with pytest.raises(ValueError, match=r"expected \(N, H, W, 1 or 3\) images"):
        fid.make_feature_fn({})(grey[..., 0])


@pytest.mark.parametrize("size", [16, 64, 200, 299, 512])
def test_preprocessing_matches_torch(size: int):
    x = _images(np.random.default_rng(size), 2, size).astype(np.float32)
    got = np.asarray(jax.jit(preprocess_images)(x)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, _torch_nvidia_preprocess(_nchw(x)).numpy(), atol=2e-6)
    got = np.asarray(jax.jit(lambda x: preprocess_images(x, "pytorch_fid"))(x)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, _torch_pytorch_fid_preprocess(_nchw(x)).numpy(), atol=2e-6)


def test_images_to_uint8_is_bit_exact():
    rng = np.random.default_rng(0)
    boundaries = ((np.arange(256) - 128) / 127.5).astype(np.float32)  # where the truncation flips
    near = (boundaries.view(np.int32)[:, None] + np.arange(-3000, 3001)).astype(np.int32).view(np.float32)
    x = np.concatenate([rng.uniform(-1.2, 1.2, 1_000_000).astype(np.float32), near.ravel(),
                        np.array([-np.inf, -5, -1, -0.0, 0, 1, 5, np.inf, 1e-45], np.float32)])
    want = (torch.from_numpy(x) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
    got = np.asarray(jax.jit(images_to_uint8)(x))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
