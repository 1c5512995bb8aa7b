"""Online validation pseudo Dice equals nnU-Net's validation_step + on_validation_epoch_end + logger EMA."""

from __future__ import annotations

import numpy as np
import pytest

from radgan_jax.seg.online_eval import ema_fg_dice, pseudo_dice, tp_fp_fn


@pytest.mark.parametrize("ignore", [None, 3])
def test_counts_equal_nnunet_get_tp_fp_fn_tn(ignore):
    torch = pytest.importorskip("torch")
    from nnunetv2.training.loss.dice import get_tp_fp_fn_tn

    rs = np.random.RandomState(0)
    k = 3
    logits = rs.randn(4, 10, 12, k).astype(np.float32)
    target = rs.randint(0, k + (1 if ignore else 0), (4, 10, 12))
    tp, fp, fn = (np.asarray(a) for a in tp_fp_fn(logits, target, ignore_label=ignore))

    out = torch.from_numpy(logits).permute(0, 3, 1, 2)
    onehot = torch.zeros(out.shape)
    onehot.scatter_(1, out.argmax(1)[:, None], 1)
    tgt = torch.from_numpy(target)[:, None].long()
    mask = None
    if ignore is not None:
        mask = (tgt != ignore).float()
        tgt[tgt == ignore] = 0
    rtp, rfp, rfn, _ = get_tp_fp_fn_tn(onehot, tgt, axes=[0, 2, 3], mask=mask)
    np.testing.assert_array_equal(tp, rtp.numpy()[1:])
    np.testing.assert_array_equal(fp, rfp.numpy()[1:])
    np.testing.assert_array_equal(fn, rfn.numpy()[1:])


def test_epoch_dice_and_ema_as_the_nnunet_logger(tmp_path):
    pytest.importorskip("torch")
    from nnunetv2.training.logging.nnunet_logger import MetaLogger

    per_class, mean = pseudo_dice([10, 0], [2, 0], [4, 0])  # class 2 absent everywhere -> NaN, ignored
    assert per_class[0] == pytest.approx(20 / 26) and np.isnan(per_class[1]) and mean == pytest.approx(20 / 26)
    logger = MetaLogger(str(tmp_path), resume=False)
    ours = None
    for epoch, value in enumerate([0.2, 0.5, 0.4, 0.9]):
        logger.log("mean_fg_dice", value, epoch)
        ours = ema_fg_dice(ours, value)
        assert ours == pytest.approx(logger.get_value("ema_fg_dice", step=epoch), abs=1e-12)
