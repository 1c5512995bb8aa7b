"""Annotation round trip: the files `interpret_export` writes for annotators, and importing their masks.

An annotation folder holds, per exported image NAME:
    NAME.png         the synthetic image (8-bit; grey for 1-channel generators)
    NAME.json        sidecar (`make_sidecar`): seed, class, psi, z, ws (the truncated w that re-synthesizes the
                     image exactly), generator digest (`generator_digest`), image size
    NAME_mask.png    all-zero index-PNG template; or the annotator returns NAME_color.png / NAME_mask.nii.gz
                     (formats: `mask_formats`)
and once per folder: labels.json (nnU-Net style {"background": 0, "liver": 1, ...}), legend.png + legend.json
(colours of the colour-coded format), itksnap_labels.txt and README.txt.

`import_annotations` validates everything (sidecar present and parseable, generator digest, mask size, label
values, one mask per image) and raises one `AnnotationError` listing every bad file with its problem, so an
annotator fixes a folder in one round. Untouched templates (all-zero masks) are skipped as "not annotated".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from radgan_jax.interpret import mask_formats as mf

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "radgan_jax.annotation/1"
DIGEST_PREFIX = "sha256:"
RESERVED_JSON = ("labels.json", "legend.json")
_LABEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")


class AnnotationError(ValueError):
    """Every problem of an annotation folder at once: `problems` = [(file, problem), ...]."""

    def __init__(self, problems: Sequence[tuple[str, str]], header: str = "annotation import refused"):
        self.problems = [(str(f), str(p)) for f, p in problems]
        lines = [f"{header}: {len(self.problems)} problem(s)"] + [f"  {f}: {p}" for f, p in self.problems]
        super().__init__("\n".join(lines))


# ---- labels ----

def parse_labels(text: str) -> dict[str, int]:
    """'liver,kidney' -> {'background': 0, 'liver': 1, 'kidney': 2} (ids in the given order)."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if names and names[0] == "background":
        names = names[1:]
    if not names:
        raise ValueError(f"labels {text!r}: name at least one foreground label, e.g. 'liver,kidney'")
    labels = {"background": 0}
    for i, name in enumerate(names, 1):
        if name in labels:
            raise ValueError(f"labels {text!r}: {name!r} given twice")
        labels[name] = i
    check_labels(labels)
    return labels


def check_labels(labels: Mapping[str, int]) -> dict[str, int]:
    """A valid label map: 'background' = 0, names like 'liver' / 'posterior_elements', ids 0..K consecutive
    (what nnU-Net's dataset.json requires). Returns it as a plain dict; ValueError naming the problem."""
    out = {str(k): v for k, v in dict(labels).items()}
    if out.get("background") != 0:
        raise ValueError(f"label map {out}: needs 'background': 0")
    bad = [k for k, v in out.items() if not isinstance(v, (int, np.integer)) or isinstance(v, bool)]
    if bad:
        raise ValueError(f"label map {out}: ids must be integers ({bad})")
    bad = [k for k in out if not _LABEL_NAME.match(k)]
    if bad:
        raise ValueError(f"label map {out}: names must start with a letter and use letters, digits, '_', '-' "
                         f"({bad})")
    if sorted(out.values()) != list(range(len(out))):
        raise ValueError(f"label map {out}: ids must be 0..{len(out) - 1}, each once (nnU-Net's rule)")
    return {k: int(v) for k, v in out.items()}


# ---- generator digest and sidecars ----

def _key_name(path: tuple[Any, ...]) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def generator_digest(spec: Any, variables: Any) -> str:
    """Stable 'sha256:<hex>' of a generator: its spec (sorted JSON) and every variable (path, dtype, shape,
    little-endian bytes), in sorted path order. Equal for the same weights in memory, in a checkpoint, on any
    host or device layout (arrays are fetched to the host)."""
    h = hashlib.sha256()
    h.update(b"radgan_jax.generator_digest/1\n")
    h.update(json.dumps(spec.to_dict(), sort_keys=True).encode())
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    for name, leaf in sorted(((_key_name(p), x) for p, x in leaves), key=lambda t: t[0]):
        a = np.asarray(jax.device_get(leaf))
        a = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False))
        h.update(f"\n{name}|{a.dtype.str}|{a.shape}\n".encode())
        h.update(a.tobytes())
    return DIGEST_PREFIX + h.hexdigest()


def make_sidecar(*, name: str, seed: int, class_index: int, class_name: str, truncation_psi: float,
                 truncation_cutoff: int | None, z: np.ndarray, ws: np.ndarray, digest: str,
                 image_size: tuple[int, int], image_channels: int, grayscale: bool, generator_source: str = ""
                 ) -> dict[str, Any]:
    """The sidecar dict of one exported image (JSON-able; float32 values round-trip exactly)."""
    return {
        "format": SIDECAR_FORMAT, "name": name, "image": f"{name}.png", "mask_template": f"{name}_mask.png",
        "seed": int(seed), "class_index": int(class_index), "class_name": str(class_name),
        "truncation_psi": float(truncation_psi),
        "truncation_cutoff": None if truncation_cutoff is None else int(truncation_cutoff),
        "generator_digest": digest, "generator_source": str(generator_source),
        "image_size": [int(image_size[0]), int(image_size[1])], "image_channels": int(image_channels),
        "png_grayscale": bool(grayscale),
        "z": np.asarray(z, np.float32).tolist(), "ws": np.asarray(ws, np.float32).tolist(),
    }


def _parse_sidecar(path: Path, spec: Any) -> dict[str, Any]:
    """Sidecar dict with 'ws' as float32 array; ValueError(problem) when unusable for `spec`."""
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"sidecar not parseable ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or d.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"not an annotation sidecar (format {d.get('format') if isinstance(d, dict) else None!r}, "
                         f"expected {SIDECAR_FORMAT!r})")
    missing = [k for k in ("ws", "class_index", "image_size", "generator_digest") if k not in d]
    if missing:
        raise ValueError(f"sidecar lacks {missing}")
    try:
        ws = np.asarray(d["ws"], np.float32)
        size = tuple(int(s) for s in d["image_size"])
        c = int(d["class_index"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"sidecar has malformed ws / image_size / class_index ({e})") from None
    if ws.shape != (spec.num_ws, spec.w_dim):
        raise ValueError(f"sidecar ws has shape {ws.shape}, this generator needs ({spec.num_ws}, {spec.w_dim})")
    if len(size) != 2:
        raise ValueError(f"sidecar image_size {d['image_size']} is not [H, W]")
    if not (0 <= c < max(spec.c_dim, 1)):
        raise ValueError(f"sidecar class_index {c} outside [0, {spec.c_dim}) of this generator")
    return {**d, "ws": ws, "image_size": size, "class_index": c}


# ---- export-side writers (the job renders; these fix the file layout) ----

def write_folder_files(folder: str | Path, labels: Mapping[str, int], readme: str) -> None:
    """labels.json, legend.png, legend.json, itksnap_labels.txt and README.txt of an annotation folder."""
    from radgan_jax.eval.grids import save_png

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = check_labels(labels)
    colors = mf.label_colors(labels)
    (folder / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    legend = {name: list(colors[i]) for name, i in sorted(labels.items(), key=lambda kv: kv[1])}
    (folder / "legend.json").write_text(json.dumps(legend, indent=1) + "\n")
    save_png(folder / "legend.png", mf.legend_image(labels, colors))
    (folder / "itksnap_labels.txt").write_text(mf.itksnap_label_file(labels, colors))
    (folder / "README.txt").write_text(readme)


def write_item(folder: str | Path, image_u8: np.ndarray, sidecar: Mapping[str, Any]) -> None:
    """NAME.png, NAME.json and (unless a mask of any format exists: never overwrite annotators' work) the
    all-zero NAME_mask.png template. Refuses to replace a sidecar made for a different latent or generator."""
    from radgan_jax.eval.grids import save_png

    folder = Path(folder)
    name = sidecar["name"]
    side = folder / f"{name}.json"
    if side.exists():
        try:
            old = json.loads(side.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("ws") != sidecar["ws"] or old.get("generator_digest") != sidecar["generator_digest"]:
            raise AnnotationError([(side, "exists for another latent or generator; export into an empty folder "
                                          "(masks drawn on the old image would no longer match)")],
                                  header="annotation export refused")
    save_png(folder / f"{name}.png", image_u8)
    side.write_text(json.dumps(dict(sidecar)) + "\n")
    if not _mask_files(folder, name):
        h, w = sidecar["image_size"]
        mf.write_index_png(folder / f"{name}_mask.png", np.zeros((h, w), np.uint8))


def _mask_files(folder: Path, name: str) -> list[Path]:
    return [folder / f"{name}{s}" for suffixes in mf.MASK_SUFFIXES.values() for s in suffixes
            if (folder / f"{name}{s}").exists()]


# ---- the imported training set ----

@dataclasses.dataclass
class AnnotatedSet:
    """Annotated latents: ws float32 [N, num_ws, w_dim], c int32 [N], masks int32 [N, H, W]."""

    ws: np.ndarray
    c: np.ndarray
    masks: np.ndarray
    names: list[str]
    labels: dict[str, int]
    generator_digest: str = ""
    skipped: list[str] = dataclasses.field(default_factory=list)  # images not annotated (untouched templates)

    def __len__(self) -> int:
        return len(self.names)

    def save_npz(self, path: str | Path) -> None:
        np.savez_compressed(path, ws=np.asarray(self.ws, np.float32), c=np.asarray(self.c, np.int32),
                            masks=np.asarray(self.masks, np.int32), names=np.asarray(self.names, dtype=str),
                            labels=json.dumps(self.labels), generator_digest=self.generator_digest,
                            skipped=np.asarray(self.skipped, dtype=str))

    @classmethod
    def load_npz(cls, path: str | Path) -> AnnotatedSet:
        with np.load(path, allow_pickle=False) as d:
            return cls(ws=d["ws"].astype(np.float32), c=d["c"].astype(np.int32), masks=d["masks"].astype(np.int32),
                       names=[str(n) for n in d["names"]], labels=check_labels(json.loads(str(d["labels"]))),
                       generator_digest=str(d["generator_digest"]), skipped=[str(n) for n in d["skipped"]])


def _folder_labels(folder: Path, labels: Mapping[str, int] | None) -> dict[str, int]:
    path = folder / "labels.json"
    stored = None
    if path.exists():
        try:
            stored = check_labels(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            raise AnnotationError([(path, f"unusable label map ({e})")]) from None
    if labels is None:
        if stored is None:
            raise AnnotationError([(path, "missing (and no label map given)")])
        return stored
    labels = check_labels(labels)
    if stored is not None and stored != labels:
        raise AnnotationError([(path, f"declares {stored}, but the import was asked for {labels}")])
    return labels


def _size_problem(path: Path, shape: tuple[int, ...], meta: Mapping[str, Any]) -> str:
    msg = f"mask size (H, W) = {tuple(shape)}, but the image {meta.get('image')} is {tuple(meta['image_size'])}"
    if mf.mask_format(path)[0] == "nifti":
        msg += (f" (stored as (W, H) = {tuple(shape[::-1])}; 3D Slicer: export the segmentation with the reference "
                "image's geometry, not cropped to the segment)")
    return msg


def _describe_bad_values(mask: np.ndarray, valid: set[int]) -> str | None:
    uniq = np.unique(mask)
    bad = [int(v) for v in uniq if int(v) not in valid]
    if not bad:
        return None
    hit = np.isin(mask, bad)
    row, col = np.argwhere(hit)[0].tolist()
    return (f"undeclared label value(s) {bad} in {int(hit.sum())} pixels, first at row {row}, col {col} "
            f"(labels.json declares {sorted(valid)})")


def import_annotations(folder: str | Path, labels: Mapping[str, int] | None, spec: Any, variables: Any, *,
                       allow_empty: bool = False) -> AnnotatedSet:
    """Validated training set from an annotation folder, for the generator (`spec`, `variables`) in use.

    `labels` None: the folder's labels.json. Raises `AnnotationError` listing every bad file; all-zero masks
    are "not annotated" (skipped, counted in a warning and in `.skipped`) unless `allow_empty`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AnnotationError([(folder, "annotation folder does not exist")])
    labels = _folder_labels(folder, labels)
    colors = mf.label_colors(labels)
    valid = set(labels.values())
    digest = generator_digest(spec, variables)
    problems: list[tuple[Path, str]] = []

    masks_by_name: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        found = mf.mask_format(p)
        if found is not None and p.is_file():
            masks_by_name.setdefault(found[1], []).append(p)
    sidecars = {p.stem: p for p in sorted(folder.glob("*.json")) if p.name not in RESERVED_JSON}
    for name, files in masks_by_name.items():
        if name not in sidecars:
            problems += [(f, f"missing sidecar {name}.json (masks must keep the exported image's name)")
                         for f in files]

    rows: list[tuple[str, np.ndarray, int, np.ndarray]] = []
    skipped: list[str] = []
    for name, side in sidecars.items():
        try:
            meta = _parse_sidecar(side, spec)
        except ValueError as e:
            problems.append((side, str(e)))
            continue
        files = masks_by_name.get(name, [])
        if meta["generator_digest"] != digest:
            on = ", ".join(f.name for f in files) or "no mask yet"
            problems.append((side, f"made with generator {meta['generator_digest']}, but the generator in use is "
                                   f"{digest}: masks drawn on another generator's image are refused ({on})"))
            continue
        good: list[tuple[Path, np.ndarray]] = []
        touched: list[Path] = []
        for f in files:
            try:
                mask = mf.read_mask(f, colors)
            except mf.MaskFormatError as e:
                problems.append((f, str(e)))
                touched.append(f)
                continue
            nonzero = bool(mask.any())
            if nonzero:
                touched.append(f)
            if mask.shape != meta["image_size"]:
                problems.append((f, _size_problem(f, mask.shape, meta)))
                continue
            bad = _describe_bad_values(mask, valid)
            if bad:
                problems.append((f, bad))
                continue
            good.append((f, mask))
        if len(touched) > 1:
            problems.append((touched[0], f"duplicate masks for image {name}: {', '.join(t.name for t in touched)} "
                                         "(keep exactly one)"))
            continue
        use = [(f, m) for f, m in good if m.any()] or (good[:1] if allow_empty else [])
        if not use:
            if not touched:
                skipped.append(name)
            continue
        rows.append((name, meta["ws"], meta["class_index"], use[0][1].astype(np.int32)))

    if problems:
        raise AnnotationError(problems)
    if skipped:
        log.warning("%d of %d exported images not annotated (no mask or an untouched all-zero template), skipped: "
                    "%s%s", len(skipped), len(sidecars), ", ".join(skipped[:10]), " ..." if len(skipped) > 10 else "")
    if not rows:
        raise AnnotationError([(folder, f"no annotated masks ({len(sidecars)} exported images, {len(skipped)} "
                                        "untouched templates); pass allow_empty=True to train on all-background")])
    names, ws, c, masks = zip(*rows, strict=True)
    return AnnotatedSet(ws=np.stack(ws).astype(np.float32), c=np.asarray(c, np.int32), masks=np.stack(masks),
                        names=list(names), labels=dict(labels), generator_digest=digest, skipped=skipped)


def load_annotated_set(path: str | Path, spec: Any, variables: Any, labels: Mapping[str, int] | None = None, *,
                       allow_empty: bool = False) -> AnnotatedSet:
    """What the interpreter trainer calls: an annotation folder (imported and validated) or a saved .npz
    (`AnnotatedSet.save_npz`), checked against the generator in use (digest) and `labels` when given."""
    path = Path(path)
    if path.is_dir():
        return import_annotations(path, labels, spec, variables, allow_empty=allow_empty)
    if not path.is_file():
        raise AnnotationError([(path, "neither an annotation folder nor an .npz file")])
    try:
        ds = AnnotatedSet.load_npz(path)
    except (OSError, KeyError, ValueError) as e:
        raise AnnotationError([(path, f"not an annotated-set npz ({type(e).__name__}: {e})")]) from None
    problems = []
    digest = generator_digest(spec, variables)
    if ds.generator_digest != digest:
        problems.append((path, f"made with generator {ds.generator_digest}, the generator in use is {digest}"))
    if labels is not None and check_labels(labels) != ds.labels:
        problems.append((path, f"labels {ds.labels} differ from the requested {check_labels(labels)}"))
    if ds.ws.shape[1:] != (spec.num_ws, spec.w_dim):
        problems.append((path, f"ws shape {ds.ws.shape} does not fit this generator"))
    if problems:
        raise AnnotationError(problems)
    return ds
