"""Per-case fingerprint parity with nnunetv2's DatasetFingerprintExtractor.analyze_case (in-process)."""

from __future__ import annotations

import numpy as np
import pytest

from radgan_jax.data.base import Case
from radgan_jax.data.nnunet_raw import write_nnunet_raw
from radgan_jax.seg import fingerprint as fp
from radgan_jax.seg.raw_dataset import open_raw_dataset


def test_analyze_case_matches_nnunet(tmp_path):
    pytest.importorskip("nnunetv2")
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    rng = np.random.default_rng(2)
    cases = []
    for i in range(3):
        image = np.zeros((50, 60, 2), np.float32)
        image[10:40, 5 + i:50] = rng.normal(100, 30, (30, 45 - i, 2))
        mask = np.zeros((50, 60), np.uint8)
        if i < 2:  # the last case has no foreground: it contributes no samples
            mask[15:30, 20:40] = 1 + i
        cases.append(Case(f"c{i}", image, mask, spacing=(0.7 + 0.1 * i, 0.9)))
    folder = write_nnunet_raw(cases, tmp_path, 21, "Fp", {"background": 0, "a": 1, "b": 2}, {"0": "MR", "1": "CT"},
                              file_ending=".nii.gz")
    ds = open_raw_dataset(folder)
    ours = []
    for case in ds.cases:
        data, seg, props = ds.load(case)
        mine = fp.analyze_case(data, seg, props["spacing"], 777)
        shape, spacing, samples, _, rel = DatasetFingerprintExtractor.analyze_case(
            [str(p) for p in case.image_files], str(case.label_file), SimpleITKIO, 777)
        assert mine.shape_after_crop == tuple(shape) and np.allclose(mine.spacing, spacing, rtol=1e-12)
        assert mine.relative_size_after_cropping == rel
        for a, b in zip(mine.foreground_samples, samples):
            assert np.array_equal(a, np.asarray(b)) and len(a) == (0 if case.id == "c2" else 777)
        ours.append(mine)
    agg = fp.aggregate(ours, 2)
    assert agg["shapes_after_crop"] == [[1, 30, 45], [1, 30, 44], [1, 30, 43]]
    assert agg["median_relative_size_after_cropping"] == pytest.approx(30 * 44 / (50 * 60))
    # an empty case makes nnU-Net's concatenation float64; the statistics follow that dtype
    both = np.concatenate([ours[0].foreground_samples[1], ours[1].foreground_samples[1], []])
    assert agg["foreground_intensity_properties_per_channel"]["1"]["mean"] == float(np.mean(both))
    assert agg["foreground_intensity_properties_per_channel"]["1"]["std"] == float(np.std(both))
    assert fp.samples_per_case(40) == 2_500_000 and fp.samples_per_case(612) == int(1e8 // 612)
    with pytest.raises(ValueError, match="no foreground voxels in any case"):
        fp.aggregate([ours[2]], 2)
