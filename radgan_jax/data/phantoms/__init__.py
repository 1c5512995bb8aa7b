"""Built-in procedural phantoms: SYNTHETIC 2D medical-like images with pixel masks. NOT patient data.

Every image is drawn from a seed by code - no file, no patient, no scanner is involved - so quickstarts can
train a GAN and tests can train a segmenter without any dataset on disk. They look *like* the paper's data
(abdominal CT/MR of the CHAOS/BTCV tasks, sagittal lumbar-spine MR, colonoscopy frames of CVC-ClinicDB /
HyperKvasir) closely enough for pipelines and learning tests; they are useless for any clinical purpose.

    from radgan_jax.data.phantoms import PHANTOM_KINDS, render, phantom_dataset, write_image_folder
    case = render("ct_abdomen", seed=3, resolution=256, variant="lesion")   # Case: image, mask, label, meta

Kinds (PHANTOM_KINDS[name] is a PhantomSpec):
  ct_abdomen  axial portal-venous CT at kidney level, windowed; mask 1 liver, 2 kidney, 3 liver lesion
  mr_abdomen  the same anatomy as a T2-SPIR MR (bias field, Rician noise); same mask labels
  mr_spine    sagittal T2 lumbar spine L1-S1; mask 1 disc, 2 posterior element, 3 thecal sac, 4 vertebral body
  endoscopy   RGB colonoscopy frame; mask 1 polyp

Determinism: randomness comes only from `np.random.default_rng([seed, crc32(kind), stream])`; the same
(kind, seed, resolution, variant) gives identical bits. The anatomy stream is independent of the variant, so
`render(k, s, r, 'normal')` and `render(k, s, r, 'lesion')` show the same patient, with and without the
finding. Shapes are signed-distance fields in resolution-free patient coordinates, rendered natively at any
resolution 16..512 (the same seed gives the same anatomy at every resolution; acquisition noise differs).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from radgan_jax.data.base import Case, DataError
from radgan_jax.data.classes import class_table
from radgan_jax.data.phantoms import abdomen, endoscopy, spine

MIN_RESOLUTION, MAX_RESOLUTION = 16, 512

# render function: (anatomy rng, finding rng, resolution, variant) -> (image, mask, info)
RenderFn = Callable[[np.random.Generator, np.random.Generator, int, str], tuple[np.ndarray, np.ndarray, dict]]


@dataclasses.dataclass(frozen=True)
class PhantomSpec:
    name: str
    description: str
    product: str                          # which generator's class table ('ctmr' or 'gastro')
    channels: int                         # 1 grayscale, 3 RGB
    label_names: Mapping[int, str]        # mask values
    class_names: Mapping[str, str]        # variant -> class label in class_table(product)
    findings: Mapping[str, bool]          # variant -> does it contain the finding (lesion/herniation/polyp)
    finding_label: int | None             # mask value of the finding (None: drawn with an anatomical label)
    render_fn: RenderFn

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(self.class_names)

    def class_index(self, variant: str) -> int:
        return class_table(self.product).index(self.class_names[variant])


PHANTOM_KINDS: dict[str, PhantomSpec] = {
    "ct_abdomen": PhantomSpec(
        "ct_abdomen", "axial abdomen CT (portal venous, window L40/W400) at kidney level", "ctmr", 1,
        abdomen.LABEL_NAMES, {"normal": "abd_normal", "lesion": "lung_abd_hepatic lesion nos"},
        {"normal": False, "lesion": True}, 3, abdomen.render_ct),
    "mr_abdomen": PhantomSpec(
        "mr_abdomen", "axial abdomen T2-SPIR-like MR (bias field, Rician noise)", "ctmr", 1,
        abdomen.LABEL_NAMES, {"normal": "mriabd-normal", "lesion": "mri_abd_hepatic lesion nos"},
        {"normal": False, "lesion": True}, 3, abdomen.render_mr),
    # Herniated disc material keeps the disc label (as in segmentation datasets); it narrows the canal.
    "mr_spine": PhantomSpec(
        "mr_spine", "sagittal T2 lumbar spine MR, L1-S1", "ctmr", 1, spine.LABEL_NAMES,
        {"normal": "spine-normal", "herniation": "spine_herniation"}, {"normal": False, "herniation": True},
        None, spine.render),
    # The gastro table has no 'normal colon' class; its only colon class without a polyp is the dyed
    # resection margin (HyperKvasir), so the no-polyp variant draws a dyed post-polypectomy site.
    "endoscopy": PhantomSpec(
        "endoscopy", "RGB colonoscopy frame", "gastro", 3, endoscopy.LABEL_NAMES,
        {"polyp": "polyps", "dyed_lifted_polyp": "dyed_lifted_polyps",
         "dyed_resection_margin": "dyed_resection_margins"},
        {"polyp": True, "dyed_lifted_polyp": True, "dyed_resection_margin": False}, 1, endoscopy.render),
}


def _spec(kind: str) -> PhantomSpec:
    if kind not in PHANTOM_KINDS:
        raise ValueError(f"unknown phantom kind {kind!r}; valid: {', '.join(PHANTOM_KINDS)}")
    return PHANTOM_KINDS[kind]


def _rng(kind: str, seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) % (1 << 64), zlib.crc32(kind.encode()), stream])


def render(kind: str, seed: int, resolution: int, variant: str | None = None) -> Case:
    """One phantom: image float32 in [0, 1] ((R, R) or (R, R, 3)), mask uint8 (R, R), label = class index.

    variant None draws one of the kind's variants from the seed.
    """
    spec = _spec(kind)
    if not MIN_RESOLUTION <= int(resolution) <= MAX_RESOLUTION:
        raise ValueError(f"phantom resolution {resolution} outside {MIN_RESOLUTION}..{MAX_RESOLUTION}")
    drawn = spec.variants[int(_rng(kind, seed, 2).integers(len(spec.variants)))]
    variant = drawn if variant is None else variant
    if variant not in spec.class_names:
        raise ValueError(f"unknown variant {variant!r} of phantom {kind!r}; valid: {', '.join(spec.variants)}")
    image, mask, info = spec.render_fn(_rng(kind, seed, 0), _rng(kind, seed, 1), int(resolution), variant)
    meta = {"kind": kind, "variant": variant, "product": spec.product, "synthetic": True,
            "class_name": spec.class_names[variant], "seed": int(seed), **info}
    return Case(id=f"{kind}_s{seed}", image=image, mask=mask, label=spec.class_index(variant),
                group=f"{kind}_s{seed}", spacing=None, meta=meta)


def phantom_dataset(kind: str | Sequence[str], num: int, resolution: int, seed: int = 0) -> Iterator[Case]:
    """`num` phantoms per kind, variants in turn (balanced), ids f'{kind}_{i:05d}'; seeds seed*1_000_003 + i."""
    kinds = [kind] if isinstance(kind, str) else list(kind)
    for k in kinds:
        variants = _spec(k).variants
        for i in range(num):
            case = render(k, seed * 1_000_003 + i, resolution, variants[i % len(variants)])
            case.id = case.group = f"{k}_{i:05d}"
            yield case


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_image_folder(out_dir: str | Path, kinds: str | Sequence[str], num_per_class: int, resolution: int,
                       seed: int = 0) -> Path:
    """Write `out_dir/CLASS/ID.png` (the class-folder layout of RadImageNet/HyperKvasir, CLASS = the table
    label) and the masks as `out_dir_masks/CLASS/ID.png` (uint8 label values). Returns `out_dir`."""
    from PIL import Image

    root = Path(out_dir)
    mask_root = root.with_name(root.name + "_masks")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    for k in kinds:
        spec = _spec(k)
        for v_index, variant in enumerate(spec.variants):
            folder = spec.class_names[variant]
            target = root / folder
            try:
                target.mkdir(parents=True, exist_ok=True)
                (mask_root / folder).mkdir(parents=True, exist_ok=True)
                for i in range(num_per_class):
                    case = render(k, (seed * 1_000_003 + i) * 8 + v_index, resolution, variant)
                    target = root / folder / f"{k}_{variant}_{i:05d}.png"
                    Image.fromarray(to_uint8(case.image)).save(target)
                    target = mask_root / folder / target.name
                    Image.fromarray(case.mask).save(target)
            except OSError as e:
                raise DataError(target, f"cannot write the phantom dataset here ({e.strerror or e})", "layout") from e
    return root
