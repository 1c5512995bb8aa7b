"""Latents, labels and input transforms with the meaning they have in the official `gen_images.py`.

A user who runs `gen_images.py --seeds=S --class=K --trunc=P --translate=X,Y --rotate=A` on an official
pickle gets the same image from us for the same seed (numpy RandomState normal draws, float64 -> float32,
one-hot class, inverse of `make_transform` as the synthesis input transform).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_RANGE = re.compile(r"^(\d+)-(\d+)$")


def parse_range(spec: str | int | Sequence[int]) -> list[int]:
    """'1,2,5-10' -> [1, 2, 5, 6, 7, 8, 9, 10] (inclusive ranges, as gen_images.py)."""
    if isinstance(spec, (int, np.integer)):
        return [int(spec)]
    if not isinstance(spec, str):
        return [int(s) for s in spec]
    out: list[int] = []
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        m = _RANGE.match(part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f"bad range {part!r} in {spec!r}: end before start")
            out.extend(range(lo, hi + 1))
        elif re.fullmatch(r"-?\d+", part):
            out.append(int(part))
        else:
            raise ValueError(f"cannot parse {part!r} in {spec!r}; expected e.g. '0,3,5-9'")
    return out


def z_from_seed(seed: int, z_dim: int, batch: int = 1) -> np.ndarray:
    """`np.random.RandomState(seed).randn(batch, z_dim)` as float32 (the mapping casts to float32)."""
    return np.random.RandomState(int(seed)).randn(batch, z_dim).astype(np.float32)


def random_class_from_seed(seed: int, c_dim: int, batch: int = 1) -> np.ndarray:
    """Class drawn as gen_utils.get_w_from_seed does when no class is given."""
    return np.random.RandomState(int(seed)).randint(low=0, high=c_dim, size=(batch,))


def one_hot(labels: Sequence[int] | np.ndarray, c_dim: int) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64)
    if c_dim == 0:
        return np.zeros((len(labels), 0), np.float32)
    if labels.size and (labels.min() < 0 or labels.max() >= c_dim):
        raise ValueError(f"class indices {sorted(set(labels.tolist()))} outside [0, {c_dim})")
    return np.eye(c_dim, dtype=np.float32)[labels]


def make_transform(translate: tuple[float, float], angle_deg: float) -> np.ndarray:
    """gen_images.py's forward transform (rotation by `angle_deg`, then translation)."""
    m = np.eye(3)
    s, c = np.sin(angle_deg / 360.0 * np.pi * 2), np.cos(angle_deg / 360.0 * np.pi * 2)
    m[0, 0], m[0, 1], m[0, 2] = c, s, translate[0]
    m[1, 0], m[1, 1], m[1, 2] = -s, c, translate[1]
    return m


def input_transform(translate: tuple[float, float] = (0.0, 0.0), rotate: float = 0.0) -> np.ndarray:
    """The synthesis-input `transform` buffer gen_images.py sets: inv(make_transform), float32."""
    return np.linalg.inv(make_transform(translate, rotate)).astype(np.float32)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] float -> uint8 exactly as gen_utils.w_to_img: (x + 1) * 255/2, clamp, truncate."""
    return np.clip((np.asarray(images, np.float32) + 1) * (255 / 2), 0, 255).astype(np.uint8)
