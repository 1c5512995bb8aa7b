"""`mode=data_convert`: a dataset in any known layout -> nnU-Net v2 raw format, or -> the GAN's TFDS datasets.

    python -m radgan_jax.main --config=configs/data/convert.py --workdir=OUT \
        --config.dataset=DIR --config.format=auto --config.target=nnunet --config.resize=paper

nnunet: OUT/nnUNet_raw/DatasetXXX_Name (radgan_jax.data.nnunet_raw), cases optionally resized in-plane
(`resize`: '0' keep, 'paper' = the reader's paper_size, or a size) and volumes optionally cut into 2D axial
slices (`slices`). tfds: OUT/tfds/<name>_<R>px (radgan_jax.data.tfds_build) for every resolution.

A bad case (unreadable file, wrong mask values, size mismatch ...) never stops the job: it is skipped and
counted, and with `quarantine=True` its files are moved out of the dataset (radgan_jax.data.verify.quarantine)
into `quarantine_dir` (default OUT/quarantine). OUT/convert_report.json lists every problem.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from absl import logging
from tqdm import tqdm

from radgan_jax.data.base import Case, DataError, Item, Reader
from radgan_jax.data.readers import open_dataset

TARGETS = ("nnunet", "tfds")
# Channel name per dataset for nnU-Net's normalisation ('CT' -> CT scheme, anything else z-score):
# BTCV is abdominal CT (Landman et al., MICCAI 2015 challenge); CHAOS T2-SPIR and the lumbar spine set are MR.
_MODALITY = {"btcv": "CT", "chaos_dicom": "MR", "chaos_nifti": "MR", "lumbar_spine": "MR"}


class Tally:
    """Counts converted and bad cases; a bad case is logged, recorded and (optionally) quarantined."""

    def __init__(self, reader: Reader, quarantine_dir: Path | None):
        self.reader, self.quarantine_dir = reader, quarantine_dir
        self.converted = 0
        self.bad: list[dict[str, Any]] = []
        self.failed_ids: set[str] = set()

    def fail(self, item: Item, err: Exception) -> None:
        path = str(err.path) if isinstance(err, DataError) else str(item.files[0] if item.files else "")
        kind = err.kind if isinstance(err, DataError) else "invalid"
        entry: dict[str, Any] = {"id": item.id, "path": path, "kind": kind, "problem": str(err)}
        if self.quarantine_dir is not None:
            from radgan_jax.data.verify import quarantine  # only needed when quarantining

            entry["moved_to"] = [str(p) for p in quarantine(self.reader.root, item, self.quarantine_dir, str(err))]
        logging.warning("skipping case %s: %s", item.id, err)
        self.bad.append(entry)
        self.failed_ids.add(item.id)


def parse_options(text: str) -> dict[str, Any]:
    """'a=1,b=x' -> {'a': 1, 'b': 'x'} (ints, floats and true/false are converted)."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        if "=" not in part:
            raise ValueError(f"reader_options: expected key=value, got {part!r}")
        key, value = (s.strip() for s in part.split("=", 1))
        if value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
        elif re.fullmatch(r"-?\d+", value):
            out[key] = int(value)
        elif re.fullmatch(r"-?\d*\.\d+", value):
            out[key] = float(value)
        else:
            out[key] = value
    return out


def resize_size(spec: str | int, reader: Reader) -> int:
    """'0' -> 0 (keep), 'paper' -> the reader's paper_size (0 if it has none), '512' -> 512."""
    text = str(spec).strip().lower()
    if text == "paper":
        return int(reader.paper_size or 0)
    if not text.isdigit():
        raise ValueError(f"resize must be 0, 'paper' or a size in pixels, got {spec!r}")
    return int(text)


def iter_cases(reader: Reader, items: list[Item], tally: Tally, *, size: int = 0, slices: bool = False,
               progress: bool = True) -> Iterator[tuple[Item, Case]]:
    """(item, case) for every loadable item: 2D slices of volumes if `slices`, resized if `size`."""
    from radgan_jax.data.preprocess import resize_case

    for item in tqdm(items, desc=f"convert {reader.name}", unit="case", disable=not progress):
        try:
            case = reader.load(item)
            parts = list(case.slices()) if slices else [case]
            if size:
                parts = [resize_case(c, size) for c in parts]
        except (DataError, ValueError) as e:
            tally.fail(item, e)
            continue
        for part in parts:
            yield item, part


def nnunet_labels(reader: Reader) -> dict[str, int]:
    """dataset.json labels from the reader's declared label values (nnU-Net wants 'background' for 0)."""
    if not reader.label_names:
        raise ValueError(f"target=nnunet needs a segmentation dataset with masks; {reader.name!r} is a "
                         f"{reader.task} dataset (use target=tfds)")
    out: dict[str, int] = {}
    for value, name in sorted(reader.label_names.items()):
        name = "background" if value == 0 else str(name)
        out[name if name not in out else f"{name}_{value}"] = int(value)
    return out


def channel_names(spec: str, case: Case, reader: Reader, modality: str) -> dict[str, str]:
    if spec.strip():
        return {str(i): n.strip() for i, n in enumerate(spec.split(","))}
    spatial = 3 if case.is_volume else 2
    channels = 1 if case.image.ndim == spatial else case.image.shape[-1]
    if channels in (3, 4) and not case.is_volume:
        return {str(i): n for i, n in enumerate("RGBA"[:channels])}
    known = getattr(reader, "channel_names", None)  # re-converting an nnU-Net dataset keeps its names
    if modality == "auto" and isinstance(known, dict) and len(known) == channels:
        return {str(k): str(v) for k, v in known.items()}
    # Any name but 'CT' gets nnU-Net's z-score normalisation; 'image' says no more than we know.
    name = modality if modality != "auto" else _MODALITY.get(reader.name, "image")
    return {str(i): name for i in range(channels)}


def to_nnunet(config, reader: Reader, items: list[Item], tally: Tally, workdir: Path) -> Path | None:
    from radgan_jax.data.nnunet_raw import NnUNetRawWriter

    labels = nnunet_labels(reader)
    size = resize_size(config.resize, reader)
    if str(config.resize).strip().lower() == "paper" and not size:
        logging.info("%s has no paper size: images keep their size", reader.name)
    writer = None
    for item, case in iter_cases(reader, items, tally, size=size, slices=config.slices, progress=config.progress):
        if item.id in tally.failed_ids:  # another slice of this volume was bad: the case is out (counted once)
            continue
        if writer is None:
            writer = NnUNetRawWriter(workdir / "nnUNet_raw", config.dataset_id, config.dataset_name or reader.name,
                                     labels, channel_names(config.channel_names, case, reader, config.modality),
                                     file_ending=config.file_ending, split=config.split,
                                     overwrite=config.overwrite)
        try:
            writer.add(case)
        except (DataError, ValueError) as e:
            tally.fail(item, e)
            continue
        tally.converted += 1
    return None if writer is None else writer.close()


def to_tfds(config, reader: Reader, items: list[Item], tally: Tally, workdir: Path) -> dict[int, Path]:
    from radgan_jax.data.classes import class_table
    from radgan_jax.data.tfds_build import build_gan_datasets

    if config.product:
        class_names = class_table(config.product).labels
    else:
        class_names = list(getattr(reader, "class_names", None) or []) if reader.task == "classification" else []
    resolutions = [int(r) for r in str(config.resolutions).split(",") if r.strip()]
    window = tuple(float(w) for w in config.window.split(",")) if config.window else None
    if window is not None and len(window) != 2:
        raise ValueError(f"window must be 'level,width', got {config.window!r}")

    def good_cases() -> Iterator[Case]:
        for item, case in iter_cases(reader, items, tally, slices=True, progress=config.progress):
            if class_names and (case.label is None or not 0 <= case.label < len(class_names)):
                tally.fail(item, DataError(item.files[0] if item.files else reader.root,
                                           f"class label {case.label} is not one of the {len(class_names)} classes",
                                           "label_values"))
                continue
            tally.converted += 1
            yield case

    return build_gan_datasets(good_cases(), workdir / "tfds", name=config.dataset_name or reader.name,
                              resolutions=resolutions, class_names=class_names, xflip=bool(config.xflip),
                              modality=config.modality, window=window, progress=False)


def run(config, workdir: str) -> None:
    if not config.dataset:
        raise ValueError("data_convert: set --config.dataset=DIR (the dataset folder)")
    if config.target not in TARGETS:
        raise ValueError(f"data_convert: target must be one of {TARGETS}, got {config.target!r}")
    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    options = parse_options(config.reader_options)
    if config.product:
        options.setdefault("product", config.product)
    reader = open_dataset(config.dataset, config.format, **options)
    items, problems = reader.scan()
    for p in problems:
        logging.warning("layout problem (not converted): %s", p)
    if config.max_cases > 0:
        items = items[: config.max_cases]
    qdir = None
    if config.quarantine:
        qdir = Path(config.quarantine_dir) if config.quarantine_dir else out / "quarantine"
        if qdir.resolve().is_relative_to(reader.root.resolve()):  # fail now, not at the first bad case
            raise ValueError(f"quarantine folder {qdir} lies inside the dataset {reader.root}; choose one outside")
    tally = Tally(reader, qdir)
    logging.info("%s: format %s, %d case(s), %d layout problem(s); target %s", reader.root, reader.name,
                 len(items), len(problems), config.target)
    if config.target == "nnunet":
        result = to_nnunet(config, reader, items, tally, out)
        written: Any = str(result) if result else None
    else:
        written = {str(r): str(p) for r, p in to_tfds(config, reader, items, tally, out).items()}
    report = {"dataset": str(reader.root), "format": reader.name, "target": config.target, "output": written,
              "items": len(items), "converted": tally.converted, "bad_cases": len(tally.bad),
              "quarantined": qdir is not None and bool(tally.bad), "bad": tally.bad,
              "layout_problems": [{"path": str(p.path), "kind": p.kind, "problem": p.problem} for p in problems]}
    (out / "convert_report.json").write_text(json.dumps(report, indent=1) + "\n")
    action = f"moved to {qdir}" if qdir is not None else "skipped"
    logging.info("converted %d record(s) from %d case(s) -> %s; %d bad case(s) %s, %d layout problem(s) "
                 "(details: %s)", tally.converted, len(items), written, len(tally.bad), action, len(problems),
                 out / "convert_report.json")
