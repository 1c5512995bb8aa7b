"""Reader of nnU-Net v2 raw datasets (`DatasetXXX_Name/` with dataset.json, imagesTr, labelsTr[, imagesTs]).

Checks what nnU-Net's verify_dataset_integrity checks, as named DataErrors instead of asserts/prints:
dataset.json keys, numTraining, a label file per training case, every channel file (CASE_0000..CASE_{N-1};
one RGB(A) png counts for 3/4 channels, as NaturalImage2DIO reads it), image/label shapes, spacings, and
label values outside dataset.json's `labels`.

Arrays come back as nnU-Net's own readers see them: NIfTI stored (X, Y, Z) -> (Z, Y, X) with spacing
(sz, sy, sx) (SimpleITKIO's order), png (H, W[, C]). Multi-channel cases are stacked on a last axis.
Groups (patients) come from `case_groups.json` if the dataset has one (written by radgan_jax), png spacing
from `case_spacing.json`. Option `split='imagesTs'` reads the test images (labels optional, from labelsTs).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from radgan_jax.data.base import Case, DataError, Item, Reader
from radgan_jax.data.io import read_image, read_nifti
from radgan_jax.data.nnunet_raw import GROUPS_FILE, SPACING_FILE, SPLITS

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "file does not exist", "layout") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"not readable JSON ({type(e).__name__}: {e})", "corrupt") from None
    if not isinstance(data, dict):
        raise DataError(path, f"expected a JSON object, found {type(data).__name__}", "corrupt")
    return data


def natural_key(case_id: str) -> list:
    """'img2' < 'img10': ids sort by their numbers, not character by character."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", case_id) if t]


def _label_names(ds_path: Path, labels: dict) -> dict[int, str]:
    out: dict[int, str] = {}
    for name, value in labels.items():
        values = value if isinstance(value, (list, tuple)) else [value]  # region labels: each member value
        for v in values:
            if not isinstance(v, int) or isinstance(v, bool):
                raise DataError(ds_path, f"label {name!r} has a non-integer value {v!r}", "layout")
            out.setdefault(int(v), str(name))
    return dict(sorted(out.items()))


class NnUNetRawReader(Reader):
    """nnU-Net v2 raw dataset: dataset.json + imagesTr/CASE_XXXX<ending> + labelsTr/CASE<ending>."""

    name = "nnunet_raw"
    task = "segmentation"

    def __init__(self, root, split: str = "imagesTr", **options):
        super().__init__(root, **options)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        self.split = split
        self.dataset_json_path = self.root / "dataset.json"
        ds = _load_json(self.dataset_json_path)
        if "channel_names" not in ds and "modality" in ds:  # nnU-Net v1 key, accepted by v2
            ds["channel_names"] = ds["modality"]
        missing = [k for k in REQUIRED_KEYS if k not in ds]
        if missing:
            raise DataError(self.dataset_json_path, f"missing required keys {missing} (nnU-Net v2 needs "
                                                    f"{list(REQUIRED_KEYS)})", "layout")
        if "dataset" in ds:
            raise DataError(self.dataset_json_path, "dataset.json lists files explicitly ('dataset' key); "
                                                    "only the imagesTr/labelsTr folder layout is supported", "layout")
        self.dataset_json = ds
        self.file_ending = str(ds["file_ending"])
        self.channel_names = {str(k): str(v) for k, v in ds["channel_names"].items()}
        self.num_channels = len(self.channel_names)
        self.label_names = _label_names(self.dataset_json_path, ds["labels"])
        self.images_dir = self.root / split
        self.labels_dir = self.root / SPLITS[split]
        self.groups = self._sidecar(GROUPS_FILE)
        self.spacings = self._sidecar(SPACING_FILE)
        self.is_png = self.file_ending.lower() in (".png", ".bmp", ".tif")  # NaturalImage2DIO endings
        self.spatial_dims = 2 if self.is_png else self._peek_dims()

    def _peek_dims(self) -> int:
        """2 or 3 from the first image's NIfTI header (cheap: no voxel data read); 3 if it cannot be read."""
        import nibabel as nib

        first = next(iter(sorted(self.images_dir.glob(f"*{self.file_ending}"))), None)
        try:
            return 2 if first is not None and len(nib.load(str(first)).shape) == 2 else 3
        except Exception:  # a broken file is reported by load(); the layout default is volumes
            return 3

    def _sidecar(self, fname: str) -> dict:
        path = self.root / fname
        return _load_json(path) if path.is_file() else {}

    @classmethod
    def detect(cls, root: Path) -> bool:
        root = Path(root)
        return (root / "dataset.json").is_file() and (root / "imagesTr").is_dir()

    def scan(self) -> tuple[list[Item], list[DataError]]:
        problems: list[DataError] = []
        if not self.images_dir.is_dir():
            err = DataError(self.images_dir, "folder does not exist", "layout")
            if self.split == "imagesTr":
                raise err
            return [], [err]
        pat = re.compile(r"^(.+)_(\d{4})" + re.escape(self.file_ending) + "$")
        channels: dict[str, dict[int, Path]] = defaultdict(dict)
        for path in sorted(self.images_dir.iterdir()):
            if path.name.startswith("."):
                continue
            m = pat.match(path.name)
            if not m:
                problems.append(DataError(path, f"not named CASE_XXXX{self.file_ending} (the dataset's "
                                                f"file_ending); nnU-Net ignores it", "layout"))
                continue
            channels[m.group(1)][int(m.group(2))] = path
        items = []
        for cid in sorted(channels, key=natural_key):
            files = self._channel_files(cid, channels[cid], problems)
            if files is None:
                continue
            label = self.labels_dir / f"{cid}{self.file_ending}"
            if label.is_file():
                files.append(label)
            elif self.split == "imagesTr":
                problems.append(DataError(label, f"missing label file of training case {cid!r}", "layout"))
                continue
            items.append(Item(cid, tuple(files), None, self.groups.get(cid)))
        problems += self._orphan_labels(set(channels))
        if self.split == "imagesTr" and len(channels) != self.dataset_json["numTraining"]:
            problems.append(DataError(self.dataset_json_path, f"numTraining is {self.dataset_json['numTraining']} "
                                                              f"but imagesTr holds {len(channels)} cases", "layout"))
        return items, problems

    def _channel_files(self, cid: str, found: dict[int, Path], problems: list[DataError]) -> list[Path] | None:
        extra = sorted(set(found) - set(range(self.num_channels)))
        for c in extra:
            problems.append(DataError(found[c], f"channel {c} not declared in dataset.json channel_names "
                                                f"({self.num_channels} channel(s))", "layout"))
        if self.is_png and self.num_channels in (3, 4) and set(found) == {0}:
            return [found[0]]  # one RGB(A) file holds all colour channels (checked on load)
        missing = [c for c in range(self.num_channels) if c not in found]
        if missing:
            path = self.images_dir / f"{cid}_{missing[0]:04d}{self.file_ending}"
            problems.append(DataError(path, f"missing channel file(s) {missing} of case {cid!r} "
                                            f"(channel_names: {self.channel_names})", "layout"))
            return None
        return [found[c] for c in range(self.num_channels)]

    def _orphan_labels(self, ids: set[str]) -> list[DataError]:
        if not self.labels_dir.is_dir():
            return []
        return [DataError(p, "label file without an image in " + self.split, "layout")
                for p in sorted(self.labels_dir.iterdir())
                if p.name.endswith(self.file_ending) and p.name[:-len(self.file_ending)] not in ids]

    def _read(self, path: Path) -> tuple[np.ndarray, tuple[float, ...] | None]:
        """One file -> (array in nnU-Net's axis order, spacing in that order or None)."""
        if self.is_png:
            return read_image(path), None
        if not self.file_ending.lower().endswith((".nii", ".nii.gz")):
            raise DataError(path, f"file_ending {self.file_ending!r} is not supported here (png, nii.gz)", "layout")
        data, zooms, _ = read_nifti(path)
        if data.ndim not in (2, 3):
            raise DataError(path, f"expected a 2D or 3D NIfTI image, found shape {data.shape}", "corrupt")
        return np.ascontiguousarray(data.T), tuple(zooms[::-1])

    def load(self, item: Item) -> Case:
        label_path = next((p for p in item.files if p.parent.name == SPLITS[self.split]), None)
        image_paths = [p for p in item.files if p != label_path]
        arrays, spacings = zip(*(self._read(p) for p in image_paths), strict=True)
        if len(image_paths) == 1 and self.num_channels in (3, 4) and self.is_png:
            image = arrays[0]
            if image.ndim != 3 or image.shape[-1] != self.num_channels:
                raise DataError(image_paths[0], f"expected one {self.num_channels}-channel (RGB/RGBA) image for "
                                                f"{self.num_channels} channel_names, found shape {image.shape}",
                                "size_mismatch")
        else:
            for p, a in zip(image_paths, arrays, strict=True):
                if a.shape != arrays[0].shape:
                    raise DataError(p, f"channel shape {a.shape} != {arrays[0].shape} of {image_paths[0].name}",
                                    "size_mismatch")
                if self.is_png and a.ndim != 2 and len(image_paths) > 1:
                    raise DataError(p, f"a channel file must be grayscale, found shape {a.shape}", "size_mismatch")
            image = arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=-1)
        spacing = spacings[0]
        for p, s in zip(image_paths, spacings, strict=True):
            self._check_spacing(p, s, spacing)
        spatial = image.shape[:2] if self.is_png or arrays[0].ndim == 2 else image.shape[:3]
        mask = None
        if label_path is not None:
            mask, mask_spacing = self._read(label_path)
            if mask.shape != spatial:
                raise DataError(label_path, f"label shape {mask.shape} != image shape {spatial} "
                                            f"({image_paths[0].name})", "size_mismatch")
            self._check_spacing(label_path, mask_spacing, spacing)
            mask = self._integer_mask(mask, label_path)
            self.check_mask_values(mask, label_path)
        if spacing is None and item.id in self.spacings:
            spacing = tuple(float(s) for s in self.spacings[item.id])
        dims = 3 if len(spatial) == 3 else 2
        return Case(item.id, image, mask, None, item.group, spacing,
                    {"spatial_dims": dims, "files": [str(p) for p in item.files], "dataset": self.root.name})

    @staticmethod
    def _check_spacing(path: Path, spacing, reference) -> None:
        if spacing is not None and reference is not None and not np.allclose(spacing, reference):
            raise DataError(path, f"spacing {tuple(round(s, 6) for s in spacing)} != the case's "
                                  f"{tuple(round(s, 6) for s in reference)}", "spacing_mismatch")

    def _integer_mask(self, mask: np.ndarray, path: Path) -> np.ndarray:
        if self.is_png and mask.ndim != 2:
            raise DataError(path, f"a label image must be single-channel, found shape {mask.shape}", "label_values")
        if np.issubdtype(mask.dtype, np.integer):
            return mask
        if not np.all(np.isfinite(mask)) or not np.array_equal(mask, np.round(mask)):
            raise DataError(path, "label image holds non-integer values", "label_values")
        if mask.size and (mask.min() < 0 or mask.max() > 65535):
            raise DataError(path, f"label values outside 0..65535 (min {mask.min()}, max {mask.max()})",
                            "label_values")
        return mask.astype(np.uint8 if mask.max(initial=0) <= 255 else np.uint16)
