"""Noise, texture and acquisition effects shared by the phantom kinds (numpy, vectorised).

Smooth random fields are value noise: random lattices of fixed sizes in patient space, interpolated to the
pixel grid by separable smoothstep interpolation (~2 ms per octave at 512 px). Every
octave's lattice is always drawn, so the random stream - and hence the anatomy - does not depend on the
resolution; octaves finer than ~2 pixels are left out (they would only alias).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _interp_weights(resolution: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Left lattice index and smoothstep weight of the right neighbour for each pixel centre (C1-looking noise)."""
    u = ((np.arange(resolution, dtype=np.float32) + 0.5) / resolution) * cells
    i0 = np.minimum(np.floor(u).astype(np.int64), cells - 1)
    f = u - i0
    return i0, (f * f * (3.0 - 2.0 * f)).astype(np.float32)


def lattice_field(lattice: np.ndarray, resolution: int) -> np.ndarray:
    """Interpolate a (cells+1, cells+1[, C]) lattice onto an (R, R[, C]) pixel grid.

    Separable gathers, not matmuls: BLAS threads cost more than they save here on a shared CPU.
    """
    i0, s = _interp_weights(resolution, lattice.shape[0] - 1)
    sh = (-1,) + (1,) * (lattice.ndim - 1)
    rows = lattice[i0] * (1.0 - s).reshape(sh) + lattice[i0 + 1] * s.reshape(sh)      # (R, cells+1[, C])
    sh = (1, -1) + (1,) * (lattice.ndim - 2)
    out = rows[:, i0] * (1.0 - s).reshape(sh) + rows[:, i0 + 1] * s.reshape(sh)      # (R, R[, C])
    return out.astype(np.float32)


def fractal_noise(rng: np.random.Generator, resolution: int, base: int = 4, octaves: int = 5,
                  persistence: float = 0.55) -> np.ndarray:
    """Multi-octave value noise, zero mean and about unit std; `base` cells across at the coarsest octave."""
    out = np.zeros((resolution, resolution), np.float32)
    total = 0.0
    for k in range(octaves):
        cells = base * 2**k
        lattice = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
        amp = persistence**k
        if resolution / cells >= 2.0 or k == 0:
            out += amp * lattice_field(lattice, resolution)
            total += amp**2
    return out / np.float32(0.62 * np.sqrt(total))  # 0.62: std lost to interpolation (measured)


def smooth_field(rng: np.random.Generator, resolution: int, cells: int = 3) -> np.ndarray:
    """A single low-frequency field (bias fields, organ deformation), about unit std."""
    lattice = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return lattice_field(lattice, resolution) / np.float32(0.62)


def warp(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, amplitude: float,
         cells: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates displaced by a smooth random field: organ shapes deform without tearing."""
    resolution = y.shape[0]
    amplitude = float(amplitude)
    return (y + amplitude * smooth_field(rng, resolution, cells),
            x + amplitude * smooth_field(rng, resolution, cells))


def correlated_noise(rng: np.random.Generator, resolution: int, sigma_px: float = 0.7) -> np.ndarray:
    """Pixel noise with a short correlation length (CT reconstruction kernels), unit std."""
    n = rng.standard_normal((resolution, resolution)).astype(np.float32)
    if sigma_px > 0:
        n = ndimage.gaussian_filter(n, sigma_px, mode="wrap")
        n /= max(float(n.std()), 1e-6)
    return n


def rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise in both channels (MR magnitude images)."""
    sigma = float(sigma)
    re = signal + sigma * rng.standard_normal(signal.shape).astype(np.float32)
    im = sigma * rng.standard_normal(signal.shape).astype(np.float32)
    return np.sqrt(re * re + im * im)


def blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur over the spatial axes (point-spread of the scanner / optics)."""
    if sigma_px <= 0:
        return image
    sig = (sigma_px, sigma_px, 0) if image.ndim == 3 else sigma_px
    return ndimage.gaussian_filter(image, sig, mode="nearest")
