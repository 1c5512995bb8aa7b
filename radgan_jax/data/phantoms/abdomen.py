"""Axial upper-abdomen phantom (kidney level), shared by the CT and the T2 MR kinds. SYNTHETIC, not patient data.

One geometry (body outline, subcutaneous fat, abdominal wall muscle, vertebra with posterior elements and
canal, paraspinal and psoas muscles, aorta, IVC, liver with vessels, optional gallbladder, both kidneys,
spleen, bowel loops with gas / fluid / faeces, optional liver lesions) is drawn in patient space; the two
kinds differ only in the tissue contrasts and the acquisition model. Radiological convention: the patient's
right is on the image left, anterior is up.

Contrasts: CT in Hounsfield-like units of a portal-venous phase (fat about -100, liver ~100-120, enhancing
renal cortex ~170, contrast-filled aorta ~180, cortical bone ~800), shown in the usual abdomen window
(level 40, width 400). MR mimics the T2-SPIR sequence of CHAOS (Kavur et al. 2021, the paper's CHAOS-MRI task;
see /work/shared/data/CHAOS-MR-T2/README.md): fat suppressed, liver dark, spleen and kidneys brighter, fluid
and CSF brightest, flowing blood dark.
"""

from __future__ import annotations

import functools

import numpy as np

from radgan_jax.data.phantoms import shapes as S
from radgan_jax.data.phantoms import texture as T

LABEL_NAMES = {0: "background", 1: "liver", 2: "kidney", 3: "liver_lesion"}

# Tissue values: (CT HU, MR T2-SPIR relative signal).
_TISSUE = {
    "air": (-1000.0, 0.0), "fat": (-100.0, 0.13), "muscle": (50.0, 0.12), "cavity_fat": (-95.0, 0.11),
    "bone": (800.0, 0.04), "marrow": (170.0, 0.2), "csf": (10.0, 0.95), "cord": (35.0, 0.4),
    "aorta": (180.0, 0.04), "ivc": (130.0, 0.12), "liver": (110.0, 0.24), "vessel": (170.0, 0.5),
    "gallbladder": (8.0, 0.95), "spleen": (115.0, 0.5), "cortex": (175.0, 0.55), "medulla": (120.0, 0.7),
    "sinus_fat": (-80.0, 0.12), "bowel_wall": (60.0, 0.3), "fluid": (15.0, 0.8), "gas": (-900.0, 0.01),
    "faeces": (-150.0, 0.3), "couch": (150.0, 0.0), "cyst": (10.0, 0.92), "solid_lesion": (55.0, 0.5),
}


def _liver_sdf(g: dict, ell, cavity):
    """Liver from an ellipse evaluator (the canvas, or plain points when placing lesions) and the cavity."""
    a = ell(g["ly"], g["lx"], 0.38 * g["ls"], 0.3 * g["ls"], g["la"])
    b = ell(g["ly"] - 0.2 * g["ls"], g["lx"] + 0.36 * g["ls"], 0.12 * g["ls"], 0.3 * g["ls"], -0.25)
    return np.maximum(S.smooth_union(a, b, 0.08), cavity + 0.01)


def _geometry(rng: np.random.Generator, resolution: int) -> dict:
    """Random patient anatomy: parameters plus SDF fields on the pixel grid."""
    y, x = S.pixel_grid(resolution)
    py, px = S.pose(y, x, angle=rng.normal(0, 0.06), scale=(rng.uniform(0.92, 1.06), rng.uniform(0.92, 1.06)),
                    shift=(rng.normal(0.03, 0.02), rng.normal(0, 0.02)))
    c = S.Canvas(*T.warp(rng, py, px, 0.02))
    py, px = c.py, c.px
    g: dict = {"py": py, "px": px, "canvas": c}
    bh, bw = float(rng.uniform(0.6, 0.7)), float(rng.uniform(0.84, 0.95))
    back = 0.8 * bh
    t_fat, t_mus = float(rng.uniform(0.03, 0.12)), float(rng.uniform(0.025, 0.045))

    def body(qy, qx):
        return -S.smooth_union(-S.ellipse(qy, qx, 0.0, 0.0, bh, bw), -(qy - back), 0.08)

    g["cavity"] = lambda qy, qx: body(qy, qx) + t_fat + t_mus
    g["body"] = body(py, px)
    g["wall"] = g["body"] + t_fat
    cavity = g["cavity_grid"] = g["body"] + t_fat + t_mus
    # Spine: vertebral body, canal, posterior ring, spinous and transverse processes.
    vy = back - t_fat - rng.uniform(0.3, 0.34)
    rv = rng.uniform(0.09, 0.11)
    g["vb"] = c.ellipse(vy, 0.0, 0.9 * rv, rv)
    cy = vy + rv + 0.05
    g["canal"] = c.ellipse(cy, 0.0, 0.04, 0.045)
    post = S.smooth_union(c.ellipse(cy, 0.0, 0.075, 0.08), c.box(cy + 0.1, 0.0, 0.08, 0.022, 0.015), 0.03)
    post = S.smooth_union(post, c.box(cy - 0.01, 0.0, 0.018, 0.13, 0.015), 0.03)
    g["post"] = S.subtract(post, g["canal"])
    g["cord"] = c.ellipse(cy, 0.0, 0.022, 0.028)
    g["paraspinal"] = np.minimum(c.ellipse(cy + 0.07, -0.14, 0.09, 0.11), c.ellipse(cy + 0.07, 0.14, 0.09, 0.11))
    g["psoas"] = np.minimum(c.ellipse(vy + 0.01, -rv - 0.06, 0.07, 0.06, 0.3),
                            c.ellipse(vy + 0.01, rv + 0.06, 0.07, 0.06, -0.3))
    g["aorta"] = c.ellipse(vy - rv - 0.05, 0.04, 0.04, 0.04)
    g["ivc"] = c.ellipse(vy - rv - 0.07, -0.09, 0.03, 0.048)
    # Kidneys (bean: ellipse minus a hilum notch facing antero-medially); liver and spleen on either side.
    ks = rng.uniform(0.85, 1.15)
    kid, kin = [], []
    for side in (-1.0, 1.0):
        ky, kx = vy - 0.02 + rng.normal(0, 0.02), side * (rv + rng.uniform(0.17, 0.22))
        ang = side * rng.uniform(0.35, 0.7)
        outer = c.ellipse(ky, kx, 0.125 * ks, 0.075 * ks, ang)
        kid.append(S.subtract(outer, c.ellipse(ky - 0.045 * ks, kx - side * 0.06 * ks, 0.035, 0.035)))
        kin.append(c.ellipse(ky - 0.01, kx - side * 0.02, 0.07 * ks, 0.035 * ks, ang))
    g["kidney"] = np.maximum(np.minimum(*kid), cavity)
    g["kidney_inner"] = np.minimum(*kin)
    g["ls"] = rng.uniform(0.72, 1.02)
    g["ly"], g["lx"], g["la"] = rng.normal(-0.12, 0.03), -0.42 * bw / 0.9, rng.normal(0.3, 0.1)
    liver = _liver_sdf(g, c.ellipse, cavity) + 0.012 * T.smooth_field(rng, resolution, 6)
    liver = S.subtract(S.subtract(liver, g["kidney"], 0.015), g["ivc"], 0.005)
    gb_present = rng.random() < 0.5
    gb = c.ellipse(g["ly"] + 0.2 * g["ls"], g["lx"] + 0.2, 0.05, 0.08, 0.4)
    g["gallbladder"] = np.maximum(gb, liver) if gb_present else np.full_like(gb, S.FAR)
    g["liver"] = S.subtract(liver, g["gallbladder"])
    vessels = [c.ellipse(g["ly"] + rng.normal(0, 0.1), g["lx"] + rng.normal(0.05, 0.1),
                         *rng.uniform(0.01, 0.025, 2), rng.uniform(0, np.pi)) for _ in range(5)]
    g["vessel"] = np.maximum(np.min(vessels, axis=0), g["liver"] + 0.02)
    sp = c.ellipse(vy - 0.12 + rng.normal(0, 0.03), 0.52 * bw / 0.9, 0.16 * ks, 0.075 * ks, -0.6)
    g["spleen"] = S.subtract(np.maximum(sp, cavity + 0.01), g["kidney"], 0.015)
    # Bowel loops fill the rest of the anterior cavity; each loop holds gas, fluid or faeces (index per pixel).
    n = 24
    by = rng.uniform(-bh * 0.85, vy - 0.02, n)
    bx = rng.uniform(-0.3, 0.9, n) * bw
    br = rng.uniform(0.05, 0.11, n)
    g["bowel_content"] = rng.choice(3, n, p=[0.35, 0.35, 0.3])
    loops = np.full(py.shape, S.FAR, np.float32)
    index = np.zeros(py.shape, np.int64)
    for i in range(n):
        d = c.ellipse(by[i], bx[i], br[i], br[i] * rng.uniform(0.7, 1.0), rng.uniform(0, np.pi))
        index = np.where(d < loops, i, index)
        loops = np.minimum(loops, d)
    g["bowel_index"] = index
    solid = np.minimum.reduce([g["liver"], g["kidney"], g["spleen"], g["aorta"], g["ivc"], g["vb"], g["psoas"],
                               g["gallbladder"]])
    g["bowel"] = S.subtract(np.maximum(loops, cavity + 0.01), solid, 0.012)
    g["bowel_lumen"] = g["bowel"] + 0.012
    g["couch"] = c.box(back + 0.045, 0.0, 0.015, 1.3, 0.015)
    return g


def _lesions(rng: np.random.Generator, g: dict) -> list[tuple[float, float, float, bool]]:
    """1-2 liver lesions (centre y, x, radius, is_cyst) placed well inside the liver, in patient space."""
    out = []
    for _ in range(int(rng.integers(1, 3))):
        cy = g["ly"] + rng.uniform(-0.35, 0.35, 64) * g["ls"]
        cx = g["lx"] + rng.uniform(-0.3, 0.45, 64) * g["ls"]
        r = rng.uniform(0.04, 0.1)
        depth = _liver_sdf(g, functools.partial(S.ellipse, cy, cx), g["cavity"](cy, cx))
        ok = np.flatnonzero(depth < -(r + 0.03))
        i = int(ok[0]) if ok.size else int(np.argmin(depth))
        out.append((float(cy[i]), float(cx[i]), min(r, max(0.035, -0.7 * float(depth[i]))), bool(rng.random() < 0.5)))
    return out


def _lesion_sdfs(g: dict, lesions: list) -> list[tuple[np.ndarray, bool]]:
    """Lesion fields clipped to the liver, so a lesion never changes another organ's label."""
    return [(np.maximum(g["canvas"].ellipse(cy, cx, r, 0.85 * r), g["liver"]), cyst) for cy, cx, r, cyst in lesions]


def _compose(g: dict, lesions: list, modality: int, rng: np.random.Generator, resolution: int) -> np.ndarray:
    """Paint the tissues back to front with per-tissue texture; `modality` 0 = CT values, 1 = MR values."""
    R = resolution
    v = {k: val[modality] for k, val in _TISSUE.items()}
    # Per-patient contrast variation (enhancement timing, coil, fat suppression quality).
    jitter = rng.normal(0, 1, len(v))
    scale = 12.0 if modality == 0 else 0.04
    fixed = ("air", "gas", "couch")
    v = {k: float(val + (0.0 if k in fixed else scale * j)) for (k, val), j in zip(v.items(), jitter)}
    tex = T.fractal_noise(rng, R, base=8, octaves=5, persistence=0.6)
    tex2 = T.fractal_noise(rng, R, base=4, octaves=4)
    ta = 8.0 if modality == 0 else 0.025  # texture amplitude in the modality's units

    img = np.full((R, R), v["air"], np.float32)
    if modality == 0:
        img = S.paint(img, g["couch"], v["couch"], R)
    img = S.paint(img, g["body"], v["fat"] + 1.5 * ta * tex, R)
    img = S.paint(img, g["wall"], v["muscle"] + ta * tex, R)
    img = S.paint(img, g["cavity_grid"], v["cavity_fat"] + 2 * ta * tex2, R)
    img = S.paint(img, g["paraspinal"], v["muscle"] + ta * tex, R)
    img = S.paint(img, g["psoas"], v["muscle"] + ta * tex, R)
    img = S.paint(img, g["post"], v["bone"], R)
    img = S.paint(img, g["post"] + 0.012, v["marrow"] + 3 * ta * tex, R)
    img = S.paint(img, g["vb"], v["bone"], R)
    img = S.paint(img, g["vb"] + 0.01, v["marrow"] + 4 * ta * tex, R)
    img = S.paint(img, g["canal"], v["csf"], R)
    img = S.paint(img, g["cord"], v["cord"], R)
    img = S.paint(img, g["aorta"], v["aorta"], R)
    img = S.paint(img, g["ivc"], v["ivc"], R)
    contents = np.array([v["gas"], v["fluid"], v["faeces"]], np.float32)[g["bowel_content"]][g["bowel_index"]]
    mottled = np.where(contents == np.float32(v["faeces"]), contents + 25 * ta * np.clip(tex, -2, 2), contents)
    img = S.paint(img, g["bowel"], v["bowel_wall"], R)
    img = S.paint(img, g["bowel_lumen"], mottled, R)
    img = S.paint(img, g["spleen"], v["spleen"] + ta * tex, R)
    img = S.paint(img, g["kidney"], v["cortex"] + ta * tex, R)
    img = S.paint(img, g["kidney_inner"], v["medulla"] + ta * tex, R)
    img = S.paint(img, g["liver"], v["liver"] + ta * tex, R)
    img = S.paint(img, g["vessel"], v["vessel"], R)
    img = S.paint(img, g["gallbladder"], v["gallbladder"], R)
    for sdf, cyst in lesions:
        img = S.paint(img, sdf, v["cyst"] if cyst else v["solid_lesion"] + 2 * ta * tex, R, 1.0 if cyst else 2.5)
    return img


def _mask(g: dict, lesions: list) -> np.ndarray:
    mask = np.zeros(g["py"].shape, np.uint8)
    mask[g["liver"] < 0] = 1
    mask[g["kidney"] < 0] = 2
    for sdf, _ in lesions:
        mask[sdf < 0] = 3
    return mask


def render_ct(rng: np.random.Generator, finding_rng: np.random.Generator, resolution: int,
              variant: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """CT slice in [0, 1] after the abdomen window (L40/W400), its mask and facts about it."""
    g = _geometry(rng, resolution)
    lesions = _lesion_sdfs(g, _lesions(finding_rng, g)) if variant == "lesion" else []
    hu = _compose(g, lesions, 0, rng, resolution)
    hu = T.blur(hu, 0.5) + float(rng.uniform(8, 18)) * T.correlated_noise(rng, resolution, 0.8)
    image = np.clip((hu - (40.0 - 200.0)) / 400.0, 0.0, 1.0)
    return image.astype(np.float32), _mask(g, lesions), {"lesions": len(lesions), "window": (40, 400)}


def render_mr(rng: np.random.Generator, finding_rng: np.random.Generator, resolution: int,
              variant: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """T2-SPIR-like MR slice: multiplicative bias field, Rician noise, scaled to [0, 1] by the 99.5th pct."""
    g = _geometry(rng, resolution)
    lesions = _lesion_sdfs(g, _lesions(finding_rng, g)) if variant == "lesion" else []
    sig = np.maximum(_compose(g, lesions, 1, rng, resolution), 0.0)
    # Surface-coil sensitivity falls with depth from the body surface; plus a smooth random field.
    depth = np.clip(-g["body"], 0, None)
    bias = (1.0 + 0.25 * np.exp(-depth / 0.15)) * np.exp(0.18 * T.smooth_field(rng, resolution, 2))
    sig = T.blur(sig * bias, 0.6)
    sig = T.rician(rng, sig, rng.uniform(0.012, 0.03))
    image = np.clip(sig / max(float(np.percentile(sig, 99.5)), 1e-6), 0.0, 1.0)
    return image.astype(np.float32), _mask(g, lesions), {"lesions": len(lesions)}
