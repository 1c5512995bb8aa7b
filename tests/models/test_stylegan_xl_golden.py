"""Our Flax StyleGAN-XL reproduces every generator array of ../shared/golden (official code, fp32 CPU)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from radgan_jax.models.stylegan_xl.generator import Generator
from radgan_jax.models.stylegan_xl.layer_specs import (
    LayerSpec,
    layer_specs_equal,
    stem_synthesis_spec,
    superres_synthesis_spec,
)
from radgan_jax.models.stylegan_xl.official_names import to_official_state_dict
from radgan_jax.models.stylegan_xl.sampling import input_transform, make_transform
from tests.jax_utils import jit_apply
from tests.models.golden_generator import GOLDEN_GENERATORS, load_golden_generator, nchw

ATOL = 1e-5  # the golden README's suggested tolerance on ws and images


@pytest.fixture(scope="module", params=GOLDEN_GENERATORS)
def golden(request, golden_dir):
    folder = golden_dir / request.param
    g, variables, config, state_dict = load_golden_generator(folder)
    return dict(folder=folder, g=g, v=variables, config=config, sd=state_dict,
                z=np.load(folder / "z.npy"), c=np.load(folder / "c.npy"))


@pytest.mark.parametrize("psi", [1.0, 0.7])
def test_ws(golden, psi):
    ws = jit_apply(golden["g"], golden["v"], golden["z"], golden["c"], truncation_psi=psi, method=Generator.map)
    ref = np.load(golden["folder"] / f"ws_psi{psi}.npy")
    assert ws.shape == ref.shape
    np.testing.assert_allclose(ws, ref, atol=ATOL, rtol=0)


def test_ws_truncation_cutoff(golden):
    ws = jit_apply(golden["g"], golden["v"], golden["z"], golden["c"], truncation_psi=0.7, truncation_cutoff=4,
                   method=Generator.map)
    ref = np.load(golden["folder"] / "ws_psi0.7_cutoff4.npy")
    np.testing.assert_allclose(ws, ref, atol=ATOL, rtol=0)
    ws1 = np.load(golden["folder"] / "ws_psi1.0.npy")
    np.testing.assert_allclose(ws[:, 4:], ws1[:, 4:], atol=ATOL, rtol=0)  # rows >= cutoff untruncated
    assert np.abs(ws[:, :4] - ws1[:, :4]).max() > 1e-2


@pytest.mark.parametrize("psi", [1.0, 0.7])
@pytest.mark.parametrize("noise_mode", ["const", "none"])
def test_images(golden, psi, noise_mode):
    img = jit_apply(golden["g"], golden["v"], golden["z"], golden["c"], truncation_psi=psi)
    ref = np.load(golden["folder"] / f"img_psi{psi}_{noise_mode}.npy")
    assert nchw(img).shape == ref.shape
    np.testing.assert_allclose(nchw(img), ref, atol=ATOL, rtol=0)


def test_transformed_image(golden):
    m = input_transform(translate=(0.1, -0.2), rotate=15.0)
    np.testing.assert_allclose(m, np.load(golden["folder"] / "transform_matrix.npy"), atol=1e-7)
    np.testing.assert_allclose(np.linalg.inv(m), make_transform((0.1, -0.2), 15.0), atol=1e-6)
    img = jit_apply(golden["g"], golden["v"], golden["z"], golden["c"], truncation_psi=1.0, transform=m)
    np.testing.assert_allclose(nchw(img), np.load(golden["folder"] / "img_psi1.0_transform.npy"), atol=ATOL)


def test_w_avg_ema_update_is_sequential_per_sample(golden):
    e = np.load(golden["folder"] / "ema_update.npz")
    assert golden["g"].spec.mapping.w_avg_beta == pytest.approx(float(e["w_avg_beta"]))
    v = {"params": golden["v"]["params"], "buffers": jax.tree.map(np.array, golden["v"]["buffers"])}
    v["buffers"]["mapping"]["w_avg"] = e["w_avg_before"]
    ws, updated = golden["g"].apply(v, e["z"], e["c"], update_emas=True, method=Generator.map,
                                    mutable=["buffers"])
    np.testing.assert_allclose(ws, e["ws"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(updated["buffers"]["mapping"]["w_avg"], e["w_avg_after"], atol=ATOL, rtol=0)
    # class 1 appears twice: a batch-mean update would differ from the sequential one
    assert np.abs(e["w_avg_after"][1] - e["w_avg_before"][1]).max() > 1e-3


def test_intermediates(golden):
    inter = np.load(golden["folder"] / "intermediates.npz")
    g, v = golden["g"], golden["v"]
    ws, mstate = jit_apply(g, v, golden["z"], golden["c"], method=Generator.map, mutable=["intermediates"])
    img, sstate = jit_apply(g, v, ws, method=Generator.synthesize, mutable=["intermediates"])
    mapping = mstate["intermediates"]["mapping"]
    synthesis = sstate["intermediates"]["synthesis"]
    _, feats = jit_apply(g, v, ws, return_features=True, method=Generator.synthesize)
    checked = 0
    for key in inter.files:
        ref = inter[key]
        module, *rest = key.split(".")
        if module == "mapping":
            got = mapping[rest[0]][0]
            tol = ATOL * max(1.0, np.abs(ref).max())
        elif rest == ["input", "out"]:
            got, tol = nchw(feats["input"])[0], 1e-4
        else:
            layer, what = rest
            if what == "out":
                got = nchw(feats[layer])[0]
            elif what == "modconv_out":
                got = nchw(synthesis[layer]["modconv_out"][0])[0]
            else:
                got = synthesis[layer]["styles_raw"][0]
            tol = 1e-4 * max(1.0, np.abs(ref).max())  # README: ~1e-4 relative on deep intermediates
        assert got.shape == ref.shape, key
        np.testing.assert_allclose(got, ref, atol=tol, rtol=0, err_msg=key)
        checked += 1
    assert checked == len(inter.files) >= 34


def test_layer_spec_math_reproduces_config(golden_dir):
    """Specs computed from the train.py kwargs equal the official per-layer table, 16 and 16->32."""
    c16 = json.loads((golden_dir / "stylegan_xl_16" / "config.json").read_text())
    c32 = json.loads((golden_dir / "stylegan_xl_32" / "config.json").read_text())
    gk = c16["G_kwargs_passed"]
    stem = stem_synthesis_spec(w_dim=gk["w_dim"], img_resolution=16, img_channels=3,
                               channel_base=gk["channel_base"], channel_max=gk["channel_max"],
                               num_layers=gk["num_layers"], magnitude_ema_beta=gk["magnitude_ema_beta"])
    assert [x.to_dict() for x in stem.layers] == c16["layers"]
    assert stem.input.size == c16["effective"]["input_size"][0]
    sr = superres_synthesis_spec(stem, head_layers=7, up_factor=2)
    assert not layer_specs_equal(sr.layers, tuple(LayerSpec.from_dict(x) for x in c32["layers"]))
    assert sr.num_ws == c32["effective"]["num_ws"] == 17
    assert list(sr.layer_names) == c32["effective"]["layer_names"]


def test_official_state_dict_round_trip(golden):
    back = to_official_state_dict(golden["v"], golden["g"].spec)
    assert set(back) == set(golden["sd"])
    for k, ref in golden["sd"].items():
        np.testing.assert_array_equal(back[k], ref, err_msg=k)
