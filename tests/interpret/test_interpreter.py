"""The BigDatasetGAN interpreter (models/interpreter.py) and its losses / metrics (interpret/losses.py)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from radgan_jax.interpret.features import class_embedding, feature_groups, synthesize_with_features
from radgan_jax.interpret.losses import (
    binary_cross_entropy,
    dice_per_label,
    num_logits,
    predict_labels,
    probabilities,
    segmentation_loss,
)
from radgan_jax.models.interpreter import Interpreter, SegBlock, group_widths, init_interpreter
from radgan_jax.models.stylegan_xl.builtin import builtin_generator
from radgan_jax.models.stylegan_xl.generator import Generator

SHAPES = {"low": (4, 4, 12), "mid": (8, 8, 10), "high": (16, 16, 6)}
WIDTHS = (8, 4, 4)
Y_DIM = 5
MUTABLE = ("batch_stats", "spectral")


@functools.cache
def _jit_apply(model: Interpreter):
    """Jitted `model.apply` (eager Flax dispatch of these convs is far slower than one compile)."""
    return jax.jit(model.apply, static_argnames=("train", "mutable"))


def _key(seed: int) -> jax.Array:
    """RBG keys: XLA:CPU compiles threefry for every parameter shape (~10 s per init here), RBG in ~1 s."""
    return jax.random.key(seed, impl="rbg")


def _normal(seed: int, shape) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _inputs(shapes, n=3, seed=0):
    feats = {k: _normal(seed + i, (n, *s)) for i, (k, s) in enumerate(shapes.items())}
    return feats, _normal(seed + 100, (n, Y_DIM))


@pytest.fixture(scope="module")
def full():
    """3 groups, 3 logits."""
    model = Interpreter(3, WIDTHS)
    return model, init_interpreter(model, SHAPES, Y_DIM, _key(1))


@pytest.fixture(scope="module")
def high_only():
    """A small generator's single "high" group, one sigmoid logit."""
    model = Interpreter(1, WIDTHS)
    return model, init_interpreter(model, {"high": SHAPES["high"]}, Y_DIM, _key(2))


@pytest.mark.parametrize("k,groups", [(3, ("low", "mid", "high")), (1, ("high",)), (3, ("mid", "high"))])
def test_output_shape_abstract(k, groups):
    shapes = {g: SHAPES[g] for g in groups}
    model = Interpreter(k, WIDTHS)
    feats, y = _inputs(shapes)
    variables = jax.eval_shape(lambda key: init_interpreter(model, shapes, Y_DIM, key), _key(0))
    out, state = jax.eval_shape(functools.partial(model.apply, train=True, mutable=MUTABLE), variables, feats, y)
    assert out.shape == (3, 16, 16, k)
    assert set(state) == set(MUTABLE)
    # The fused width stays sum(WIDTHS) whatever groups are present (original: 128 + 64 + 32).
    assert variables["params"]["out_conv"]["kernel"].shape == (3, 3, sum(WIDTHS), k)
    assert ("mid_feature_mix_conv" in variables["params"]) == ("mid" in groups)
    assert "low_feature_mix_conv" not in variables["params"]  # as the original: low is only reduced


@pytest.mark.parametrize("which", ["full", "high_only"])
def test_output_values(which, request):
    model, variables = request.getfixturevalue(which)
    shapes = SHAPES if which == "full" else {"high": SHAPES["high"]}
    feats, y = _inputs(shapes)
    out, state = _jit_apply(model)(variables, feats, y, train=True, mutable=MUTABLE)
    assert out.shape == (3, 16, 16, model.num_outputs)
    assert np.isfinite(np.asarray(out)).all() and float(jnp.std(out)) > 0


def test_group_widths_and_bad_groups():
    assert group_widths(["low", "mid", "high"]) == {"low": 128, "mid": 64, "high": 32}
    assert group_widths(["high"]) == {"high": 224}
    assert group_widths(["mid", "high"]) == {"mid": 192, "high": 32}
    with pytest.raises(ValueError, match="high"):
        group_widths(["low", "mid"])
    model = Interpreter(2, WIDTHS)
    with pytest.raises(ValueError, match="unknown feature groups"):
        init_interpreter(model, {"high": (16, 16, 6), "extra": (4, 4, 2)}, Y_DIM, _key(0))


def test_gradient_reaches_every_parameter(full):
    model, variables = full
    feats, y = _inputs(SHAPES)
    masks = jnp.asarray(np.random.default_rng(3).integers(0, 3, (3, 16, 16)))

    def loss_fn(params):
        out, _ = model.apply({**variables, "params": params}, feats, y, train=True, mutable=MUTABLE)
        return segmentation_loss(out, masks, dice_weight=1.0)

    grads = jax.jit(jax.grad(loss_fn))(variables["params"])
    norms = {jax.tree_util.keystr(p): float(jnp.linalg.norm(g)) for p, g in jax.tree_util.tree_leaves_with_path(grads)}
    assert len(norms) == len(jax.tree.leaves(variables["params"]))
    assert all(v > 0 for v in norms.values()), {k: v for k, v in norms.items() if v == 0}


def test_class_conditioning(full):
    model, variables = full
    feats, y = _inputs(SHAPES, n=2)
    y2 = y[::-1]
    apply = _jit_apply(model)
    # ccbn starts as the identity affine (zero-initialised gain/bias linears): the class has no effect yet.
    np.testing.assert_allclose(apply(variables, feats, y), apply(variables, feats, y2), atol=1e-6)
    # Once the gain/bias linears are non-zero, the class vector changes the logits.
    leaves = jax.tree_util.tree_leaves_with_path(variables["params"])

    def is_ccbn_linear(path):  # ['...']['bn1']['gain']['kernel'] / ['bias']['kernel'], not a conv's ['bias']
        s = jax.tree_util.keystr(path)
        return "['gain']" in s or "['bias'][" in s

    params = jax.tree_util.tree_unflatten(jax.tree.structure(variables["params"]), [
        v + 0.3 * _normal(i, v.shape) if is_ccbn_linear(p) else v for i, (p, v) in enumerate(leaves)])
    v2 = {**variables, "params": params}
    a, b = apply(v2, feats, y), apply(v2, feats, y2)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-2


def test_batch_norm_train_vs_eval(high_only):
    shapes = {"high": SHAPES["high"]}
    model, variables = high_only
    feats, y = _inputs(shapes, n=4, seed=7)
    apply = _jit_apply(model)
    _, state = apply(variables, feats, y, train=True, mutable=MUTABLE)
    # The first ccbn sees the 1x1-reduced features; its running stats move by torch's rule (momentum 0.1,
    # unbiased variance).
    h = np.einsum("nhwc,cd->nhwd", np.asarray(feats["high"], np.float64),
                  np.asarray(variables["params"]["high_feature_conv"], np.float64))
    bn1 = state["batch_stats"]["high_feature_mix_conv"]["bn1"]
    np.testing.assert_allclose(bn1["mean"], 0.1 * h.mean((0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(bn1["var"], 0.9 + 0.1 * h.reshape(-1, h.shape[-1]).var(0, ddof=1), rtol=1e-5)
    u0 = variables["spectral"]["high_feature_mix_conv"]["conv1"]["u"]
    assert not np.allclose(state["spectral"]["high_feature_mix_conv"]["conv1"]["u"], u0)  # one power iteration
    # Eval: running stats, batch independent; train: batch statistics, batch dependent.
    v2 = {**variables, **state}
    one = {k: v[:1] for k, v in feats.items()}
    np.testing.assert_allclose(apply(v2, one, y[:1]), apply(v2, feats, y)[:1], atol=1e-5)
    t_one, _ = apply(v2, one, y[:1], train=True, mutable=MUTABLE)
    t_all, _ = apply(v2, feats, y, train=True, mutable=MUTABLE)
    assert float(jnp.max(jnp.abs(t_one - t_all[:1]))) > 1e-3


def test_segblock_skip_conv_only_when_width_changes():
    x = _normal(8, (2, 6, 6, 5))
    y = jnp.ones((2, 3))
    same = jax.eval_shape(SegBlock(5).init, _key(0), x, y)
    wider = jax.jit(SegBlock(7).init)(_key(0), x, y)
    assert "conv_sc" not in same["params"]
    assert wider["params"]["conv_sc"]["kernel"].shape == (1, 1, 5, 7)
    assert jax.jit(SegBlock(7).apply)(wider, x, y).shape == (2, 6, 6, 7)


# ----------------------------------------------------------------------------------------------------- losses

def test_num_logits():
    assert num_logits(2) == 1 and num_logits(3) == 3 and num_logits(5) == 5
    with pytest.raises(ValueError):
        num_logits(1)


def test_binary_loss_against_optax_torch_and_formula():
    logits = 3 * _normal(9, (2, 5, 6, 1))
    masks = jnp.asarray(np.random.default_rng(10).integers(0, 2, (2, 5, 6)))
    ref = optax.sigmoid_binary_cross_entropy(logits[..., 0], masks.astype(jnp.float32)).mean()
    np.testing.assert_allclose(segmentation_loss(logits, masks), ref, rtol=1e-6)
    np.testing.assert_allclose(binary_cross_entropy(logits, masks), ref, rtol=1e-6)
    # + soft Dice of the foreground: -(2 sum(p t) + s) / (sum(t) + sum(p) + s) over the whole batch.
    p = 1 / (1 + np.exp(-np.asarray(logits[..., 0], np.float64)))
    t = np.asarray(masks, np.float64)
    dice = (2 * (p * t).sum() + 1e-5) / (t.sum() + p.sum() + 1e-5)
    np.testing.assert_allclose(segmentation_loss(logits, masks, dice_weight=0.5), ref - 0.5 * dice, rtol=1e-5)
    torch = pytest.importorskip("torch")
    tl = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(np.asarray(logits[..., 0])), torch.tensor(np.asarray(masks, np.float32)))
    np.testing.assert_allclose(segmentation_loss(logits, masks), tl.item(), rtol=1e-6)


def test_multiclass_loss_against_optax_and_formula():
    logits = 2 * _normal(11, (3, 4, 5, 4))
    masks = jnp.asarray(np.random.default_rng(12).integers(0, 4, (3, 4, 5)))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, masks).mean()
    np.testing.assert_allclose(segmentation_loss(logits, masks), ce, rtol=1e-6)
    e = np.exp(np.asarray(logits, np.float64))
    p = e / e.sum(-1, keepdims=True)
    t = np.eye(4)[np.asarray(masks)]
    inter, gt, pr = (p * t).sum((0, 1, 2)), t.sum((0, 1, 2)), p.sum((0, 1, 2))  # batch dice
    dice = ((2 * inter + 1e-5) / (gt + pr + 1e-5))[1:].mean()  # background excluded
    np.testing.assert_allclose(segmentation_loss(logits, masks, dice_weight=1.0), ce - dice, rtol=1e-5)
    per_sample = ((2 * (p * t).sum((1, 2)) + 1e-5) / (t.sum((1, 2)) + p.sum((1, 2)) + 1e-5))[:, 1:].mean()
    np.testing.assert_allclose(segmentation_loss(logits, masks, dice_weight=1.0, batch_dice=False),
                               ce - per_sample, rtol=1e-5)
    with pytest.raises(ValueError, match="masks"):
        segmentation_loss(logits, masks[:, :3])


def test_predict_labels_probabilities_and_dice():
    binary = jnp.array([[[[-1.0], [0.5]], [[2.0], [-0.1]]]])
    np.testing.assert_array_equal(predict_labels(binary), [[[0, 1], [1, 0]]])
    np.testing.assert_allclose(probabilities(binary)[..., 1], jax.nn.sigmoid(binary[..., 0]), rtol=1e-6)
    np.testing.assert_allclose(probabilities(binary).sum(-1), 1, rtol=1e-6)
    multi = _normal(13, (2, 3, 3, 4))
    np.testing.assert_array_equal(predict_labels(multi), np.argmax(np.asarray(multi), -1))

    pred = jnp.array([[[1, 1], [2, 0]], [[0, 0], [0, 0]]])
    ref = jnp.array([[[1, 0], [2, 2]], [[0, 0], [0, 3]]])
    d = np.asarray(dice_per_label(pred, ref, 4))
    assert d.shape == (2, 3)
    np.testing.assert_allclose(d[0, :2], [2 * 1 / 3, 2 * 1 / 3])
    assert np.isnan(d[0, 2]) and np.isnan(d[1, 0]) and np.isnan(d[1, 1])  # absent from both
    assert d[1, 2] == 0  # present in the reference only


# ----------------------------------------------------------------------------------------------------- overfit

@pytest.mark.slow  # ~22 s of CPU, 45-50 s wall on the shared 2-core machine
def test_overfits_four_generated_samples():
    """~100 Adam steps on 4 demo32 samples with fixed 3-label masks (intensity bands of the image) -> Dice > 0.9."""
    spec, gvars = builtin_generator("demo32", _key(0))
    gen = Generator(spec)
    c = jax.nn.one_hot(jnp.arange(4), spec.c_dim)
    z = _normal(1, (4, spec.z_dim))

    @jax.jit
    def render(gvars, z, c):
        ws = gen.apply(gvars, z, c, method=Generator.map)
        img, feats = synthesize_with_features(gen, gvars, ws)
        return img, feats, class_embedding(gen, gvars, c)

    img, feats, y = render(gvars, z, c)
    grey = np.asarray(img).mean(-1)
    masks = jnp.asarray(np.digitize(grey, np.quantile(grey, [0.5, 0.8])), jnp.int32)  # 3 labels
    model = Interpreter(3, (16, 8, 8))
    variables = init_interpreter(model, feature_groups(spec), y.shape[1], _key(2))
    tx = optax.adam(3e-3)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(variables, opt_state):
        def loss_fn(params):
            out, state = model.apply({**variables, "params": params}, feats, y, train=True, mutable=MUTABLE)
            return segmentation_loss(out, masks, dice_weight=1.0), state

        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        updates, opt_state = tx.update(grads, opt_state)
        return {"params": optax.apply_updates(variables["params"], updates), **state}, opt_state, loss

    opt_state = tx.init(variables["params"])
    losses = []
    for _ in range(100):
        variables, opt_state, loss = step(variables, opt_state)
        losses.append(float(loss))
    pred = predict_labels(_jit_apply(model)(variables, feats, y))  # eval mode: running statistics
    dice = np.nanmean(np.asarray(dice_per_label(pred, masks, 3)))
    assert losses[-1] < losses[0]
    print(f"overfit: mean Dice {dice:.4f}, loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert dice > 0.9, (dice, losses[::10])


def test_layerwise_features_give_the_same_logits(full):
    """Per-layer parts (features.group_features(layerwise=True)) = the concatenated group: the 1x1 group conv is
    applied per layer before the bilinear resize, the same linear map without the wide concatenation."""
    from radgan_jax.interpret.features import resize_bilinear

    model, variables = full
    variables = dict(variables)  # non-trivial ccbn gains so the whole head is exercised
    variables["params"] = jax.tree.map(lambda p: p + 0.05 * _normal(7, p.shape), variables["params"])
    # each group made of layers at different native sizes (the largest at the group's size, as features.py does)
    layer_shapes = {"low": [(2, 2, 5), (4, 4, 7)], "mid": [(4, 4, 3), (8, 8, 7)], "high": [(8, 8, 2), (16, 16, 4)]}
    parts = {g: tuple(_normal(10 * i + j, (3, *s)) for j, s in enumerate(ss))
             for i, (g, ss) in enumerate(layer_shapes.items())}
    concat = {g: jnp.concatenate([resize_bilinear(p, SHAPES[g][0]) for p in ps], axis=-1) for g, ps in parts.items()}
    y = _normal(99, (3, Y_DIM))
    a = _jit_apply(model)(variables, concat, y, train=False)
    b = _jit_apply(model)(variables, parts, y, train=False)
    scale = float(jnp.abs(a).max())
    assert scale > 1e-2
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5 * scale, rtol=0)
