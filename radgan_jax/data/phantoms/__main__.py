"""Render a gallery of the phantom kinds: one row per kind, tiles of image | image with mask outlines.

    python -m radgan_jax.data.phantoms --out docs/images/phantoms.png [--resolution 160] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from radgan_jax.data.phantoms import PHANTOM_KINDS, render, to_uint8

# Outline colours per mask value (1 red, 2 green, 3 blue, 4 yellow).
_COLORS = np.array([[0, 0, 0], [1, 0.25, 0.2], [0.2, 1, 0.3], [0.3, 0.6, 1], [1, 1, 0.2]], np.float32)


def outline(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB copy of `image` with the boundaries of each mask label drawn in its colour."""
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    edge = np.zeros(mask.shape, bool)
    edge[1:] |= mask[1:] != mask[:-1]
    edge[:-1] |= mask[:-1] != mask[1:]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge &= mask > 0
    out = rgb.copy()
    out[edge] = _COLORS[np.minimum(mask[edge], len(_COLORS) - 1)]
    return out


def gallery(resolution: int, seed: int) -> np.ndarray:
    """(rows*R, cols*2R, 3) float image: one row per kind, tiles (image | outlines) cycling through the kind's
    variants; a kind with fewer variants than the widest fills its row with further seeds (shape variation)."""
    columns = max(len(spec.variants) for spec in PHANTOM_KINDS.values())
    rows = []
    for kind, spec in PHANTOM_KINDS.items():
        tiles = []
        for i in range(columns):
            variant = spec.variants[i % len(spec.variants)]
            case = render(kind, seed + i // len(spec.variants), resolution, variant)
            rgb = case.image if case.image.ndim == 3 else np.repeat(case.image[..., None], 3, axis=2)
            tiles.append(np.concatenate([rgb, outline(case.image, case.mask)], axis=1))
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=1.0) for t in tiles], 1))
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radgan_jax.data.phantoms", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--resolution", type=int, default=160, help="pixels per tile (16..512)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from PIL import Image

    try:
        image = gallery(args.resolution, args.seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(to_uint8(image)).save(args.out, optimize=True)
    except OSError as e:
        print(f"error: {args.out}: cannot write the gallery ({e.strerror or e})", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({image.shape[1]}x{image.shape[0]} px, {len(PHANTOM_KINDS)} kinds; SYNTHETIC phantoms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
