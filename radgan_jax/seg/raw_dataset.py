"""An nnU-Net v2 raw dataset (dataset.json + imagesTr + labelsTr) as nnU-Net's planner and preprocessor see it.

Cases are listed the way nnunetv2/utilities/utils.py (get_filenames_of_train_images_and_targets) lists them:
ids are the imagesTr file names minus '_XXXX<file_ending>', sorted as strings (np.unique order), the channel
files of an id sorted by name, the label file labelsTr/<id><file_ending>. The order matters: the fingerprint's
per-case lists and its foreground samples follow it.

Arrays are what nnU-Net's image readers return (nnunetv2/imageio): float32 data (C, Z, Y, X) and seg
(1, Z, Y, X); a 2D image is (C, 1, H, W).
  * png (NaturalImage2DIO): an RGB(A) file gives 3 (4) channels, a grey file one; spacing is always
    (999, 1, 1) - png stores none, and nnU-Net ignores our case_spacing.json sidecar too.
  * nii.gz (SimpleITKIO): SimpleITK's array order (Z, Y, X) and its spacing reversed; a 2D image has spacing
    (999 * max(sx, sy), sy, sx).
Files are read by radgan_jax/data/readers/nnunet_raw.py, which checks what nnU-Net's verify_dataset_integrity
checks (shapes, spacings, label values) and raises DataError naming the bad file.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from radgan_jax.data.base import DataError, Item
from radgan_jax.data.readers.nnunet_raw import NnUNetRawReader

# reader_writer_registry.py: the reader nnU-Net picks for a file ending (first one supporting it).
_IO_BY_ENDING = {".png": "NaturalImage2DIO", ".bmp": "NaturalImage2DIO", ".tif": "NaturalImage2DIO",
                 ".nii.gz": "SimpleITKIO", ".nii": "SimpleITKIO"}
SUPPORTED_IO = ("NaturalImage2DIO", "SimpleITKIO")
PNG_SPACING = (999.0, 1.0, 1.0)  # NaturalImage2DIO.read_images
OUT_OF_PLANE_FACTOR = 999.0      # SimpleITKIO: 2D images get a fake z spacing of 999 * max in-plane spacing


@dataclasses.dataclass(frozen=True)
class RawCase:
    """One training case: its channel files (channel order) and its label file."""

    id: str
    image_files: tuple[Path, ...]
    label_file: Path | None


class RawDataset:
    """dataset.json + the case list of `root` (imagesTr / labelsTr). Raises DataError for a dataset.json missing
    a key, a case without its label or channel files, and numTraining not matching imagesTr."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, "dataset folder does not exist", "layout")
        self.reader = NnUNetRawReader(self.root)  # validates dataset.json (required keys, labels)
        self.dataset_json: dict[str, Any] = dict(self.reader.dataset_json)
        self.file_ending: str = self.reader.file_ending
        self.channel_names: dict[str, str] = self.reader.channel_names
        self.num_channels = len(self.channel_names)
        self.labels: dict[str, Any] = dict(self.dataset_json["labels"])
        self.num_training = int(self.dataset_json["numTraining"])
        self.reader_writer = self._reader_writer()
        self.cases = self._list_cases()

    @property
    def name(self) -> str:
        return self.root.name

    def _reader_writer(self) -> str:
        name = self.dataset_json.get("overwrite_image_reader_writer")
        if name in (None, "", "None"):  # reader_writer_registry: 'None' means "pick by file ending"
            name = _IO_BY_ENDING.get(self.file_ending.lower())
        if name not in SUPPORTED_IO:
            raise DataError(self.reader.dataset_json_path,
                            f"file_ending {self.file_ending!r} / image reader {name!r} is not supported; "
                            f"supported: png (NaturalImage2DIO) and nii.gz (SimpleITKIO)", "layout")
        return name

    def _list_cases(self) -> list[RawCase]:
        images_dir, labels_dir = self.root / "imagesTr", self.root / "labelsTr"
        if not images_dir.is_dir():
            raise DataError(images_dir, "folder does not exist (nnU-Net raw datasets need imagesTr/)", "layout")
        ending = self.file_ending
        names = sorted(p.name for p in images_dir.iterdir() if p.name.endswith(ending))
        ids = sorted({n[: -(len(ending) + 5)] for n in names if len(n) > len(ending) + 5})
        cases = []
        for cid in ids:
            pat = re.compile(re.escape(cid) + r"_\d{4}" + re.escape(ending))
            files = tuple(images_dir / n for n in names if pat.fullmatch(n))
            if not files:
                raise DataError(images_dir / f"{cid}_0000{ending}", f"case {cid!r}: no file named "
                                f"{cid}_XXXX{ending} (XXXX = 4-digit channel index)", "layout")
            rgb_file = self.reader.is_png and self.num_channels in (3, 4) and len(files) == 1
            if len(files) != self.num_channels and not rgb_file:
                raise DataError(files[0], f"case {cid!r} has {len(files)} channel file(s) but dataset.json "
                                          f"channel_names declares {self.num_channels}: {self.channel_names}",
                                "layout")
            label = labels_dir / f"{cid}{ending}"
            if not label.is_file():
                raise DataError(label, f"missing label file of training case {cid!r}", "layout")
            cases.append(RawCase(cid, files, label))
        if not cases:
            raise DataError(images_dir, f"no training images named CASE_XXXX{ending}", "layout")
        if len(cases) != self.num_training:
            raise DataError(self.reader.dataset_json_path, f"numTraining is {self.num_training} but imagesTr "
                                                           f"holds {len(cases)} cases", "layout")
        return cases

    def load(self, case: RawCase | str) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        """(data float32 (C, Z, Y, X), seg float32 (1, Z, Y, X) or None, properties {'spacing': [z, y, x], ...})."""
        if isinstance(case, str):
            found = [c for c in self.cases if c.id == case]
            if not found:
                raise KeyError(f"no case {case!r} in {self.root}")
            case = found[0]
        files = case.image_files + ((case.label_file,) if case.label_file is not None else ())
        loaded = self.reader.load(Item(case.id, files))
        spatial_dims = loaded.meta.get("spatial_dims", 2)
        image = loaded.image
        if image.ndim == spatial_dims:
            image = image[..., None]
        data = np.moveaxis(image, -1, 0).astype(np.float32)  # (C, [Z,] Y, X)
        if spatial_dims == 2:
            data = data[:, None]
        if data.shape[0] != self.num_channels:
            raise DataError(case.image_files[0], f"read {data.shape[0]} channel(s) but dataset.json channel_names "
                                                 f"declares {self.num_channels}: {self.channel_names}", "layout")
        seg = None
        if loaded.mask is not None:
            seg = loaded.mask.astype(np.float32)[None]
            if spatial_dims == 2:
                seg = seg[:, None]
        spacing = self._spacing(loaded.spacing, spatial_dims)
        props = {"spacing": spacing, "image_files": [str(p) for p in case.image_files],
                 "label_file": None if case.label_file is None else str(case.label_file),
                 "reader_writer": self.reader_writer}
        return np.ascontiguousarray(data), seg, props

    def _spacing(self, spacing: tuple[float, ...] | None, spatial_dims: int) -> list[float]:
        if self.reader.is_png:
            return list(PNG_SPACING)
        sp = [abs(float(s)) for s in spacing]  # type: ignore[union-attr]  # NIfTI always has voxel sizes
        if spatial_dims == 2:
            return [OUT_OF_PLANE_FACTOR * max(sp), *sp]
        return sp


def open_raw_dataset(root: str | Path) -> RawDataset:
    """The raw dataset at `root` (DatasetXXX_Name folder); DataError naming the file for layout problems."""
    return RawDataset(root)
