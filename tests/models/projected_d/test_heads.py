"""Multi-scale conditional mini discriminators reproduce the official golden heads (../shared/golden/projected_d).

The golden heads are SingleDiscCond(nc=cin, ndf=16, start_sz=res, end_sz=8) on the EfficientNet-lite0 CSM
channels [64, 64, 128, 256] with nominal resolutions [128, 64, 32, 16] (README, config.json).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radgan_jax.data.base import DataError
from radgan_jax.models.projected_d.heads import (
    MultiScaleD,
    disc_widths,
    heads_state_to_official,
    heads_variables_from_official,
)
from radgan_jax.models.projected_d.projector import Projector, projector_params_from_official

BB = "tf_efficientnet_lite0"
PREFIX = f"discriminators.{BB}."
ATOL = 1e-5


@pytest.fixture(scope="module")
def golden(golden_dir):
    folder = golden_dir / "projected_d"
    sd = dict(np.load(folder / "params.npz"))
    config = json.loads((folder / "config.json").read_text())
    variables = heads_variables_from_official(sd, np.load(folder / "embed_table.npy"), prefix=PREFIX,
                                              source=str(folder / "params.npz"))
    io = np.load(folder / "io_heads.npz")
    feats = [jnp.asarray(io[f"{BB}.csm_out.{i}"].transpose(0, 2, 3, 1)) for i in range(4)]
    model = MultiScaleD(channels=[64, 64, 128, 256], resolutions=[128, 64, 32, 16],
                        ndf=config["ndf_used_for_heads"])
    return dict(folder=folder, sd=sd, v=variables, io=io, feats=feats, c=jnp.asarray(io["c"]), model=model)


def test_eval_logits_and_intermediates(golden):
    io, model = golden["io"], golden["model"]
    logits, inter = jax.jit(lambda v, f, c: model.apply(v, f, c, train=False, mutable=["intermediates"]))(
        golden["v"], golden["feats"], golden["c"])
    np.testing.assert_allclose(logits, io["logits_eval"], atol=ATOL, rtol=0)
    for k in range(4):
        d = inter["intermediates"][f"mini_discs_{k}"]
        np.testing.assert_allclose(logits[:, k], io[f"mini_disc{k}.out_eval"].reshape(-1), atol=ATOL, rtol=0)
        np.testing.assert_allclose(np.asarray(d["cls_out"][0]).transpose(0, 3, 1, 2), io[f"mini_disc{k}.cls_out_eval"],
                                   atol=ATOL, rtol=0, err_msg=f"disc {k} cls_out")
        np.testing.assert_allclose(d["cmap"][0], io[f"mini_disc{k}.cmap"], atol=ATOL, rtol=0, err_msg=f"cmap {k}")


def test_train_forward_logits_and_state(golden):
    io, model = golden["io"], golden["model"]
    logits, state = jax.jit(lambda v, f, c: model.apply(v, f, c, train=True, mutable=["spectral", "batch_stats"]))(
        golden["v"], golden["feats"], golden["c"])
    np.testing.assert_allclose(logits, io["logits_train"], atol=ATOL, rtol=0)
    ours = heads_state_to_official({**golden["v"], **state}, prefix=PREFIX)
    ref = np.load(golden["folder"] / "state_after_train_forward.npz")
    assert sorted(ours) == sorted(ref.files)
    for key in ref.files:
        if key.endswith("num_batches_tracked"):
            assert int(ours[key]) == int(ref[key]) == int(golden["sd"][key]) + 1, key
        else:
            np.testing.assert_allclose(ours[key], ref[key], atol=ATOL, rtol=0, err_msg=key)
            assert not np.array_equal(ref[key], golden["sd"][key]), f"{key} should change in a train forward"


def test_head_inputs_come_from_projector(golden):
    """The golden head inputs are the EfficientNet projector's CSM outputs of `feat_in`."""
    io = golden["io"]
    params = projector_params_from_official(golden["sd"], prefix=f"feature_networks.{BB}.scratch.")
    feats_in = [jnp.asarray(io[f"{BB}.feat_in.{i}"].transpose(0, 2, 3, 1)) for i in range(4)]
    _, csm = jax.jit(Projector(channels_in=[24, 40, 112, 320]).apply)(params, feats_in)
    for i in range(4):
        np.testing.assert_allclose(csm[i], golden["feats"][i], atol=ATOL, rtol=0)


def test_official_widths_and_init_shapes():
    # README: nfc_midas widths 64->64->128->256->512 (disc 0), ..., 256->512 at official width
    assert disc_widths(64, 128) == (128, [64, 64, 128, 256, 512])
    assert disc_widths(256, 16) == (16, [256, 512])
    assert disc_widths(64, 100, ndf=16) == (128, [64, 16, 16, 16, 16])  # snaps to the nearest listed size
    model = MultiScaleD(channels=[8, 8], resolutions=[32, 16], num_discs=2, ndf=4, cmap_dim=8)
    feats = [jnp.zeros((2, 32, 32, 8)), jnp.zeros((2, 16, 16, 8))]
    c = jax.nn.one_hot(jnp.array([0, 3]), 5)
    # shapes only (eval_shape): compiling the random init of every layer takes ~15 s on a loaded 2-core CPU
    v = jax.eval_shape(model.init, jax.random.PRNGKey(0), feats, c)
    assert set(v) == {"params", "spectral", "batch_stats"}
    assert v["params"]["mini_discs_0"]["embed"].shape == (1000, 320)
    assert v["params"]["mini_discs_0"]["main_1"]["conv"]["kernel"].shape == (4, 4, 4, 4)
    assert v["spectral"]["mini_discs_0"]["cls"]["v"].shape == (4 * 16,)
    logits = jax.eval_shape(model.apply, v, feats, c)
    assert logits.shape == (2, 25 + 25)  # both discs end at 8x8; the 4x4 valid cls conv leaves 5x5 logits each


def test_converter_errors_name_the_file():
    with pytest.raises(DataError, match="f.npz: missing discriminator tensor"):
        heads_variables_from_official({f"{PREFIX}mini_discs.0.cls.weight_u": 0}, prefix=PREFIX, source="f.npz")
    with pytest.raises(DataError, match="f.npz: no 'x.mini_discs"):
        heads_variables_from_official({}, prefix="x.", source="f.npz")
