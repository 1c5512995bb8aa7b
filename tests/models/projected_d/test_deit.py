"""DeiT feature network on the official StyleGAN-XL ViT path vs the golden tensors
(../shared/golden/feature_nets/README.md, `deit_tiny_distilled_patch16_224/`: atol 1e-5), plus the conversion
layouts, the torch layout of ConvTranspose2d / bilinear pos-embed resize, and the widths of small/base."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radgan_jax.models.projected_d.deit import (
    ConvTransposeNoOverlap,
    DeiTFeatures,
    config_from_variables,
    converter_variables,
    deit_config,
    deit_variables_from_state_dict,
    module_from_kwargs,
    resize_pos_embed,
)

ATOL = 1e-5  # README: DeiT outputs move by <= 1.4e-6 between thread counts; suggested atol 1e-5


@pytest.fixture(scope="module")
def golden(golden_dir):
    d = golden_dir / "feature_nets" / "deit_tiny_distilled_patch16_224"
    with np.load(d / "params.npz") as p, np.load(d / "io.npz") as io:
        return {k: p[k] for k in p.files}, {k: io[k] for k in io.files}


@pytest.fixture(scope="module")
def tiny(golden):
    """Converted golden variables and the model's outputs on the golden x_224 (one jit each)."""
    sd, io = golden
    variables = deit_variables_from_state_dict(sd, layout="projector")
    model = DeiTFeatures(config_from_variables(variables))
    x = jnp.asarray(io["x_224"].transpose(0, 2, 3, 1))  # NCHW -> NHWC
    outs = {
        "taps": jax.jit(lambda v, x: model.apply(v, x))(variables, x),
        "tokens": jax.jit(lambda v, x: model.apply(v, x, method=model.block_tokens))(variables, x),
        "logits": jax.jit(lambda v, x: model.apply(v, x, method=model.classify))(variables, x),
    }
    return variables, outs


def test_config_from_golden_params(tiny):
    cfg = config_from_variables(tiny[0])
    assert cfg == deit_config("deit_tiny_distilled_patch16_224")
    assert (cfg.embed_dim, cfg.num_heads, cfg.features, cfg.start_index) == (192, 3, (24, 48, 96, 192), 2)


def test_golden_block_tokens(tiny, golden):
    for i in range(4):
        got = np.asarray(tiny[1]["tokens"][i])
        assert got.shape == (1, 198, 192)
        np.testing.assert_allclose(got, golden[1][f"block_tokens.{i}"], rtol=0, atol=ATOL, err_msg=f"block {i}")


def test_golden_taps(tiny, golden):
    for i, (c, s) in enumerate([(24, 56), (48, 28), (96, 14), (192, 7)]):
        got = np.asarray(tiny[1]["taps"][i])
        assert got.shape == (1, s, s, c)
        np.testing.assert_allclose(got.transpose(0, 3, 1, 2), golden[1][f"tap.{i}"], rtol=0, atol=ATOL,
                                   err_msg=f"tap {i}")


def test_golden_head_logits(tiny, golden):
    np.testing.assert_allclose(np.asarray(tiny[1]["logits"]), golden[1]["head_logits"], rtol=0, atol=ATOL)


def test_timm_layout_same_vit_and_torch_default_reassembly(golden, tiny):
    sd = {k[len("pretrained.model."):]: v for k, v in golden[0].items() if k.startswith("pretrained.model.")}
    v0 = deit_variables_from_state_dict(sd, layout="timm", rng=0)
    jax.tree_util.tree_map(np.testing.assert_array_equal, v0["params"]["vit"], tiny[0]["params"]["vit"])
    assert config_from_variables(v0) == config_from_variables(tiny[0])
    again = deit_variables_from_state_dict(sd, layout="timm", rng=jax.random.PRNGKey(0))
    other = deit_variables_from_state_dict(sd, layout="timm", rng=1)
    re0, re1 = v0["params"]["reassemble"], other["params"]["reassemble"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, re0, again["params"]["reassemble"])
    assert not np.array_equal(re0["proj_0"]["kernel"], re1["proj_0"]["kernel"])
    # torch default init: U(+-1/sqrt(fan_in)); ConvTranspose2d's fan_in is out*k*k (its weight's dim 1)
    for name, fan_in in [("proj_0", 192), ("up_0", 24 * 16), ("up_1", 48 * 4), ("proj_3", 192), ("down_3", 192 * 9)]:
        bound = fan_in**-0.5
        for leaf in ("kernel", "bias"):
            w = np.asarray(re0[name][leaf])
            assert np.abs(w).max() <= bound, (name, leaf)
        w = np.asarray(re0[name]["kernel"])
        assert abs(w.std() - bound / np.sqrt(3)) < 0.1 * bound, name  # std of U(-b, b) is b/sqrt(3)


def test_conversion_errors_name_the_entry(golden):
    sd = dict(golden[0])
    with pytest.raises(ValueError, match="layout"):
        deit_variables_from_state_dict(sd, layout="torchvision")
    with pytest.raises(ValueError, match="cls_token"):
        deit_variables_from_state_dict(sd, layout="timm")  # projector keys given as timm
    bad = {k: v for k, v in sd.items() if k != "pretrained.layer2.4.weight"}
    with pytest.raises(ValueError, match=r"pretrained\.layer2\.4\.weight"):
        deit_variables_from_state_dict(bad, layout="projector")
    bad = {k: v for k, v in sd.items() if k != "pretrained.model.blocks.7.mlp.fc1.bias"}
    with pytest.raises(ValueError, match=r"blocks\.7\.mlp\.fc1\.bias"):
        deit_variables_from_state_dict(bad, layout="projector")
    bad = dict(sd, **{"pretrained.model.blocks.3.attn.proj.weight": np.zeros((192, 96), np.float32)})
    with pytest.raises(ValueError, match="blocks_3/attn/proj/kernel"):
        deit_variables_from_state_dict(bad, layout="projector")
    extra = dict(sd, **{"pretrained.model.norm_pre.weight": np.ones(192, np.float32)})
    with pytest.raises(ValueError, match=r"norm_pre\.weight"):  # a timm variant this port would misread
        deit_variables_from_state_dict(extra, layout="projector")
    short = {k: v for k, v in sd.items() if not k.startswith("pretrained.model.blocks.11.")}
    with pytest.raises(ValueError, match="11 transformer blocks"):
        deit_variables_from_state_dict(short, layout="projector")


class _ConvError(Exception):
    pass


def test_converter_recognises_layouts_and_checks_the_net(golden, tiny):
    sd, bb = golden[0], "feature_networks.deit_tiny_distilled_patch16_224."
    full_d = {bb + k: v for k, v in sd.items()} | {"discriminators.x.mini_discs.0.main.0.weight": np.zeros(3)}
    kwargs, variables, layout = converter_variables(full_d, "D.pth", net="deit_tiny_distilled_patch16_224")
    assert layout == "projector"
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables, jax.device_get(tiny[0]))
    module = module_from_kwargs(json.loads(json.dumps(kwargs)))  # checkpoint metadata is JSON
    assert module.cfg == config_from_variables(tiny[0])
    timm_sd = {"module." + k[len("pretrained.model."):]: v for k, v in sd.items() if k.startswith("pretrained.model.")}
    assert converter_variables(timm_sd, "t.pth", net="deit_tiny_distilled_patch16_224")[2] == "timm"
    with pytest.raises(_ConvError, match=r"D\.pth.*not deit_base_distilled_patch16_224"):
        converter_variables(full_d, "D.pth", net="deit_base_distilled_patch16_224", error=_ConvError)
    with pytest.raises(_ConvError, match=r"e\.pth: not a ViT/DeiT state_dict"):
        converter_variables({"conv_stem.weight": np.zeros(3)}, "e.pth", net="vit_base_patch16_224", error=_ConvError)
    bad = {k: v for k, v in full_d.items() if not k.endswith("layer3.3.bias")}
    with pytest.raises(_ConvError, match=r"D\.pth \(projector layout, prefix 'feature_networks.*layer3\.3\.bias"):
        converter_variables(bad, "D.pth", net="deit_tiny_distilled_patch16_224", error=_ConvError)


@pytest.mark.parametrize("k", [4, 2])
def test_conv_transpose_matches_torch_layout(k):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(k)
    x = rng.standard_normal((2, 5, 3, 6)).astype(np.float32)  # NCHW, non-square
    w = rng.standard_normal((5, 7, k, k)).astype(np.float32)  # torch (in, out, kh, kw)
    b = rng.standard_normal(7).astype(np.float32)
    want = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                                stride=k).numpy()
    params = {"kernel": jnp.asarray(w.transpose(2, 3, 0, 1)), "bias": jnp.asarray(b)}
    got = ConvTransposeNoOverlap(7, k).apply({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, rtol=1e-5, atol=1e-5)


def test_pos_embed_resize_matches_forward_flex():
    """`_resize_pos_embed`: tokens kept, the 14x14 grid resized with torch bilinear, align_corners=False."""
    torch = pytest.importorskip("torch")
    pos = np.random.default_rng(0).standard_normal((1, 198, 192)).astype(np.float32)
    for gh, gw in [(14, 14), (16, 16), (4, 6)]:  # identity at 224, calc_dims' 256 input, a downsampled grid
        got = np.asarray(resize_pos_embed(jnp.asarray(pos), 2, gh, gw))
        grid = torch.from_numpy(pos[0, 2:].reshape(1, 14, 14, 192)).permute(0, 3, 1, 2)
        grid = torch.nn.functional.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
        want = np.concatenate([pos[:, :2], grid.permute(0, 2, 3, 1).reshape(1, gh * gw, 192).numpy()], axis=1)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=f"grid {gh}x{gw}")
        if (gh, gw) == (14, 14):
            np.testing.assert_array_equal(got, pos)


@pytest.mark.parametrize("name,dim,features", [
    ("deit_small_distilled_patch16_224", 384, (48, 96, 192, 384)),
    ("deit_base_distilled_patch16_224", 768, (96, 192, 384, 768)),
    ("vit_base_patch16_224", 768, (96, 192, 384, 768)),
])
def test_widths_give_documented_tap_shapes(name, dim, features):
    cfg = deit_config(name)
    assert (cfg.embed_dim, cfg.num_heads, cfg.features, cfg.distilled) == (dim, dim // 64, features, "deit" in name)
    model = DeiTFeatures(cfg)
    x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    taps = jax.eval_shape(model.apply, variables, x)
    assert [t.shape for t in taps] == [(2, s, s, c) for s, c in zip((56, 28, 14, 7), features, strict=True)]
    tokens = jax.eval_shape(lambda v, x: model.apply(v, x, method=model.block_tokens), variables, x)
    assert [t.shape for t in tokens] == [(2, cfg.start_index + 196, dim)] * 4
    logits = jax.eval_shape(lambda v, x: model.apply(v, x, method=model.classify), variables, x)
    assert logits.shape == (2, 1000)
    # forward_flex at calc_dims' 256 input: a 16x16 grid, taps 64/32/16/8
    x256 = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
    assert [t.shape[1] for t in jax.eval_shape(model.apply, variables, x256)] == [64, 32, 16, 8]
    assert config_from_variables(variables) == cfg


def test_unknown_backbone_name():
    with pytest.raises(ValueError, match="vit_large_patch16_384"):
        deit_config("vit_large_patch16_384")


def test_convert_feature_nets_cli_writes_a_deit_checkpoint(golden_dir, golden, tmp_path):
    """The converter CLI (projector layout) -> checkpoint -> load_feature_net reproduces the golden taps."""
    from radgan_jax.tools import convert_feature_nets

    src = golden_dir / "feature_nets" / "deit_tiny_distilled_patch16_224" / "params.npz"
    out = tmp_path / "deit_tiny"
    assert convert_feature_nets.main(["--net", "deit_tiny_distilled_patch16_224", "--src", str(src),
                                      "--out", str(out)]) == 0
    module, variables = convert_feature_nets.load_feature_net(out)
    x = jnp.asarray(golden[1]["x_224"].transpose(0, 2, 3, 1))
    taps = jax.jit(lambda v, x: module.apply(v, x))(variables, x)
    np.testing.assert_allclose(np.asarray(taps[3]).transpose(0, 3, 1, 2), golden[1]["tap.3"], rtol=0, atol=ATOL)
    # a DeiT file given as EfficientNet is refused with the file named (exit code 2, no traceback)
    assert convert_feature_nets.main(["--net", "tf_efficientnet_lite0", "--src", str(src),
                                      "--out", str(tmp_path / "wrong")]) == 2
