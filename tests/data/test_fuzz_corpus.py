"""Acceptance: a fuzz corpus of broken datasets. Every case must end in a named DataError (the report names the
broken file with the expected kind) or in quarantine (the file moves aside and the dataset verifies clean
again); no reader may raise anything but DataError.

For each format a tiny valid dataset is written once (16 px images, 8x8x4 volumes, 3-slice DICOM series);
each case copies it and breaks one thing: truncated PNG/TIF/JPEG, 0-byte file, random bytes with an image
suffix, 16-bit image where the reader expects 8-bit, mask with an extra label value, mask of another size,
empty class folder, stray non-image file, a folder where a file is expected, corrupted NIfTI header,
truncated NIfTI gzip, DICOM without pixel data, a file named .dcm that is not DICOM. `pytest -s` prints the
table of cases -> outcome.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from radgan_jax.data.base import DataError
from radgan_jax.data.readers import get_reader
from radgan_jax.data.verify import verify_dataset

RNG = np.random.default_rng(1234)
S = 16  # image size


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _noise(channels: int = 1, size: int = S) -> np.ndarray:
    shape = (size, size) if channels == 1 else (size, size, channels)
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def _disc(size: int = S, value: int = 255) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.where((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2, value, 0).astype(np.uint8)


def _nii(path: Path, arr: np.ndarray, spacing=(0.8, 0.8, 3.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.diag([*spacing, 1.0])), str(path))


def _volume() -> np.ndarray:
    return RNG.integers(-100, 200, (8, 8, 4)).astype(np.int16)

def _labels(values=(0, 1, 2)) -> np.ndarray:
    lab = np.zeros((8, 8, 4), np.uint8)
    for i, v in enumerate(values[1:]):
        lab[1 + 3 * i: 3 + 3 * i, 2:6, :] = v
    return lab


def _dicom(path: Path, z: int, pixels: np.ndarray) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing, ds.SliceThickness = [1.5, 1.5], 6.0
    ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, 6.0 * z]
    ds.InstanceNumber = z + 1
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)


# ------------------------------------------------------------------------------------------- valid datasets
# Each builder writes a clean dataset and returns {role: relative path} of the files the faults target:
# image (an image file; its format decides what "truncated" means), mask, dir (a folder an empty class goes
# next to), stray_dir (where a stray text file goes).

def _image_folder(root: Path) -> dict[str, str]:
    for c in ("benign", "malignant"):
        for i in range(3):
            _png(root / c / f"{c}{i}.png", _noise())
    Image.fromarray(_noise()).save(root / "benign" / "benign3.tif")
    return {"image": "benign/benign3.tif", "png": "benign/benign1.png", "class_dir": "unlabeled",
            "stray_dir": "malignant"}


def _radimagenet(root: Path) -> dict[str, str]:
    for rel in ("CT/lung/normal", "CT/abd/ascites"):
        for i in range(2):
            _png(root / rel / f"img{i}.png", _noise())
    return {"image": "CT/lung/normal/img1.png", "png": "CT/lung/normal/img1.png", "class_dir": "CT/abd/gallstone",
            "stray_dir": "CT/abd/ascites"}


def _hyperkvasir(root: Path) -> dict[str, str]:
    for rel in ("lower-gi-tract/pathological-findings/polyps", "upper-gi-tract/anatomical-landmarks/z-line"):
        for i in range(2):
            (root / rel).mkdir(parents=True, exist_ok=True)
            Image.fromarray(_noise(3)).save(root / rel / f"f{i}.jpg", quality=95)
    return {"image": "lower-gi-tract/pathological-findings/polyps/f1.jpg",
            "class_dir": "upper-gi-tract/anatomical-landmarks/pylorus",
            "stray_dir": "upper-gi-tract/anatomical-landmarks/z-line"}


def _cvc(root: Path) -> dict[str, str]:
    for i in (1, 2, 3):
        (root / "Original").mkdir(parents=True, exist_ok=True)
        (root / "Ground Truth").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_noise(3)).save(root / "Original" / f"{i}.tif")
        Image.fromarray(_disc()).save(root / "Ground Truth" / f"{i}.tif")
    return {"image": "Original/2.tif", "png": "Original/2.tif", "mask": "Ground Truth/2.tif", "stray_dir": "Original"}


def _kvasir(root: Path) -> dict[str, str]:
    for name in ("cju0a", "cju0b", "cju0c"):
        for sub, arr in (("images", _noise(3)), ("masks", np.repeat(_disc()[..., None], 3, 2))):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / sub / f"{name}.jpg", quality=95)
    return {"image": "images/cju0b.jpg", "mask": "masks/cju0b.jpg", "stray_dir": "images"}


LUMBAR_LABELS = "05_Final_Ground_Truth_Data/Label_Images"
LUMBAR_T2 = "04_Intermediary_Ground_Truth_Data/T2_Output"


def _lumbar(root: Path) -> dict[str, str]:
    for p in ("0001", "0002"):
        for d in (3, 4):
            _png(root / LUMBAR_T2 / f"T2_{p}_D{d}.png", _noise())
            lab = np.full((S, S), 250, np.uint8)
            lab[4:8, 4:12], lab[8:10, 4:12], lab[10:12, 6:10], lab[12:14, 6:10] = 50, 100, 150, 200
            _png(root / LUMBAR_LABELS / f"L1_{p}_D{d}.png", lab)
    return {"image": f"{LUMBAR_T2}/T2_0002_D3.png", "png": f"{LUMBAR_T2}/T2_0002_D3.png",
            "mask": f"{LUMBAR_LABELS}/L1_0002_D3.png", "stray_dir": LUMBAR_LABELS}


def _nnunet(root: Path, ending: str) -> dict[str, str]:
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT" if ending == ".nii.gz" else "grey"}, "labels": {"background": 0, "organ": 1},
        "numTraining": 3, "file_ending": ending}))
    for i in range(3):
        if ending == ".png":
            _png(root / "imagesTr" / f"case_{i:03d}_0000.png", _noise())
            _png(root / "labelsTr" / f"case_{i:03d}.png", _disc(value=1))
        else:
            _nii(root / "imagesTr" / f"case_{i:03d}_0000.nii.gz", _volume())
            _nii(root / "labelsTr" / f"case_{i:03d}.nii.gz", _labels((0, 1)))
    return {"image": f"imagesTr/case_001_0000{ending}", "png": f"imagesTr/case_001_0000{ending}",
            "mask": f"labelsTr/case_001{ending}", "stray_dir": "imagesTr"}


def _btcv(root: Path) -> dict[str, str]:
    t = root / "RawData" / "Training"
    for i in (1, 2, 3):
        _nii(t / "img" / f"img{i:04d}.nii.gz", _volume())
        _nii(t / "label" / f"label{i:04d}.nii.gz", _labels((0, 6, 2, 3)))
    return {"image": "RawData/Training/img/img0002.nii.gz", "mask": "RawData/Training/label/label0002.nii.gz",
            "stray_dir": "RawData/Training/img"}


def _chaos_nifti(root: Path) -> dict[str, str]:
    for i in (1, 2, 3):
        _nii(root / f"image_{i}.nii.gz", _volume().astype(np.float64), (1.25, 1.25, 7.7))
        _nii(root / f"label_{i}.nii.gz", _labels((0, 1, 2, 4)).astype(np.float64), (1.25, 1.25, 7.7))
    return {"image": "image_2.nii.gz", "mask": "label_2.nii.gz"}


CHAOS_T2 = "Train_Sets/MR/{p}/T2SPIR"


def _chaos_dicom(root: Path) -> dict[str, str]:
    for p in (1, 2):
        t2 = root / CHAOS_T2.format(p=p)
        for z in range(3):
            _dicom(t2 / "DICOM_anon" / f"IMG-0002-0000{z + 1}.dcm", z, RNG.integers(0, 1000, (S, S)))
            _png(t2 / "Ground" / f"IMG-0002-0000{z + 1}.png", _disc(value=63))
    t2 = CHAOS_T2.format(p=2)
    return {"image": f"{t2}/DICOM_anon/IMG-0002-00002.dcm", "mask": f"{t2}/Ground/IMG-0002-00002.png"}


BUILDERS: dict[str, Callable[[Path], dict[str, str]]] = {
    "image_folder": _image_folder, "radimagenet": _radimagenet, "hyperkvasir": _hyperkvasir, "cvc_clinicdb": _cvc,
    "kvasir_seg": _kvasir, "lumbar_spine": _lumbar, "nnunet_raw(png)": lambda r: _nnunet(r, ".png"),
    "nnunet_raw(nii)": lambda r: _nnunet(r, ".nii.gz"), "btcv": _btcv, "chaos_nifti": _chaos_nifti,
    "chaos_dicom": _chaos_dicom,
}


# ----------------------------------------------------------------------------------------------------- faults
@dataclasses.dataclass(frozen=True)
class Fault:
    role: str                       # which file of the builder's dict it breaks
    kinds: frozenset[str]           # acceptable problem kinds
    apply: Callable[[Path], Path]   # breaks the file at that path; returns the path the report must name


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def _sixteen_bit(p: Path) -> Path:
    Image.fromarray(RNG.integers(300, 65535, (S, S)).astype(np.uint16)).save(p)
    return p


def _mask_extra(p: Path) -> Path:
    if p.name.endswith(".nii.gz"):
        img = nib.load(str(p))
        data = np.asarray(img.dataobj).copy()
        data[0, 0, 0] = 99  # no format here declares label 99 (BTCV's original set is 0..13)
        nib.save(nib.Nifti1Image(data, img.affine), str(p))
    else:
        arr = np.asarray(Image.open(p)).copy()
        arr[0, :4] = 77 if arr.max() > 9 else 9  # 77: not a grey level of CHAOS/lumbar; 9: not an nnU-Net label
        Image.fromarray(arr).save(p)
    return p


def _mask_size(p: Path) -> Path:
    if p.name.endswith(".nii.gz"):
        img = nib.load(str(p))
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:6], img.affine), str(p))
    else:
        arr = np.asarray(Image.open(p))
        Image.fromarray(arr[: S // 2, : S // 2]).save(p)
    return p


def _empty_dir(p: Path) -> Path:
    p.mkdir(parents=True)
    return p


def _stray(p: Path) -> Path:
    (p / "notes.txt").write_text("annotator notes, not an image\n")
    return p / "notes.txt"


def _dir_as_file(p: Path) -> Path:
    p.unlink()
    (p / "inner").mkdir(parents=True)
    return p


def _nifti_header(p: Path) -> Path:
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[40:56] = b"\xff" * 16  # dim[0..7] = -1: no valid shape
    p.write_bytes(gzip.compress(bytes(raw)))
    return p


def _dicom_no_pixels(p: Path) -> Path:
    import pydicom

    ds = pydicom.dcmread(str(p))
    del ds.PixelData
    ds.save_as(str(p))
    return p


def _not_dicom(p: Path) -> Path:
    Image.fromarray(_noise()).save(p, format="PNG")  # a PNG renamed to .dcm
    return p


FAULTS = {
    "truncated": Fault("image", frozenset({"corrupt", "not_image"}),
                       lambda p: _write(p, p.read_bytes()[: p.stat().st_size * 2 // 3])),
    "zero_bytes": Fault("image", frozenset({"corrupt"}), lambda p: _write(p, b"")),
    "random_bytes": Fault("image", frozenset({"corrupt", "not_image"}),
                          lambda p: _write(p, np.random.default_rng(7).bytes(600))),
    "16bit_png": Fault("png", frozenset({"inconsistent", "not_image", "corrupt"}), _sixteen_bit),
    "mask_extra_label": Fault("mask", frozenset({"label_values"}), _mask_extra),
    "mask_other_size": Fault("mask", frozenset({"size_mismatch"}), _mask_size),
    "empty_class": Fault("class_dir", frozenset({"empty_class"}), _empty_dir),
    "non_image_file": Fault("stray_dir", frozenset({"not_image", "layout"}), _stray),
    "dir_for_file": Fault("image", frozenset({"layout"}), _dir_as_file),
    "nifti_header": Fault("image", frozenset({"corrupt"}), _nifti_header),
    "nifti_gzip_cut": Fault("image", frozenset({"corrupt"}),
                            lambda p: _write(p, p.read_bytes()[: p.stat().st_size // 2])),
    "dicom_no_pixels": Fault("image", frozenset({"corrupt"}), _dicom_no_pixels),
    "not_dicom": Fault("image", frozenset({"not_image", "corrupt"}), _not_dicom),
}
# Where a fault does not apply: thresholded masks have no "extra" value (CVC/Kvasir: grey > 127 is polyp), JPEG
# has no 16 bit, volumes have no 8-bit contract, NIfTI/DICOM faults need NIfTI/DICOM files, class folders
# exist only in classification layouts. CHAOS folders are read by file-name pattern, other files are ignored.
_2D = ("truncated", "zero_bytes", "random_bytes", "non_image_file", "dir_for_file")
_NII = ("truncated", "zero_bytes", "random_bytes", "mask_extra_label", "mask_other_size", "dir_for_file",
        "nifti_header", "nifti_gzip_cut")
APPLIES = {
    "image_folder": (*_2D, "16bit_png", "empty_class"),
    "radimagenet": (*_2D, "16bit_png", "empty_class"),
    "hyperkvasir": (*_2D, "empty_class"),
    "cvc_clinicdb": (*_2D, "16bit_png", "mask_other_size"),
    "kvasir_seg": (*_2D, "mask_other_size"),
    "lumbar_spine": (*_2D, "16bit_png", "mask_extra_label", "mask_other_size"),
    "nnunet_raw(png)": (*_2D, "16bit_png", "mask_extra_label", "mask_other_size"),
    "nnunet_raw(nii)": (*_NII, "non_image_file"),
    "btcv": (*_NII, "non_image_file"),
    "chaos_nifti": _NII,
    "chaos_dicom": ("truncated", "zero_bytes", "random_bytes", "mask_extra_label", "mask_other_size", "dir_for_file",
                    "dicom_no_pixels", "not_dicom"),
}
CASES = [(fmt, fault) for fmt, faults in APPLIES.items() for fault in faults]
SUMMARY: list[tuple[str, str, str, str]] = []


def _format_name(fmt: str) -> str:
    return fmt.split("(")[0]


@pytest.fixture(scope="module")
def clean_datasets(tmp_path_factory) -> dict[str, tuple[Path, dict[str, str]]]:
    base = tmp_path_factory.mktemp("clean")
    return {fmt: (base / fmt, build(base / fmt)) for fmt, build in BUILDERS.items()}


@pytest.fixture(scope="module", autouse=True)
def print_summary():
    yield
    if SUMMARY:
        width = max(len(f"{f} / {c}") for f, c, _, _ in SUMMARY)
        print(f"\nfuzz corpus: {sum(v == 'ok' for *_, v in SUMMARY)}/{len(SUMMARY)} cases handled")
        for fmt, fault, outcome, verdict in SUMMARY:
            print(f"  {f'{fmt} / {fault}':<{width}}  {verdict:<4}  {outcome}")


def _read_everything(fmt: str, root: Path) -> None:
    """Open, scan and load every item directly: only DataError may come out."""
    try:
        reader = get_reader(fmt)(root)
        items, _ = reader.scan()
    except DataError:
        return
    for item in items:
        try:
            list(reader.records(item))
        except DataError:
            pass


def test_clean_datasets_verify_clean(clean_datasets):
    for fmt, (root, _) in clean_datasets.items():
        r = verify_dataset(root, progress=False)
        assert r.format == _format_name(fmt) and r.ok and r.ok_items == r.items > 0, (fmt, r.to_text())


def _check_case(fmt: str, fault: Fault, root: Path, target: Path, qdir: Path) -> str:
    # 1. reading the items directly raises DataError or nothing (pytest shows any other exception)
    _read_everything(_format_name(fmt), root)
    # 2. the integrity report names the broken path with the expected kind, with no reader crash
    report = verify_dataset(root, progress=False)
    assert report.format == _format_name(fmt)
    assert not [p for p in report.problems if p.kind == "internal"], report.to_text()
    named = [p for p in report.problems if p.path == target and p.kind in fault.kinds]
    assert named, f"no {sorted(fault.kinds)} problem naming {target}:\n{report.to_text()}"
    assert not report.ok
    # 3. quarantine moves it aside and leaves a clean dataset
    q = verify_dataset(root, quarantine_dir=qdir, progress=False)
    rel = target.relative_to(root)
    assert not target.exists() and (qdir / rel).exists(), q.to_text()
    again = verify_dataset(root, progress=False)
    if fmt.startswith("nnunet_raw") and fault.role != "stray_dir":
        # a quarantined case leaves dataset.json's numTraining stale: reported, and clean once it is updated
        stale = [(p.kind, p.path.name) for p in again.problems]
        assert stale == [(p.kind, p.path.name) for p in q.remaining] == [("layout", "dataset.json")], q.to_text()
        ds = json.loads((root / "dataset.json").read_text())
        ds["numTraining"] = len({p.name.rsplit("_", 1)[0] for p in (root / "imagesTr").iterdir()})
        (root / "dataset.json").write_text(json.dumps(ds))
        again = verify_dataset(root, progress=False)
    else:
        assert q.ok, q.to_text()
    assert again.ok and not again.problems and again.items > 0, again.to_text()
    return f"{named[0].kind}: {rel} -> quarantined"


@pytest.mark.parametrize("fmt, fault_name", CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_fuzz_case_is_named_or_quarantined(fmt, fault_name, clean_datasets, tmp_path):
    clean_root, roles = clean_datasets[fmt]
    root = tmp_path / "ds"
    shutil.copytree(clean_root, root)
    fault = FAULTS[fault_name]
    target = fault.apply(root / roles[fault.role])
    try:
        outcome = _check_case(fmt, fault, root, target, tmp_path / "quarantine")
    except BaseException as e:
        msg = str(e).replace(f"{root}/", "").splitlines()[0][:110]
        SUMMARY.append((fmt, fault_name, f"{type(e).__name__}: {msg}", "FAIL"))
        raise
    SUMMARY.append((fmt, fault_name, outcome, "ok"))
