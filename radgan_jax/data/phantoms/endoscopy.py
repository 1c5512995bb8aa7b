"""RGB colonoscopy-frame phantom. SYNTHETIC, not patient data.

A camera looks down a tube of mucosa: the lumen (far, dark) sits off-centre, the lit wall near the camera is
bright, haustral folds are partial rings at log-spaced depths with a lit ridge and a shadow on the lumen side.
Colour is the orange-pink of colonic mucosa (shadows redder), with a fine vessel network, wet specular
highlights, lens vignetting and the black octagonal border of CVC-ClinicDB frames (Bernal et al. 2015; see
/work/shared/data/CVC-ClinicDB/README.md).

Variants (the colon classes of HyperKvasir in the gastro class table): 'polyp' - a sessile polyp (dome
shading, pit texture, its own highlight); 'dyed_lifted_polyp' - the same after indigo-carmine dye and a
submucosal lift (pale blue dome in blue-stained mucosa); 'dyed_resection_margin' - no polyp: a dyed
post-resection site (pale ulcer bed with a reddish rim). Mask: 1 polyp, 0 elsewhere (frame border too).
"""

from __future__ import annotations

import numpy as np

from radgan_jax.data.phantoms import shapes as S
from radgan_jax.data.phantoms import texture as T

LABEL_NAMES = {0: "background", 1: "polyp"}
_MUCOSA = np.array([0.88, 0.52, 0.4], np.float32)
_DYE = np.array([0.22, 0.33, 0.62], np.float32)


def _frame(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Octagonal field of view (signed distance, negative inside)."""
    ay, ax = np.abs(y), np.abs(x)
    return np.maximum.reduce([ax - 0.98, ay - 0.97, (ax + ay - 1.6) / np.sqrt(2.0)])


def _finding(rng: np.random.Generator, lumen: tuple[float, float]) -> tuple[float, float, float, float]:
    """Centre, radius and orientation of the polyp / resection site: on the wall, bigger when nearer."""
    a = rng.uniform(0, 2 * np.pi)
    rho = rng.uniform(0.35, 0.7)
    cy = float(np.clip(lumen[0] + rho * np.sin(a), -0.65, 0.65))
    cx = float(np.clip(lumen[1] + rho * np.cos(a), -0.65, 0.65))
    return cy, cx, float(rng.uniform(0.1, 0.16) + 0.15 * rho), float(rng.uniform(0, np.pi))


def render(rng: np.random.Generator, finding_rng: np.random.Generator, resolution: int,
           variant: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """RGB frame (R, R, 3) in [0, 1] and polyp mask (R, R)."""
    R = resolution
    y, x = S.pixel_grid(R)
    lumen = (float(rng.uniform(-0.45, 0.45)), float(rng.uniform(-0.45, 0.45)))
    wy, wx = T.warp(rng, y, x, 0.08, cells=3)
    asp = float(rng.uniform(0.75, 1.3))
    r = np.sqrt((wy - lumen[0]) ** 2 + ((wx - lumen[1]) * asp) ** 2)
    theta = np.arctan2(wy - lumen[0], wx - lumen[1])
    # Light at the camera: irradiance falls with depth, depth grows towards the lumen centre.
    shade = np.clip(r / float(rng.uniform(0.8, 1.1)), 0.0, 1.25) ** 1.4
    # Haustral folds: partial rings at log-spaced depths; lit ridge, dark shadow on the lumen side.
    spacing, offset = float(rng.uniform(1.2, 2.0)), float(rng.uniform(0, 1))
    phase = spacing * np.log(r + 0.08) + 0.15 * T.smooth_field(rng, R, 4) + offset
    wave = np.sin(2 * np.pi * phase)
    strength = np.clip(0.6 + 0.6 * T.smooth_field(rng, R, 3), 0.0, 1.0)
    ridge = np.maximum(wave, 0.0) ** 1.5 * strength
    shadow = np.maximum(-np.cos(2 * np.pi * phase), 0.0) ** 3 * strength * np.clip(-wave * 3, 0, 1)
    light = shade * (1.0 + 0.3 * ridge - 0.5 * shadow) * (1 - 0.03 * np.cos(theta))
    # Mucosa: colour per patient, fine texture, vessel network (ridged noise), redder in shadow.
    base = _MUCOSA * rng.uniform(0.9, 1.08, 3).astype(np.float32)
    fine = T.fractal_noise(rng, R, base=16, octaves=4, persistence=0.6)
    vessels = np.exp(-(T.fractal_noise(rng, R, base=6, octaves=4) / 0.06) ** 2) * (0.2 + 0.8 * shade.clip(0, 1))
    L = np.clip(light * (1 + 0.05 * fine), 0, 1.3)[..., None]
    rgb = base * L ** np.array([0.8, 1.15, 1.35], np.float32)
    rgb = rgb * (1 - vessels[..., None] * np.array([0.08, 0.3, 0.25], np.float32))
    wet = T.fractal_noise(rng, R, base=40, octaves=3, persistence=0.4)
    # Finding (drawn from its own stream: the same frame with and without a polyp share everything else).
    fy, fx, fr, fang = _finding(finding_rng, lumen)
    outline = 0.05 * fr / 0.2 * T.smooth_field(finding_rng, R, 5)
    sdf = S.ellipse(y, x, fy, fx, fr, fr * finding_rng.uniform(0.7, 1.0), fang) + outline
    dye_amount = np.clip(0.8 + 0.8 * T.smooth_field(finding_rng, R, 3) - 0.6 * np.maximum(sdf, 0) / 0.3, 0, 1)
    mask = np.zeros((R, R), np.uint8)
    if variant.startswith("dyed"):
        # Indigo carmine pools in folds and shadows.
        pool = dye_amount * (0.5 + 0.5 * shadow + 0.3 * (1 - shade.clip(0, 1)))
        rgb = rgb + (np.clip(pool, 0, 1)[..., None] * (_DYE * L ** 1.1 - rgb)) * 0.85
    if variant in ("polyp", "dyed_lifted_polyp"):
        k = np.sqrt(np.clip(-sdf / fr, 0.0, 1.0) * 2)
        dome = np.sqrt(np.clip(1.0 - (1.0 - np.clip(k, 0, 1)) ** 2, 0.0, 1.0))
        # The side of the dome facing the lumen is turned away from the light.
        norm = fr * float(np.hypot(lumen[0] - fy, lumen[1] - fx)) + 1e-6
        toward = ((y - fy) * (lumen[0] - fy) + (x - fx) * (lumen[1] - fx)) / norm
        pl = np.clip(np.maximum(shade, 0.65) * (0.55 + 0.55 * dome) * (1 - 0.25 * np.clip(toward, 0, 1)), 0, 1.2)
        pcol = (np.array([0.92, 0.58, 0.48], np.float32) if variant == "polyp"
                else np.array([0.7, 0.72, 0.88], np.float32)) * finding_rng.uniform(0.9, 1.05, 3).astype(np.float32)
        pits = 1 + 0.08 * T.fractal_noise(finding_rng, R, base=32, octaves=2)
        prgb = pcol * (pl * pits)[..., None] ** np.array([0.85, 1.1, 1.25], np.float32)
        rgb = S.paint(rgb, sdf, prgb, R, 1.5)
        halo = np.exp(-np.maximum(sdf, 0) / 0.025) * (sdf > 0) * np.clip(toward * 0.5, 0, 1)
        rgb = rgb * (1 - 0.5 * halo[..., None])
        wet = np.where(sdf < 0, wet + 1.2 * dome * (toward < -0.2), wet)
        mask[sdf < 0] = 1
    elif variant == "dyed_resection_margin":
        bed = np.array([0.8, 0.8, 0.9], np.float32) * (0.6 + 0.4 * shade.clip(0, 1))[..., None]
        rim = np.array([0.55, 0.15, 0.12], np.float32) * L
        rgb = S.paint(rgb, sdf - 0.02, rim, R, 2.0)
        rgb = S.paint(rgb, sdf + 0.02, bed * (1 + 0.1 * fine[..., None]), R, 2.0)
    # Specular highlights on wet ridges (saturated white), vignetting, optics blur, sensor noise, border.
    spec = np.clip((0.5 * wet + 2.4 * ridge**4 + 0.8 * shade - 2.9) * 4.0, 0, 1)
    rgb = rgb + (1.0 - rgb) * spec[..., None]
    rgb = rgb * (1 - 0.3 * (y**2 + x**2) / 2)[..., None]
    rgb = T.blur(rgb, 0.6) + float(rng.uniform(0.005, 0.02)) * rng.standard_normal((R, R, 3)).astype(np.float32)
    inside = S.occupancy(_frame(y, x), R)
    rgb = np.clip(rgb * inside[..., None], 0.0, 1.0).astype(np.float32)
    mask[inside < 0.5] = 0
    return rgb, mask, {"polyp_pixels": int(mask.sum())}
