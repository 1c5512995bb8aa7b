"""PlainConvUNet (flax) against dynamic_network_architectures' torch PlainConvUNet built by nnunetv2.

The plans' architecture blocks are made like nnunetv2's ExperimentPlanner.get_plans_for_configuration: topology
from nnunetv2 `get_pool_and_conv_props` (the planner's function), features min(512, 32 * 2^i), 2 convs per stage.
The torch network comes from nnunetv2 `get_network_from_plans` (what nnUNetTrainer.build_network_architecture
calls, including InitWeights_He).
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radgan_jax.models import unet as U

torch = pytest.importorskip("torch")
pytest.importorskip("nnunetv2")
pytest.importorskip("dynamic_network_architectures")

# (spacing, median image shape, input channels, classes, batch): a 7-stage 256x256 isotropic 2D plan, and an
# anisotropic one (spacing 3:1) whose first stages have (1, 3) kernels and (1, 2) strides.
PLANS = {
    "256x256_7stages": ((1.0, 1.0), (256, 256), 3, 2, 1),
    "48x160_aniso_5stages": ((3.0, 1.0), (48, 160), 1, 3, 2),
}


def make_plan_2d(spacing, patch) -> dict:
    """Plan configuration with nnunetv2's planner topology and default-planner arch kwargs (JSON round trip)."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    # ExperimentPlanner: UNet_featuremap_min_edge_length = 4, max_numpool 999999, base 32, max 512 features in 2D.
    _, pools, kernels, patch_size, _ = get_pool_and_conv_props(spacing, patch, 4, 999999)
    n = len(pools)
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": [min(512, 32 * 2**i) for i in range(n)],
            "conv_op": "torch.nn.modules.conv.Conv2d", "kernel_sizes": kernels, "strides": pools,
            "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    plan = {"patch_size": [int(p) for p in patch_size], "batch_dice": True, "architecture": arch}
    return json.loads(json.dumps(plan, default=int))


def torch_net(plan: dict, cin: int, ncls: int, deep_supervision: bool = True):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    a = plan["architecture"]
    net = get_network_from_plans(a["network_class_name"], a["arch_kwargs"], a["_kw_requires_import"], cin, ncls,
                                 allow_init=True, deep_supervision=deep_supervision)
    return net.eval()


@pytest.fixture(scope="module", params=list(PLANS))
def case(request):
    spacing, patch, cin, ncls, batch = PLANS[request.param]
    plan = make_plan_2d(spacing, patch)
    torch.manual_seed(0)
    net = torch_net(plan, cin, ncls)
    return plan, net, cin, ncls, batch


def test_param_count_shapes_and_outputs_match_torch(case):
    plan, net, cin, ncls, batch = case
    model = U.unet_from_plan(plan, cin, ncls)
    variables = U.variables_from_torch_state_dict(net.state_dict(), model)
    assert U.count_params(variables) == sum(p.numel() for p in net.parameters())
    # our own init has the same tree as the converted one
    ours = jax.eval_shape(lambda k: U.init_unet(model, k), jax.random.key(0))
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(variables)
    no_ds = jax.eval_shape(lambda k: U.init_unet(model.clone(deep_supervision=False), k), jax.random.key(0))
    assert jax.tree_util.tree_structure(no_ds) == jax.tree_util.tree_structure(variables)  # heads always built

    x = np.random.RandomState(0).randn(batch, cin, *plan["patch_size"]).astype(np.float32)
    with torch.no_grad():
        ref = [o.numpy() for o in net(torch.from_numpy(x))]
        net.decoder.deep_supervision = False  # nnUNetTrainer.set_deep_supervision_enabled(False)
        ref_single = net(torch.from_numpy(x)).numpy()
        net.decoder.deep_supervision = True
    x_nhwc = jnp.asarray(x.transpose(0, 2, 3, 1))
    out = jax.jit(model.apply)(variables, x_nhwc)
    n = plan["architecture"]["arch_kwargs"]["n_stages"]
    assert isinstance(out, list) and len(out) == len(ref) == n - 1
    for o, r in zip(out, ref):
        o = np.asarray(o).transpose(0, 3, 1, 2)
        assert o.shape == r.shape and o.dtype == np.float32
        np.testing.assert_allclose(o, r, atol=1e-4, rtol=0)
    single = jax.jit(model.clone(deep_supervision=False).apply)(variables, x_nhwc)
    np.testing.assert_allclose(np.asarray(single).transpose(0, 3, 1, 2), ref_single, atol=1e-4, rtol=0)


def test_init_is_kaiming_normal_like_nnunet():
    """Per-layer std of our init vs kaiming_normal_(a=0.01, fan_in) computed from the torch weight's shape (and the
    torch init's own per-layer std): conv and transposed-conv kernels (fan_in = dim 1 x kernel volume), biases 0,
    InstanceNorm scale 1 / bias 0. """
    spacing, patch, cin, ncls, _ = PLANS["48x160_aniso_5stages"]
    plan = make_plan_2d(spacing, patch)
    torch.manual_seed(1)
    net = torch_net(plan, cin, ncls)
    model = U.unet_from_plan(plan, cin, ncls)
    variables = U.init_unet(model, jax.random.key(1))
    sd = net.state_dict()
    gain = math.sqrt(2.0 / (1 + 0.01**2))
    n_kernels = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"]):
        names = tuple(p.key for p in path)
        key = U.torch_name(names)
        w, tw = np.asarray(leaf, np.float64), sd[key].numpy().astype(np.float64)
        if names[-1] == "kernel":
            fan_in = tw.shape[1] * int(np.prod(tw.shape[2:]))  # torch _calculate_fan_in_and_fan_out
            expected = gain / math.sqrt(fan_in)
            tol = 6 / math.sqrt(2 * w.size)  # ~6 sigma of a sample std's relative error
            assert abs(w.std() / expected - 1) < tol, (key, w.std(), expected)
            assert abs(tw.std() / expected - 1) < tol, (key, tw.std(), expected)
            assert abs(w.mean()) < 6 * expected / math.sqrt(w.size), key
            n_kernels += 1
        elif names[-1] == "scale":
            np.testing.assert_array_equal(w, 1.0)
        else:
            assert names[-1] == "bias"
            np.testing.assert_array_equal(w, 0.0)
            np.testing.assert_array_equal(tw, 0.0)
    n = plan["architecture"]["arch_kwargs"]["n_stages"]
    assert n_kernels == 2 * n + 2 * (n - 1) + 2 * (n - 1)  # encoder convs, decoder convs, transpconvs, seg layers


def test_bf16_compute_and_flax_init_path():
    model = U.PlainConvUNet(input_channels=2, n_stages=3, features_per_stage=(8, 16, 32),
                            kernel_sizes=((3, 3),) * 3, strides=((1, 1), (2, 2), (2, 1)), n_conv_per_stage=(2, 2, 2),
                            num_classes=3, n_conv_per_stage_decoder=(1, 2))
    variables = U.init_unet(model, jax.random.key(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(variables))
    # flax's own init path (module.init, per-layer kernel_init) has the same tree and the same std rule. ('rbg'
    # key: threefry's XLA CPU compile costs ~0.7 s per layer; the statistics do not depend on the PRNG.)
    flax_init = jax.jit(model.init)(jax.random.key(2, impl="rbg"), U.dummy_input(model))
    assert jax.tree_util.tree_structure(flax_init) == jax.tree_util.tree_structure(variables)
    big = flax_init["params"]["decoder_stages_0"]["convs_0"]["conv"]["kernel"]  # (3, 3, 32, 16): fan_in 288
    assert abs(float(big.std()) / U.kaiming_std(big.shape) - 1) < 0.1
    up = flax_init["params"]["decoder_transpconvs_0"]["kernel"]  # (2, 1, 32, 16): torch fan_in = 16 * 2
    assert U.kaiming_std(up.shape, transposed=True) == pytest.approx(np.sqrt(2 / 1.0001) / np.sqrt(32))
    assert abs(float(up.std()) / U.kaiming_std(up.shape, transposed=True) - 1) < 0.25
    x = jax.random.normal(jax.random.key(1), (2, 16, 12, 2))
    ref = jax.jit(model.apply)(variables, x)
    out = jax.jit(model.clone(compute_dtype="bfloat16").apply)(variables, x)
    assert [o.shape for o in ref] == [(2, 16, 12, 3), (2, 8, 6, 3)]
    for o, r in zip(out, ref):
        assert o.dtype == jnp.float32 and o.shape == r.shape
        err = float(jnp.abs(o - r).max() / jnp.abs(r).max())
        assert 0 < err < 0.1, err


def test_errors_name_the_bad_value():
    spacing, patch, cin, ncls, _ = PLANS["48x160_aniso_5stages"]
    plan = make_plan_2d(spacing, patch)
    bad = json.loads(json.dumps(plan))
    bad["architecture"]["network_class_name"] = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    with pytest.raises(ValueError, match="ResidualEncoderUNet"):
        U.unet_from_plan(bad, cin, ncls)
    bad = json.loads(json.dumps(plan))
    bad["architecture"]["arch_kwargs"]["conv_op"] = "torch.nn.modules.conv.Conv3d"
    with pytest.raises(ValueError, match="conv_op.*Conv3d"):
        U.unet_from_plan(bad, cin, ncls)
    model = U.unet_from_plan(plan, cin, ncls)
    with pytest.raises(ValueError, match=r"not divisible by \(8, 16\)"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 40, 100, cin)))
    net = torch_net(plan, cin, ncls)
    sd = dict(net.state_dict())
    sd.pop("decoder.seg_layers.1.weight")
    with pytest.raises(KeyError, match=r"decoder\.seg_layers\.1\.weight"):
        U.variables_from_torch_state_dict(sd, model)
    sd = {"module." + k: v for k, v in net.state_dict().items()}  # DDP prefix is accepted
    sd["module.extra.weight"] = sd["module.decoder.seg_layers.1.weight"]
    with pytest.raises(KeyError, match=r"extra\.weight"):
        U.variables_from_torch_state_dict(sd, model)
