"""BTCV (Multi-Atlas Labeling Beyond the Cranial Vault, abdomen) CT volumes with their 13-organ labels."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from radgan_jax.data.base import Case, DataError, Item, Reader
from radgan_jax.data.io import is_nifti_file
from radgan_jax.data.volume import choose_label_map, image_array, load_nifti_pair, remap

# Label values of the BTCV abdomen release (Synapse syn3193805 wiki; Landman et al., MICCAI 2015 challenge).
ORIGINAL_LABELS = {0: "background", 1: "spleen", 2: "right_kidney", 3: "left_kidney", 4: "gallbladder",
                   5: "esophagus", 6: "liver", 7: "stomach", 8: "aorta", 9: "inferior_vena_cava",
                   10: "portal_and_splenic_vein", 11: "pancreas", 12: "right_adrenal_gland",
                   13: "left_adrenal_gland"}
# RadImageGAN segments liver and kidney on BTCV: liver = 6, right + left kidney (2, 3) merged, the rest background.
PAPER_LABELS = {0: "background", 1: "liver", 2: "kidney"}
PAPER_MAP = {6: 1, 2: 2, 3: 2}

_IMG = re.compile(r"^img(\d+)\.nii(\.gz)?$", re.IGNORECASE)
_LBL = re.compile(r"^label(\d+)\.nii(\.gz)?$", re.IGNORECASE)


def _training_dir(root: Path) -> Path | None:
    """The folder holding img/ and label/: root itself, root/Training, root/RawData/Training (or under Abdomen/)."""
    for cand in (root, root / "Training", root / "RawData" / "Training", root / "Abdomen" / "RawData" / "Training"):
        img, lbl = cand / "img", cand / "label"
        if img.is_dir() and lbl.is_dir() and any(_IMG.match(p.name) for p in img.iterdir()):
            return cand
    return None


def _numbered(folder: Path, pattern: re.Pattern, what: str) -> tuple[dict[str, Path], list[DataError]]:
    """{case number: file} of one folder, with problems for foreign files and duplicate numbers."""
    found: dict[str, Path] = {}
    problems: list[DataError] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        m = pattern.match(path.name)
        if m is None:
            kind = "layout" if is_nifti_file(path) or path.is_dir() else "not_image"
            problems.append(DataError(path, f"unexpected entry in {folder.name}/: BTCV {what} files are named "
                                            f"{pattern.pattern.strip('^$')}", kind))
            continue
        if m.group(1) in found:
            problems.append(DataError(path, f"case {m.group(1)} already given by {found[m.group(1)].name}",
                                      "duplicate_id"))
            continue
        found[m.group(1)] = path
    return found, problems


class BTCVReader(Reader):
    """BTCV abdomen CT (Multi-Atlas Labeling Beyond the Cranial Vault), the training set of the Synapse release.

    Layout (root = the folder that holds RawData, or RawData, or RawData/Training)::

        RawData/Training/img/img0001.nii.gz     CT volume, HU
        RawData/Training/label/label0001.nii.gz labels 0..13, same grid as the image

    Case = one patient (id and group = the 4-digit number). RawData/Testing has no labels and is not read.
    Original labels: 0 background, 1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder, 5 esophagus,
    6 liver, 7 stomach, 8 aorta, 9 inferior vena cava, 10 portal and splenic vein, 11 pancreas,
    12 right adrenal gland, 13 left adrenal gland.

    Option `label_map`: 'paper' (default; RadImageGAN's liver/kidney task) -> 0 background, 1 liver (6),
    2 kidney (2 and 3 merged), every other organ -> background; 'original' keeps 0..13.

    Volumes come out (Z, Y, X), axial first in LPS order (radgan_jax.data.volume), spacing (z, y, x) mm from
    the affine. Problems: image without label (or the reverse), foreign files, label grid (shape/spacing)
    different from the image, label values that are not integers in 0..13, unreadable NIfTI files.
    """

    name = "btcv"
    task = "segmentation"
    spatial_dims = 3
    label_names = PAPER_LABELS
    paper_size = 512

    def __init__(self, root: str | Path, label_map: str = "paper", **options: Any):
        super().__init__(root, label_map=label_map, **options)
        self.label_map = label_map
        self.label_names, self._mapping = choose_label_map(self.name, label_map, (PAPER_LABELS, PAPER_MAP),
                                                           ORIGINAL_LABELS)
        training = _training_dir(self.root)
        if training is None:
            raise DataError(self.root, "not a BTCV layout: expected RawData/Training/img/img0001.nii.gz and "
                                       "RawData/Training/label/label0001.nii.gz", "layout")
        self.training_dir = training

    @classmethod
    def detect(cls, root: Path) -> bool:
        return _training_dir(Path(root)) is not None

    def scan(self) -> tuple[list[Item], list[DataError]]:
        images, problems = _numbered(self.training_dir / "img", _IMG, "image")
        labels, label_problems = _numbered(self.training_dir / "label", _LBL, "label")
        problems += label_problems
        items = []
        for num in sorted(images, key=int):
            if num not in labels:
                problems.append(DataError(images[num], f"no label file label{num}.nii.gz in "
                                                       f"{self.training_dir / 'label'}", "layout"))
                continue
            items.append(Item(num, (images[num], labels[num]), group=num))
        for num in sorted(set(labels) - set(images), key=int):
            problems.append(DataError(labels[num], f"label without image img{num}.nii.gz in "
                                                   f"{self.training_dir / 'img'}", "layout"))
        return items, problems

    def load(self, item: Item) -> Case:
        image_path, label_path = item.files
        image, labels = load_nifti_pair(image_path, label_path, range(len(ORIGINAL_LABELS)))
        mask = remap(labels, self._mapping) if self._mapping is not None else labels.astype(np.uint8)
        self.check_mask_values(mask, label_path)
        meta = {"spatial_dims": 3, "patient_id": item.group, "source_files": [str(image_path), str(label_path)],
                "orientation": "".join(image.source_axcodes), "label_map": self.label_map}
        return Case(item.id, image_array(image.array), mask, None, item.group, image.spacing, meta)
