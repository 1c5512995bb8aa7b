"""CHAOS MR T2-SPIR (liver, kidneys, spleen): the original DICOM + PNG release and the preprocessed NIfTI pairs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from radgan_jax.data.base import Case, DataError, Item, Reader
from radgan_jax.data.io import read_dicom, read_image
from radgan_jax.data.volume import (
    choose_label_map,
    dicom_pixels,
    dicom_slice_order,
    dicom_spacing,
    image_array,
    load_nifti_pair,
    remap,
)

# Kavur et al., "CHAOS Challenge", Medical Image Analysis 69 (2021) 101950: MR labels liver, right kidney,
# left kidney, spleen (the NIfTI release numbers them 1..4 in that order; see its README).
ORIGINAL_LABELS = {0: "background", 1: "liver", 2: "right_kidney", 3: "left_kidney", 4: "spleen"}
# RadImageGAN's CHAOS-MRI task: liver and kidney (right + left merged); spleen unused -> background.
PAPER_LABELS = {0: "background", 1: "liver", 2: "kidney"}
PAPER_MAP = {1: 1, 2: 2, 3: 2}

# Ground/*.png grey levels (CHAOS data page, chaos.grand-challenge.org/Data): liver 63, right kidney 126,
# left kidney 189, spleen 252; the challenge reads them by these inclusive ranges: 55-70, 110-135, 175-200, 240-255.
GREY_RANGES = ((55, 70, 1), (110, 135, 2), (175, 200, 3), (240, 255, 4))


def _label_map(label_map: str, name: str) -> tuple[dict[int, str], dict[int, int] | None]:
    return choose_label_map(name, label_map, (PAPER_LABELS, PAPER_MAP), ORIGINAL_LABELS)


def _case(item: Item, image: np.ndarray, labels: np.ndarray, spacing: tuple[float, ...], reader: Reader,
          mask_path: Path, mapping: dict[int, int] | None, **meta: Any) -> Case:
    mask = remap(labels, mapping) if mapping is not None else labels.astype(np.uint8)
    reader.check_mask_values(mask, mask_path)
    meta = {"spatial_dims": 3, "patient_id": item.group, "source_files": [str(p) for p in item.files],
            "label_map": reader.options["label_map"], **meta}
    return Case(item.id, image_array(image), mask, None, item.group, tuple(spacing), meta)


# --------------------------------------------------------------------------------------------- NIfTI release
_NII_IMAGE = re.compile(r"^image_(\d+)\.nii(\.gz)?$")
_NII_LABEL = re.compile(r"^label_(\d+)\.nii(\.gz)?$")


def _numbered(root: Path, pattern: re.Pattern) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in sorted(root.iterdir()):
        m = pattern.match(path.name)
        if m is not None:
            found.setdefault(str(int(m.group(1))), []).append(path)
    return found


class ChaosNiftiReader(Reader):
    """CHAOS MR T2-SPIR as preprocessed NIfTI pairs (SSL-ALPNet pipeline, Ouyang et al. ECCV 2020; shipped by
    Q-Net as `chaos_MR_T2_normalized/`). Not the raw release: intensities clipped, resampled to
    1.25 x 1.25 x 7.7 mm, cropped to 256 x 256 in-plane.

    Layout (one flat folder)::

        image_<id>.nii.gz   float64 MR volume, (256, 256, S), axial = last stored axis, orientation LAS
        label_<id>.nii.gz   float64 holding integers 0..4 on the same grid:
                            0 background, 1 liver, 2 right kidney, 3 left kidney, 4 spleen

    Case = one patient (id and group = the number in the file name, e.g. '1'); ids sort numerically.

    Option `label_map`: 'paper' (default; RadImageGAN's CHAOS-MRI task) -> 0 background, 1 liver,
    2 kidney (right + left merged), spleen -> background; 'original' keeps 0..4.

    Volumes come out (Z, Y, X), axial first in LPS order (radgan_jax.data.volume): the LAS files are flipped
    front-to-back so that row 0 is anterior. Problems: image without label (or the reverse), two files for one
    id, label grid different from the image, label values that are not integers in 0..4, unreadable files.
    """

    name = "chaos_nifti"
    task = "segmentation"
    spatial_dims = 3
    label_names = PAPER_LABELS
    paper_size = 512

    def __init__(self, root: str | Path, label_map: str = "paper", **options: Any):
        super().__init__(root, label_map=label_map, **options)
        self.label_names, self._mapping = _label_map(label_map, self.name)

    @classmethod
    def detect(cls, root: Path) -> bool:
        root = Path(root)
        names = [p.name for p in root.iterdir()] if root.is_dir() else []
        return any(_NII_IMAGE.match(n) for n in names) and any(_NII_LABEL.match(n) for n in names)

    def scan(self) -> tuple[list[Item], list[DataError]]:
        images, labels = _numbered(self.root, _NII_IMAGE), _numbered(self.root, _NII_LABEL)
        problems: list[DataError] = []
        for found in (images, labels):
            for pid, paths in found.items():
                for extra in paths[1:]:
                    problems.append(DataError(extra, f"patient {pid} already given by {paths[0].name}",
                                              "duplicate_id"))
        items = []
        for pid in sorted(images, key=int):
            if pid not in labels:
                problems.append(DataError(images[pid][0], f"no label_{pid}.nii.gz next to this image", "layout"))
                continue
            items.append(Item(pid, (images[pid][0], labels[pid][0]), group=pid))
        for pid in sorted(set(labels) - set(images), key=int):
            problems.append(DataError(labels[pid][0], f"no image_{pid}.nii.gz next to this label", "layout"))
        if not images and not labels:
            problems.append(DataError(self.root, "no image_<id>.nii.gz / label_<id>.nii.gz files", "layout"))
        return items, problems

    def load(self, item: Item) -> Case:
        image_path, label_path = item.files
        image, labels = load_nifti_pair(image_path, label_path, range(len(ORIGINAL_LABELS)))
        return _case(item, image.array, labels, image.spacing, self, label_path, self._mapping,
                     orientation="".join(image.source_axcodes))


# --------------------------------------------------------------------------------------------- DICOM release
def _mr_dir(root: Path) -> Path | None:
    """The CHAOS `MR` folder (patients 1, 2, 3, ... inside): root/Train_Sets/MR, root/MR or root itself."""
    for cand in (root / "Train_Sets" / "MR", root / "CHAOS_Train_Sets" / "Train_Sets" / "MR", root / "MR", root):
        if cand.is_dir() and any((p / "T2SPIR" / "DICOM_anon").is_dir() for p in cand.iterdir() if p.is_dir()):
            return cand
    return None


def _visible(folder: Path, suffix: str) -> list[Path]:
    # '._name' files are macOS resource forks that zip tools leave next to the real ones (CHAOS-evaluation skips them).
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")
                  and p.suffix.lower() == suffix)


def _pair_slices(patient: Path) -> list[tuple[Path, Path]]:
    """(DICOM, mask PNG) per slice of T2SPIR, matched by file stem; DataError on missing/extra mask slices."""
    dicom_dir, ground_dir = patient / "T2SPIR" / "DICOM_anon", patient / "T2SPIR" / "Ground"
    if not dicom_dir.is_dir():
        raise DataError(patient / "T2SPIR", "no DICOM_anon folder", "layout")
    if not ground_dir.is_dir():
        raise DataError(patient / "T2SPIR", "no Ground folder with the mask PNGs", "layout")
    dicoms = {p.stem: p for p in _visible(dicom_dir, ".dcm")}
    masks = {p.stem: p for p in _visible(ground_dir, ".png")}
    if not dicoms:
        raise DataError(dicom_dir, "no .dcm files", "layout")
    missing = sorted(set(dicoms) - set(masks))
    if missing:
        raise DataError(ground_dir, f"{len(missing)} slice(s) have no mask PNG: {', '.join(missing[:5])}",
                        "layout")
    extra = sorted(set(masks) - set(dicoms))
    if extra:
        raise DataError(ground_dir / f"{extra[0]}.png", f"{len(extra)} mask PNG(s) without a DICOM slice in "
                                                        f"{dicom_dir}: {', '.join(extra[:5])}", "layout")
    return [(dicoms[s], masks[s]) for s in sorted(dicoms)]


def grey_to_labels(grey: np.ndarray, path: Path) -> np.ndarray:
    """A CHAOS Ground PNG (grey levels) -> 0 background, 1 liver, 2 right kidney, 3 left kidney, 4 spleen."""
    if grey.ndim == 3:  # a few tools save grey masks as RGB(A); equal channels only
        if not np.all(grey[..., :3] == grey[..., :1]):
            raise DataError(path, "mask PNG is colour; CHAOS masks are grey levels", "label_values")
        grey = grey[..., 0]
    labels = np.zeros(grey.shape, np.int32)
    known = grey == 0
    for lo, hi, value in GREY_RANGES:
        sel = (grey >= lo) & (grey <= hi)
        labels[sel] = value
        known |= sel
    if not known.all():
        bad = np.unique(grey[~known])[:10].tolist()
        raise DataError(path, f"mask grey levels {bad} are outside the CHAOS ones (0; liver 55-70, right kidney "
                              f"110-135, left kidney 175-200, spleen 240-255)", "label_values")
    return labels


class ChaosDicomReader(Reader):
    """CHAOS MR T2-SPIR, the original challenge release (CHAOS_Train_Sets.zip, zenodo 3431873).

    Layout (root = the folder holding Train_Sets, or Train_Sets, or Train_Sets/MR)::

        Train_Sets/MR/<patient>/T2SPIR/DICOM_anon/IMG-0002-00001.dcm ...   one DICOM per axial slice
        Train_Sets/MR/<patient>/T2SPIR/Ground/IMG-0002-00001.png ...       one mask PNG per slice, same stem

    Masks are grey levels 63 liver, 126 right kidney, 189 left kidney, 252 spleen (read by the challenge's
    ranges 55-70, 110-135, 175-200, 240-255), 0 background. T1DUAL and CT folders are not read.

    Case = one patient (id and group = the patient folder name). Slices are ordered along the slice normal by
    ImagePositionPatient (InstanceNumber when positions are missing), each mask following its DICOM;
    spacing (z, y, x) mm from the slice positions and PixelSpacing. In-plane, the stored pixel grid is kept
    (rows = y, columns = x): the masks are drawn on it, and CHAOS series are acquired axially.

    Option `label_map`: 'paper' (default) -> 0 background, 1 liver, 2 kidney (right + left), spleen ->
    background; 'original' -> 0 background, 1 liver, 2 right kidney, 3 left kidney, 4 spleen (the same sets as
    `chaos_nifti`).

    Problems: patient without T2SPIR/DICOM_anon or Ground, slices without a mask PNG or masks without a slice,
    DICOM without pixel data or unreadable, slices of different sizes, uneven slice positions (missing slice),
    mask size different from its slice, grey levels outside the documented ones.
    """

    name = "chaos_dicom"
    task = "segmentation"
    spatial_dims = 3
    label_names = PAPER_LABELS
    paper_size = 512

    def __init__(self, root: str | Path, label_map: str = "paper", **options: Any):
        super().__init__(root, label_map=label_map, **options)
        self.label_names, self._mapping = _label_map(label_map, self.name)
        mr = _mr_dir(self.root)
        if mr is None:
            raise DataError(self.root, "not a CHAOS layout: expected Train_Sets/MR/<patient>/T2SPIR/DICOM_anon",
                            "layout")
        self.mr_dir = mr

    @classmethod
    def detect(cls, root: Path) -> bool:
        return _mr_dir(Path(root)) is not None

    def scan(self) -> tuple[list[Item], list[DataError]]:
        items, problems = [], []
        patients = [p for p in self.mr_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        for patient in sorted(patients, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit()
                                                        else 0, p.name)):
            if not (patient / "T2SPIR").is_dir():
                problems.append(DataError(patient, "patient folder has no T2SPIR sequence", "layout"))
                continue
            try:
                pairs = _pair_slices(patient)
            except DataError as e:
                problems.append(e)
                continue
            files = tuple(p for pair in pairs for p in pair)
            items.append(Item(patient.name, files, group=patient.name))
        return items, problems

    def load(self, item: Item) -> Case:
        pairs = _pair_slices(self.mr_dir / item.id)
        dicom_paths = [d for d, _ in pairs]
        datasets = [read_dicom(p) for p in dicom_paths]
        first = datasets[0].pixel_array.shape
        for path, ds in zip(dicom_paths, datasets):
            if ds.pixel_array.ndim != 2 or ds.pixel_array.shape != first:
                raise DataError(path, f"slice pixel array {ds.pixel_array.shape} is not 2D or differs from "
                                      f"{dicom_paths[0].name} {first}", "size_mismatch")
        order, z_spacing = dicom_slice_order(datasets, dicom_paths)
        image = np.stack([dicom_pixels(datasets[i]) for i in order])
        labels = np.empty(image.shape, np.int32)
        for z, i in enumerate(order):
            mask_path = pairs[i][1]
            grey = read_image(mask_path)
            if grey.shape[:2] != image.shape[1:]:
                raise DataError(mask_path, f"mask size {grey.shape[:2]} differs from its slice "
                                           f"{dicom_paths[i].name} size {image.shape[1:]}", "size_mismatch")
            labels[z] = grey_to_labels(grey, mask_path)
        spacing = dicom_spacing(datasets, z_spacing, dicom_paths[0])
        return _case(item, image, labels, spacing, self, pairs[0][1].parent, self._mapping,
                     slice_files=[dicom_paths[i].name for i in order])
