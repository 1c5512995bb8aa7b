"""PNG writing and image grids (the original's `create_image_grid` layout: width = ceil(sqrt(n))), plus per-class
grids (one labelled row per class) for the conditional generator's samples."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """uint8 HxW, HxWx1 (grayscale) or HxWx3 (RGB) -> PNG."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 pixels, got {image.dtype}")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(image, "L" if image.ndim == 2 else "RGB").save(path)


def image_grid(images: np.ndarray, grid_w: int | None = None, pad: int = 0) -> np.ndarray:
    """[N, H, W, C] uint8 -> one [gh*H, gw*W, C] mosaic, row-major, black where empty."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"image_grid expects [N, H, W, C], got {images.shape}")
    n, h, w, c = images.shape
    gw = grid_w or max(int(np.ceil(np.sqrt(n))), 1)
    gh = max((n - 1) // gw + 1, 1)
    grid = np.zeros((gh * (h + pad) - pad, gw * (w + pad) - pad, c), images.dtype)
    for i in range(n):
        y, x = divmod(i, gw)
        grid[y * (h + pad): y * (h + pad) + h, x * (w + pad): x * (w + pad) + w] = images[i]
    return grid


def save_grid(path: str | os.PathLike, images: np.ndarray, grid_w: int | None = None) -> None:
    save_png(path, image_grid(images, grid_w))


def class_grid(images: np.ndarray, labels: Sequence[int], class_names: Sequence[str], per_class: int,
               label_pad: int = 4) -> np.ndarray:
    """[N, H, W, C] uint8 + class labels -> [K*H, M + per_class*W, C] mosaic, one row per class.

    Row k holds the first `per_class` images labelled k (in input order) at x = M + j*W, where the left margin
    M (= output width - per_class*W) carries the class name in white, Pillow's default font. Missing images are
    black cells; C = 1 (grey) and C = 3 both work.
    """
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
        raise ValueError(f"class_grid expects uint8 [N, H, W, 1|3], got {images.dtype} {images.shape}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    k = len(class_names)
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must be in [0, {k}), got [{labels.min()}, {labels.max()}]")
    if per_class < 1 or k < 1:
        raise ValueError(f"need per_class >= 1 and at least one class, got {per_class}, {k}")
    _, h, w, c = images.shape

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    boxes = [measure.textbbox((0, 0), str(name), font=font) for name in class_names]
    margin = max(int(b[2] - b[0]) for b in boxes) + 2 * label_pad

    # The margin is drawn as an 'L' image (white text on black) and broadcast to C channels.
    labels_img = Image.new("L", (margin, k * h), 0)
    draw = ImageDraw.Draw(labels_img)
    for row, (name, (l0, t0, _, b0)) in enumerate(zip(class_names, boxes)):
        y = row * h + (h - (b0 - t0)) // 2 - t0  # vertically centred in its row
        draw.text((label_pad - l0, y), str(name), fill=255, font=font)

    grid = np.zeros((k * h, margin + per_class * w, c), np.uint8)
    grid[:, :margin] = np.asarray(labels_img)[..., None]
    for row in range(k):
        for j, idx in enumerate(np.flatnonzero(labels == row)[:per_class]):
            grid[row * h:(row + 1) * h, margin + j * w:margin + (j + 1) * w] = images[idx]
    return grid


def save_class_grid(path: str | os.PathLike, images: np.ndarray, labels: Sequence[int], class_names: Sequence[str],
                    per_class: int) -> None:
    save_png(path, class_grid(images, labels, class_names, per_class))
