"""PNG writing and image grids (the original's `create_image_grid` layout: width = ceil(sqrt(n)))."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """uint8 HxW, HxWx1 (grayscale) or HxWx3 (RGB) -> PNG."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 pixels, got {image.dtype}")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
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
