"""GAN datasets as TFDS/ArrayRecord per resolution: what is written reads back bit for bit, errors name the case."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from radgan_jax.data.base import Case, DataError
from radgan_jax.data.pipeline import make_gan_source
from radgan_jax.data.preprocess import gan_preprocess
from radgan_jax.data.tfds_build import build_gan_datasets, dataset_name

CLASSES = ["liver", "lung", "spine", "kidney"]


def synthetic_cases(n: int = 36, seed: int = 0) -> list[Case]:
    """Mixed inputs a reader produces: uint8 grayscale, uint8 RGB and float MR-like images of varied sizes."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        h, w = 20 + 3 * (i % 5), 24 + 2 * (i % 3)
        kind = i % 3
        if kind == 0:
            img = rng.integers(0, 256, (h, w), dtype=np.uint8)
        elif kind == 1:
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        else:
            img = (rng.normal(size=(h, w)) * 300 + 1000).astype(np.float32)
        cases.append(Case(f"case{i:03d}", img, label=i % len(CLASSES)))
    return cases


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cases = synthetic_cases()
    out = tmp_path_factory.mktemp("gan")
    paths = build_gan_datasets(cases, out, name="Synthetic CT", resolutions=[32, 16], class_names=CLASSES,
                               xflip=True, progress=False)
    return cases, out, paths


def test_one_dataset_per_resolution_reads_back_bit_for_bit(built):
    cases, out, paths = built
    assert sorted(paths) == [16, 32]
    for res, path in paths.items():
        assert path == out / f"synthetic_ct_{res}px" / "1.0.0"
        assert len(list(path.glob("*.array_record-*-of-*"))) == 1
        source, info = make_gan_source(out, res)
        assert (info.resolution, info.num_records, info.xflip, info.class_names) == (res, 36, True, tuple(CLASSES))
        assert info.path == path and info.name == "Synthetic CT"
        assert len(source) == len(cases)
        for i, case in enumerate(cases):  # records keep the order of the cases
            ex = source[i]
            np.testing.assert_array_equal(decode(ex["image"]), gan_preprocess(case.image, res))
            assert ex["label"] == case.label
            assert ex["id"].decode() == case.id


def test_metadata_says_resolution_and_xflip(built):
    _, _, paths = built
    meta = json.loads((paths[16] / "metadata.json").read_text())
    assert meta["resolution"] == 16 and meta["xflip"] is True and meta["class_names"] == CLASSES
    info = json.loads((paths[16] / "dataset_info.json").read_text())
    assert '"xflip": true' in info["description"] and info["fileFormat"] == "array_record"


def test_a_data_dir_with_the_dataset_folder_itself_works(built):
    _, _, paths = built
    _, info = make_gan_source(paths[32], 32)
    assert info.resolution == 32
    with pytest.raises(DataError, match="16 px images, 32 px were asked"):
        make_gan_source(paths[16], 32)


def test_unconditional_dataset_and_volumes_become_slices(tmp_path):
    vol = Case("vol", np.arange(3 * 20 * 20, dtype=np.float32).reshape(3, 20, 20), label=2,
               meta={"spatial_dims": 3})
    paths = build_gan_datasets([vol, Case("img", np.full((18, 18), 7, np.uint8))], tmp_path, name="u",
                               resolutions=[8], class_names=[], progress=False)
    source, info = make_gan_source(tmp_path, 8)
    assert info.class_names == () and len(source) == 4 and paths[8].is_dir()
    assert [source[i]["id"].decode() for i in range(4)] == ["vol_z0000", "vol_z0001", "vol_z0002", "img"]
    assert {source[i]["label"] for i in range(4)} == {-1}
    np.testing.assert_array_equal(decode(source[1]["image"]), gan_preprocess(vol.image[1], 8))


def test_errors_name_the_problem_and_leave_nothing_behind(tmp_path):
    cases = synthetic_cases(4)
    with pytest.raises(DataError, match="no cases"):
        build_gan_datasets([], tmp_path, name="x", resolutions=[16], class_names=CLASSES, progress=False)
    for bad in ([24], [0], [16, 16], []):
        with pytest.raises(ValueError, match="resolution"):
            build_gan_datasets(cases, tmp_path, name="x", resolutions=bad, class_names=CLASSES, progress=False)
    unlabeled = cases[:2] + [Case("nolabel", cases[0].image)]
    with pytest.raises(DataError, match="'nolabel' has no class label"):
        build_gan_datasets(unlabeled, tmp_path, name="x", resolutions=[16], class_names=CLASSES, progress=False)
    with pytest.raises(DataError, match="label 9, outside the 4 class_names") as e:
        build_gan_datasets([Case("c", cases[0].image, label=9, meta={"path": "/d/c.png"})], tmp_path, name="x",
                           resolutions=[16], class_names=CLASSES, progress=False)
    assert str(e.value).startswith("/d/c.png: ")
    with pytest.raises(DataError, match="duplicate case id"):
        build_gan_datasets([cases[0], cases[0]], tmp_path, name="x", resolutions=[16], class_names=CLASSES,
                           progress=False)
    with pytest.raises(DataError, match="cannot preprocess case 'c5'"):
        build_gan_datasets([Case("c5", np.zeros((4, 4, 5), np.uint8), label=0)], tmp_path, name="x",
                           resolutions=[16], class_names=CLASSES, progress=False)
    assert list(tmp_path.iterdir()) == []  # every failed build cleaned up after itself
    build_gan_datasets(cases, tmp_path, name="x", resolutions=[16], class_names=CLASSES, progress=False)
    with pytest.raises(DataError, match="already exists"):
        build_gan_datasets(cases, tmp_path, name="x", resolutions=[16], class_names=CLASSES, progress=False)


def test_dataset_names_and_ambiguous_folders(tmp_path):
    assert dataset_name("RadImageNet", 256) == "radimagenet_256px"
    assert dataset_name("3d-CT scans", 16) == "d_3d_ct_scans_16px"
    with pytest.raises(ValueError, match="no letters or digits"):
        dataset_name("--", 16)
    for name in ("a", "b"):
        build_gan_datasets(synthetic_cases(2), tmp_path, name=name, resolutions=[8], class_names=CLASSES,
                           progress=False)
    with pytest.raises(DataError, match="exactly one 8 px GAN dataset"):
        make_gan_source(tmp_path, 8)
    with pytest.raises(DataError, match="exactly one 16 px GAN dataset"):
        make_gan_source(tmp_path, 16)
    with pytest.raises(DataError, match="does not exist"):
        make_gan_source(tmp_path / "missing", 8)
