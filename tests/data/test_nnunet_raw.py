"""nnU-Net v2 raw format: write -> read is pixel-exact, nnU-Net's own readers see the same arrays, problems
are named DataErrors, and (slow) nnU-Net's own verify_dataset_integrity accepts what we write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from radgan_jax.data.base import Case, DataError
from radgan_jax.data.nnunet_raw import NnUNetRawWriter, write_nnunet_raw
from radgan_jax.data.readers import detect_format, open_dataset
from radgan_jax.data.readers.nnunet_raw import NnUNetRawReader

BINARY = {"background": 0, "polyp": 1}
RNG = np.random.default_rng(0)


def rgb_cases(n=3):
    return [Case(f"img{i}", RNG.integers(0, 256, (30, 40, 3)).astype(np.uint8),
                 (RNG.random((30, 40)) > 0.7).astype(np.uint8), group=f"seq{i % 2}") for i in range(n)]


def volume_cases(n=3):
    return [Case(f"pat{i}", (RNG.normal(size=(6, 24, 20)) * 300).astype(np.float32),
                 RNG.integers(0, 3, (6, 24, 20)).astype(np.uint8), group=f"p{i}", spacing=(7.7, 1.25, 0.9),
                 meta={"spatial_dims": 3}) for i in range(n)]


def read_all(folder: Path, **kw) -> dict[str, Case]:
    reader = NnUNetRawReader(folder, **kw)
    items, problems = reader.scan()
    assert problems == []
    return {it.id: reader.load(it) for it in items}


def assert_same(a: Case, b: Case, spacing=True):
    assert a.image.dtype == b.image.dtype and a.image.shape == b.image.shape
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert np.issubdtype(b.mask.dtype, np.integer)
    assert a.group == b.group and a.is_volume == b.is_volume
    if spacing:
        np.testing.assert_allclose(b.spacing, a.spacing, rtol=1e-6)  # NIfTI stores voxel sizes as float32


def test_round_trip_2d_rgb_png(tmp_path):
    cases = rgb_cases()
    folder = write_nnunet_raw(cases, tmp_path, 7, "Polyp", BINARY, {"0": "R", "1": "G", "2": "B"})
    assert folder.name == "Dataset007_Polyp"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["img0_0000.png", "img1_0000.png",
                                                                       "img2_0000.png"]
    ds = json.loads((folder / "dataset.json").read_text())
    assert ds["numTraining"] == 3 and ds["file_ending"] == ".png" and ds["labels"] == BINARY
    assert ds["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert ds["overwrite_image_reader_writer"] == "NaturalImage2DIO"
    assert json.loads((folder / "case_groups.json").read_text()) == {"img0": "seq0", "img1": "seq1", "img2": "seq0"}
    back = read_all(folder)
    assert list(back) == ["img0", "img1", "img2"]
    for c in cases:
        assert_same(c, back[c.id], spacing=False)
        assert back[c.id].spacing is None
    # nnU-Net's own reader: one RGB png = 3 channels (c, 1, H, W)
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO

    arr, props = NaturalImage2DIO().read_images([str(folder / "imagesTr" / "img1_0000.png")])
    np.testing.assert_array_equal(arr[:, 0].transpose(1, 2, 0), cases[1].image)
    seg, _ = NaturalImage2DIO().read_seg(str(folder / "labelsTr" / "img1.png"))
    np.testing.assert_array_equal(seg[0, 0], cases[1].mask)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_round_trip_2d_grayscale_png_with_spacing(tmp_path, dtype):
    cases = [Case(f"s{i}", RNG.integers(0, np.iinfo(dtype).max, (33, 21)).astype(dtype),
                  RNG.integers(0, 3, (33, 21)).astype(np.uint8), group="a", spacing=(0.5, 0.75))
             for i in range(2)]
    folder = write_nnunet_raw(cases, tmp_path, 8, "Gray", {"background": 0, "x": 1, "y": 2}, {"0": "MR"})
    assert json.loads((folder / "dataset.json").read_text())["file_ending"] == ".png"
    back = read_all(folder)
    for c in cases:
        assert_same(c, back[c.id])           # png has no spacing: it comes back from case_spacing.json


def test_round_trip_2d_float_nifti_multichannel(tmp_path):
    cases = [Case(f"f{i}", RNG.normal(size=(17, 19, 2)).astype(np.float32), RNG.integers(0, 2, (17, 19)),
                  spacing=(1.5, 0.8)) for i in range(2)]
    folder = write_nnunet_raw(cases, tmp_path, 9, "Float2D", BINARY, {"0": "T1", "1": "T2"})
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        "f0_0000.nii.gz", "f0_0001.nii.gz", "f1_0000.nii.gz", "f1_0001.nii.gz"]
    back = read_all(folder)
    for c in cases:
        assert_same(c, back[c.id])
        assert not back[c.id].is_volume
    assert NnUNetRawReader(folder).spatial_dims == 2


def test_round_trip_3d_volume_and_nnunet_sitk_view(tmp_path):
    cases = volume_cases()
    folder = write_nnunet_raw(cases, tmp_path, 10, "Vol", {"background": 0, "liver": 1, "kidney": 2},
                              {"0": "MR"}, progress=True)
    back = read_all(folder)
    for c in cases:
        assert_same(c, back[c.id])
        assert back[c.id].is_volume and back[c.id].meta["spatial_dims"] == 3
    assert NnUNetRawReader(folder).spatial_dims == 3
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    arr, props = SimpleITKIO().read_images([str(folder / "imagesTr" / "pat0_0000.nii.gz")])
    np.testing.assert_array_equal(arr[0], cases[0].image)          # (Z, Y, X) as nnU-Net sees it
    np.testing.assert_allclose(props["spacing"], (7.7, 1.25, 0.9), rtol=1e-6)
    seg, _ = SimpleITKIO().read_seg(str(folder / "labelsTr" / "pat0.nii.gz"))
    np.testing.assert_array_equal(seg[0], cases[0].mask)


def test_detect_test_split_and_overwrite(tmp_path):
    folder = write_nnunet_raw(rgb_cases(2), tmp_path, 11, "Split", BINARY, {"0": "R", "1": "G", "2": "B"})
    assert detect_format(folder) == "nnunet_raw"
    assert isinstance(open_dataset(folder), NnUNetRawReader)
    test = [Case("t0", RNG.integers(0, 256, (30, 40, 3)).astype(np.uint8), group="seq9")]
    write_nnunet_raw(test, tmp_path, 11, "Split", BINARY, {"0": "R", "1": "G", "2": "B"}, split="imagesTs")
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 2
    ts = read_all(folder, split="imagesTs")
    assert list(ts) == ["t0"] and ts["t0"].mask is None and ts["t0"].group == "seq9"
    with pytest.raises(FileExistsError, match="not empty"):
        write_nnunet_raw(rgb_cases(1), tmp_path, 11, "Split", BINARY, {"0": "R", "1": "G", "2": "B"})
    write_nnunet_raw(rgb_cases(1), tmp_path, 11, "Split", BINARY, {"0": "R", "1": "G", "2": "B"}, overwrite=True)
    assert list(read_all(folder)) == ["img0"]
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 1
    with pytest.raises(ValueError, match="already used"):
        NnUNetRawWriter(tmp_path, 11, "Other", BINARY, {"0": "R"})


def test_writer_rejects_bad_cases_before_writing(tmp_path):
    w = NnUNetRawWriter(tmp_path, 12, "Bad", BINARY, {"0": "R", "1": "G", "2": "B"})
    good = rgb_cases(1)[0]
    bad_values = Case("b", good.image, np.full((30, 40), 2, np.uint8))
    with pytest.raises(ValueError, match=r"'b'.*label values \[2\]"):
        w.add(bad_values)
    with pytest.raises(ValueError, match="need a mask"):
        w.add(Case("nomask", good.image))
    with pytest.raises(ValueError, match="1 channel"):
        w.add(Case("gray", good.image[..., 0], good.mask))
    with pytest.raises(ValueError, match="id must be"):
        w.add(Case("a/b", good.image, good.mask))
    w.add(good)
    with pytest.raises(ValueError, match="duplicate"):
        w.add(good)
    w.close()
    assert list(read_all(w.folder)) == [good.id]                   # nothing of the bad cases was written
    for labels, msg in [({"bg": 0, "a": 1}, "background"), ({"background": 0, "a": 2}, "consecutive")]:
        with pytest.raises(ValueError, match=msg):
            NnUNetRawWriter(tmp_path, 13, "L", labels, {"0": "CT"})
    with pytest.raises(ValueError, match="1..999"):
        NnUNetRawWriter(tmp_path, 1000, "L", BINARY, {"0": "CT"})
    with pytest.raises(ValueError, match="without loss"):
        write_nnunet_raw(volume_cases(1), tmp_path, 14, "V", {"background": 0, "a": 1, "b": 2}, {"0": "MR"},
                         file_ending=".png")


@pytest.fixture
def vol_dataset(tmp_path) -> Path:
    return write_nnunet_raw(volume_cases(3), tmp_path, 20, "Check", {"background": 0, "liver": 1, "kidney": 2},
                            {"0": "MR"})


def _save_like(src: Path, dst: Path, data: np.ndarray, zooms=None):
    import nibabel as nib

    img = nib.load(str(src))
    out = nib.Nifti1Image(data.T, img.affine, img.header)
    if zooms is not None:
        out.header.set_zooms(zooms)
    nib.save(out, str(dst))


def test_reader_reports_missing_label_and_numtraining(vol_dataset):
    (vol_dataset / "labelsTr" / "pat1.nii.gz").unlink()
    items, problems = NnUNetRawReader(vol_dataset).scan()
    assert [it.id for it in items] == ["pat0", "pat2"]
    assert len(problems) == 1 and problems[0].kind == "layout"
    assert problems[0].path == vol_dataset / "labelsTr" / "pat1.nii.gz" and "missing label" in str(problems[0])
    (vol_dataset / "imagesTr" / "extra.txt").write_text("x")
    (vol_dataset / "labelsTr" / "ghost.nii.gz").write_bytes(b"")
    ds = json.loads((vol_dataset / "dataset.json").read_text())
    ds["numTraining"] = 5
    (vol_dataset / "dataset.json").write_text(json.dumps(ds))
    _, problems = NnUNetRawReader(vol_dataset).scan()
    text = "\n".join(map(str, problems))
    assert "extra.txt" in text and "ghost.nii.gz: label file without an image" in text
    assert "numTraining is 5 but imagesTr holds 3 cases" in text


def test_reader_load_errors_name_the_file(vol_dataset):
    reader = NnUNetRawReader(vol_dataset)
    items = {it.id: it for it in reader.scan()[0]}
    lab0 = vol_dataset / "labelsTr" / "pat0.nii.gz"
    bad = reader.load(items["pat0"]).mask.copy()
    bad[0, 0, 0] = 7
    _save_like(lab0, lab0, bad)
    with pytest.raises(DataError, match=r"label values \[7\]") as e:
        reader.load(items["pat0"])
    assert e.value.path == lab0 and e.value.kind == "label_values"

    lab1 = vol_dataset / "labelsTr" / "pat1.nii.gz"
    _save_like(lab1, lab1, np.zeros((6, 24, 19), np.uint8))
    with pytest.raises(DataError, match=r"label shape \(6, 24, 19\) != image shape \(6, 24, 20\)") as e:
        reader.load(items["pat1"])
    assert e.value.path == lab1 and e.value.kind == "size_mismatch"

    lab2 = vol_dataset / "labelsTr" / "pat2.nii.gz"
    _save_like(lab2, lab2, reader.load(items["pat2"]).mask, zooms=(0.9, 1.25, 5.0))
    with pytest.raises(DataError, match="spacing") as e:
        reader.load(items["pat2"])
    assert e.value.path == lab2 and e.value.kind == "spacing_mismatch"

    img = vol_dataset / "imagesTr" / "pat2_0000.nii.gz"
    img.write_bytes(img.read_bytes()[:200])
    with pytest.raises(DataError, match="corrupt NIfTI") as e:
        reader.load(items["pat2"])
    assert e.value.path == img


def test_reader_missing_channel_and_bad_dataset_json(tmp_path):
    cases = [Case(f"c{i}", RNG.normal(size=(8, 9, 2)).astype(np.float32), np.zeros((8, 9), np.uint8))
             for i in range(2)]
    folder = write_nnunet_raw(cases, tmp_path, 30, "Two", BINARY, {"0": "T1", "1": "T2"})
    (folder / "imagesTr" / "c1_0001.nii.gz").unlink()
    items, problems = NnUNetRawReader(folder).scan()
    assert [it.id for it in items] == ["c0"]
    assert problems[0].path == folder / "imagesTr" / "c1_0001.nii.gz" and "missing channel" in problems[0].problem
    ds = json.loads((folder / "dataset.json").read_text())
    del ds["labels"]
    (folder / "dataset.json").write_text(json.dumps(ds))
    with pytest.raises(DataError, match=r"dataset.json: missing required keys \['labels'\]"):
        NnUNetRawReader(folder)
    (folder / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="not readable JSON"):
        NnUNetRawReader(folder)


# ------------------------------------------------------------------------------------------------- real data
def _cvc_cases(shared_dir: Path, n: int) -> list[Case]:
    reader = open_dataset(shared_dir / "data" / "CVC-ClinicDB", "cvc_clinicdb")
    items, problems = reader.scan()
    assert problems == [] and len(items) == 612
    return [reader.load(it) for it in items[:n]]


def _chaos_cases(shared_dir: Path, n: int) -> list[Case]:
    reader = open_dataset(shared_dir / "data" / "CHAOS-MR-T2", "chaos_nifti", label_map="original")
    items, _ = reader.scan()
    return [reader.load(it) for it in items[:n]]


def test_real_cvc_clinicdb_round_trip(shared_dir, tmp_path):
    cases = _cvc_cases(shared_dir, 40)
    folder = write_nnunet_raw(cases, tmp_path, 101, "CVCClinicDB", BINARY, {"0": "R", "1": "G", "2": "B"})
    back = read_all(folder)
    assert list(back) == [c.id for c in cases]
    for c in cases:
        assert c.image.shape == (288, 384, 3) and set(np.unique(c.mask)) == {0, 1}
        assert_same(c, back[c.id], spacing=False)


def test_real_chaos_round_trip(shared_dir, tmp_path):
    cases = _chaos_cases(shared_dir, 2)
    labels = {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}
    folder = write_nnunet_raw(cases, tmp_path, 102, "CHAOS", labels, {"0": "MR"})
    back = read_all(folder)
    assert sorted(back) == ["1", "2"]
    for c in cases:
        assert c.image.shape[1:] == (256, 256)
        assert_same(c, back[c.id])
        assert back[c.id].group == c.group
    assert [back[k].image.shape[0] for k in ("1", "2")] == [37, 31]      # the README's slice counts


@pytest.mark.slow
def test_real_datasets_full_round_trip(shared_dir, tmp_path):
    """Every real dataset in ../shared, whole: 612 CVC-ClinicDB pairs, 10 CHAOS volumes (and their 344 slices)."""
    cvc = _cvc_cases(shared_dir, 612)
    back = read_all(write_nnunet_raw(cvc, tmp_path, 111, "CVCAll", BINARY, {"0": "R", "1": "G", "2": "B"}))
    assert len(back) == 612
    for c in cvc:
        assert_same(c, back[c.id], spacing=False)
    labels = {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}
    chaos = _chaos_cases(shared_dir, 10)
    back = read_all(write_nnunet_raw(chaos, tmp_path, 112, "CHAOSAll", labels, {"0": "MR"}))
    for c in chaos:
        assert_same(c, back[c.id])
    slices = [s for c in chaos for s in c.slices()]
    back = read_all(write_nnunet_raw(slices, tmp_path, 113, "CHAOSSlices", labels, {"0": "MR"}))
    assert len(back) == len(slices) == 344
    for s in slices:
        assert_same(s, back[s.id])


@pytest.mark.slow
def test_nnunet_own_integrity_check_accepts_our_datasets(shared_dir, tmp_path, monkeypatch):
    """nnU-Net v2's verify_dataset_integrity raises (AssertionError/RuntimeError) on any problem it finds."""
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    chaos_labels = {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}
    folders = [
        write_nnunet_raw(_cvc_cases(shared_dir, 40), tmp_path, 101, "CVC", BINARY, {"0": "R", "1": "G", "2": "B"}),
        write_nnunet_raw(_chaos_cases(shared_dir, 2), tmp_path, 102, "CHAOS", chaos_labels, {"0": "MR"}),
        write_nnunet_raw([s for c in _chaos_cases(shared_dir, 1) for s in c.slices()], tmp_path, 103,
                         "CHAOS2D", chaos_labels, {"0": "MR"}),
    ]
    for folder in folders:
        verify_dataset_integrity(str(folder), num_processes=1)
    # ... and it does fail on a broken one, so passing means something.
    broken = folders[0]
    from PIL import Image

    Image.fromarray(np.full((288, 384), 3, np.uint8)).save(broken / "labelsTr" / "3.png")
    with pytest.raises(RuntimeError):
        verify_dataset_integrity(str(broken), num_processes=1)
