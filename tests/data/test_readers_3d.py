"""3D readers: real CHAOS NIfTI facts (its README table), and synthetic BTCV, CHAOS DICOM and Lumbar Spine
layouts written here, with the problems each must report as DataErrors naming the file."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pytest

from radgan_jax.data.base import DataError
from radgan_jax.data.readers import detect_format, get_reader
from radgan_jax.data.volume import load_nifti_volume, slices_with_label

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")
Image = pytest.importorskip("PIL.Image")


def _nifti(path: Path, data: np.ndarray, zooms=(0.8, 0.9, 2.5), signs=(-1, -1, 1)) -> Path:
    """Write stored (i, j, k) data with a diagonal affine; signs (-1, -1, 1) = LPS, (1, 1, 1) = RAS."""
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([s * z for s, z in zip(signs, zooms)] + [1.0])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _load_all(reader):
    items, problems = reader.scan()
    return items, problems, [reader.load(it) for it in items]


# ------------------------------------------------------------------------------------------ real CHAOS NIfTI
CHAOS_SLICES = {"1": 37, "2": 31, "3": 36, "5": 36, "8": 34, "10": 36, "13": 36, "15": 31, "19": 36, "20": 31}
CHAOS_VOXELS = [20540076, 1407526, 167382, 171340, 258060]


@pytest.fixture(scope="module")
def chaos_root(shared_dir) -> Path:
    root = shared_dir / "data" / "CHAOS-MR-T2"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return root


@pytest.fixture(scope="module")
def chaos_original(chaos_root):
    return _load_all(get_reader("chaos_nifti")(chaos_root, label_map="original"))


def test_chaos_nifti_readme_facts(chaos_original):
    items, problems, cases = chaos_original
    assert problems == []
    assert {c.id: c.image.shape[0] for c in cases} == CHAOS_SLICES
    assert sum(c.image.shape[0] for c in cases) == 344
    voxels = np.zeros(5, np.int64)
    slices_with = np.zeros(5, np.int64)
    for item, c in zip(items, cases):
        assert c.image.shape[1:] == (256, 256) and c.mask.shape == c.image.shape
        assert c.image.dtype == np.float32 and c.mask.dtype == np.uint8
        assert set(np.unique(c.mask).tolist()) == {0, 1, 2, 3, 4}
        assert c.group == c.meta["patient_id"] == c.id and c.meta["spatial_dims"] == 3 and c.is_volume
        assert c.spacing == pytest.approx((7.7, 1.25, 1.25), rel=1e-5)
        assert c.meta["orientation"] == "LAS" and c.meta["source_files"] == [str(p) for p in item.files]
        voxels += np.bincount(c.mask.ravel(), minlength=5)
        slices_with += [len(slices_with_label(c.mask, v)) for v in range(5)]
    assert voxels.tolist() == CHAOS_VOXELS
    assert slices_with[1:].tolist() == [229, 148, 154, 138]


def test_chaos_nifti_orientation_matches_affine(chaos_root, chaos_original):
    # Stored LAS (i = R->L, j = P->A, k = I->S); LPS (Z, Y, X) = transpose with j flipped.
    stored = np.asanyarray(nib.load(str(chaos_root / "label_1.nii.gz")).dataobj)
    case = next(c for c in chaos_original[2] if c.id == "1")
    np.testing.assert_array_equal(case.mask, np.transpose(stored[:, ::-1, :], (2, 1, 0)).astype(np.uint8))


def test_chaos_nifti_paper_map_and_slices(chaos_root, chaos_original):
    reader = get_reader("chaos_nifti")(chaos_root)  # label_map='paper' is the default
    assert dict(reader.label_names) == {0: "background", 1: "liver", 2: "kidney"}
    items, _ = reader.scan()
    kidney = liver = 0
    records = []
    for item, original in zip(items, chaos_original[2]):
        case = reader.load(item)
        assert set(np.unique(case.mask).tolist()) == {0, 1, 2}
        np.testing.assert_array_equal(case.image, original.image)
        kidney += int((case.mask == 2).sum())
        liver += int((case.mask == 1).sum())
        records += list(case.slices())
    assert kidney == 167382 + 171340 and liver == 1407526
    assert len(records) == 344
    assert all(r.image.shape == (256, 256) and r.mask.shape == (256, 256) and not r.is_volume for r in records)
    assert {r.group for r in records} == set(CHAOS_SLICES)
    assert all(r.group == r.meta["patient_id"] == r.meta["volume_id"] for r in records)
    assert records[0].id == "1_z0000" and records[0].spacing == pytest.approx((1.25, 1.25))
    # Reader.records is the same slicing.
    assert [r.id for r in reader.records(items[0])] == [r.id for r in records[:37]]


def test_chaos_nifti_detected(chaos_root):
    assert get_reader("chaos_nifti").detect(chaos_root)
    assert detect_format(chaos_root) == "chaos_nifti"


def test_chaos_nifti_bad_labels(tmp_path):
    img = np.zeros((4, 4, 3), np.float64)
    _nifti(tmp_path / "image_7.nii.gz", img)
    lbl = np.zeros((4, 4, 3), np.float64)
    lbl[0, 0, 0] = 1.5
    _nifti(tmp_path / "label_7.nii.gz", lbl)
    _nifti(tmp_path / "image_8.nii.gz", img)
    lbl[0, 0, 0] = 5
    _nifti(tmp_path / "label_8.nii.gz", lbl)
    _nifti(tmp_path / "image_9.nii.gz", img)  # no label_9
    reader = get_reader("chaos_nifti")(tmp_path, label_map="original")
    items, problems = reader.scan()
    assert [it.id for it in items] == ["7", "8"]
    assert len(problems) == 1 and problems[0].kind == "layout" and "image_9.nii.gz" in str(problems[0])
    for item, text in zip(items, ("non-integer", "[5]")):
        with pytest.raises(DataError) as e:
            reader.load(item)
        assert e.value.kind == "label_values" and str(item.files[1]) in str(e.value) and text in str(e.value)
    with pytest.raises(ValueError, match="label_map"):
        get_reader("chaos_nifti")(tmp_path, label_map="organs")


# ------------------------------------------------------------------------------------------------- BTCV
def _btcv(root: Path, n: int = 2, signs=(-1, -1, 1)) -> Path:
    rng = np.random.default_rng(0)
    training = root / "RawData" / "Training"
    for i in range(1, n + 1):
        img = rng.integers(-1000, 1000, (6, 5, 4)).astype(np.int16)
        lbl = np.zeros((6, 5, 4), np.uint8)
        lbl[0, 0, :] = [1, 2, 3, 6]    # spleen, right kidney, left kidney, liver
        lbl[1, 0, :] = [13, 11, 6, 0]
        _nifti(training / "img" / f"img{i:04d}.nii.gz", img, signs=signs)
        _nifti(training / "label" / f"label{i:04d}.nii.gz", lbl, signs=signs)
    return training


def test_btcv_paper_and_original_maps(tmp_path):
    training = _btcv(tmp_path)
    for root in (tmp_path, tmp_path / "RawData", training):
        assert get_reader("btcv").detect(root)
        assert detect_format(root) == "btcv"
    reader = get_reader("btcv")(tmp_path)
    items, problems, cases = _load_all(reader)
    assert problems == [] and [c.id for c in cases] == ["0001", "0002"]
    case = cases[0]
    assert case.image.dtype == np.int16 and case.image.shape == (4, 5, 6) and case.mask.dtype == np.uint8
    assert case.spacing == pytest.approx((2.5, 0.9, 0.8))
    assert case.group == case.meta["patient_id"] == "0001" and case.meta["spatial_dims"] == 3
    # Stored LPS: (Z, Y, X) is a plain transpose. Paper map: liver 6 -> 1, kidneys 2, 3 -> 2, the rest -> 0.
    assert case.mask[:, 0, 0].tolist() == [0, 2, 2, 1] and case.mask[:, 0, 1].tolist() == [0, 0, 1, 0]
    assert np.bincount(case.mask.ravel(), minlength=3).tolist() == [120 - 4, 2, 2]
    original = get_reader("btcv")(training, label_map="original").load(items[0])
    assert original.mask[:, 0, 0].tolist() == [1, 2, 3, 6] and original.mask[:, 0, 1].tolist() == [13, 11, 6, 0]
    np.testing.assert_array_equal(original.image, case.image)
    assert [r.group for r in reader.records(items[1])] == ["0002"] * 4


def test_btcv_orientation_from_affine(tmp_path):
    _btcv(tmp_path / "lps", n=1)
    _btcv(tmp_path / "ras", n=1, signs=(1, 1, 1))
    lps, ras = (_load_all(get_reader("btcv")(tmp_path / name, label_map="original"))[2][0] for name in ("lps", "ras"))
    # The RAS copy stores the same voxels with X and Y reversed in space, so the reader flips them back.
    np.testing.assert_array_equal(ras.mask, lps.mask[:, ::-1, ::-1])
    assert ras.meta["orientation"] == "RAS" and lps.meta["orientation"] == "LPS"
    assert ras.spacing == lps.spacing


def test_btcv_problems(tmp_path):
    training = _btcv(tmp_path, n=4)
    lbl_dir, img_dir = training / "label", training / "img"
    # 0001: label with an extra value; 0002: shape mismatch; 0003: spacing mismatch; 0004: fine.
    bad = np.zeros((6, 5, 4), np.uint8)
    bad[2, 2, 2] = 14
    _nifti(lbl_dir / "label0001.nii.gz", bad)
    _nifti(lbl_dir / "label0002.nii.gz", np.zeros((6, 5, 3), np.uint8))
    _nifti(lbl_dir / "label0003.nii.gz", np.zeros((6, 5, 4), np.uint8), zooms=(0.8, 0.9, 3.0))
    _nifti(img_dir / "img0005.nii.gz", np.zeros((6, 5, 4), np.int16))      # no label
    (img_dir / "notes.txt").write_text("not a volume")
    reader = get_reader("btcv")(tmp_path)
    items, problems = reader.scan()
    assert [it.id for it in items] == ["0001", "0002", "0003", "0004"]
    assert sorted((p.kind, p.path.name) for p in problems) == [("layout", "img0005.nii.gz"),
                                                                ("not_image", "notes.txt")]
    expected = {"0001": "label_values", "0002": "size_mismatch", "0003": "spacing_mismatch"}
    for item in items[:3]:
        with pytest.raises(DataError) as e:
            reader.load(item)
        assert e.value.kind == expected[item.id] and str(item.files[1]) in str(e.value)
    assert "[14]" in str(pytest.raises(DataError, reader.load, items[0]).value)
    reader.load(items[3])


def test_btcv_corrupt_nifti(tmp_path):
    training = _btcv(tmp_path, n=3)
    # 0001: header overwritten (uncompressed file), 0002: gzip truncated mid-data, 0003: label not gzip at all.
    raw = training / "img" / "img0001.nii"
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), np.diag([-0.8, -0.9, 2.5, 1])), str(raw))
    (training / "img" / "img0001.nii.gz").unlink()
    data = bytearray(raw.read_bytes())
    data[0:4] = b"\xff\xff\xff\x7f"        # sizeof_hdr must be 348
    data[40:56] = b"\xff" * 16             # dim[]
    raw.write_bytes(bytes(data))
    gz = training / "img" / "img0002.nii.gz"
    full = gzip.decompress(gz.read_bytes())
    gz.write_bytes(gzip.compress(full)[: len(gzip.compress(full)) // 2])
    (training / "label" / "label0003.nii.gz").write_bytes(b"this is not a NIfTI file at all" * 20)
    reader = get_reader("btcv")(tmp_path)
    items, problems = reader.scan()
    assert problems == [] and [it.files[0].name for it in items] == ["img0001.nii", "img0002.nii.gz",
                                                                      "img0003.nii.gz"]
    for item, bad in zip(items, (raw, gz, training / "label" / "label0003.nii.gz")):
        with pytest.raises(DataError) as e:
            reader.load(item)
        assert e.value.kind == "corrupt" and e.value.path == bad and str(bad) in str(e.value)


def test_volume_4d_rejected(tmp_path):
    path = _nifti(tmp_path / "x.nii.gz", np.zeros((3, 3, 2, 2), np.float32))
    with pytest.raises(DataError, match="4D") as e:
        load_nifti_volume(path)
    assert e.value.path == path
    squeezed = load_nifti_volume(_nifti(tmp_path / "y.nii.gz", np.zeros((3, 4, 2, 1), np.float32)))
    assert squeezed.array.shape == (2, 4, 3)


# ------------------------------------------------------------------------------------------- CHAOS DICOM
GREY = {1: 63, 2: 126, 3: 189, 4: 252}


def _dicom(path: Path, pixels: np.ndarray, instance: int, z_mm: float, with_pixels: bool = True) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.8], 5.0
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-100.0, -90.0, z_mm]
    ds.InstanceNumber = instance
    if with_pixels:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)


def _chaos_patient(mr: Path, patient: str, n: int = 4, shape=(6, 7)) -> Path:
    """Slice k (1-based InstanceNumber, z = 10 + 5k mm) has pixels 10k and a mask of organ ((k - 1) % 4) + 1;
    file names are shuffled against the anatomical order."""
    seq = mr / patient / "T2SPIR"
    names = list(range(1, n + 1))
    random.Random(int(patient)).shuffle(names)
    for k, name in zip(range(1, n + 1), names):
        stem = f"IMG-0002-{name:05d}"
        _dicom(seq / "DICOM_anon" / f"{stem}.dcm", np.full(shape, 10 * k), k, 10.0 + 5 * k)
        grey = np.zeros(shape, np.uint8)
        grey[1:3, 2:5] = GREY[(k - 1) % 4 + 1]
        (seq / "Ground").mkdir(parents=True, exist_ok=True)
        Image.fromarray(grey).save(seq / "Ground" / f"{stem}.png")
    return seq


def test_chaos_dicom_order_spacing_maps(tmp_path):
    mr = tmp_path / "Train_Sets" / "MR"
    _chaos_patient(mr, "2")
    _chaos_patient(mr, "10", n=5)
    for root in (tmp_path, tmp_path / "Train_Sets", mr):
        assert get_reader("chaos_dicom").detect(root)
        assert detect_format(root) == "chaos_dicom"
    reader = get_reader("chaos_dicom")(tmp_path, label_map="original")
    items, problems, cases = _load_all(reader)
    assert problems == [] and [c.id for c in cases] == ["2", "10"]
    case = cases[0]
    assert case.image.shape == (4, 6, 7) and case.mask.dtype == np.uint8
    assert case.image[:, 0, 0].tolist() == [10, 20, 30, 40]     # InstanceNumber / position order, not file names
    assert case.mask[:, 1, 2].tolist() == [1, 2, 3, 4] and case.mask[:, 0, 0].tolist() == [0, 0, 0, 0]
    assert case.spacing == pytest.approx((5.0, 0.7, 0.8))
    assert case.group == case.meta["patient_id"] == "2" and case.meta["spatial_dims"] == 3
    assert cases[1].mask[:, 1, 2].tolist() == [1, 2, 3, 4, 1]
    paper = get_reader("chaos_dicom")(mr).load(items[0])
    assert paper.mask[:, 1, 2].tolist() == [1, 2, 2, 0]           # kidneys merged, spleen dropped
    assert [r.group for r in reader.records(items[1])] == ["10"] * 5


def test_chaos_dicom_problems(tmp_path):
    mr = tmp_path / "MR"
    seqs = {p: _chaos_patient(mr, p) for p in ("1", "2", "3", "4", "5", "6", "7")}
    first = lambda p, folder, ext: sorted((seqs[p] / folder).glob(f"*.{ext}"))[0]  # noqa: E731
    next(iter(sorted((seqs["1"] / "Ground").glob("*.png")))).unlink()                   # missing mask slice
    Image.fromarray(np.zeros((6, 7), np.uint8)).save(seqs["2"] / "Ground" / "IMG-0002-00099.png")  # extra
    no_pixels = first("3", "DICOM_anon", "dcm")
    _dicom(no_pixels, np.zeros((6, 7)), 1, 15.0, with_pixels=False)
    small = first("4", "Ground", "png")
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(small)                                 # mask size != image
    odd = first("5", "Ground", "png")
    grey = np.zeros((6, 7), np.uint8)
    grey[0, 0] = 100
    Image.fromarray(grey).save(odd)                                                         # undocumented grey
    gap = first("6", "DICOM_anon", "dcm")
    ds = pydicom.dcmread(str(gap))
    ds.ImagePositionPatient = [-100.0, -90.0, 80.0]                                         # uneven positions
    ds.save_as(str(gap))
    (seqs["7"].parent / "T2SPIR").rename(seqs["7"].parent / "T1DUAL")                       # no T2SPIR
    reader = get_reader("chaos_dicom")(tmp_path)
    items, problems = reader.scan()
    assert [it.id for it in items] == ["3", "4", "5", "6"]
    assert [p.kind for p in problems] == ["layout"] * 3
    for problem, patient, text in zip(problems, "127", ("no mask PNG", "without a DICOM slice", "no T2SPIR")):
        assert str(mr / patient) in str(problem) and text in str(problem)
    expected = {"3": ("corrupt", no_pixels, "no pixel data"), "4": ("size_mismatch", small, "(5, 7)"),
                "5": ("label_values", odd, "[100]"), "6": ("spacing_mismatch", gap, "uneven")}
    for item in items:
        kind, path, text = expected[item.id]
        with pytest.raises(DataError) as e:
            reader.load(item)
        assert (e.value.kind, e.value.path) == (kind, path) and str(path) in str(e.value) and text in str(e.value)


# ------------------------------------------------------------------------------------------- Lumbar spine
LUMBAR_GREY = np.array([[250, 50, 100], [150, 200, 250]], np.uint8)


def _lumbar(root: Path, patients=(1, 2), discs=(3, 4, 5), modalities=("T1", "T2")) -> Path:
    labels = root / "05_Final_Ground_Truth_Data" / "Label_Images"
    labels.mkdir(parents=True)
    for p in patients:
        for d in discs:
            Image.fromarray(np.kron(LUMBAR_GREY, np.ones((4, 4), np.uint8))).save(labels / f"L1_{p:04d}_D{d}.png")
            for m in modalities:
                out = root / "04_Intermediary_Ground_Truth_Data" / f"{m}_Output"
                out.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((8, 12), 10 * p + d, np.uint8)).save(out / f"{m}_{p:04d}_D{d}.png")
    return root


def test_lumbar_spine_layout_and_encoding(tmp_path):
    root = _lumbar(tmp_path / "Ground_Truth_Label")
    for r in (root, tmp_path):
        assert get_reader("lumbar_spine").detect(r)
        assert detect_format(r) == "lumbar_spine"
    reader = get_reader("lumbar_spine")(tmp_path)
    items, problems, cases = _load_all(reader)
    assert problems == []
    assert [c.id for c in cases] == ["0001_D3", "0001_D4", "0001_D5", "0002_D3", "0002_D4", "0002_D5"]
    assert [c.group for c in cases] == ["0001"] * 3 + ["0002"] * 3
    case = cases[4]
    assert case.image.shape == case.mask.shape == (8, 12) and int(case.image[0, 0]) == 24
    np.testing.assert_array_equal(case.mask[::4, ::4], [[0, 1, 2], [3, 4, 0]])
    assert case.meta["disc"] == "D4" and case.meta["patient_id"] == "0002" and not case.is_volume
    assert case.spacing == (0.6875, 0.6875) and case.meta["modality"] == "T2"
    assert items[0].files[0].parent.name == "T2_Output"
    t1 = get_reader("lumbar_spine")(root, modality="T1")
    assert t1.scan()[0][0].files[0].name == "T1_0001_D3.png"
    assert [r.id for r in reader.records(items[0])] == ["0001_D3"]


def test_lumbar_spine_problems(tmp_path):
    root = _lumbar(tmp_path, patients=(1, 2, 3), discs=(3,), modalities=("T2",))
    labels = root / "05_Final_Ground_Truth_Data" / "Label_Images"
    bad = np.kron(LUMBAR_GREY, np.ones((4, 4), np.uint8))
    bad[0, 0] = 120
    Image.fromarray(bad).save(labels / "L1_0001_D3.png")
    Image.fromarray(np.full((8, 10), 250, np.uint8)).save(labels / "L1_0002_D3.png")
    Image.fromarray(np.full((8, 12), 250, np.uint8)).save(labels / "L1_0004_D3.png")     # no T2 slice
    (labels / "readme.txt").write_text("labels")
    reader = get_reader("lumbar_spine")(root)
    items, problems = reader.scan()
    assert [it.id for it in items] == ["0001_D3", "0002_D3", "0003_D3"]
    assert sorted((p.kind, p.path.name) for p in problems) == [("layout", "L1_0004_D3.png"),
                                                                ("not_image", "readme.txt")]
    for item, kind in zip(items[:2], ("label_values", "size_mismatch")):
        with pytest.raises(DataError) as e:
            reader.load(item)
        assert e.value.kind == kind and str(item.files[1]) in str(e.value)
    np.testing.assert_array_equal(reader.load(items[2]).mask[::4, ::4], [[0, 1, 2], [3, 4, 0]])
    with pytest.raises(ValueError, match="modality"):
        get_reader("lumbar_spine")(root, modality="PD")
