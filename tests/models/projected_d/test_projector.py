"""CCM/CSM projector and D input preprocessing reproduce the official golden tensors (../shared/golden)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radgan_jax.data.base import DataError
from radgan_jax.models.projected_d.preprocess import bilinear_resize, preprocess_for_backbone
from radgan_jax.models.projected_d.projector import Projector, projector_params_from_official
from radgan_jax.ops.spectral_norm import torch_default_init

BACKBONES = ["deit_base_distilled_patch16_224", "tf_efficientnet_lite0"]
FEATURE_NETS = {"tf_efficientnet_lite0": dict(rtol=1e-4, atol=1e-3),  # feature_nets/README.md tolerances
                "deit_tiny_distilled_patch16_224": dict(rtol=0, atol=1e-5)}


def nhwc(a: np.ndarray) -> jnp.ndarray:
    return jnp.asarray(a.transpose(0, 2, 3, 1))


def nchw(a) -> np.ndarray:
    return np.asarray(a).transpose(0, 3, 1, 2)


def _run_projector(params, feats):
    proj = Projector(channels_in=[f.shape[-1] for f in feats])
    return jax.jit(proj.apply)(params, feats)


@pytest.mark.parametrize("bb", BACKBONES)
def test_projector_golden(golden_dir, bb):
    sd = np.load(golden_dir / "projected_d" / "params.npz")
    io = np.load(golden_dir / "projected_d" / "io_projector.npz")
    params = projector_params_from_official(sd, prefix=f"feature_networks.{bb}.scratch.")
    ccm, csm = _run_projector(params, [nhwc(io[f"{bb}.feat_in.{i}"]) for i in range(4)])
    for i in range(4):
        np.testing.assert_allclose(nchw(ccm[i]), io[f"{bb}.ccm_out.{i}"], atol=1e-5, rtol=0, err_msg=f"ccm {i}")
        np.testing.assert_allclose(nchw(csm[i]), io[f"{bb}.csm_out.{i}"], atol=1e-5, rtol=0, err_msg=f"csm {i}")


@pytest.mark.parametrize("net", sorted(FEATURE_NETS))
def test_projector_feature_nets_golden(golden_dir, net):
    folder = golden_dir / "feature_nets" / net
    io = np.load(folder / "io.npz")
    params = projector_params_from_official(np.load(folder / "params.npz"), source=str(folder / "params.npz"))
    ccm, csm = _run_projector(params, [nhwc(io[f"tap.{i}"]) for i in range(4)])
    for i in range(4):
        np.testing.assert_allclose(nchw(ccm[i]), io[f"ccm_out.{i}"], **FEATURE_NETS[net], err_msg=f"ccm {i}")
        np.testing.assert_allclose(nchw(csm[i]), io[f"csm_out.{i}"], **FEATURE_NETS[net], err_msg=f"csm {i}")


def test_projector_init_is_torch_default_and_shapes():
    k = np.asarray(jax.jit(lambda r: torch_default_init(64)(r, (64, 64)))(jax.random.PRNGKey(0)))
    assert np.abs(k).max() <= 1 / np.sqrt(64) and np.abs(k).max() > 0.95 / np.sqrt(64)  # U(+-1/sqrt(fan_in))
    feats = [jnp.zeros((1, 16 // 2 ** i, 16 // 2 ** i, c)) for i, c in enumerate([24, 40, 112, 320])]
    proj = Projector(channels_in=[24, 40, 112, 320])
    # shapes via eval_shape: compiling every layer's random init takes seconds on a loaded CPU
    params = jax.eval_shape(proj.init, jax.random.PRNGKey(0), feats)
    assert params["params"]["layer3_ccm"]["kernel"].shape == (320, 512)
    assert params["params"]["layer0_csm"]["kernel"].shape == (64, 64)
    _, csm = jax.eval_shape(proj.apply, params, feats)
    assert [o.shape[-1] for o in csm] == proj.out_channels == [64, 64, 128, 256]
    assert [o.shape[1] for o in csm] == [2 * f.shape[1] for f in feats]


def test_converter_names_missing_tensor():
    with pytest.raises(DataError, match="x.npz: projector weights missing"):
        projector_params_from_official({}, source="x.npz")


@pytest.mark.parametrize("bb", BACKBONES)
def test_preprocess_golden(golden_dir, bb):
    pre = np.load(golden_dir / "projected_d" / "preproc.npz")
    out = jax.jit(lambda x: preprocess_for_backbone(x, bb))(nhwc(pre["img_in"]))
    np.testing.assert_allclose(nchw(out), pre[f"{bb}.out_224"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("net", sorted(FEATURE_NETS))
def test_preprocess_feature_nets_golden(golden_dir, net):
    io = np.load(golden_dir / "feature_nets" / net / "io.npz")
    out = jax.jit(lambda x: preprocess_for_backbone(x, net))(nhwc(io["x_in"]))
    np.testing.assert_allclose(nchw(out), io["x_224"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("size", [(7, 12), (3, 2)])
def test_bilinear_resize_matches_torch(align_corners, size):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear",
                                          align_corners=align_corners).numpy()
    np.testing.assert_allclose(nchw(bilinear_resize(nhwc(x), size, align_corners)), ref, atol=1e-6)


def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="resnet_foo"):
        preprocess_for_backbone(jnp.zeros((1, 4, 4, 3)), "resnet_foo")
