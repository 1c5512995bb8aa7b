"""Pillow line plots (plot_curves) and per-class sample grids (class_grid)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from radgan_jax.eval.grids import class_grid, image_grid, save_class_grid
from radgan_jax.eval.plots import PALETTE, linear_ticks, log_ticks, plot_curves


def _colour_mask(path, colour) -> np.ndarray:
    pixels = np.asarray(Image.open(path).convert("RGB"))
    return np.all(pixels == np.array(colour, np.uint8), axis=-1)


def test_curves_png_has_every_series_colour(tmp_path) -> None:
    x = np.linspace(0, 1000, 300)
    series = {"Loss/G": (x, 2 + np.sin(x / 50)), "Loss/D": (x, 1 + np.cos(x / 70)),
              "half-nan": (x, np.where(x > 500, np.nan, 0.5))}
    path = tmp_path / "sub" / "losses.png"
    plot_curves(path, series, "GAN losses", "kimg", "loss", width=640, height=400)
    image = Image.open(path)
    assert image.format == "PNG" and image.mode == "RGB" and image.size == (640, 400)
    for i in range(3):
        # far more pixels than the 3x18 legend swatch: the curve itself is drawn
        assert _colour_mask(path, PALETTE[i]).sum() > 200, f"series {i} missing"
    assert _colour_mask(path, PALETTE[3]).sum() == 0
    # the NaN half of the third series is skipped: its colour appears only left of the plot's middle
    # (the legend swatch sits top right, so look below it)
    cols = np.flatnonzero(_colour_mask(path, PALETTE[2])[150:].any(axis=0))
    assert cols.max() < 640 * 0.6


def test_single_point_constant_and_all_nan_series(tmp_path) -> None:
    path = tmp_path / "few.png"
    plot_curves(path, {"one": ([5.0], [3.0]), "const": ([0, 1, 2], [3, 3, 3]), "nan": ([0, 1], [math.nan] * 2)},
                "few points", "x", "y")
    assert _colour_mask(path, PALETTE[0]).sum() > 54 + 20  # legend swatch + a marker
    assert _colour_mask(path, PALETTE[1]).sum() > 200
    plot_curves(tmp_path / "empty.png", {}, "empty", "x", "y")
    assert Image.open(tmp_path / "empty.png").size == (800, 500)


def test_log_axis_skips_non_positive_values(tmp_path) -> None:
    path = tmp_path / "fd.png"
    plot_curves(path, {"FD": ([0, 100, 200, 300], [250.0, 0.0, 40.0, 22.5])}, "FD", "kimg", "FD", logy=True)
    assert _colour_mask(path, PALETTE[0]).sum() > 100


def test_ticks_are_nice_and_cover_the_range() -> None:
    assert linear_ticks(0, 1000) == [0, 200, 400, 600, 800, 1000]
    assert linear_ticks(0.13, 0.92, 4) == [0.2, 0.4, 0.6, 0.8]
    assert log_ticks(1.0, 1e4) == [1.0, 10.0, 100.0, 1000.0, 10000.0]
    assert log_ticks(15.0, 300.0) == [20.0, 50.0, 100.0, 200.0]


def _cells(h: int = 8, w: int = 6, c: int = 1):
    # image i is filled with value 10 + i so each cell identifies its source image
    labels = [2, 0, 1, 0, 2, 0, 0]
    images = np.stack([np.full((h, w, c), 10 + i, np.uint8) for i in range(len(labels))])
    return images, labels


@pytest.mark.parametrize("channels", [1, 3])
def test_class_grid_rows_hold_their_classes(channels) -> None:
    names = ["normal", "pneumonia", "covid", "unused"]
    h, w, per_class = 8, 6, 3
    images, labels = _cells(h, w, channels)
    grid = class_grid(images, labels, names, per_class)
    margin = grid.shape[1] - per_class * w
    assert grid.shape == (len(names) * h, margin + per_class * w, channels) and grid.dtype == np.uint8
    assert margin > 0
    expected = {0: [1, 3, 5], 1: [2], 2: [0, 4], 3: []}  # first `per_class` images of each class, input order
    for k, idxs in expected.items():
        for j in range(per_class):
            cell = grid[k * h:(k + 1) * h, margin + j * w:margin + (j + 1) * w]
            value = 10 + idxs[j] if j < len(idxs) else 0  # blank cells are black
            assert np.all(cell == value), (k, j)
        # the class name is drawn (white ink) in the margin of its own row
        assert grid[k * h:(k + 1) * h, :margin].max() > 128, k


def test_class_grid_validation_and_save(tmp_path) -> None:
    images, labels = _cells()
    with pytest.raises(ValueError, match="labels must be in"):
        class_grid(images, labels, ["a", "b"], 2)
    with pytest.raises(ValueError, match="labels"):
        class_grid(images, labels[:-1], ["a", "b", "c"], 2)
    save_class_grid(tmp_path / "grid.png", images, labels, ["a", "b", "c"], 2)
    saved = Image.open(tmp_path / "grid.png")
    assert saved.mode == "L" and saved.size[1] == 3 * 8
    # the existing grid helpers still work
    assert image_grid(images).shape == (3 * 8, 3 * 6, 1)
