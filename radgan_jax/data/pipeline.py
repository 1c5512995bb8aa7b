"""The GAN input pipeline: deterministic, per-host sharded batches from a `tfds_build` dataset (grain, no TF).

Order. The pipeline is one infinite stream of global positions g = 0, 1, 2, ... Position g lies in epoch
e = g // M at index j = g % M (M = N records, or 2N with xflip) and reads record `perm_e[j]`, where perm_e is
grain's `index_shuffle` (a Feistel permutation: O(1) memory even for millions of records) keyed by
(seed, epoch): the order is a pure function of (seed, epoch) and changes every epoch. Global batch b is the
positions [b*B, (b+1)*B) (B = global_batch_size), like StyleGAN's InfiniteSampler: batches may straddle an
epoch boundary and no record is ever dropped.

Sharding. Host k of n reads rows [k*Bl, (k+1)*Bl) of every global batch (Bl = B/n): local position p ->
g = (p // Bl) * B + k * Bl + p % Bl. Every host reads only its records (random access into ArrayRecord); the
hosts' positions are disjoint and together are the whole stream (every epoch exactly, duplicates impossible),
and global batch b is the same rows IN THE SAME ORDER whatever the number of hosts (per-row random draws such
as DiffAugment's then see the same images): a run can resume on a different host count. (grain's contiguous
`ShardOptions` ranges would pin every host to the same records every epoch and drop the remainder; blocks of
each global batch give each host a fresh random subset per epoch.)

xflip = StyleGAN-XL's `--mirror`: record index i >= N is the x-flipped copy of record i - N. The emitted
'index' is that index in [0, M).

Batches are dicts {'image': uint8 (B_local, R, R, 3), 'label': int32 (B_local,) (-1: unconditional),
'index': int64 (B_local,)}. Images stay uint8 on the host (4x less host->device traffic than float32); the
train step maps them to [-1, 1] on the device with `radgan_jax.data.preprocess.to_unit_range`'s formula,
x / 127.5 - 1. `to_global` makes the global batch-sharded jax.Array from the local batch.

State. `get_state()` is a small JSON dict (next global batch + what must match on resume); `set_state`
continues with exactly the batches that were not yet returned (prefetched batches are re-read).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import sys
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import Mesh
from PIL import Image

from radgan_jax.data.base import DataError
from radgan_jax.parallel.sharding import shard_host_batch

STATE_VERSION = 1
_INFINITE_BATCHES = sys.maxsize // 2**16  # "forever": ~1.4e14 batches, still an index grain can slice


@dataclasses.dataclass(frozen=True)
class GanDatasetInfo:
    """What training needs from a GAN dataset's metadata (written by `tfds_build.build_gan_datasets`)."""

    path: Path
    name: str
    resolution: int
    num_records: int
    class_names: tuple[str, ...]
    xflip: bool
    modality: str = "auto"
    window: tuple[float, float] | None = None
    label_counts: tuple[int, ...] | None = None  # images per class (None: a dataset built before they were kept)


def _find_dataset(data_dir: Path, resolution: int) -> Path:
    """The version folder of the `resolution` dataset: `data_dir` itself, its one version, or `*_<R>px/<v>`."""
    if (data_dir / "dataset_info.json").is_file():
        return data_dir
    if not data_dir.is_dir():
        raise DataError(data_dir, "GAN dataset folder does not exist", "layout")
    versions = sorted(p.parent for p in data_dir.glob("*/dataset_info.json"))
    if not versions:
        versions = sorted(p.parent for p in data_dir.glob(f"*_{resolution}px/*/dataset_info.json"))
    if len(versions) != 1:
        found = "none" if not versions else ", ".join(str(v.relative_to(data_dir)) for v in versions)
        raise DataError(data_dir, f"expected exactly one {resolution} px GAN dataset (<name>_{resolution}px/<version>"
                                  f"/dataset_info.json, as tfds_build writes), found {found}", "layout")
    return versions[0]


def make_gan_source(data_dir: str | Path, resolution: int) -> tuple[Any, GanDatasetInfo]:
    """(random-access data source of raw records, info) of the `resolution` px dataset under `data_dir`.

    `data_dir` is the `out_dir` given to `build_gan_datasets` or one dataset's folder. Records are dicts
    {'image': PNG bytes, 'label': int, 'id': bytes}; images are decoded by the pipeline (Pillow), not TFDS.
    """
    import tensorflow_datasets as tfds  # reading ArrayRecord via tfds.data_sources does not import TensorFlow

    path = _find_dataset(Path(data_dir), int(resolution))
    try:
        builder = tfds.builder_from_directory(str(path))
        meta = dict(builder.info.metadata or {})
    except Exception as e:  # a broken dataset_info.json / features.json: name the folder
        raise DataError(path, f"cannot read the TFDS dataset metadata: {e}", "corrupt") from e
    if meta.get("format") != "radgan_gan_dataset":
        raise DataError(path, "not a radgan_jax GAN dataset (metadata.json lacks format=radgan_gan_dataset); "
                              "build it with radgan_jax.data.tfds_build.build_gan_datasets", "layout")
    if int(meta["resolution"]) != int(resolution):
        raise DataError(path, f"dataset holds {meta['resolution']} px images, {resolution} px were asked for",
                        "size_mismatch")
    source = builder.as_data_source(split="train", decoders={"image": tfds.decode.SkipDecoding()})
    window = meta.get("window")
    info = GanDatasetInfo(path=path, name=str(meta.get("name", builder.name)), resolution=int(meta["resolution"]),
                          num_records=len(source), class_names=tuple(meta.get("class_names", ())),
                          xflip=bool(meta.get("xflip", False)), modality=str(meta.get("modality", "auto")),
                          window=None if window is None else (float(window[0]), float(window[1])),
                          label_counts=tuple(int(n) for n in meta["label_counts"]) if meta.get("label_counts")
                          else None)
    return source, info


def _absl_flags_usable() -> None:
    """grain 0.2.18's mp_prefetch reads an absl flag, which raises in scripts that never parse flags (not run
    by absl.app: pytest, notebooks, bench/). google/grain#1355, fixed upstream by falling back to the default;
    until then, mark flags parsed (their defaults stay in force) when nobody parsed them."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


@functools.lru_cache(maxsize=256)
def _epoch_seed(seed: int, epoch: int) -> int:
    # Hash (seed, epoch) into index_shuffle's 32-bit seed: seed s epoch e+1 must not equal seed s+1 epoch e.
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def record_at(position: int, *, num_records: int, seed: int, xflip: bool) -> int:
    """Record index in [0, M) read at global stream `position` (M = 2 * num_records with xflip)."""
    m = num_records * (2 if xflip else 1)
    epoch, j = divmod(int(position), m)
    if m == 1:
        return 0
    return int(grain.experimental.index_shuffle(j, max_index=m - 1, seed=_epoch_seed(seed, epoch), rounds=4))


def epoch_order(epoch: int, *, num_records: int, seed: int, xflip: bool) -> np.ndarray:
    """The global order of `epoch`: record indices in [0, M), a permutation of range(M)."""
    m = num_records * (2 if xflip else 1)
    return np.array([record_at(epoch * m + j, num_records=num_records, seed=seed, xflip=xflip) for j in range(m)],
                    np.int64)


class _LoadExample:
    """Local stream position -> decoded example. A picklable callable, so grain worker processes can run it."""

    def __init__(self, source: Any, num_records: int, seed: int, xflip: bool, shard_index: int, shard_count: int,
                 resolution: int, path: Path, local_batch_size: int):
        self.path = path
        self.source, self.n, self.seed, self.xflip = source, num_records, seed, xflip
        self.k, self.hosts, self.res, self.local_batch = shard_index, shard_count, resolution, local_batch_size

    def global_position(self, local_position: int) -> int:
        """Host k's b-th local batch is rows [k*Bl, (k+1)*Bl) of global batch b: concatenating the hosts' batches
        gives the global batch in the same row order whatever the host count (rows meet per-row random draws)."""
        b, j = divmod(local_position, self.local_batch)
        return b * self.local_batch * self.hosts + self.k * self.local_batch + j

    def __call__(self, local_position: int) -> dict[str, Any]:
        index = record_at(self.global_position(local_position), num_records=self.n, seed=self.seed,
                          xflip=self.xflip)
        flip, record = divmod(index, self.n)
        ex = self.source[record]
        try:
            image = np.asarray(Image.open(io.BytesIO(ex["image"])).convert("RGB"))
        except Exception as e:  # a damaged record: name the dataset and the record
            raise DataError(self.path, f"record {record} ({ex.get('id', b'?')!r}): PNG does not decode: {e}",
                            "corrupt") from e
        if image.shape != (self.res, self.res, 3):
            raise DataError(self.path, f"record {record}: image is {image.shape}, expected "
                                       f"{(self.res, self.res, 3)}", "size_mismatch")
        if flip:
            image = image[:, ::-1]
        return {"image": np.ascontiguousarray(image), "label": np.int32(ex["label"]), "index": np.int64(index)}


class GanInputPipeline:
    """Iterator of this host's local batches; see the module docstring for order, sharding, xflip and state.

    xflip None: as stored in the dataset's metadata. num_epochs None: forever; otherwise the stream ends after
    num_epochs * M positions, dropping the last incomplete global batch (every host gets the same batch count).
    worker_count > 0 decodes in that many grain worker processes (grain `mp_prefetch`).
    """

    def __init__(self, data_dir: str | Path, resolution: int, *, global_batch_size: int, seed: int,
                 xflip: bool | None = None, shard_index: int | None = None, shard_count: int | None = None,
                 num_epochs: int | None = None, worker_count: int = 0):
        self.source, self.info = make_gan_source(data_dir, resolution)
        self.shard_index = jax.process_index() if shard_index is None else int(shard_index)
        self.shard_count = jax.process_count() if shard_count is None else int(shard_count)
        if not 0 <= self.shard_index < self.shard_count:
            raise ValueError(f"shard_index {self.shard_index} is not in [0, shard_count={self.shard_count})")
        if global_batch_size <= 0 or global_batch_size % self.shard_count:
            raise ValueError(f"global_batch_size {global_batch_size} must be a positive multiple of the "
                             f"{self.shard_count} hosts")
        if num_epochs is not None and num_epochs <= 0:
            raise ValueError(f"num_epochs must be positive or None (forever), got {num_epochs}")
        if not 0 <= int(seed) < 2**63:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.resolution, self.seed, self.worker_count = int(resolution), int(seed), int(worker_count)
        self.global_batch_size = int(global_batch_size)
        self.local_batch_size = self.global_batch_size // self.shard_count
        self.xflip = self.info.xflip if xflip is None else bool(xflip)
        self.num_examples = self.info.num_records * (2 if self.xflip else 1)  # M: examples per epoch
        if num_epochs is None:
            self.num_batches = _INFINITE_BATCHES
        else:
            self.num_batches = num_epochs * self.num_examples // self.global_batch_size
            if self.num_batches == 0:
                raise ValueError(f"{num_epochs} epoch(s) of {self.num_examples} examples make no full global "
                                 f"batch of {self.global_batch_size}")
        self.num_epochs = num_epochs
        load = _LoadExample(self.source, self.info.num_records, self.seed, self.xflip, self.shard_index,
                            self.shard_count, self.resolution, self.info.path, self.local_batch_size)
        positions = grain.MapDataset.range(self.num_batches * self.local_batch_size)
        self._batches = positions.map(load).batch(self.local_batch_size, drop_remainder=True)
        self._next_batch = 0
        self._iter: Any = None

    # ------------------------------------------------------------------------------------------ iteration
    def _start(self) -> None:
        self.close()
        # Batches are formed on the MapDataset, so grain workers each get whole batches (mp_prefetch slices
        # before to_iter_dataset) and the output does not depend on worker_count.
        it = self._batches[self._next_batch:].to_iter_dataset(
            grain.ReadOptions(num_threads=0 if self.worker_count else 4, prefetch_buffer_size=4))
        if self.worker_count > 0:
            _absl_flags_usable()
            it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.worker_count))
        self._iter = iter(it)

    def __iter__(self) -> GanInputPipeline:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._next_batch >= self.num_batches:
            self.close()  # frees grain's worker processes / shared memory at the end of a finite stream
            raise StopIteration
        if self._iter is None:
            self._start()
        batch = next(self._iter)
        self._next_batch += 1
        return batch

    def __len__(self) -> int:
        """Local batches in total (forever: a huge number)."""
        return self.num_batches

    def close(self) -> None:
        """Stops prefetch threads / worker processes (they are restarted on the next batch)."""
        if self._iter is not None and hasattr(self._iter, "close"):
            self._iter.close()
        self._iter = None

    def epoch_of_batch(self, batch: int) -> float:
        """Epoch (fractional) reached at the start of global batch `batch` (for logs: 'epoch 3.25')."""
        return batch * self.global_batch_size / self.num_examples

    # ------------------------------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable: where to continue, and what a resuming pipeline must agree on."""
        return {"version": STATE_VERSION, "next_batch": self._next_batch, "seed": self.seed,
                "global_batch_size": self.global_batch_size, "xflip": self.xflip,
                "num_records": self.info.num_records, "resolution": self.resolution, "num_epochs": self.num_epochs}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues after the batches `state` had returned. The host count may differ (global batches do not
        depend on it); seed, batch size, xflip, dataset size, resolution and num_epochs must match."""
        mine = self.get_state()
        for key in ("version", "seed", "global_batch_size", "xflip", "num_records", "resolution", "num_epochs"):
            if state.get(key) != mine[key]:
                raise ValueError(f"input pipeline state has {key}={state.get(key)!r} but this pipeline has "
                                 f"{mine[key]!r}: the stream would differ, so it cannot resume from that state")
        nxt = int(state["next_batch"])
        if not 0 <= nxt <= self.num_batches:
            raise ValueError(f"input pipeline state next_batch={nxt} is outside [0, {self.num_batches}]")
        self.close()
        self._next_batch = nxt


def to_global(mesh: Mesh, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Global batch-sharded arrays from this host's local batch (rows of host k follow those of host k-1)."""
    return shard_host_batch(mesh, local_batch)
