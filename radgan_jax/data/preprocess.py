"""The paper's preprocessing as pure functions (numpy + Pillow): segmentation resize, CT window / MR intensity
scaling, and the GAN dataset transform of StyleGAN-XL's official `dataset_tool.py`.

Segmentation (the paper's downstream tasks): every 2D image is resized to size x size (BTCV, CHAOS,
CVC-ClinicDB 512; Lumbar Spine 320) - the image with a smooth filter, the mask by nearest neighbour.

GAN datasets: intensity -> uint8, crop/resize to a square power-of-two resolution with PIL LANCZOS (what the
official dataset tool does), grayscale -> 3 identical channels; training sees x / 127.5 - 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from radgan_jax.data.base import Case

# Soft-tissue (abdomen) CT window: level 40 HU, width 400 HU, i.e. -160 .. +240 HU are mapped to black .. white
# (radiology.expert, "Hounsfield units": "the soft tissue setting generally has a window level of 40 and a
# window width of 400").
CT_LEVEL, CT_WIDTH = 40.0, 400.0
TRANSFORMS = ("center-crop", "center-crop-wide", "stretch")


def _resize_channel(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One float32 (H, W) channel -> (h, w) with PIL BICUBIC in 32-bit float ('F' mode: no 8-bit rounding)."""
    h, w = size
    return np.asarray(Image.fromarray(np.ascontiguousarray(x, np.float32)).resize((w, h), Image.BICUBIC))


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    # Pixel-centre alignment, the same geometry PIL uses for the image: source = floor((i + 0.5) * n_in / n_out).
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map (H, W) -> size=(h, w) by indexing: no value is ever created, and
    upsampling keeps every label (each source pixel is hit at least once)."""
    rows, cols = _nearest_index(mask.shape[0], size[0]), _nearest_index(mask.shape[1], size[1])
    return mask[rows[:, None], cols[None, :]]


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Smooth resize of (H, W) or (H, W, C) -> size=(h, w), any dtype; float stays float, integers are rounded
    and clipped to their dtype's range (bicubic overshoots at edges)."""
    if image.shape[:2] == tuple(size):
        return image.copy()
    x = image.astype(np.float32)
    out = (np.stack([_resize_channel(x[..., c], size) for c in range(x.shape[-1])], axis=-1) if x.ndim == 3
           else _resize_channel(x, size))
    if np.issubdtype(image.dtype, np.floating):
        return out.astype(image.dtype)
    if image.dtype == np.bool_:
        return out >= 0.5
    info = np.iinfo(image.dtype)
    return np.clip(np.rint(out), info.min, info.max).astype(image.dtype)


def paper_resize(image: np.ndarray, mask: np.ndarray | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The paper's segmentation preprocessing: image and mask to size x size.

    The image uses bicubic interpolation (Pillow, float32 internally; antialiased when shrinking): a smooth
    third-order filter, the same order nnU-Net uses to resample images (its masks get nearest/linear), so
    intensities are not blocky after the 288x384 -> 512 upscaling of CVC-ClinicDB. The mask uses nearest
    neighbour, so it only holds values it held before (every one of them when upsampling).
    """
    if image.ndim not in (2, 3):
        raise ValueError(f"paper_resize expects a 2D image (H, W) or (H, W, C), got shape {image.shape}")
    if mask is not None and mask.shape[:2] != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape}")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    target = (int(size), int(size))
    return resize_image(image, target), None if mask is None else resize_mask(mask, target)


def resize_case(case: Case, size: int) -> Case:
    """`paper_resize` for a Case: a 2D image, or every axial slice of a volume (in-plane only); the spacing is
    scaled so that the physical extent stays the same."""
    if case.is_volume:
        pairs = [paper_resize(case.image[z], None if case.mask is None else case.mask[z], size)
                 for z in range(case.image.shape[0])]
        image = np.stack([p[0] for p in pairs])
        mask = None if case.mask is None else np.stack([p[1] for p in pairs])
        in_plane = case.image.shape[1:3]
    else:
        image, mask = paper_resize(case.image, case.mask, size)
        in_plane = case.image.shape[:2]
    spacing = case.spacing
    if spacing is not None:
        lead = tuple(spacing[:-2])
        spacing = lead + tuple(float(s) * n / size for s, n in zip(spacing[-2:], in_plane, strict=True))
    return dataclasses.replace(case, image=image, mask=mask, spacing=spacing,
                               meta=dict(case.meta, resized_from=tuple(int(n) for n in in_plane)))


def window_ct(hu: np.ndarray, level: float = CT_LEVEL, width: float = CT_WIDTH) -> np.ndarray:
    """CT in Hounsfield units -> float32 in [0, 1]: level - width/2 is 0, level + width/2 is 1, clipped."""
    if width <= 0:
        raise ValueError(f"CT window width must be positive, got {width}")
    lo = level - width / 2.0
    return np.clip((np.asarray(hu, np.float32) - lo) / np.float32(width), 0.0, 1.0).astype(np.float32)


def scale_intensity(image: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Robust min-max for MR (arbitrary units): the given percentiles -> 0 and 1, clipped; float32 [0, 1].
    A constant image maps to zeros."""
    x = np.asarray(image, np.float32)
    lo, hi = np.percentile(x, percentiles)
    if not hi > lo:
        return np.zeros_like(x, np.float32)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def to_uint8(x01: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 (rounded, clipped)."""
    return np.clip(np.rint(np.asarray(x01, np.float32) * 255.0), 0, 255).astype(np.uint8)


def to_unit_range(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-1, 1], x / 127.5 - 1 as StyleGAN-XL's training loop feeds real images."""
    return np.asarray(images_uint8, np.float32) / np.float32(127.5) - np.float32(1.0)


def _intensity_uint8(image: np.ndarray, modality: str, window: tuple[float, float] | None) -> np.ndarray:
    if window is not None:
        return to_uint8(window_ct(image, *window))
    if modality.upper() == "CT":
        return to_uint8(window_ct(image))
    if image.dtype == np.uint8:
        return image
    return to_uint8(scale_intensity(image))


def _alpha_on_white(rgba: np.ndarray) -> np.ndarray:
    # As the official dataset tool's png_to_rgb: paste the RGBA image on a white background.
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.rint(rgba[..., :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)


def _lanczos(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.LANCZOS))


def _square(img: np.ndarray, resolution: int, transform: str) -> np.ndarray:
    h, w = img.shape[:2]
    if transform == "stretch":  # dataset_tool.py without --transform: scale to WxH, aspect ratio ignored
        return _lanczos(img, (resolution, resolution))
    if transform == "center-crop" or (transform == "center-crop-wide" and h >= w):
        # dataset_tool.py center_crop: the central min(H, W) square, then LANCZOS to the resolution.
        crop = min(h, w)
        img = img[(h - crop) // 2:(h + crop) // 2, (w - crop) // 2:(w + crop) // 2]
        return _lanczos(img, (resolution, resolution))
    # center-crop-wide for a landscape image, as dataset_tool.py with --resolution=R x round(R*H/W): the whole
    # width kept, resized to that height and letterboxed (black bars) in the R x R canvas. Portrait images
    # (above) fall back to center-crop since a taller-than-wide band cannot fit the square canvas.
    band = max(1, int(np.round(resolution * h / w)))
    canvas = np.zeros((resolution, resolution) + img.shape[2:], np.uint8)
    top = (resolution - band) // 2
    canvas[top:top + band] = _lanczos(img, (band, resolution))
    return canvas


def gan_preprocess(image: np.ndarray, resolution: int, *, modality: str = "auto",
                   window: tuple[float, float] | None = None, transform: str = "center-crop") -> np.ndarray:
    """One image -> the uint8 (resolution, resolution, 3) array a GAN dataset stores.

    Intensity: uint8 input is kept; CT (modality 'CT', or an explicit (level, width) `window`) is windowed with
    `window_ct`; any other float/uint16 input is robustly min-max scaled (`scale_intensity`). Geometry follows
    StyleGAN-XL's dataset_tool.py `--transform`: 'center-crop' (default), 'center-crop-wide', or 'stretch' (no
    transform); resizing is PIL LANCZOS like the official tool. Grayscale becomes 3 identical channels, RGBA
    is composited on white.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; valid: {', '.join(TRANSFORMS)}")
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] not in (3, 4)):
        raise ValueError(f"gan_preprocess expects (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {img.shape}")
    img = _intensity_uint8(img, modality, window)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = _alpha_on_white(img)
    img = _square(np.ascontiguousarray(img), int(resolution), transform)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img, np.uint8)
