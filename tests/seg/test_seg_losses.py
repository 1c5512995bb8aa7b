"""nnU-Net's training loss in JAX vs nnunetv2's own, built by the real `nnUNetTrainer._build_loss`.

The reference loss comes from nnunetv2 2.8.1 `nnUNetTrainer._build_loss` called on a stand-in trainer object
(plan batch_dice, ignore label, pool kernel sizes, no DDP, no compile); the deep-supervision targets from
batchgeneratorsv2 `DownsampleSegForDSTransform` with the trainer's `_get_deep_supervision_scales`.
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from radgan_jax.seg import losses as L

torch = pytest.importorskip("torch")
pytest.importorskip("nnunetv2")
pytest.importorskip("batchgeneratorsv2")

# 5-stage anisotropic 2D topology (nnunetv2 get_pool_and_conv_props for spacing (3, 1), patch 48x160).
STRIDES = [[1, 1], [1, 2], [2, 2], [2, 2], [2, 2]]


@pytest.fixture(autouse=True)
def _nnunet_paths(tmp_path, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))


def fake_trainer(batch_dice: bool, ignore_label: int | None, strides=STRIDES):
    """What `_build_loss` / `_get_deep_supervision_scales` read from an nnUNetTrainer."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    t = types.SimpleNamespace(
        label_manager=types.SimpleNamespace(has_regions=False, ignore_label=ignore_label),
        configuration_manager=types.SimpleNamespace(batch_dice=batch_dice, pool_op_kernel_sizes=strides),
        is_ddp=False, enable_deep_supervision=True, _do_i_compile=lambda: False)
    t._get_deep_supervision_scales = lambda: nnUNetTrainer._get_deep_supervision_scales(t)
    return t, nnUNetTrainer


def torch_ds_targets(seg: np.ndarray, scales) -> list[np.ndarray]:
    """batchgeneratorsv2 DownsampleSegForDSTransform per sample (it sees (1, *spatial)), stacked to (B, *spatial)."""
    from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

    tr = DownsampleSegForDSTransform(ds_scales=scales)
    per_sample = [tr._apply_to_segmentation(torch.from_numpy(s[None])) for s in seg]
    return [np.stack([ps[i][0].numpy() for ps in per_sample]) for i in range(len(scales))]


def test_ds_scales_weights_and_targets_match_nnunet():
    t, trainer_cls = fake_trainer(batch_dice=True, ignore_label=None)
    scales = t._get_deep_supervision_scales()
    ours = L.deep_supervision_scales(STRIDES)
    assert len(ours) == len(scales) == 4
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(scales))
    ref_loss = trainer_cls._build_loss(t)
    np.testing.assert_allclose(L.deep_supervision_weights(len(scales)), ref_loss.weight_factors, rtol=0, atol=1e-15)
    # Odd sizes exercise nearest-exact indexing and Python's round-half-to-even (45 * 0.5 -> 22).
    seg = np.random.RandomState(0).randint(0, 4, size=(2, 45, 70)).astype(np.int16)
    ref = torch_ds_targets(seg, scales)
    got = L.downsample_seg_for_ds(jnp.asarray(seg), ours)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        np.testing.assert_array_equal(np.asarray(g), r)
    # (B, H, W, 1) keeps its channel axis
    assert L.downsample_seg(jnp.asarray(seg)[..., None], ours[2]).shape == (2, 22, 18, 1)


@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("ignore_label", [None, 3])
def test_dc_and_ce_deep_supervision_loss_matches_nnunet(batch_dice, ignore_label):
    t, trainer_cls = fake_trainer(batch_dice, ignore_label)
    ref_loss = trainer_cls._build_loss(t)
    scales = t._get_deep_supervision_scales()
    rs = np.random.RandomState(1 + 2 * batch_dice + (ignore_label is not None))
    num_classes, shape = 3, (2, 32, 48)  # 3 heads; label 3 is the ignore label when set
    seg = rs.randint(0, num_classes, size=shape)
    if ignore_label is not None:
        seg[rs.rand(*shape) < 0.2] = ignore_label
    seg[1, :, :20] = 0  # a sample / region without foreground
    targets = torch_ds_targets(seg.astype(np.int16), scales)
    logits = [rs.randn(shape[0], num_classes, *tg.shape[1:]).astype(np.float32) * 3 for tg in targets]

    t_logits = [torch.from_numpy(x).requires_grad_(True) for x in logits]
    ref = ref_loss(t_logits, [torch.from_numpy(tg[:, None].astype(np.float32)) for tg in targets])
    ref.backward()

    def ours(lg):
        return L.nnunet_loss(lg, [jnp.asarray(tg) for tg in targets], batch_dice=batch_dice, ignore_label=ignore_label)

    j_logits = [jnp.asarray(x.transpose(0, 2, 3, 1)) for x in logits]
    val, grads = jax.jit(jax.value_and_grad(ours))(j_logits)
    np.testing.assert_allclose(float(val), float(ref.detach()), atol=1e-5, rtol=0)
    assert t_logits[-1].grad is None  # weight 0: nnU-Net skips the lowest-resolution output
    for g, tl in zip(grads, t_logits):
        want = np.zeros_like(tl.detach().numpy()) if tl.grad is None else tl.grad.numpy()
        np.testing.assert_allclose(np.asarray(g).transpose(0, 3, 1, 2), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("batch_dice", [True, False])
def test_all_pixels_ignored_and_no_foreground(batch_dice):
    """Edge cases of DC_and_CE: every pixel ignored (CE dropped by the num_fg guard) and a target of only
    background (dice of empty classes = smooth / (sum_pred + smooth))."""
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    rs = np.random.RandomState(7)
    logits = rs.randn(2, 4, 8, 6).astype(np.float32)
    for seg, ignore in ((np.full((2, 8, 6), 4), 4), (np.zeros((2, 8, 6), int), None)):
        ref = DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                             weight_ce=1, weight_dice=1, ignore_label=ignore, dice_class=MemoryEfficientSoftDiceLoss)
        want = float(ref(torch.from_numpy(logits), torch.from_numpy(seg[:, None].astype(np.float32))))
        got = float(L.dc_and_ce_loss(jnp.asarray(logits.transpose(0, 2, 3, 1)), jnp.asarray(seg),
                                     batch_dice=batch_dice, ignore_label=ignore))
        assert np.isfinite(got)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="does not match logits"):
        L.dc_and_ce_loss(jnp.zeros((2, 8, 8, 3)), jnp.zeros((2, 8, 9), jnp.int32), batch_dice=True)
    with pytest.raises(ValueError, match="one-hot"):
        L.dc_and_ce_loss(jnp.zeros((2, 8, 8, 3)), jnp.zeros((2, 8, 8, 3), jnp.int32), batch_dice=True)
    with pytest.raises(ValueError, match="2 outputs, 1 targets"):
        L.nnunet_loss([jnp.zeros((1, 4, 4, 2))] * 2, [jnp.zeros((1, 4, 4), jnp.int32)], batch_dice=False)
