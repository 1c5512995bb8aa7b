"""3D helpers shared by the volume readers: one voxel order for every format, label checks, slice stacking.

Every volume leaves here as a (Z, Y, X) array, axial slices first (the nnU-Net / SimpleITK order), in the
DICOM/ITK LPS convention: X runs patient right -> left, Y anterior -> posterior, Z inferior -> superior. So
`volume[z]` shown with row 0 at the top is the usual radiological axial view (anterior up, patient's right
on the left of the screen), whatever orientation the file was stored in. The orientation comes from the NIfTI
affine (nibabel's `io_orientation`), not from the header's voxel order, so LAS, RAS, LPS ... files agree.
Spacing is (z, y, x) in mm, read from the affine's column norms after reordering.

DICOM series are stacked here too: slices sorted along the slice normal (ImagePositionPatient projected on
the ImageOrientationPatient cross product, InstanceNumber when positions are missing), z spacing from the
positions, rescale slope/intercept applied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from radgan_jax.data.base import DataError
from radgan_jax.data.io import read_nifti

TARGET_AXCODES = ("L", "P", "S")  # LPS: the DICOM / ITK patient frame
SPACING_RTOL = 1e-3               # image and label grids must agree to 0.1 % (float32 header round-off)


@dataclasses.dataclass
class Volume:
    """A volume in (Z, Y, X) LPS order with its (z, y, x) spacing in mm and the stored orientation codes."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    source_axcodes: tuple[str, ...]     # orientation of the file as stored, e.g. ('L', 'A', 'S')
    path: Path


def to_zyx(data: np.ndarray, affine: np.ndarray, path: Path) -> tuple[np.ndarray, tuple[float, float, float],
                                                                     tuple[str, ...]]:
    """Stored NIfTI data (i, j, k) + affine -> ((Z, Y, X) LPS array, (z, y, x) spacing, stored axcodes)."""
    import nibabel.orientations as nio

    if data.ndim > 3:  # (X, Y, Z, 1) files exist; a real 4th dimension is not a single volume
        extra = data.shape[3:]
        if any(s != 1 for s in extra):
            raise DataError(path, f"expected a 3D volume, found shape {data.shape} (a 4D series?)", "corrupt")
        data = data.reshape(data.shape[:3])
    if data.ndim != 3:
        raise DataError(path, f"expected a 3D volume, found shape {data.shape}", "corrupt")
    try:
        ornt = nio.io_orientation(affine)
        axcodes = tuple(nio.ornt2axcodes(ornt))
        transform = nio.ornt_transform(ornt, nio.axcodes2ornt(TARGET_AXCODES))
    except Exception as e:  # singular or NaN affine
        raise DataError(path, f"corrupt NIfTI orientation (affine {affine.tolist()}: {e})", "corrupt") from None
    if None in axcodes:
        raise DataError(path, f"NIfTI affine has no usable orientation: {affine.tolist()}", "corrupt")
    column_mm = np.linalg.norm(affine[:3, :3], axis=0)
    spacing_xyz = [0.0, 0.0, 0.0]
    for src_axis, (dst_axis, _flip) in enumerate(transform):
        spacing_xyz[int(dst_axis)] = float(column_mm[src_axis])
    lps = nio.apply_orientation(np.asarray(data), transform)       # (X, Y, Z) in L, P, S directions
    zyx = np.ascontiguousarray(np.transpose(lps, (2, 1, 0)))
    return zyx, (spacing_xyz[2], spacing_xyz[1], spacing_xyz[0]), axcodes


def load_nifti_volume(path: str | Path) -> Volume:
    """Read a NIfTI file (DataError naming it on any problem) and reorder it to (Z, Y, X) LPS."""
    path = Path(path)
    data, _zooms, affine = read_nifti(path)
    array, spacing, axcodes = to_zyx(data, affine, path)
    return Volume(array, spacing, axcodes, path)


def check_same_grid(image: Volume, label: Volume) -> None:
    """DataError on the label file if its shape or spacing differs from the image's."""
    if image.array.shape != label.array.shape:
        raise DataError(label.path, f"label shape (z, y, x) {label.array.shape} differs from image "
                                    f"{image.path.name} shape {image.array.shape}", "size_mismatch")
    if not np.allclose(image.spacing, label.spacing, rtol=SPACING_RTOL, atol=1e-4):
        raise DataError(label.path, f"label spacing (z, y, x) {_mm(label.spacing)} mm differs from image "
                                    f"{image.path.name} spacing {_mm(image.spacing)} mm", "spacing_mismatch")


def load_nifti_pair(image_path: Path, label_path: Path, valid: Sequence[int]) -> tuple[Volume, np.ndarray]:
    """An image/label NIfTI pair on one grid: (image volume, int32 labels checked against `valid`)."""
    image = load_nifti_volume(image_path)
    label = load_nifti_volume(label_path)
    check_same_grid(image, label)
    return image, integer_labels(label.array, label.path, valid)


def image_array(array: np.ndarray) -> np.ndarray:
    """Volume intensities as int16 when they are integers that fit (CT HU, raw MR), else float32."""
    if np.issubdtype(array.dtype, np.integer):
        if array.size and array.min() >= np.iinfo(np.int16).min and array.max() <= np.iinfo(np.int16).max:
            return array.astype(np.int16, copy=False)
        return array.astype(np.float32)
    return array.astype(np.float32, copy=False)


def integer_labels(array: np.ndarray, path: Path, valid: Sequence[int]) -> np.ndarray:
    """A label array (often stored as float) -> int32, DataError('label_values') if a voxel is not one of
    `valid` (non-integer values included)."""
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            raise DataError(path, f"label volume holds {int((~finite).sum())} NaN/inf voxels", "label_values")
        rounded = np.rint(array)
        off = np.abs(array - rounded) > 1e-3
        if off.any():
            examples = np.unique(array[off])[:5].tolist()
            raise DataError(path, f"label volume holds non-integer values (e.g. {examples}) in {int(off.sum())} "
                                  f"voxels; expected integers {sorted(valid)}", "label_values")
        array = rounded
    elif not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
        raise DataError(path, f"label volume has non-numeric dtype {array.dtype}", "label_values")
    labels = array.astype(np.int32)
    extra = sorted(set(np.unique(labels).tolist()) - set(valid))
    if extra:
        raise DataError(path, f"label volume holds values {extra[:10]} outside the documented set "
                              f"{sorted(valid)}", "label_values")
    return labels


LABEL_MAPS = ("paper", "original")


def choose_label_map(reader: str, label_map: str, paper: tuple[dict[int, str], dict[int, int]],
                     original: dict[int, str]) -> tuple[dict[int, str], dict[int, int] | None]:
    """(declared label names, remapping or None) for a reader's `label_map` option: 'paper' (RadImageGAN's
    liver/kidney task: `paper` = (names, original value -> paper value)) or 'original' (values kept)."""
    if label_map not in LABEL_MAPS:
        raise ValueError(f"{reader}: unknown label_map {label_map!r}; valid: {', '.join(LABEL_MAPS)}")
    return paper if label_map == "paper" else (original, None)


def remap(labels: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """Relabel with a lookup table (values missing from `mapping` -> 0) as uint8. `labels` must be >= 0."""
    size = max(int(labels.max(initial=0)), max(mapping, default=0)) + 1
    lut = np.zeros(size, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut[labels]


def slices_with_label(mask: np.ndarray, value: int) -> np.ndarray:
    """Axial indices z of a (Z, Y, X) mask whose slice contains `value`."""
    return np.flatnonzero((mask == value).reshape(mask.shape[0], -1).any(axis=1))


def axial_slice(volume: np.ndarray, z: int) -> np.ndarray:
    """Slice z of a (Z, Y, X) volume (IndexError names the valid range)."""
    if not -volume.shape[0] <= z < volume.shape[0]:
        raise IndexError(f"slice {z} outside 0..{volume.shape[0] - 1}")
    return volume[z]


# --------------------------------------------------------------------------------------------- DICOM series
def _slice_normal(ds) -> np.ndarray | None:
    iop = getattr(ds, "ImageOrientationPatient", None)
    if iop is None or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    return normal if np.linalg.norm(normal) > 0.5 else None


def dicom_slice_order(datasets: Sequence, paths: Sequence[Path]) -> tuple[list[int], float | None]:
    """Order of a series' slices along the slice normal (ImagePositionPatient), else by InstanceNumber.
    Returns (indices inferior->superior for axial series, z spacing from positions or None)."""
    normal = _slice_normal(datasets[0])
    positions = [getattr(ds, "ImagePositionPatient", None) for ds in datasets]
    if normal is not None and all(p is not None and len(p) == 3 for p in positions):
        dist = np.array([float(np.dot(normal, np.asarray(p, float))) for p in positions])
        order = [int(i) for i in np.argsort(dist, kind="stable")]
        gaps = np.diff(dist[order])
        if len(gaps) and np.any(gaps < 1e-3):
            i = int(np.argmin(gaps))
            raise DataError(paths[order[i + 1]], f"two slices at the same position as {paths[order[i]].name} "
                                                 f"(duplicate slice or mixed series)", "duplicate_id")
        if len(gaps) and np.ptp(gaps) > 0.1 * np.median(gaps):
            i = int(np.argmax(gaps))
            raise DataError(paths[order[i + 1]], f"uneven slice spacing: gap {gaps[i]:.2f} mm before this slice, "
                                                 f"median {np.median(gaps):.2f} mm (missing slice?)",
                            "spacing_mismatch")
        return order, (float(np.median(gaps)) if len(gaps) else None)
    numbers = [getattr(ds, "InstanceNumber", None) for ds in datasets]
    if all(n is not None for n in numbers):
        if len(set(int(n) for n in numbers)) != len(numbers):
            raise DataError(paths[0].parent, "slices share an InstanceNumber and have no ImagePositionPatient",
                            "duplicate_id")
        return sorted(range(len(datasets)), key=lambda i: int(numbers[i])), None
    return sorted(range(len(datasets)), key=lambda i: paths[i].name), None


def dicom_pixels(ds) -> np.ndarray:
    """Stored pixels with RescaleSlope/Intercept applied (int16 when integral and in range, else float32)."""
    arr = ds.pixel_array
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    if slope != 1 or intercept != 0:
        arr = arr.astype(np.float64) * slope + intercept
        if np.all(arr == np.rint(arr)):
            arr = np.rint(arr).astype(np.int32)
    return image_array(arr)


def dicom_spacing(datasets: Sequence, z_from_positions: float | None, path: Path) -> tuple[float, float, float]:
    """(z, y, x) mm: PixelSpacing (row = y, column = x) and the slice positions (SpacingBetweenSlices /
    SliceThickness when positions are missing)."""
    ds = datasets[0]
    ps = getattr(ds, "PixelSpacing", None)
    if ps is None or len(ps) != 2 or min(float(v) for v in ps) <= 0:
        raise DataError(path, f"DICOM has no valid PixelSpacing ({ps})", "corrupt")
    z = z_from_positions
    for tag in ("SpacingBetweenSlices", "SliceThickness"):
        if z is None and getattr(ds, tag, None) not in (None, ""):
            z = float(getattr(ds, tag))
    if z is None or z <= 0:
        raise DataError(path, "cannot tell the slice spacing: no ImagePositionPatient, SpacingBetweenSlices or "
                              "SliceThickness", "corrupt")
    return float(z), float(ps[0]), float(ps[1])


def _mm(spacing: Sequence[float]) -> str:
    return "(" + ", ".join(f"{s:.4g}" for s in spacing) + ")"
