"""GAN training sets as TFDS datasets in ArrayRecord files, one dataset per resolution.

StyleGAN-XL trains progressively (16 px stem, then one super-resolution head per doubling) and its
`dataset_tool.py` writes one dataset zip per resolution; we do the same with TFDS folders so training reads
them with `tfds.data_sources` + grain (random access, no TensorFlow at read time, README 'TensorFlow policy'):

    <out_dir>/<name>_<R>px/1.0.0/   dataset_info.json, features.json, metadata.json,
                                    <name>_<R>px-train.array_record-0000i-of-0000n

Features: image uint8 (R, R, 3) PNG, label ClassLabel(class_names) (int64 scalar -1 when the dataset is
unconditional: no class_names), id Text (the case id). `metadata.json` (tfds MetadataDict) holds what
training needs: resolution, xflip (StyleGAN-XL's `--mirror`: the reader doubles the dataset with x-flipped
copies), class_names, modality/window of the preprocessing and the record count.

The cases are read once (reading the originals is the expensive part) and every resolution is written in
the same pass. Records keep the order of `cases`; training shuffles (pipeline.py). TensorFlow may be
imported here (building is off the hot path); reading never needs it.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from radgan_jax.data.base import Case, DataError
from radgan_jax.data.preprocess import gan_preprocess

FORMAT = "radgan_gan_dataset"
FORMAT_VERSION = 1
VERSION = "1.0.0"
SPLIT = "train"
# StyleGAN-XL builds power-of-two resolutions from its 16 px stem (8 px kept for tiny tests/demos).
MIN_RESOLUTION, MAX_RESOLUTION = 8, 2048
# Start a new ArrayRecord shard after this many bytes: keeps files a practical size for copying/GCS.
SHARD_BYTES = 512 << 20
# group_size:1 = each record its own chunk: O(1) random access, what grain's shuffled reads need (TFDS default).
_ARRAY_RECORD_OPTIONS = "group_size:1"
_NAME_OK = re.compile(r"^[a-z][a-z0-9_]*$")


def dataset_name(name: str, resolution: int) -> str:
    """TFDS name of the dataset of `name` at `resolution`: snake_case, e.g. 'RadImageNet' -> 'radimagenet_256px'."""
    clean = re.sub(r"[^a-z0-9_]+", "_", name.strip().lower()).strip("_")
    if clean and not clean[0].isalpha():
        clean = "d_" + clean
    if not _NAME_OK.match(clean):
        raise ValueError(f"dataset name {name!r} has no letters or digits to build a TFDS name from")
    return f"{clean}_{resolution}px"


def _check_resolutions(resolutions: Sequence[int]) -> list[int]:
    out = []
    for r in resolutions:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
            raise ValueError(f"resolution {r!r} is not an integer; give pixel sizes such as 16, 32, 256")
        r = int(r)
        if r < MIN_RESOLUTION or r > MAX_RESOLUTION or r & (r - 1):
            raise ValueError(f"resolution {r} is not a power of two in [{MIN_RESOLUTION}, {MAX_RESOLUTION}] "
                             "(StyleGAN-XL doubles the resolution per super-resolution stage)")
        out.append(r)
    if not out:
        raise ValueError("no resolutions given; e.g. resolutions=[16, 32, 64]")
    if len(set(out)) != len(out):
        raise ValueError(f"resolutions {list(resolutions)} repeat a value")
    return sorted(out)


def _case_path(case: Case) -> Path:
    """The file a problem with `case` is reported against (readers may keep it in meta), else its id."""
    for key in ("path", "file", "image_path"):
        if case.meta.get(key):
            return Path(case.meta[key])
    return Path(f"<case {case.id}>")


def _encode_png(image: np.ndarray) -> bytes:
    # zlib level 3: measured on noisy 256 px CT-like images (bench/data.py), 2x faster to write than Pillow's
    # default 6 and no larger; decoding speed is the same. PNG is lossless either way.
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def _features(class_names: Sequence[str], resolution: int):
    import tensorflow_datasets as tfds  # build time only

    label = (tfds.features.ClassLabel(names=list(class_names)) if class_names
             else tfds.features.Scalar(dtype=np.int64, doc="-1: unconditional dataset"))
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(resolution, resolution, 3), dtype=np.uint8, encoding_format="png"),
        "label": label,
        "id": tfds.features.Text(),
    })


class DeterministicSerializer:
    """`FeaturesDict.serialize_example` with deterministic proto serialization: the feature map's order otherwise
    follows the process's string hashing, so two hosts (or runs) would write different bytes for the same example."""

    def __init__(self, features):
        from tensorflow_datasets.core.example_serializer import ExampleSerializer

        self.features = features
        self._ser = ExampleSerializer(features.get_serialized_info())

    def __call__(self, example: dict) -> bytes:
        proto = self._ser.get_tf_example(self.features.encode_example(example))
        return proto.SerializeToString(deterministic=True)


class _ShardedWriter:
    """ArrayRecord shards `<name>-train.array_record-XXXXX-of-YYYYY`, renamed to their final names at close."""

    def __init__(self, directory: Path, name: str):
        self.directory, self.name = directory, name
        self.shard_lengths: list[int] = []
        self.num_bytes = 0
        self._writer = None
        self._bytes_in_shard = 0

    def _open(self) -> None:
        from array_record.python.array_record_module import ArrayRecordWriter

        path = self.directory / f"partial-{len(self.shard_lengths):05d}"
        self._writer = ArrayRecordWriter(str(path), _ARRAY_RECORD_OPTIONS)
        self.shard_lengths.append(0)
        self._bytes_in_shard = 0

    def write(self, record: bytes) -> None:
        if self._writer is None or self._bytes_in_shard >= SHARD_BYTES:
            self._close_shard()
            self._open()
        self._writer.write(record)
        self.shard_lengths[-1] += 1
        self._bytes_in_shard += len(record)
        self.num_bytes += len(record)

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> None:
        self._close_shard()
        n = len(self.shard_lengths)
        for i in range(n):
            final = f"{self.name}-{SPLIT}.array_record-{i:05d}-of-{n:05d}"
            (self.directory / f"partial-{i:05d}").rename(self.directory / final)


def _flat_cases(cases: Iterable[Case]) -> Iterator[Case]:
    """2D records: a volume contributes its axial slices (Case.slices)."""
    for case in cases:
        yield from case.slices()


def build_gan_datasets(
    cases: Iterable[Case],
    out_dir: str | Path,
    *,
    name: str,
    resolutions: Sequence[int],
    class_names: Sequence[str],
    xflip: bool = False,
    modality: str = "auto",
    window: tuple[float, float] | None = None,
    progress: bool = True,
) -> dict[int, Path]:
    """Writes one TFDS/ArrayRecord dataset per resolution from `cases`; returns {R: `<out_dir>/<name>_<R>px/1.0.0`}.

    Every image goes through `gan_preprocess(image, R, modality=, window=)` (uint8 (R, R, 3)). With
    `class_names`, every case needs a label in range (the conditional GAN's class); without, labels are
    dropped (unconditional, stored as -1). Volumes contribute their axial slices. Nothing is left behind on
    error: datasets are written to a temporary folder and moved into place at the end. An existing dataset of
    the same name and resolution is an error (delete it to rebuild).
    """
    import tensorflow_datasets as tfds  # build time only (README 'TensorFlow policy')
    from tqdm import tqdm

    res = _check_resolutions(resolutions)
    out_dir = Path(out_dir)
    class_names = [str(c) for c in class_names]
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names repeat a name: {class_names}")
    finals = {r: out_dir / dataset_name(name, r) for r in res}
    for r, final in finals.items():
        if final.exists():
            raise DataError(final, f"a {r} px dataset already exists here; delete it to rebuild", "layout")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = {r: out_dir / f".{dataset_name(name, r)}.partial" for r in res}
    for d in tmp.values():
        shutil.rmtree(d, ignore_errors=True)  # leftovers of an interrupted build
        (d / VERSION).mkdir(parents=True)
    features = {r: _features(class_names, r) for r in res}
    serializers = {r: DeterministicSerializer(features[r]) for r in res}
    writers = {r: _ShardedWriter(tmp[r] / VERSION, dataset_name(name, r)) for r in res}
    try:
        seen: set[str] = set()
        label_counts = [0] * len(class_names)  # the GAN draws fake classes with these frequencies
        total = len(cases) if hasattr(cases, "__len__") else None
        bar = tqdm(_flat_cases(cases), total=total, unit="img", desc=f"GAN dataset {name} {res} px",
                   disable=not progress)
        for case in bar:
            path = _case_path(case)
            if case.id in seen:
                raise DataError(path, f"duplicate case id {case.id!r}", "duplicate_id")
            seen.add(case.id)
            label = -1
            if class_names:
                if case.label is None:
                    raise DataError(path, f"case {case.id!r} has no class label, but class_names were given "
                                          f"({len(class_names)} classes): a conditional GAN needs one per image",
                                    "layout")
                if not 0 <= int(case.label) < len(class_names):
                    raise DataError(path, f"case {case.id!r} has label {case.label}, outside the "
                                          f"{len(class_names)} class_names", "label_values")
                label = int(case.label)
                label_counts[label] += 1
            for r in res:
                try:
                    img = np.asarray(gan_preprocess(case.image, r, modality=modality, window=window))
                except (ValueError, TypeError) as e:
                    raise DataError(path, f"cannot preprocess case {case.id!r} (shape {np.shape(case.image)}) "
                                          f"for the GAN at {r} px: {e}", "corrupt") from e
                if img.dtype != np.uint8 or img.shape != (r, r, 3):
                    raise DataError(path, f"gan_preprocess returned {img.dtype} {img.shape}, expected uint8 "
                                          f"{(r, r, 3)}", "corrupt")
                example = {"image": _encode_png(img), "label": label, "id": case.id}
                writers[r].write(serializers[r](example))
        if not seen:
            raise DataError(out_dir, f"no cases to write for dataset {name!r}", "layout")
        for r in res:
            writers[r].close()
            meta = dict(format=FORMAT, format_version=FORMAT_VERSION, name=name, resolution=r, xflip=bool(xflip),
                        class_names=class_names, num_records=sum(writers[r].shard_lengths),
                        modality=modality, window=None if window is None else [float(w) for w in window],
                        label_counts=label_counts)
            split = tfds.core.SplitInfo(name=SPLIT, shard_lengths=writers[r].shard_lengths,
                                        num_bytes=writers[r].num_bytes)
            description = (f"{name} at {r}x{r} px for StyleGAN-XL training (radgan_jax). "
                           f"GAN metadata: {json.dumps(meta)}")
            tfds.folder_dataset.write_metadata(
                data_dir=tmp[r] / VERSION, features=features[r], split_infos=[split], version=VERSION,
                check_data=False, description=description, metadata=tfds.core.MetadataDict(meta))
        for r in res:
            tmp[r].rename(finals[r])
    except BaseException:
        for w in writers.values():
            w._close_shard()
        for d in tmp.values():
            shutil.rmtree(d, ignore_errors=True)
        raise
    return {r: finals[r] / VERSION for r in res}


def labeled_pair_features(h: int, w: int, ch: int, class_names: Sequence[str]):
    """TFDS features of a synthetic labeled pair (interpret_sample): image, mask, class, id, uncertainty."""
    import tensorflow_datasets as tfds  # building only (docs/ARCHITECTURE.md 'TensorFlow policy')

    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(h, w, ch), dtype=np.uint8, encoding_format="png"),
        "mask": tfds.features.Image(shape=(h, w, 1), dtype=np.uint8, encoding_format="png"),
        "label": tfds.features.ClassLabel(names=list(class_names)),
        "id": tfds.features.Text(),
        "uncertainty": tfds.features.Scalar(dtype=np.float32, doc="ensemble JSD score (0: one interpreter)"),
    })


def assemble_array_record_shards(version_dir: Path, name: str, shards: Sequence[tuple[Path, list[int] | None]],
                                 features: Any, metadata: dict, description: str) -> list[int]:
    """One TFDS dataset from ArrayRecord shards written independently (e.g. one per host and chunk):
    `shards` = (file, indices of the records to keep, or None for all) in order. Whole shards are hard-linked
    (copied where links fail), partial ones rewritten; then TFDS metadata is written. Returns shard lengths."""
    import tensorflow_datasets as tfds
    from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

    version_dir.mkdir(parents=True, exist_ok=True)
    lengths, num_bytes, tmp_names = [], 0, []
    for src, keep in shards:
        if keep is not None and not keep:
            continue
        dst = version_dir / f"shard-{len(tmp_names):06d}"
        if keep is None:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
            num_bytes += src.stat().st_size
            reader = ArrayRecordReader(str(src))
            lengths.append(reader.num_records())
            reader.close()
        else:
            reader = ArrayRecordReader(str(src))
            records = reader.read(keep)
            reader.close()
            writer = ArrayRecordWriter(str(dst), _ARRAY_RECORD_OPTIONS)
            for r in records:
                writer.write(r)
            writer.close()
            num_bytes += sum(len(r) for r in records)
            lengths.append(len(keep))
        tmp_names.append(dst)
    n = len(tmp_names)
    for i, p in enumerate(tmp_names):
        p.rename(p.with_name(f"{name}-{SPLIT}.array_record-{i:05d}-of-{n:05d}"))
    split = tfds.core.SplitInfo(name=SPLIT, shard_lengths=lengths, num_bytes=num_bytes)
    tfds.folder_dataset.write_metadata(data_dir=version_dir, features=features, split_infos=[split],
                                       version=version_dir.name, check_data=False, description=description,
                                       metadata=tfds.core.MetadataDict(metadata))
    return lengths

