"""Labeled Lumbar Spine MRI (Sudirman et al., Mendeley Data): axial slices of the last three lumbar discs with
IVD / posterior element / thecal sac / AAP label images."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from radgan_jax.data.base import Case, DataError, Item, Reader
from radgan_jax.data.io import is_image_file, read_image

LABEL_DIR = Path("05_Final_Ground_Truth_Data") / "Label_Images"
IMAGE_DIRS = {"T1": Path("04_Intermediary_Ground_Truth_Data") / "T1_Output",
              "T2": Path("04_Intermediary_Ground_Truth_Data") / "T2_Output"}
# Label image grey levels (Al Kafri et al., IEEE Access 7 (2019) 43487, the four ROIs of the ground truth):
# 50 intervertebral disc, 100 posterior element, 150 thecal sac, 200 area between anterior and posterior
# vertebral elements, 250 everything else.
GREY_TO_LABEL = {250: 0, 50: 1, 100: 2, 150: 3, 200: 4}
LABELS = {0: "background", 1: "intervertebral_disc", 2: "posterior_element", 3: "thecal_sac",
          4: "anterior_posterior_area"}
# Dataset description (Mendeley k57fr854j2): axial slices are 320 x 320 at 0.6875 mm per pixel (4 mm thick,
# 4.4 mm apart); the PNGs carry no spacing of their own.
AXIAL_PIXEL_MM = 0.6875

_LABEL = re.compile(r"^L1_(\d+)_D(\d+)\.png$", re.IGNORECASE)


def _dataset_dir(root: Path) -> Path | None:
    """root itself, or its one subfolder, when it holds 05_Final_Ground_Truth_Data/Label_Images."""
    if (root / LABEL_DIR).is_dir():
        return root
    subs = [p for p in root.iterdir() if p.is_dir() and (p / LABEL_DIR).is_dir()] if root.is_dir() else []
    return subs[0] if len(subs) == 1 else None


class LumbarSpineReader(Reader):
    """Labeled Lumbar Spine MRI: 'Label Image Ground Truth Data for Lumbar Spine MRI Dataset' (Sudirman, Al Kafri,
    Natalia et al., Mendeley Data zbf6b4pttk v2, CC BY 4.0), the ground truth of the 515-patient 'Lumbar Spine
    MRI Dataset' (Mendeley k57fr854j2). Each patient has one labelled axial slice per disc D3, D4, D5 (the last
    three lumbar IVDs, L3/L4, L4/L5, L5/S1).

    Layout (root = the unzipped Ground_Truth_Label folder, or a folder holding only it)::

        05_Final_Ground_Truth_Data/Label_Images/L1_0001_D3.png          label image (grey levels, below)
        04_Intermediary_Ground_Truth_Data/T2_Output/T2_0001_D3.png      the same slice, T2-weighted, 8-bit
        04_Intermediary_Ground_Truth_Data/T1_Output/T1_0001_D3.png      the same slice, T1-weighted, 8-bit

    Label grey levels -> declared values: 250 -> 0 background (everything else), 50 -> 1 intervertebral disc,
    100 -> 2 posterior element, 150 -> 3 thecal sac, 200 -> 4 area between anterior and posterior vertebral
    elements (AAP).

    Source of this layout and encoding: the dataset description and third-party loaders of the zbf6b4pttk zip
    that were read for this reader (they list 1545 L1_<patient>_D<disc>.png labels, each with T1_/T2_Output
    slices, grey levels exactly {50, 100, 150, 200, 250}); the zip itself was not available to check. Other
    folders of the zip (01-03 manual labels per labeller, Resized_* images) are not read.

    Case = one labelled slice, 2D (H, W) uint8 with its mask: id '<patient>_D<disc>', group = patient (4-digit
    folder number), so splits by patient keep the three discs together. Spacing (0.6875, 0.6875) mm, the
    dataset's documented axial pixel size. These are three separate discs, not a contiguous volume, so no
    (Z, Y, X) stack is built. Option `modality`: 'T2' (default) or 'T1'.

    Problems: label without its image slice, foreign files in Label_Images, image/label size mismatch, grey
    levels outside {50, 100, 150, 200, 250}, unreadable PNGs.
    """

    name = "lumbar_spine"
    task = "segmentation"
    spatial_dims = 2
    label_names = LABELS
    paper_size = 320

    def __init__(self, root: str | Path, modality: str = "T2", **options: Any):
        super().__init__(root, modality=modality, **options)
        if modality not in IMAGE_DIRS:
            raise ValueError(f"lumbar_spine: unknown modality {modality!r}; valid: {', '.join(IMAGE_DIRS)}")
        self.modality = modality
        base = _dataset_dir(self.root)
        if base is None:
            raise DataError(self.root, f"not a Lumbar Spine MRI label layout: expected {LABEL_DIR}/L1_0001_D3.png",
                            "layout")
        self.base = base

    @classmethod
    def detect(cls, root: Path) -> bool:
        base = _dataset_dir(Path(root))
        return base is not None and any(_LABEL.match(p.name) for p in (base / LABEL_DIR).iterdir())

    def _image_path(self, patient: str, disc: str) -> Path:
        return self.base / IMAGE_DIRS[self.modality] / f"{self.modality}_{patient}_D{disc}.png"

    def scan(self) -> tuple[list[Item], list[DataError]]:
        items, problems = [], []
        keys: dict[tuple[int, int], Path] = {}
        for path in sorted((self.base / LABEL_DIR).iterdir()):
            if path.name.startswith("."):
                continue
            m = _LABEL.match(path.name)
            if m is None:
                problems.append(DataError(path, "unexpected file: label images are named L1_<patient>_D<disc>.png",
                                          "layout" if is_image_file(path) else "not_image"))
                continue
            key = (int(m.group(1)), int(m.group(2)))
            if key in keys:
                problems.append(DataError(path, f"same patient/disc as {keys[key].name}", "duplicate_id"))
                continue
            keys[key] = path
        for (pnum, dnum), label_path in sorted(keys.items()):
            patient, disc = f"{pnum:04d}", str(dnum)
            image_path = self._image_path(patient, disc)
            if not image_path.exists():
                problems.append(DataError(label_path, f"no {self.modality} slice {image_path.relative_to(self.base)}",
                                          "layout"))
                continue
            items.append(Item(f"{patient}_D{disc}", (image_path, label_path), group=patient))
        if not keys:
            problems.append(DataError(self.base / LABEL_DIR, "no L1_<patient>_D<disc>.png label images", "layout"))
        return items, problems

    def load(self, item: Item) -> Case:
        image_path, label_path = item.files
        image = read_image(image_path)
        if image.ndim == 3:  # grey slices saved as RGB(A): keep one channel when they agree
            if not np.all(image[..., :3] == image[..., :1]):
                raise DataError(image_path, "expected a grey MR slice, found a colour image", "corrupt")
            image = image[..., 0]
        grey = read_image(label_path)
        if grey.ndim == 3:
            if not np.all(grey[..., :3] == grey[..., :1]):
                raise DataError(label_path, "expected a grey-level label image, found colour", "label_values")
            grey = grey[..., 0]
        if grey.shape != image.shape:
            raise DataError(label_path, f"label size {grey.shape} differs from image {image_path.name} size "
                                        f"{image.shape}", "size_mismatch")
        bad = sorted(set(np.unique(grey).tolist()) - set(GREY_TO_LABEL))
        if bad:
            raise DataError(label_path, f"label grey levels {bad[:10]} outside the documented "
                                        f"{sorted(GREY_TO_LABEL)} (50 IVD, 100 PE, 150 TS, 200 AAP, 250 other)",
                            "label_values")
        lut = np.zeros(max(256, int(grey.max()) + 1), np.uint8)
        for level, value in GREY_TO_LABEL.items():
            lut[level] = value
        mask = lut[grey]
        self.check_mask_values(mask, label_path)
        meta = {"spatial_dims": 2, "patient_id": item.group, "disc": "D" + item.id.split("_D")[1],
                "modality": self.modality, "source_files": [str(image_path), str(label_path)]}
        return Case(item.id, image, mask, None, item.group, (AXIAL_PIXEL_MM, AXIAL_PIXEL_MM), meta)
