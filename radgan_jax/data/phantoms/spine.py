"""Sagittal T2-weighted lumbar-spine MR phantom (midline slice, L1-S1). SYNTHETIC, not patient data.

Anterior is left, superior is up (the usual sagittal display). The spine follows a random lordotic curve
into the posteriorly bending sacrum; along it sit the vertebral bodies (dark cortex and endplates, fatty
marrow of intermediate-high T2 signal), intervertebral discs (dark annulus, bright nucleus unless
degenerated, lower levels degenerate more often), the thecal sac (bright CSF with the conus medullaris
ending at L1-L2 and the cauda equina roots below), posterior elements (laminae, spinous processes),
paraspinal muscle, subcutaneous fat and, anteriorly, the aorta (flow void) and bowel.

Mask labels use the codes of the Labeled Lumbar Spine MRI dataset (readers/lumbar_spine.py) where it has the
structure: 1 intervertebral disc, 2 posterior element (laminae, spinous processes), 3 thecal sac / spinal
canal; that dataset's 4 (the area between anterior and posterior elements, an axial-only notion) has no
sagittal counterpart, so 4 here is the vertebral body (T12 and sacral segments included). A herniation
(variant 'herniation', usually L4-L5 or L5-S1) is a focal posterior protrusion of disc material, labelled
disc, that narrows the canal.
"""

from __future__ import annotations

import numpy as np

from radgan_jax.data.phantoms import shapes as S
from radgan_jax.data.phantoms import texture as T

LABEL_NAMES = {0: "background", 1: "disc", 2: "posterior_element", 3: "thecal_sac", 4: "vertebral_body"}

# T2 FSE relative signal (no fat suppression): CSF and fat bright, marrow intermediate, muscle/cortex dark.
_V = {"air": 0.0, "fat": 0.75, "muscle": 0.2, "cortex": 0.06, "marrow": 0.5, "annulus": 0.15,
      "nucleus": 0.8, "csf": 0.95, "cord": 0.4, "root": 0.6, "aorta": 0.04, "bowel": 0.32,
      "ligament": 0.08, "epidural_fat": 0.7}
LEVELS = ("T12", "L1", "L2", "L3", "L4", "L5", "S1", "S2")


def _centerline(rng: np.random.Generator):
    """x of the body centres as a function of y: lordosis peaking near L3, sacrum bending posteriorly."""
    x0, A, ym, ys, B = (float(v) for v in rng.uniform([-0.22, 0.04, -0.15, 0.45, 0.6], [-0.08, 0.14, 0.05, 0.6, 1.1]))

    def xc(y):
        return x0 - A * (1.0 - (y - ym) ** 2) + B * np.maximum(y - ys, 0.0) ** 2

    def slope(y):
        return 2.0 * A * (y - ym) + 2.0 * B * np.maximum(y - ys, 0.0)

    return xc, slope


def _geometry(rng: np.random.Generator, resolution: int) -> dict:
    y, x = S.pixel_grid(resolution)
    zoom = rng.uniform(0.9, 1.1)
    py, px = S.pose(y, x, angle=rng.normal(0, 0.04), scale=(zoom, zoom), shift=(rng.normal(0, 0.04), 0.0))
    c = S.Canvas(*T.warp(rng, py, px, 0.012))
    py, px = c.py, c.px
    xc, slope = _centerline(rng)
    depth = float(rng.uniform(0.32, 0.38))                      # AP depth of a lumbar body
    hb = float(rng.uniform(0.19, 0.22))                         # body height
    discs_h = rng.uniform(0.05, 0.075, 7)
    degenerated = rng.random(7) < np.array([0.05, 0.1, 0.15, 0.2, 0.35, 0.45, 0.5])
    y_top = float(rng.uniform(-1.25, -1.1))                     # top of T12 (mostly out of view)
    g: dict = {"py": py, "px": px, "canvas": c, "xc": xc, "depth": depth}
    wc = float(rng.uniform(0.11, 0.15))                         # thecal sac AP width (~0.4 of the body depth)
    bodies, disc_boxes, nuclei, post, centres = [], [], [], [], []
    yy = y_top
    for i, _name in enumerate(LEVELS):
        sacral = i >= 6
        h = hb * (0.8 if i == 7 else 1.0)
        cy = yy + h / 2
        cx, ang = float(xc(cy)), -float(np.arctan(slope(cy)))
        d = depth * (0.9 if sacral else 1.0) * (1 - 0.15 * (i == 7))
        bodies.append(c.box(cy, cx, h / 2, d / 2, 0.035, ang))
        centres.append((cy, cx, ang, d))
        if not sacral:   # lamina + spinous process behind the canal, tilted caudally
            sx = cx + (d / 2 + wc + 0.055) / np.sqrt(1 + float(slope(cy)) ** 2)
            post.append(S.smooth_union(c.box(cy + 0.02, sx, 0.065, 0.06, 0.025, ang),
                                       c.box(cy + 0.06, sx + 0.15, 0.055, 0.13, 0.04, ang - 0.3), 0.05))
        yy += h
        if i < 7:
            gap = float(discs_h[i]) * (0.6 if degenerated[i] else 1.0) * (0.25 if sacral else 1.0)
            my = yy + gap / 2
            mx, mang = float(xc(my)), -float(np.arctan(slope(my)))
            disc_boxes.append(c.box(my, mx, gap / 2 + 0.02, d / 2 - 0.005, 0.03, mang))
            if not degenerated[i] and not sacral:
                nuclei.append(c.ellipse(my, mx + 0.02, 0.4 * gap, 0.27 * d, mang))
            g.setdefault("disc_centres", []).append((my, mx, mang, gap, d))
            yy += gap
    body = np.min(bodies, axis=0)
    g["bodies"] = body
    g["post"] = np.min(post, axis=0)
    disc = S.subtract(np.min(disc_boxes, axis=0), body)
    g["disc"], g["nucleus"] = disc, np.maximum(np.min(nuclei, axis=0), disc + 0.01)
    # Local AP coordinate relative to the posterior body wall (perpendicular to the spine, approx.).
    cosv = 1.0 / np.sqrt(1.0 + slope(py) ** 2)
    ap = (px - xc(py)) * cosv - depth / 2
    g["ap"] = ap
    y_sac_end = y_top + 6 * hb + float(discs_h[:6].sum()) + 0.15               # thecal sac ends near S2
    g["canal"] = np.maximum.reduce([ap - (0.015 + wc), 0.015 - ap, py - y_sac_end])
    g["canal_bony"] = np.maximum(ap - (0.035 + wc), -ap)                  # epidural space around the sac
    y_conus = y_top + hb * 2.2 + float(rng.uniform(-0.1, 0.1))
    g["cord"] = np.maximum.reduce([np.abs(ap - 0.015 - wc * 0.45) - wc * 0.22 * np.clip((y_conus - py) * 8, 0, 1),
                                   py - y_conus, -np.ones_like(py)])
    roots = [np.abs(ap - 0.015 - wc * float(f)) - 0.004 for f in rng.uniform(0.45, 0.85, 3)]
    g["roots"] = np.maximum(np.min(roots, axis=0), np.maximum(y_conus - py, g["canal"]))
    g["skin"] = (px - xc(py) * 0.3 - float(rng.uniform(0.8, 0.95))) + 0.02 * T.smooth_field(rng, resolution, 3)
    g["fat"] = g["skin"] + float(rng.uniform(0.06, 0.16))
    g["muscle_front"] = -(ap - wc - 0.06)                                # paraspinal muscle posterior to the canal
    # aorta: a flow-void tube in front of the spine down to its bifurcation near L4 (rounded end)
    g["aorta"] = -S.smooth_union(-(np.abs(ap + depth + 0.07) - 0.035), -(py - (y_top + 4.6 * hb)), 0.04)
    g["front"] = ap + depth + 0.01                                      # anterior to the bodies
    g["degenerated"] = degenerated
    return g


def _herniation(rng: np.random.Generator, g: dict) -> np.ndarray:
    """A focal posterior disc protrusion at L4-L5 (45%), L5-S1 (40%) or L3-L4 (15%)."""
    level = int(rng.choice([3, 4, 5], p=[0.15, 0.45, 0.4]))
    my, mx, mang, gap, d = g["disc_centres"][level]
    ext = rng.uniform(0.035, 0.07)
    cy = my + rng.uniform(-0.2, 0.6) * gap
    # centre the protrusion on the posterior disc margin, along the disc's AP axis
    cx = mx + np.cos(mang) * (d / 2 + ext * 0.3)
    cy = cy - np.sin(mang) * (d / 2 + ext * 0.3)
    return g["canvas"].ellipse(cy, cx, max(gap * 0.8, 0.035), ext, mang)


def render(rng: np.random.Generator, finding_rng: np.random.Generator, resolution: int,
           variant: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Sagittal T2 image in [0, 1] and mask (1 disc, 2 posterior element, 3 thecal sac, 4 vertebral body)."""
    R = resolution
    g = _geometry(rng, R)
    disc = g["disc"]
    if variant == "herniation":
        disc = np.minimum(disc, S.subtract(_herniation(finding_rng, g), np.minimum(g["bodies"], g["post"]), 0.005))
    vertebra = np.minimum(g["bodies"], g["post"])
    canal = S.subtract(g["canal"], disc)
    v = {k: float(val + 0.03 * j) for (k, val), j in zip(_V.items(), rng.normal(0, 1, len(_V)))}
    tex = T.fractal_noise(rng, R, base=8, octaves=5, persistence=0.6)
    blobs = T.fractal_noise(rng, R, base=6, octaves=3)
    bowel = np.where(blobs > 1.0, np.float32(0.75), np.where(blobs < -1.1, np.float32(0.05), np.float32(v["bowel"])))
    bowel = bowel + 0.04 * tex
    img = np.full((R, R), v["air"], np.float32)
    img = S.paint(img, g["skin"], v["fat"] + 0.04 * tex, R)
    img = S.paint(img, np.maximum(g["fat"], -g["front"]), v["muscle"] + 0.03 * tex, R)
    img = S.paint(img, g["front"], T.blur(bowel, 1.0), R)
    img = S.paint(img, g["aorta"], v["aorta"], R)
    img = S.paint(img, g["canal_bony"], v["epidural_fat"], R)
    img = S.paint(img, vertebra, v["cortex"], R)
    img = S.paint(img, vertebra + 0.012, v["marrow"] + 0.06 * tex, R)
    img = S.paint(img, disc, v["annulus"] + 0.02 * tex, R)
    img = S.paint(img, g["nucleus"], v["nucleus"] + 0.04 * tex, R, 3.0)
    img = S.paint(img, canal, v["csf"], R)
    img = S.paint(img, np.maximum(g["cord"], canal), v["cord"], R)
    img = S.paint(img, np.maximum(g["roots"], canal), v["root"], R)
    # Posterior spine coil: signal falls off anteriorly; plus a smooth random field.
    bias = np.exp(0.45 * np.clip(g["px"], -1.5, 1.5) + 0.12 * T.smooth_field(rng, R, 2))
    sig = T.blur(np.maximum(img, 0) * bias, 0.6)
    sig = T.rician(rng, sig, rng.uniform(0.015, 0.035))
    image = np.clip(sig / max(float(np.percentile(sig, 99.5)), 1e-6), 0.0, 1.0).astype(np.float32)
    mask = np.zeros((R, R), np.uint8)
    mask[g["post"] < 0] = 2
    mask[g["bodies"] < 0] = 4
    mask[disc < 0] = 1
    mask[canal < 0] = 3
    return image, mask, {"degenerated_discs": int(g["degenerated"][:6].sum())}
