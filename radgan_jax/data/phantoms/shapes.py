"""Signed-distance shapes on a pixel grid, and their partial-volume rendering.

Anatomy is described in a resolution-free "patient space": coordinates in [-1, 1] (y down, x right).
Each structure is a signed distance field (negative inside), so the same seed draws the same anatomy at any
resolution and edges get a native partial-volume ramp one pixel wide (`occupancy`), not a resize blur.
The distance functions of ellipses are first-order approximations (exact on the boundary, which is all that
masks and edge ramps need).
"""

from __future__ import annotations

import numpy as np


def pixel_grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) of the pixel centres in [-1, 1], each (R, R) float32."""
    c = ((np.arange(resolution, dtype=np.float32) + 0.5) / resolution) * 2.0 - 1.0
    return np.broadcast_to(c[:, None], (resolution, resolution)), np.broadcast_to(c[None, :], (resolution, resolution))


def pose(y: np.ndarray, x: np.ndarray, angle: float = 0.0, scale: tuple[float, float] = (1.0, 1.0),
         shift: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates -> patient coordinates for a patient rotated by `angle` (rad), scaled and shifted."""
    c, s = float(np.cos(angle)), float(np.sin(angle))   # python floats keep float32 arrays float32
    yy, xx = y - float(shift[0]), x - float(shift[1])
    return (c * yy - s * xx) / float(scale[0]), (s * yy + c * xx) / float(scale[1])


def _local(y, x, cy: float, cx: float, angle: float):
    c, s = float(np.cos(angle)), float(np.sin(angle))
    dy, dx = y - float(cy), x - float(cx)
    return c * dy - s * dx, s * dy + c * dx


def ellipse(y, x, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0) -> np.ndarray:
    """Approximate signed distance to an ellipse (half-axes ry, rx, rotated by `angle`)."""
    v, u = _local(y, x, cy, cx, angle)
    ry, rx = float(ry), float(rx)
    k0 = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    k1 = np.sqrt((u / rx**2) ** 2 + (v / ry**2) ** 2)
    return (k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)).astype(np.float32)


def box(y, x, cy: float, cx: float, hy: float, hx: float, radius: float = 0.0, angle: float = 0.0) -> np.ndarray:
    """Signed distance to a rectangle of half-sizes (hy, hx) with corners rounded by `radius`."""
    v, u = _local(y, x, cy, cx, angle)
    hy, hx, radius = float(hy), float(hx), float(radius)
    qy, qx = np.abs(v) - hy + radius, np.abs(u) - hx + radius
    outside = np.sqrt(np.maximum(qy, 0) ** 2 + np.maximum(qx, 0) ** 2)
    return (outside + np.minimum(np.maximum(qy, qx), 0) - radius).astype(np.float32)


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Union that blends the two shapes over a width k (organ lobes merge without a crease)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def subtract(a: np.ndarray, b: np.ndarray, gap: float = 0.0) -> np.ndarray:
    """a minus (b grown by `gap`)."""
    return np.maximum(a, gap - b)


def occupancy(sdf: np.ndarray, resolution: int, width: float = 1.0) -> np.ndarray:
    """Fraction of each pixel inside the shape: a linear ramp `width` pixels wide (partial volume)."""
    px = 2.0 / resolution
    return np.clip(0.5 - sdf / (width * px), 0.0, 1.0).astype(np.float32)


def paint(image: np.ndarray, sdf: np.ndarray, value, resolution: int, width: float = 1.0) -> np.ndarray:
    """Painter's algorithm: blend `value` (scalar, field, or (..., C)) over `image` where the shape is."""
    occ = occupancy(sdf, resolution, width)
    value = np.asarray(value, np.float32)
    if image.ndim == 3:
        occ = occ[..., None]
    return image + (value - image) * occ


FAR = np.float32(1.0)  # sdf value outside a shape's bounding box: farther than any blend/offset used


class Canvas:
    """Patient coordinates of every pixel, evaluating each shape only inside its bounding box (speed:
    a 512 px phantom has ~40 shapes, most of them small)."""

    def __init__(self, py: np.ndarray, px: np.ndarray, step: int = 8):
        self.py, self.px = np.ascontiguousarray(py, np.float32), np.ascontiguousarray(px, np.float32)
        self.resolution = py.shape[0]
        self.step = max(1, min(step, self.resolution // 8))
        self._cy, self._cx = self.py[::self.step, ::self.step], self.px[::self.step, ::self.step]

    def _window(self, cy: float, cx: float, reach: float) -> tuple[slice, slice] | None:
        inside = (np.abs(self._cy - cy) < reach) & (np.abs(self._cx - cx) < reach)
        rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
        if rows.size == 0:
            return None
        s, R = self.step, self.resolution
        return (slice(max(0, (rows[0] - 1) * s), min(R, (rows[-1] + 2) * s)),
                slice(max(0, (cols[0] - 1) * s), min(R, (cols[-1] + 2) * s)))

    def _eval(self, fn, cy: float, cx: float, reach: float, *args) -> np.ndarray:
        out = np.full(self.py.shape, FAR, np.float32)
        win = self._window(cy, cx, reach + 0.1)  # 0.1: widest blend / offset used around a shape
        if win is not None:
            out[win] = np.minimum(fn(self.py[win], self.px[win], cy, cx, *args), FAR)
        return out

    def ellipse(self, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0) -> np.ndarray:
        return self._eval(ellipse, cy, cx, max(ry, rx), ry, rx, angle)

    def box(self, cy: float, cx: float, hy: float, hx: float, radius: float = 0.0, angle: float = 0.0) -> np.ndarray:
        return self._eval(box, cy, cx, float(np.hypot(hy, hx)), hy, hx, radius, angle)
