"""The labeled-data factory: which (class, index) each host renders, the latent rule, and the rendering step.

Sample rule: sample `i` (0-based) of class `k` has the latent
    z = np.random.RandomState([seed, k, i]).randn(1, z_dim).astype(float32)
(MT19937 seeded by `init_by_array` -- NumPy's frozen legacy stream), class one-hot(k), ws = mapping(z, c) truncated
toward the class centre with `truncation_psi`; the image is `synthesis(ws)` (no input transform, as the
interpreter's features) and the mask is read from the same pass's features. Every sample is a function of
(seed, k, i) and the two checkpoints alone -- bit for bit once `per_device_batch` is fixed (below).

Work plan: every class is cut into chunks of `chunk_size` consecutive indices (class order as given); chunk j
goes to host `j % process_count` (round-robin). A host renders its chunks on its own devices (a host-local mesh,
no collectives) with `jax.shard_map`, `per_device_batch` rows per device and step.

Why the bytes do not depend on devices, hosts, M or the chunking: StyleGAN3's modulated conv (and so ours,
`synthesis.py`) pre-normalises the styles by one RMS over the *whole batch*; demodulation cancels it
mathematically but not in the last float bits, so a sample's pixels depend (by ~5e-7, a uint8 value off by one
now and then) on which other samples share its batch. A plain batch-sharded jit takes that RMS over the global
batch (across devices, so it changes with the device count); under shard_map each device normalises its own
rows. The rows a device gets are always the aligned group {p * B, ..., p * B + B - 1} (B = per_device_batch) of
one class: chunks hold a multiple of B indices, and the last chunk of a class is extended with the indices after
M (`SamplePlan.render_rows`; rendered, then dropped) instead of repeated rows. A sample's bytes thus depend on
(seed, k, i, per_device_batch), the checkpoints and the backend only.

Mask: one interpreter -> `losses.predict_labels` of its logits; an ensemble -> argmax of the members' mean
probabilities (`losses.probabilities`), plus the per-sample uncertainty of `uncertainty.sample_uncertainty`
(0 for one member, the JSD of a single distribution).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from radgan_jax.interpret.features import FeatureGroup, class_embedding, synthesize_with_features
from radgan_jax.interpret.losses import predict_labels, probabilities
from radgan_jax.interpret.uncertainty import sample_uncertainty
from radgan_jax.models.interpreter import Interpreter
from radgan_jax.models.stylegan_xl.generator import Generator
from radgan_jax.parallel.sharding import (
    batch_sharding,
    global_from_host,
    host_from_global,
    num_batch_shards,
    replicated,
)


def sample_z(seed: int, class_index: int, index: int, z_dim: int) -> np.ndarray:
    """The latent [1, z_dim] float32 of sample `index` of class `class_index` (see the module docstring)."""
    for name, v in (("seed", seed), ("class", class_index), ("index", index)):
        if not 0 <= int(v) < 2 ** 32:
            raise ValueError(f"{name} {v} outside [0, 2**32): cannot seed the sample's latent")
    return np.random.RandomState([int(seed), int(class_index), int(index)]).randn(1, z_dim).astype(np.float32)


def case_id(class_index: int, index: int, conditional: bool = True) -> str:
    """nnU-Net case id of a sample: 'class003_000042' (fixed widths: lexicographic order = (class, index));
    'uncond_000042' for an unconditional generator."""
    return f"{f'class{int(class_index):03d}' if conditional else 'uncond'}_{int(index):06d}"


@dataclasses.dataclass(frozen=True)
class SamplePlan:
    """`num_per_class` samples of each class in `classes`; each class cut into chunks of `chunk_size` indices."""

    classes: tuple[int, ...]
    num_per_class: int
    chunk_size: int

    def __post_init__(self):
        if not self.classes:
            raise ValueError("sample plan: no classes")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"sample plan: classes {list(self.classes)} repeat")
        if self.num_per_class < 1 or self.chunk_size < 1:
            raise ValueError(f"sample plan: num_per_class ({self.num_per_class}) and chunk_size "
                             f"({self.chunk_size}) must be >= 1")
        if self.num_per_class > 10 ** 6:
            raise ValueError(f"num_per_class {self.num_per_class} > 1,000,000 (case ids hold 6 index digits)")

    @property
    def num_samples(self) -> int:
        return len(self.classes) * self.num_per_class

    @property
    def chunks_per_class(self) -> int:
        return -(-self.num_per_class // self.chunk_size)

    @property
    def num_chunks(self) -> int:
        return len(self.classes) * self.chunks_per_class

    def chunk_rows(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """(class indices, sample indices) of the rows of `chunk`, int64 arrays (one class per chunk)."""
        if not 0 <= chunk < self.num_chunks:
            raise IndexError(f"chunk {chunk} outside [0, {self.num_chunks})")
        k, part = divmod(chunk, self.chunks_per_class)
        idx = np.arange(part * self.chunk_size, min((part + 1) * self.chunk_size, self.num_per_class))
        return np.full(len(idx), self.classes[k], np.int64), idx

    def render_rows(self, chunk: int, per_device_batch: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(classes, indices, n): the chunk's rows extended with the indices that follow it (beyond M where the
        class ends) to a multiple of `per_device_batch`; the first n rows are the chunk's samples. Rendering these
        keeps every sample in its aligned batch group (see the module docstring)."""
        if self.chunk_size % per_device_batch:
            raise ValueError(f"chunk_size {self.chunk_size} must be a multiple of per_device_batch "
                             f"{per_device_batch} (so that each sample keeps its batch group)")
        ks, idx = self.chunk_rows(chunk)
        pad = -len(idx) % per_device_batch
        if pad:
            ks = np.concatenate([ks, np.full(pad, ks[0], np.int64)])
            idx = np.concatenate([idx, idx[-1] + 1 + np.arange(pad, dtype=np.int64)])
        return ks, idx, len(idx) - pad

    def host_chunks(self, process_index: int, process_count: int) -> list[int]:
        """The chunks host `process_index` of `process_count` renders (round-robin)."""
        if not 0 <= process_index < process_count:
            raise ValueError(f"process {process_index} of {process_count}")
        return list(range(process_index, self.num_chunks, process_count))

    def host_samples(self, process_index: int, process_count: int) -> int:
        return sum(len(self.chunk_rows(j)[1]) for j in self.host_chunks(process_index, process_count))


def latents(seed: int, classes: np.ndarray, indices: np.ndarray, z_dim: int) -> np.ndarray:
    """z [N, z_dim] of the given (class, index) rows."""
    if len(classes) == 0:
        return np.zeros((0, z_dim), np.float32)
    return np.concatenate([sample_z(seed, k, i, z_dim) for k, i in zip(classes, indices, strict=True)])


# ---- rendering ----

@dataclasses.dataclass(frozen=True)
class Labeled:
    """One rendered batch on the host: images float32 [N, H, W, C] in ~[-1, 1], masks uint8 [N, H, W] (label
    values), uncertainty float32 [N] (0 for a single interpreter)."""

    images: np.ndarray
    masks: np.ndarray
    uncertainty: np.ndarray


def decode_masks(logits: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Members' logits [N, H, W, K] each -> (labels int32 [N, H, W], uncertainty float32 [N]). One member: its
    `predict_labels`; several: argmax of the mean probabilities and `sample_uncertainty`."""
    if not logits:
        raise ValueError("decode_masks: no interpreter outputs")
    if len(logits) == 1:
        return predict_labels(logits[0]), jnp.zeros((logits[0].shape[0],), jnp.float32)
    probs = jnp.stack([probabilities(x) for x in logits])
    return jnp.argmax(jnp.mean(probs, axis=0), axis=-1).astype(jnp.int32), sample_uncertainty(probs)


def map_step(gen: Generator, psi: float, cutoff: int | None, gen_variables: Mapping, z: jax.Array,
             c: jax.Array) -> jax.Array:
    """z [N, z_dim], class indices c [N] -> truncated ws [N, num_ws, w_dim] (the mapping network)."""
    c_onehot = (jax.nn.one_hot(c, gen.spec.c_dim, dtype=jnp.float32) if gen.spec.c_dim
                else jnp.zeros((z.shape[0], 0), jnp.float32))
    return gen.apply(gen_variables, z, c_onehot, truncation_psi=psi, truncation_cutoff=cutoff, method=Generator.map)


def label_step(gen: Generator, models: tuple[Interpreter, ...], groups: tuple[FeatureGroup, ...],
               gen_variables: Mapping, interp_variables: Sequence[Mapping], ws: jax.Array, c: jax.Array
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """ws [N, num_ws, w_dim], class indices c [N] -> (images float32 [N, H, W, C], masks uint8 [N, H, W],
    uncertainty [N]) (pure; eval-mode interpreters). Same path as training: features synthesized from ws."""
    img, feats = synthesize_with_features(gen, gen_variables, ws, groups)
    y = class_embedding(gen, gen_variables, c)
    logits = [m.apply(dict(v), feats, y, train=False) for m, v in zip(models, interp_variables, strict=True)]
    masks, score = decode_masks(logits)
    return img, masks.astype(jnp.uint8), score


@functools.lru_cache(maxsize=8)
def _per_device_program(gen: Generator, models: tuple[Interpreter, ...], groups: tuple[FeatureGroup, ...],
                        psi: float, cutoff: int | None, mesh: Any) -> Callable:
    """jit(shard_map(map -> label_step)): every device runs the same program on its own `per_device_batch` rows,
    its batch statistics (StyleGAN3's style RMS) over those rows only. A plain batch-sharded jit would reduce them
    over the global batch, and the low bits would change with the device count (measured: ~5e-7, 1 vs 2 vs 4)."""
    from jax.sharding import PartitionSpec

    rows = PartitionSpec(batch_sharding(mesh, 1).spec[0])

    def per_device(gen_variables, interp_variables, z, c):
        ws = map_step(gen, psi, cutoff, gen_variables, z, c)
        return label_step(gen, models, groups, gen_variables, interp_variables, ws, c)

    return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(), rows, rows),
                                 out_specs=(rows, rows, rows)))


class Renderer:
    """Renders labeled samples batch-sharded over `mesh` (normally this host's devices) in fixed per-device
    batches; the generator and interpreter weights are placed once, replicated, and passed as jit arguments."""

    def __init__(self, gen: Generator, gen_variables: Mapping, models: Sequence[Interpreter],
                 interp_variables: Sequence[Mapping], groups: Sequence[FeatureGroup], mesh: Any, *,
                 psi: float = 1.0, cutoff: int | None = None, per_device_batch: int = 8):
        if len(models) != len(interp_variables) or not models:
            raise ValueError(f"{len(models)} interpreter modules but {len(interp_variables)} variable sets")
        if per_device_batch < 1:
            raise ValueError(f"per_device_batch must be >= 1, got {per_device_batch}")
        self.gen, self.mesh = gen, mesh
        self.step_rows = int(per_device_batch) * num_batch_shards(mesh)
        self._fn = _per_device_program(gen, tuple(models), tuple(groups), float(psi), cutoff, mesh)
        rep = replicated(mesh)
        self._gen_vars = jax.device_put(dict(gen_variables), rep)
        self._interp_vars = jax.device_put([dict(v) for v in interp_variables], rep)

    def __call__(self, z: np.ndarray, c: np.ndarray) -> Labeled:
        """Host latents z [N, z_dim] and class indices c [N] -> `Labeled` (numpy), any N >= 1. Rows r with equal
        r // per_device_batch share a device batch (which can change float low bits, see the module docstring);
        the last step is padded by repeating the last row -- whole device batches when N is a multiple of
        per_device_batch."""
        n = len(z)
        if n == 0 or len(c) != n:
            raise ValueError(f"render: need N >= 1 latents and as many classes, got {len(z)} and {len(c)}")
        b = self.step_rows
        pad = -n % b
        z = np.concatenate([np.asarray(z, np.float32), np.repeat(np.asarray(z[-1:], np.float32), pad, 0)])
        c = np.concatenate([np.asarray(c, np.int32), np.repeat(np.asarray(c[-1:], np.int32), pad, 0)])
        # Dispatch every step first (asynchronous), then fetch: the devices run ahead of the host transfers.
        outs = [self._fn(self._gen_vars, self._interp_vars, global_from_host(self.mesh, z[s:s + b]),
                         global_from_host(self.mesh, c[s:s + b])) for s in range(0, n + pad, b)]
        parts = [[host_from_global(x) for x in out] for out in outs]
        images, masks, scores = (np.concatenate(p)[:n] for p in zip(*parts, strict=True))
        return Labeled(images=images, masks=masks, uncertainty=scores.astype(np.float32))
