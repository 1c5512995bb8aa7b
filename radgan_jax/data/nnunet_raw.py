"""Write `Case`s as an nnU-Net v2 raw dataset (the reader is `radgan_jax/data/readers/nnunet_raw.py`).

Layout (nnU-Net v2 documentation/dataset_format.md):

    DatasetXXX_Name/
      dataset.json               channel_names, labels, numTraining, file_ending (+ overwrite_image_reader_writer)
      imagesTr/CASE_0000.png     one file per input channel, CASE_XXXX; RGB(A) is the one exception: all
      labelsTr/CASE.png            colour channels in ONE png (NaturalImage2DIO reads (H, W, 3) as 3 channels)
      imagesTs/CASE_0000.png     (optional, split='imagesTs'; labelsTs if the cases have masks)
      case_groups.json           ours, ignored by nnU-Net: case id -> patient/group, so splits by patient survive
      case_spacing.json          ours: 2D pixel spacing of png cases (png stores none)

File formats, chosen so that nnU-Net's own readers return our arrays unchanged:
  * '.png' (NaturalImage2DIO; auto for 2D uint8/uint16 images): lossless, no spacing (kept in our sidecar).
  * '.nii.gz' (SimpleITKIO; auto for everything else: volumes, float or int16 images). A (Z, Y, X) array is
    stored as NIfTI (X, Y, Z) with voxel sizes (sx, sy, sz) and a diagonal affine, so SimpleITK's
    GetArrayFromImage gives (Z, Y, X) back and nnU-Net's spacing (reversed GetSpacing) is (sz, sy, sx).
    2D non-uint8 images are written as true 2D NIfTI files, which nnU-Net v2 reads natively (no pseudo-3D).
    Directions/origin are not kept (identity, origin 0): nnU-Net does not use them for training.
    A case without spacing is written with 1 mm voxels (NIfTI always stores voxel sizes).
Masks are uint8 (uint16 when a label exceeds 255), as nnU-Net's own writers store segmentations.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from radgan_jax.data.base import Case

SPLITS = {"imagesTr": "labelsTr", "imagesTs": "labelsTs"}
FILE_ENDINGS = (".png", ".nii.gz")
IO_CLASS = {".png": "NaturalImage2DIO", ".nii.gz": "SimpleITKIO"}
GROUPS_FILE = "case_groups.json"
SPACING_FILE = "case_spacing.json"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"nnU-Net dataset ids are 1..999 (three digits), got {dataset_id}")
    if not _ID_RE.match(name):
        raise ValueError(f"dataset name {name!r} must be letters, digits, '_', '-', '.' (no spaces or '/')")
    return f"Dataset{int(dataset_id):03d}_{name}"


def channel_file(folder: Path, case_id: str, channel: int, file_ending: str) -> Path:
    return folder / f"{case_id}_{channel:04d}{file_ending}"


def case_identifiers(folder: Path, file_ending: str) -> list[str]:
    """Case ids in an images folder, as nnU-Net derives them (name minus '_XXXX' + file_ending)."""
    if not folder.is_dir():
        return []
    pat = re.compile(r"^(.+)_\d{4}" + re.escape(file_ending) + "$")
    return sorted({m.group(1) for p in folder.iterdir() if (m := pat.match(p.name))})


def check_labels(labels: Mapping[str, int]) -> dict[str, int]:
    """nnU-Net's label rules: {'background': 0, name: int}, values consecutive 0..N (LabelManager,
    verify_dataset_integrity). Region labels (tuples) are not written by this tool."""
    out: dict[str, int] = {}
    for k, v in labels.items():
        if isinstance(v, (list, tuple)) or int(v) != v:
            raise ValueError(f"label {k!r}: one integer value needed (region labels unsupported), got {v!r}")
        out[str(k)] = int(v)
    if out.get("background") != 0:
        raise ValueError(f"nnU-Net needs the label 'background': 0; got labels {out}")
    values = sorted(out.values())
    if values != list(range(len(values))):
        raise ValueError(f"nnU-Net needs consecutive label values 0..{len(values) - 1}; got {values} from {out}")
    return out


def _check_channel_names(channel_names: Mapping[str, str]) -> dict[str, str]:
    keys = sorted(int(k) for k in channel_names)
    if not keys or keys != list(range(len(keys))):
        raise ValueError(f"channel_names keys must be '0'..'N-1', got {list(channel_names)}")
    return {str(k): str(channel_names[str(k)] if str(k) in channel_names else channel_names[k]) for k in keys}


def _channels(case: Case) -> int:
    spatial = 3 if case.is_volume else 2
    return 1 if case.image.ndim == spatial else int(case.image.shape[-1])


def _png_ok(case: Case) -> bool:
    if case.is_volume:
        return False
    # 8/16-bit integers only: png cannot hold float or signed data (CT HU, MR floats) without loss.
    return case.image.dtype in (np.uint8, np.uint16)


def _save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(arr)).save(path, compress_level=3)


def _nifti_dtype(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.dtype == np.float16:  # NIfTI-1 has no half floats; float32 holds every float16 value exactly
        return arr.astype(np.float32)
    if arr.dtype == np.int64 or arr.dtype == np.uint64:  # NIfTI-1 readers (ITK) handle 32-bit ints safely
        info = np.iinfo(np.int32)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            return arr.astype(np.float64)
        return arr.astype(np.int32)
    return arr


def _save_nifti(path: Path, arr: np.ndarray, spacing: tuple[float, ...] | None) -> None:
    import nibabel as nib

    arr = _nifti_dtype(arr)
    spacing = tuple(float(s) for s in spacing) if spacing else (1.0,) * arr.ndim
    zooms = spacing[::-1]  # (Z, Y, X) spacing -> NIfTI (x, y, z) voxel sizes
    affine = np.eye(4)
    affine[range(arr.ndim), range(arr.ndim)] = zooms
    img = nib.Nifti1Image(np.ascontiguousarray(arr).T, affine)
    img.header.set_data_dtype(arr.dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


class NnUNetRawWriter:
    """Adds cases one at a time (`add`), then `close()` writes dataset.json and the sidecar files.

    One writer writes one split ('imagesTr' needs a mask per case). An existing, non-empty split folder is an
    error unless overwrite=True (then that split and its labels are replaced; the other split is kept).
    """

    def __init__(self, out_root: str | Path, dataset_id: int, name: str, labels: Mapping[str, int],
                 channel_names: Mapping[str, str], *, file_ending: str = "auto", split: str = "imagesTr",
                 overwrite: bool = False):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if file_ending not in ("auto", *FILE_ENDINGS):
            raise ValueError(f"file_ending must be 'auto' or one of {FILE_ENDINGS}, got {file_ending!r}")
        self.out_root = Path(out_root)
        self.folder = self.out_root / dataset_folder_name(dataset_id, name)
        clash = [p.name for p in self.out_root.glob(f"Dataset{int(dataset_id):03d}_*") if p != self.folder]
        if clash:
            raise ValueError(f"{self.out_root}: dataset id {dataset_id} is already used by {clash}; "
                             f"nnU-Net needs unique ids")
        self.labels = check_labels(labels)
        self.channel_names = _check_channel_names(channel_names)
        self.split = split
        self.file_ending = None if file_ending == "auto" else file_ending
        ds_path = self.folder / "dataset.json"
        if split == "imagesTs" and ds_path.is_file():  # adding a test split: keep the dataset's file format
            existing = json.loads(ds_path.read_text()).get("file_ending")
            if self.file_ending not in (None, existing):
                raise ValueError(f"{ds_path}: the dataset uses file_ending {existing!r}, not {self.file_ending!r}")
            self.file_ending = existing
        self.images_dir = self.folder / split
        self.labels_dir = self.folder / SPLITS[split]
        for d in (self.images_dir, self.labels_dir):
            if d.is_dir() and any(d.iterdir()):
                if not overwrite:
                    raise FileExistsError(f"{d}: folder is not empty; pass overwrite=True to replace it")
                shutil.rmtree(d)
        self._ids: set[str] = set()
        self._volume: bool | None = None
        self.groups: dict[str, str] = {}
        self.spacings: dict[str, list[float]] = {}
        self._closed = False

    def __enter__(self) -> NnUNetRawWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    @property
    def num_cases(self) -> int:
        return len(self._ids)

    def _validate(self, case: Case) -> None:
        cid = case.id
        if not _ID_RE.match(cid):
            raise ValueError(f"case {cid!r}: id must be letters, digits, '_', '-', '.' (it becomes a file name)")
        if cid in self._ids:
            raise ValueError(f"case {cid!r}: duplicate case id")
        if self._volume is not None and case.is_volume != self._volume:
            raise ValueError(f"case {cid!r}: mixes 2D and 3D cases in one dataset (nnU-Net needs one kind)")
        dims = 3 if case.is_volume else 2
        if case.spacing is not None and (len(case.spacing) != dims or min(case.spacing) <= 0):
            raise ValueError(f"case {cid!r}: spacing {case.spacing} must be {dims} positive numbers (mm)")
        n = len(self.channel_names)
        if _channels(case) != n:
            raise ValueError(f"case {cid!r}: image {case.image.shape} has {_channels(case)} channel(s) but "
                             f"channel_names declares {n}: {self.channel_names}")
        if case.mask is None:
            if self.split == "imagesTr":
                raise ValueError(f"case {cid!r}: training cases (imagesTr) need a mask")
            return
        spatial = case.image.shape[:3] if case.is_volume else case.image.shape[:2]
        if case.mask.shape != spatial:
            raise ValueError(f"case {cid!r}: mask shape {case.mask.shape} != image spatial shape {spatial}")
        if not (np.issubdtype(case.mask.dtype, np.integer) or case.mask.dtype == np.bool_):
            raise ValueError(f"case {cid!r}: mask dtype {case.mask.dtype} is not integer")
        extra = sorted(set(np.unique(case.mask).tolist()) - set(self.labels.values()))
        if extra:
            raise ValueError(f"case {cid!r}: mask holds label values {extra[:10]} not declared in labels "
                             f"{self.labels}")

    def add(self, case: Case) -> list[Path]:
        """Write one case (image channels and mask); returns the files written. ValueError on a bad case,
        before anything of it is written."""
        if self._closed:
            raise RuntimeError("NnUNetRawWriter.add after close()")
        self._validate(case)
        if self.file_ending is None:
            self.file_ending = ".png" if _png_ok(case) else ".nii.gz"
        if self.file_ending == ".png" and not _png_ok(case):
            raise ValueError(f"case {case.id!r}: a {case.image.dtype} {case.image.shape} image cannot be stored "
                             f"as png without loss; use file_ending='.nii.gz'")
        self._volume = case.is_volume
        self.images_dir.mkdir(parents=True, exist_ok=True)
        written = self._write_image(case)
        if case.mask is not None:
            self.labels_dir.mkdir(parents=True, exist_ok=True)
            mask = case.mask.astype(np.uint8 if case.mask.max(initial=0) <= 255 else np.uint16)
            path = self.labels_dir / f"{case.id}{self.file_ending}"
            if self.file_ending == ".png":
                _save_png(path, mask)
            else:
                _save_nifti(path, mask, case.spacing)
            written.append(path)
        self._ids.add(case.id)
        if case.group is not None:
            self.groups[case.id] = str(case.group)
        if self.file_ending == ".png" and case.spacing is not None:
            self.spacings[case.id] = [float(s) for s in case.spacing]
        return written

    def _write_image(self, case: Case) -> list[Path]:
        img = case.image
        spatial = 3 if case.is_volume else 2
        if img.ndim == spatial + 1 and img.shape[-1] == 1:
            img = img[..., 0]
        if self.file_ending == ".png" and (img.ndim == 2 or (img.dtype == np.uint8 and img.shape[-1] in (3, 4))):
            path = channel_file(self.images_dir, case.id, 0, ".png")  # RGB(A): one file, NaturalImage2DIO
            _save_png(path, img)
            return [path]
        planes = [img] if img.ndim == spatial else [img[..., c] for c in range(img.shape[-1])]
        out = []
        for c, plane in enumerate(planes):
            path = channel_file(self.images_dir, case.id, c, self.file_ending)
            if self.file_ending == ".png":
                _save_png(path, plane)
            else:
                _save_nifti(path, plane, case.spacing)
            out.append(path)
        return out

    def close(self) -> Path:
        """Write dataset.json (numTraining = cases now in imagesTr) and the sidecars; returns the folder."""
        self._closed = True
        self.folder.mkdir(parents=True, exist_ok=True)
        ds_path = self.folder / "dataset.json"
        old = json.loads(ds_path.read_text()) if ds_path.is_file() else {}
        ending = self.file_ending or old.get("file_ending") or ".nii.gz"
        present = set(case_identifiers(self.folder / "imagesTr", ending)) | set(
            case_identifiers(self.folder / "imagesTs", ending))
        dataset = {
            "channel_names": self.channel_names,
            "labels": self.labels,
            "numTraining": len(case_identifiers(self.folder / "imagesTr", ending)),
            "file_ending": ending,
            "overwrite_image_reader_writer": IO_CLASS[ending],
            "name": self.folder.name,
            "converted_by": "radgan_jax.data.nnunet_raw",
        }
        ds_path.write_text(json.dumps(dataset, indent=2) + "\n")
        for fname, new in ((GROUPS_FILE, self.groups), (SPACING_FILE, self.spacings)):
            path = self.folder / fname
            merged = {**(json.loads(path.read_text()) if path.is_file() else {}), **new}
            merged = {k: v for k, v in sorted(merged.items()) if k in present}
            if merged:
                path.write_text(json.dumps(merged, indent=1) + "\n")
            elif path.is_file():
                path.unlink()
        return self.folder


def write_nnunet_raw(cases: Iterable[Case], out_root: str | Path, dataset_id: int, name: str,
                     labels: Mapping[str, int], channel_names: Mapping[str, str], *, file_ending: str = "auto",
                     split: str = "imagesTr", overwrite: bool = False, progress: bool = False) -> Path:
    """Write every case to `out_root/DatasetXXX_Name` in nnU-Net v2 raw format; returns that folder.
    A bad case raises ValueError naming it (use NnUNetRawWriter.add to skip bad cases instead)."""
    from tqdm import tqdm

    writer = NnUNetRawWriter(out_root, dataset_id, name, labels, channel_names, file_ending=file_ending,
                             split=split, overwrite=overwrite)
    for case in tqdm(cases, desc=f"nnU-Net {split}", unit="case", disable=not progress):
        writer.add(case)
    return writer.close()
