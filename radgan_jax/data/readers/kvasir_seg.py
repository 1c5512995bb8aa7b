"""Kvasir-SEG reader: the polyp images/masks pairing of `cvc_clinicdb.PairedMaskReader` with Kvasir-SEG's
folder names."""

from __future__ import annotations

from radgan_jax.data.readers.cvc_clinicdb import PairedMaskReader


class KvasirSEGReader(PairedMaskReader):
    """Kvasir-SEG (Jha et al., MMM 2020): 1000 colonoscopy polyp images with masks.

        root/
          images/<id>.jpg     RGB frames of varying size (e.g. cju0qkwl35piu0993l0dewei2.jpg)
          masks/<id>.jpg      mask of the same name and size, JPEG (grey or RGB)
          kavsir_bboxes.json  (ignored)

    Image and mask pair by stem (any of .jpg .jpeg .png .tif .bmp). Case: image RGB uint8 (H, W, 3), mask uint8
    {0: background, 1: polyp} = (grey value > 127): JPEG compression leaves values around 0 and 255, the
    midpoint separates them. Group: None. Problems as for CVC-ClinicDB: unpaired image or mask ('layout'),
    non-image files ('not_image'), sub-folders ('layout'), repeated stems ('duplicate_id'); on load a mask
    of another size ('size_mismatch') and truncated files ('corrupt'). Ids: the stems, sorted.
    """

    name = "kvasir_seg"
    image_dirs = ("images",)
    mask_dirs = ("masks",)
    layout_line = "root/images/ID.jpg + root/masks/ID.jpg"
