"""File readers shared by every layout reader. Each one raises `DataError` naming the file and the problem
(truncated, not an image, no pixel data, bad header ...) instead of letting a library traceback through.

Images go through Pillow (PNG, JPEG, TIFF, BMP) with `load()` forced, so truncated files fail here and not
later; NIfTI through nibabel (header + data read, so a corrupted header or truncated gzip fails here); DICOM
through pydicom (pixel data required).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from radgan_jax.data.base import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # Pillow modes with more than 8 bits
_8BIT_MODES = ("L", "LA", "RGB", "RGBA", "P", "1")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_nifti_file(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(path, "file does not exist", "unreadable")
    if path.is_dir():
        raise DataError(path, "expected a file, found a directory", "layout")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)", "corrupt")


def read_image(path: str | Path, mode: str | None = None) -> np.ndarray:
    """2D image -> uint8/uint16 array (H, W) or (H, W, C). `mode` converts ('L', 'RGB') like PIL."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()  # force decoding: truncated data fails here
                if mode is not None and im.mode != mode:
                    if im.mode in _WIDE_MODES and mode in _8BIT_MODES:
                        # Pillow would clip 16-bit/float values to 255 (an all-white image, silently).
                        raise DataError(path, f"{im.mode} image where an 8-bit {mode} image is expected (no "
                                              f"documented intensity mapping for this format)", "not_image")
                    im = im.convert(mode)
                arr = np.asarray(im)
    except UnidentifiedImageError:
        raise DataError(path, "not an image file Pillow can read (unknown or corrupt format)", "not_image") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as e:
        raise DataError(path, f"corrupt or truncated image ({type(e).__name__}: {e})", "corrupt") from None
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise DataError(path, f"unexpected image array shape {arr.shape}", "corrupt")
    return arr


def read_nifti(path: str | Path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """NIfTI -> (data as stored (X, Y, Z[, ...]), voxel sizes, affine). Raises DataError on any problem."""
    import nibabel as nib

    path = Path(path)
    _check_file(path)
    log = logging.getLogger("nibabel")
    level = log.level
    log.setLevel(logging.CRITICAL)  # its header-fix chatter would duplicate our DataError
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms()[: data.ndim])
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as e:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, ValueError ...)
        raise DataError(path, f"corrupt NIfTI file ({type(e).__name__}: {e})", "corrupt") from None
    finally:
        log.setLevel(level)
    if data.size == 0 or not np.all(np.isfinite(zooms)) or min(zooms, default=0) <= 0:
        raise DataError(path, f"corrupt NIfTI header (shape {data.shape}, voxel sizes {zooms})", "corrupt")
    return data, zooms, affine


def read_dicom(path: str | Path):
    """DICOM -> pydicom Dataset with pixel data decoded (`ds.pixel_array`), or DataError."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    _check_file(path)
    try:
        ds = pydicom.dcmread(str(path))
    except InvalidDicomError as e:
        raise DataError(path, f"not a DICOM file ({e})", "not_image") from None
    except Exception as e:
        raise DataError(path, f"corrupt DICOM file ({type(e).__name__}: {e})", "corrupt") from None
    if "PixelData" not in ds:
        raise DataError(path, "DICOM file has no pixel data", "corrupt")
    try:
        ds.pixel_array  # noqa: B018 - decode now so errors are reported here
    except Exception as e:
        raise DataError(path, f"DICOM pixel data cannot be decoded ({type(e).__name__}: {e})", "corrupt") from None
    return ds
