"""Sliding-window inference against nnunetv2's nnUNetPredictor, computed inside each test.

The toy network is one 3x3 conv with known weights, written once in torch and once in JAX. With small dyadic
weights and inputs every float32 operation of the network is exact in both frameworks, so even the float16
accumulation that nnU-Net does must agree bit for bit; with generic weights (conv results differ in the last
float32 bit) the comparison runs with both sides accumulating in float32.
"""

from __future__ import annotations

import types

import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from radgan_jax.seg import inference as inf

torch = pytest.importorskip("torch")
pfr = pytest.importorskip("nnunetv2.inference.predict_from_raw_data")
swp = pytest.importorskip("nnunetv2.inference.sliding_window_prediction")


def _jax_apply(p, x):
    y = lax.conv_general_dilated(x, p["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                 precision=lax.Precision.HIGHEST)
    return y + p["b"]


def _torch_conv(w: np.ndarray, b: np.ndarray):
    conv = torch.nn.Conv2d(w.shape[2], w.shape[3], 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w.transpose(3, 2, 0, 1)))
        conv.bias.copy_(torch.from_numpy(b))
    return conv


def _nnunet_logits(folds, image: np.ndarray, patch, mirror: bool) -> np.ndarray:
    """nnU-Net's fold-ensembled sliding-window logits; image (Z, H, W, C) -> (Z, H, W, K) float32."""
    torch.set_num_threads(1)
    pr = pfr.nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirror,
                             perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    pr.network = _torch_conv(folds[0]["w"], folds[0]["b"])
    pr.configuration_manager = types.SimpleNamespace(patch_size=list(patch))  # all the predictor reads of it
    pr.label_manager = types.SimpleNamespace(num_segmentation_heads=folds[0]["w"].shape[3])
    pr.allowed_mirroring_axes = (0, 1)  # what nnUNetTrainer stores for 2D plans
    pr.list_of_parameters = [_torch_conv(f["w"], f["b"]).state_dict() for f in folds]
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(3, 0, 1, 2)))  # (C, Z, H, W)
    out = pr.predict_logits_from_preprocessed_data(x)
    return out.float().numpy().transpose(1, 2, 3, 0)


def _folds(rng, c: int, k: int, n: int, dyadic: bool) -> list[dict]:
    if dyadic:
        return [{"w": rng.integers(-4, 5, (3, 3, c, k)).astype(np.float32) / 4,
                 "b": rng.integers(-4, 5, (k,)).astype(np.float32) / 8} for _ in range(n)]
    return [{"w": (rng.normal(size=(3, 3, c, k)) * 0.3).astype(np.float32),
             "b": rng.normal(size=(k,)).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("tile", [(64, 64), (56, 40), (33, 17), (7, 5), (256, 224), (192, 160)])
def test_gaussian_equals_nnunet(tile) -> None:
    for dtype, tdtype in ((np.float16, torch.float16), (np.float32, torch.float32)):
        ref = swp.compute_gaussian(tile, 1 / 8, 10, tdtype, torch.device("cpu")).numpy()
        ours = inf.compute_gaussian(tile, dtype=dtype)
        assert ours.dtype == ref.dtype and ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
        if dtype == np.float16:  # float16 values of ~10 have 8e-3 steps: atol 1e-6 means identical
            assert np.array_equal(ours, ref)
    assert float(inf.compute_gaussian(tile).max()) == 10.0


@pytest.mark.parametrize("image,tile,step", [((100, 100), (64, 64), 0.5), ((110,), (64,), 0.5),
                                             ((512, 480), (256, 224), 0.5), ((64, 64), (64, 64), 0.5),
                                             ((1000, 77), (64, 33), 0.25), ((301,), (7,), 1.0),
                                             ((288, 384), (320, 384), 0.5)])
def test_steps_equal_nnunet(image, tile, step) -> None:
    if any(i < t for i, t in zip(image, tile)):
        with pytest.raises(ValueError, match="pad it first"):
            inf.compute_steps_for_sliding_window(image, tile, step)
        return
    assert inf.compute_steps_for_sliding_window(image, tile, step) == swp.compute_steps_for_sliding_window(
        image, tile, step)


def test_padding_equals_pad_nd_image() -> None:
    padding = pytest.importorskip("acvl_utils.cropping_and_padding.padding")
    for shape, patch in [((10, 30), (16, 16)), ((37, 41), (32, 64)), ((5, 5), (8, 9)), ((40, 40), (16, 16))]:
        res, slicer = padding.pad_nd_image(torch.zeros((1, 1, *shape)), patch, "constant", {"value": 0}, True, None)
        want = [(s.start, n - s.stop) for s, n in zip(slicer[2:], res.shape[2:])]
        assert inf.padding_for(shape, patch) == want


@pytest.mark.parametrize("mirror", [False, True])
def test_float16_accumulation_bit_exact(mirror: bool) -> None:
    """Three folds, an image smaller than the patch along one axis, a two-slice stack: identical float16."""
    rng = np.random.default_rng(1)
    folds = _folds(rng, 2, 3, 3, dyadic=True)
    for shape, patch in [((1, 40, 52, 2), (16, 24)), ((2, 10, 30, 2), (16, 16))]:
        image = rng.integers(-8, 9, shape).astype(np.float32) / 8
        ref = _nnunet_logits(folds, image, patch, mirror)
        ours = inf.predict_logits(_jax_apply, folds, image if shape[0] > 1 else image[0], patch,
                                  mirror_axes=(0, 1) if mirror else None, batch_size=4)
        assert ours.dtype == jnp.float16
        ours = np.asarray(ours, np.float32).reshape(ref.shape)
        assert np.abs(ref).max() > 0.5
        np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("mirror", [False, True])
def test_float32_generic_network_matches(monkeypatch, mirror: bool) -> None:
    """Random weights, nnU-Net patched to accumulate in float32 (its buffers are hard-coded torch.half)."""

    class _TorchF32:  # the module's `torch`, with torch.half meaning float32
        half = torch.float32

        def __getattr__(self, name):
            return getattr(torch, name)

    real_gaussian = pfr.compute_gaussian
    monkeypatch.setattr(pfr, "torch", _TorchF32())
    monkeypatch.setattr(pfr, "compute_gaussian",
                        lambda *a, **k: real_gaussian(*a, **{**k, "dtype": torch.float32}))
    rng = np.random.default_rng(2)
    folds = _folds(rng, 3, 2, 2, dyadic=False)
    image = rng.normal(size=(1, 37, 41, 3)).astype(np.float32)
    ref = _nnunet_logits(folds, image, (32, 16), mirror)
    ours = inf.predict_logits(_jax_apply, folds, image[0], (32, 16), mirror_axes=(0, 1) if mirror else None,
                              accumulate_dtype="float32")
    assert ours.dtype == jnp.float32 and ours.shape == ref.shape[1:]
    np.testing.assert_allclose(np.asarray(ours), ref[0], rtol=0, atol=1e-4)
    # float16 (nnU-Net's default) stays close to the float32 result; worst in the image corners, where the only
    # weights are the Gaussian's float16-subnormal tails
    ours16 = inf.predict_logits(_jax_apply, folds, image[0], (32, 16), mirror_axes=(0, 1) if mirror else None)
    err = np.abs(np.asarray(ours16, np.float32) - ref[0])
    assert np.median(err) < 1e-3 and err.max() < 5e-2


def test_batch_size_and_gaussian_options() -> None:
    rng = np.random.default_rng(3)
    folds = _folds(rng, 1, 2, 1, dyadic=False)
    image = rng.normal(size=(45, 38, 1)).astype(np.float32)
    a = inf.predict_sliding_window(_jax_apply, folds[0], image, (16, 16), batch_size=1)
    b = inf.predict_sliding_window(_jax_apply, folds[0], image, (16, 16), batch_size=7)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # without the Gaussian every pixel is the plain average of its (mirror-averaged) tile predictions; a
    # linear network is translation-equivariant, so pixels on no tile's border (steps y 0,7,14,22,29 and
    # x 0,7,15,22 for 16-pixel tiles) get exactly the full-image conv
    flat = inf.predict_sliding_window(_jax_apply, folds[0], image, (16, 16), use_gaussian=False, mirror_axes=None,
                                      accumulate_dtype="float32")
    assert inf.compute_steps_for_sliding_window((45, 38), (16, 16)) == [[0, 7, 14, 22, 29], [0, 7, 15, 22]]
    full = np.asarray(_jax_apply(folds[0], image[None]))[0]
    np.testing.assert_allclose(np.asarray(flat)[16:22, 16:22], full[16:22, 16:22], atol=1e-5)
    with pytest.raises(ValueError, match="accumulate_dtype"):
        inf.predict_sliding_window(_jax_apply, folds[0], image, (16, 16), accumulate_dtype="bfloat16")
    with pytest.raises(ValueError, match="mirror axes"):
        inf.predict_sliding_window(_jax_apply, folds[0], image, (16, 16), mirror_axes=(2,))


def test_average_probabilities_equals_nnunet(tmp_path) -> None:
    ens = pytest.importorskip("nnunetv2.ensembling.ensemble")
    rng = np.random.default_rng(4)
    members = [rng.random((3, 1, 9, 7)).astype(np.float16) for _ in range(3)]
    files = []
    for i, m in enumerate(members):
        files.append(str(tmp_path / f"m{i}.npz"))
        np.savez(files[-1], probabilities=m)
    ref = ens.average_probabilities(files)
    ours = inf.average_probabilities(members)
    assert ours.dtype == ref.dtype == np.float32
    np.testing.assert_array_equal(ours, ref)
    seg = np.asarray(inf.logits_to_segmentation(jnp.asarray(members[0][:, 0].transpose(1, 2, 0))))
    np.testing.assert_array_equal(seg, members[0][:, 0].argmax(0))
