"""Patch sampling equals nnunetv2's nnUNetDataLoader draw for draw (same seed -> same patches)."""

from __future__ import annotations

import numpy as np
import pytest

from radgan_jax.seg.sampler import PatchSampler, SegCase, crop_and_pad, step_rng


def _cases(seed: int = 0) -> dict[str, SegCase]:
    rs = np.random.RandomState(seed)
    cases = {}
    for i, (h, w) in enumerate([(40, 56), (64, 48), (20, 30), (90, 90), (33, 70)]):
        seg = np.zeros((1, 1, h, w), np.int16)
        if i != 2:  # case 2 has no foreground at all
            seg[0, 0, h // 4:h // 2, w // 3:w // 2] = 1
        if i in (0, 3):
            seg[0, 0, -6:-2, -7:-3] = 2
        locs = {}
        for lab in (1, 2):
            where = np.argwhere(seg == lab)
            locs[lab] = where[rs.choice(len(where), min(len(where), 25), replace=False)] if len(where) else \
                np.zeros((0, 4), np.int64)
        cases[f"case_{i:03d}"] = SegCase(rs.randn(2, 1, h, w).astype(np.float32), seg, locs)
    return cases


class _Dataset:  # the two members nnUNetDataLoader uses
    def __init__(self, cases):
        self.cases = cases
        self.identifiers = sorted(cases)

    def load_case(self, key):
        c = self.cases[key]
        return c.data, c.seg, None, {"class_locations": c.class_locations}


@pytest.mark.parametrize("batch_size,patch,final", [(12, (48, 64), (32, 40)), (5, (32, 32), (32, 32))])
def test_same_patches_as_nnunetv2_data_loader(batch_size, patch, final):
    pytest.importorskip("torch")
    dl_mod = pytest.importorskip("nnunetv2.training.dataloading.data_loader")
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    cases = _cases()
    lm = LabelManager({"background": 0, "a": 1, "b": 2}, regions_class_order=None)
    ref = dl_mod.nnUNetDataLoader(_Dataset(cases), batch_size, patch, final, lm, oversample_foreground_percent=0.33)
    ours = PatchSampler(cases.__getitem__, sorted(cases), batch_size, patch, final, foreground_labels=[1, 2])
    for seed in range(4):
        np.random.seed(seed)
        want = ref.generate_train_batch()
        data, seg, keys = ours.batch(np.random.RandomState(seed))
        assert list(keys) == list(want["keys"])
        np.testing.assert_array_equal(data, want["data"].numpy())
        np.testing.assert_array_equal(seg, want["target"].numpy())
    # the forced-foreground positions really show foreground whenever the case has any
    fg_cases = {k for k, c in cases.items() if (c.seg > 0).any()}
    for seed in range(20):
        _, seg, keys = ours.batch(step_rng(0, seed))
        for j, k in enumerate(keys):
            if ours.forced_foreground(j) and k in fg_cases:
                assert (seg[j] > 0).any(), (seed, j, k)


def test_crop_and_pad_and_step_rng():
    x = np.arange(12).reshape(1, 3, 4)
    np.testing.assert_array_equal(crop_and_pad(x, [-1, 2], [2, 6], -1),
                                  [[[-1, -1, -1, -1], [2, 3, -1, -1], [6, 7, -1, -1]]])
    assert crop_and_pad(x, [5, 5], [7, 7], 0).sum() == 0
    a, b = step_rng(1, 7).randint(0, 10**9, 4), step_rng(1, 7).randint(0, 10**9, 4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, step_rng(1, 8).randint(0, 10**9, 4))
    assert not np.array_equal(a, step_rng(1, 7, host=1).randint(0, 10**9, 4))
