"""Polyp segmentation sets stored as an image folder plus a mask folder paired by file name: CVC-ClinicDB here,
Kvasir-SEG (`kvasir_seg.py`) on the same base. Masks are greyscale drawings with anti-aliased edges, so the
declared labels {0: background, 1: polyp} come from thresholding: foreground = grey value > 127.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from radgan_jax.data.base import Case, DataError, Item, Reader
from radgan_jax.data.io import IMAGE_SUFFIXES, is_image_file, read_image

# Foreground = grey > 127: the masks hold anti-aliased values between 0 and 255 (CVC-ClinicDB README in
# shared/data: 114 distinct values in 138 of 612 masks), the midpoint splits them.
MASK_THRESHOLD = 127
_IGNORED = {"thumbs.db", "desktop.ini"}


def read_rgb_or_grey(path: Path, mode: str) -> np.ndarray:
    """`read_image(path, mode)` for mode 'RGB' or 'L', with a tifffile fallback for TIFFs Pillow refuses.

    The CVC-ClinicDB release TIFFs tag the RGB frames as photometric 'BlackIsZero' with 3 samples per pixel,
    which Pillow rejects ("unknown pixel mode"); tifffile returns the samples as stored (pixel-identical to
    the PNG copy, shared/data/CVC-ClinicDB-tif-sample/README.md).
    """
    try:
        return read_image(path, mode)
    except DataError as e:
        if e.kind != "not_image" or path.suffix.lower() not in (".tif", ".tiff"):
            raise
    try:
        import tifffile
    except ImportError:
        raise DataError(path, "Pillow cannot decode this TIFF and the fallback reader tifffile is not installed "
                              "(pip install tifffile)", "not_image") from None
    log = logging.getLogger("tifffile")
    was_disabled, log.disabled = log.disabled, True  # its log lines would duplicate our DataError
    try:
        arr = np.asarray(tifffile.imread(path))
    except Exception as e:  # tifffile raises TiffFileError, ValueError, struct.error ... on broken files
        raise DataError(path, f"corrupt TIFF ({type(e).__name__}: {e})", "corrupt") from None
    finally:
        log.disabled = was_disabled
    if arr.size == 0:  # tifffile logs and returns nothing when the directory (IFD) lies past a truncated end
        raise DataError(path, "corrupt or truncated TIFF (no readable image directory)", "corrupt")
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise DataError(path, f"unsupported TIFF pixel layout {arr.shape} {arr.dtype} (expected 8-bit grey or "
                              "RGB)", "not_image")
    if arr.ndim == 3:
        arr = arr[..., :3]
    from PIL import Image

    if mode == "RGB" and arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "L" and arr.ndim == 3:
        return np.asarray(Image.fromarray(arr, "RGB").convert("L"))
    return arr


def _stem_key(stem: str) -> tuple[int, int | str]:
    """Numeric stems in numeric order (1, 2, ..., 612), others after them alphabetically."""
    return (0, int(stem)) if stem.isdigit() else (1, stem)


class PairedMaskReader(Reader):
    """Base of `<image folder>/X.ext` + `<mask folder>/X.ext` layouts with binary masks after thresholding."""

    task = "segmentation"
    label_names: ClassVar[dict[int, str]] = {0: "background", 1: "polyp"}
    image_dirs: ClassVar[tuple[str, ...]] = ()   # accepted image folder names, first found wins
    mask_dirs: ClassVar[tuple[str, ...]] = ()
    layout_line: ClassVar[str] = ""              # one-line layout for error messages

    @classmethod
    def _find(cls, root: Path, names: tuple[str, ...]) -> Path | None:
        return next((root / n for n in names if (root / n).is_dir()), None)

    @classmethod
    def detect(cls, root: Path) -> bool:
        return cls._find(root, cls.image_dirs) is not None and cls._find(root, cls.mask_dirs) is not None

    def _files(self, folder: Path, problems: list[DataError]) -> dict[str, Path]:
        """stem -> file for the images of one folder; folders, non-images and repeated stems are problems."""
        out: dict[str, Path] = {}
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".") or p.name.lower() in _IGNORED:
                continue
            if p.is_dir():
                problems.append(DataError(p, "a folder where an image is expected", "layout"))
            elif not is_image_file(p):
                problems.append(DataError(p, f"not an image file (expected {', '.join(IMAGE_SUFFIXES)})",
                                          "not_image"))
            elif p.stem in out:
                problems.append(DataError(p, f"duplicate id {p.stem!r}: {out[p.stem].name} has the same name stem",
                                          "duplicate_id"))
            else:
                out[p.stem] = p
        return out

    def scan(self) -> tuple[list[Item], list[DataError]]:
        img_dir, mask_dir = self._find(self.root, self.image_dirs), self._find(self.root, self.mask_dirs)
        problems: list[DataError] = []
        if img_dir is None or mask_dir is None:
            missing = " or ".join(repr(n) for n in (self.image_dirs if img_dir is None else self.mask_dirs))
            return [], [DataError(self.root, f"missing folder {missing} (layout: {self.layout_line})", "layout")]
        images, masks = self._files(img_dir, problems), self._files(mask_dir, problems)
        items = []
        for stem in sorted(images.keys() | masks.keys(), key=_stem_key):
            if stem not in masks:
                problems.append(DataError(images[stem], f"image has no mask (expected {mask_dir.name}/{stem}.*)",
                                          "layout"))
            elif stem not in images:
                problems.append(DataError(masks[stem], f"mask has no image (expected {img_dir.name}/{stem}.*)",
                                          "layout"))
            else:
                items.append(Item(stem, (images[stem], masks[stem])))
        return items, problems

    def load(self, item: Item) -> Case:
        image_path, mask_path = item.files
        image = read_rgb_or_grey(image_path, "RGB")
        raw = read_rgb_or_grey(mask_path, "L")  # RGB/palette masks (Kvasir-SEG JPEGs) reduce to their grey value
        if raw.shape != image.shape[:2]:
            raise DataError(mask_path, f"mask size {raw.shape[1]}x{raw.shape[0]} (WxH) differs from image "
                                       f"{image_path.name} size {image.shape[1]}x{image.shape[0]}", "size_mismatch")
        mask = (raw > MASK_THRESHOLD).astype(np.uint8)
        meta: dict[str, Any] = {"image_path": str(image_path), "mask_path": str(mask_path),
                                "mask_threshold": MASK_THRESHOLD}
        return Case(item.id, image, mask, None, item.group, None, meta)


class CVCClinicDBReader(PairedMaskReader):
    """CVC-ClinicDB (Bernal et al., CMIG 2015): 612 colonoscopy frames with polyp masks.

        root/
          Original/1.tif ... 612.tif        RGB frames (the release; a lossless PNG copy works too)
          Ground Truth/1.tif ... 612.tif    greyscale masks ('GroundTruth' is accepted too)

    Image and mask pair by file name (stem); any of .tif .tiff .png .jpg .bmp. Case: image RGB uint8
    (H, W, 3), mask uint8 {0: background, 1: polyp} = (grey value > 127) - the masks hold anti-aliased edge
    values. Group: None (patients/sequences are not encoded in the file names; the paper split by image).
    Problems: an image without mask or a mask without image ('layout'), non-image files ('not_image'),
    sub-folders ('layout'), repeated stems ('duplicate_id'); on load, a mask whose size differs from its
    image ('size_mismatch') and unreadable/truncated files ('corrupt'). Ids are the stems in numeric order.
    """

    name = "cvc_clinicdb"
    paper_size = 512   # the paper resized CVC-ClinicDB frames to 512 x 512 for the gastro generator
    image_dirs = ("Original",)
    mask_dirs = ("Ground Truth", "GroundTruth")
    layout_line = "root/Original/N.tif + root/Ground Truth/N.tif"
