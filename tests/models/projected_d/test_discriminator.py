"""The composed projected discriminator: golden feature-net paths end to end, head shapes, frozen mask,
augmentation keyed per backbone."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radgan_jax.models.projected_d.discriminator import (
    ProjectedDiscriminator,
    head_resolutions,
    load_into,
    trainable_mask,
)
from radgan_jax.models.projected_d.projector import projector_params_from_official
from radgan_jax.tools.convert_feature_nets import load_source

NETS = {"tf_efficientnet_lite0": dict(rtol=1e-4, atol=1e-3),   # feature_nets README tolerances
        "deit_tiny_distilled_patch16_224": dict(rtol=0, atol=1e-5)}


def _init(d: ProjectedDiscriminator, x, c):
    return jax.jit(lambda k: d.init(k, x, c))(jax.random.key(0))


@pytest.mark.parametrize("net", sorted(NETS))
def test_golden_feature_net_path_inside_the_discriminator(golden_dir, net):
    """x_in (64 px, [-1, 1]) -> D's preprocessing, frozen backbone and projector == the official F_RandomProj."""
    folder = golden_dir / "feature_nets" / net
    io = dict(np.load(folder / "io.npz"))
    sd = dict(np.load(folder / "params.npz"))
    x = jnp.asarray(io["x_in"].transpose(0, 2, 3, 1))
    c = jax.nn.one_hot(jnp.arange(x.shape[0]) % 3, 3)
    d = ProjectedDiscriminator(backbones=(net,), diffaug=False)
    variables = _init(d, x, c)
    _, fn_vars, _ = load_source(folder / "params.npz", net=net)
    variables = load_into(variables, net, "pretrained", fn_vars)
    variables = load_into(variables, net, "scratch", projector_params_from_official(sd, "scratch."))
    logits, feats = jax.jit(lambda v: d.apply(v, x, c, return_features=True))(variables)
    for i in range(4):
        np.testing.assert_allclose(np.asarray(feats[net]["taps"][i]).transpose(0, 3, 1, 2), io[f"tap.{i}"],
                                   err_msg=f"tap {i}", **NETS[net])
        np.testing.assert_allclose(np.asarray(feats[net]["proj"][i]).transpose(0, 3, 1, 2), io[f"csm_out.{i}"],
                                   err_msg=f"csm {i}", **NETS[net])
    # heads built for a 256 px input (128/64/32/16) see 112/56/28/14 maps -> 4x4 logits each
    assert [p.shape[1] for p in feats[net]["proj"]] == [112, 56, 28, 14]
    assert head_resolutions(2) == [128, 64, 32, 16]
    assert logits[0].shape == (x.shape[0], 4 * 16)


def test_frozen_mask_keyed_augmentation_and_train_mode_state():
    d = ProjectedDiscriminator(backbones=("tf_efficientnet_lite0",), ndf=8)
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1)
    c = jax.nn.one_hot(jnp.array([0, 2]), 3)
    variables = _init(d, x, c)
    mask = trainable_mask(variables["params"])
    assert {k: all(jax.tree.leaves(v)) for k, v in mask.items()} == {
        "tf_efficientnet_lite0_pretrained": False, "tf_efficientnet_lite0_scratch": False,
        "tf_efficientnet_lite0_disc": True}

    @jax.jit
    def run(v, key):
        out, upd = d.apply(v, x, c, train=True, key=key, mutable=["batch_stats", "spectral"])
        return out, upd

    a, upd = run(variables, jax.random.key(5))
    b, _ = run(variables, jax.random.key(5))
    e, _ = run(variables, jax.random.key(6))
    assert [o.shape for o in a] == [(2, 64)]
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))       # same key, same draw
    assert np.abs(np.asarray(a[0]) - np.asarray(e[0])).max() > 0           # another key, another draw
    # train mode moved the heads' BN stats and spectral vectors, not the frozen backbone's BN stats
    before = variables["batch_stats"]["tf_efficientnet_lite0_pretrained"]
    after = upd["batch_stats"]["tf_efficientnet_lite0_pretrained"]
    assert all(jax.tree.leaves(jax.tree.map(lambda p, q: bool(np.array_equal(p, q)), before, after)))
    heads_b = variables["batch_stats"]["tf_efficientnet_lite0_disc"]
    heads_a = upd["batch_stats"]["tf_efficientnet_lite0_disc"]
    assert not all(jax.tree.leaves(jax.tree.map(lambda p, q: bool(np.array_equal(p, q)), heads_b, heads_a)))


def test_load_into_names_the_bad_entry():
    d = ProjectedDiscriminator(backbones=("tf_efficientnet_lite0",), diffaug=False, ndf=8)
    x = jnp.zeros((1, 16, 16, 3))
    v = jax.eval_shape(lambda k: d.init(k, x, jax.nn.one_hot(jnp.array([0]), 3)), jax.random.key(0))
    good = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), {"params": v["params"]["tf_efficientnet_lite0_scratch"]})
    assert load_into(v, "tf_efficientnet_lite0", "scratch", good)["params"]["tf_efficientnet_lite0_scratch"]
    bad = jax.tree.map(lambda a: a, good)
    bad["params"]["layer0_ccm"]["kernel"] = np.zeros((1, 1, 1, 1))
    with pytest.raises(ValueError, match="params/tf_efficientnet_lite0_scratch/layer0_ccm/kernel: shape"):
        load_into(v, "tf_efficientnet_lite0", "scratch", bad)
    with pytest.raises(ValueError, match="unknown backbone 'resnet50'"):
        jax.eval_shape(lambda k: ProjectedDiscriminator(backbones=("resnet50",)).init(
            k, x, jax.nn.one_hot(jnp.array([0]), 3)), jax.random.key(0))
