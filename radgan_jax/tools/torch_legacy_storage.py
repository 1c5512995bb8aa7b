"""Torch storages and tensors from a plain-pickled network, as numpy arrays (no torch import).

A torch Tensor inside a plain ``pickle.dump`` (how StyleGAN2/3/XL snapshots are written) is stored as
``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks
[, metadata])``; a Parameter wraps that in ``torch._utils._rebuild_parameter(data, requires_grad, hooks)``.
The storage itself pickles as ``torch.storage._load_from_bytes(b)`` where ``b`` is a *legacy* (non-zip)
``torch.save`` stream (torch/serialization.py ``_legacy_save``; checked against torch 2.13 and the layout of
torch 1.9):

1. pickle: magic number ``0x1950a86a20f9469cfc6c``; 2. pickle: protocol version ``1001``;
3. pickle: sys_info dict (``little_endian``, ``type_sizes``);
4. pickle of the storage whose storages are persistent ids
   ``('storage', torch.FloatStorage | ..., key: str, location: str, numel: int[, view_metadata])``;
5. pickle: sorted list of storage keys;
6. per key: int64 little-endian element count, then ``count * itemsize`` raw little-endian bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

try:  # bfloat16 has no numpy dtype; ml_dtypes ships with jax.
    import ml_dtypes as _ml_dtypes

    _BFLOAT16: np.dtype | None = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - jax always brings ml_dtypes
    _BFLOAT16 = None

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER
LEGACY_PROTOCOL_VERSION = 1001  # torch/serialization.py PROTOCOL_VERSION

_STORAGE_NAMES: dict[str, str | None] = {  # legacy storage class -> numpy dtype (None: bfloat16 / none)
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "BFloat16Storage": None,
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "ComplexFloatStorage": "<c8", "ComplexDoubleStorage": "<c16",
    "UntypedStorage": "u1", "TypedStorage": None,
}
_TORCH_DTYPE_NAMES: dict[str, str | None] = {  # torch.<name> -> numpy dtype (None = bfloat16)
    "float32": "<f4", "float": "<f4", "float64": "<f8", "double": "<f8", "float16": "<f2", "half": "<f2",
    "bfloat16": None, "int64": "<i8", "long": "<i8", "int32": "<i4", "int": "<i4", "int16": "<i2",
    "short": "<i2", "int8": "i1", "uint8": "u1", "bool": "?", "complex64": "<c8", "cfloat": "<c8",
    "complex128": "<c16", "cdouble": "<c16",
}


def _np_dtype(spec: str | None, what: str) -> np.dtype:
    if spec is not None:
        return np.dtype(spec)
    if _BFLOAT16 is None:
        raise ValueError(f"{what} holds bfloat16 data, which needs the ml_dtypes package")
    return _BFLOAT16


@dataclass(frozen=True)
class StorageType:
    """Inert stand-in for a torch storage class such as ``torch.FloatStorage``."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        spec = _STORAGE_NAMES[self.name]
        if self.name == "TypedStorage":
            raise ValueError("torch.storage.TypedStorage has no fixed dtype")
        return _np_dtype(spec, f"torch.{self.name}")


@dataclass(frozen=True)
class TorchDtype:
    """Inert stand-in for a torch dtype such as ``torch.float32``."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return _np_dtype(_TORCH_DTYPE_NAMES[self.name], f"torch.{self.name}")


@dataclass(frozen=True)
class LegacyStorage:
    """One torch storage: a read-only 1-D array of its elements, and its device (``'cpu'``, ``'cuda:0'``)."""

    data: np.ndarray
    location: str


def is_storage_name(name: str) -> bool:
    return name in _STORAGE_NAMES


def is_torch_dtype_name(name: str) -> bool:
    return name in _TORCH_DTYPE_NAMES


@dataclass(frozen=True)
class _StorageRef:
    key: str
    view: Any


def parse_legacy_stream(data: bytes, load: Callable[[io.BytesIO, Callable[[Any], Any] | None], Any]
                        ) -> LegacyStorage:
    """Parse the legacy ``torch.save`` bytes of one storage. ``load(file, persistent_load)`` must be a
    restricted unpickler (it sees only storage types, ints and strings here)."""
    if not isinstance(data, bytes | bytearray):
        raise ValueError(f"torch storage stream must be bytes, got {type(data).__name__}")
    buf = bytes(data)  # no copy for bytes; io.BytesIO shares an immutable bytes buffer
    f = io.BytesIO(buf)
    if load(f, None) != LEGACY_MAGIC_NUMBER:
        raise ValueError("torch storage stream: bad magic number (not a legacy torch.save stream)")
    version = load(f, None)
    if version != LEGACY_PROTOCOL_VERSION:
        raise ValueError(f"torch storage stream: protocol version {version!r}, expected 1001")
    sys_info = load(f, None)
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        raise ValueError("torch storage stream written on a big-endian machine is not supported")
    entries: dict[str, tuple[np.dtype, int, str]] = {}

    def persistent_load(pid: Any) -> _StorageRef:
        # torch/serialization.py persistent_id(): ('storage', type, key, location, numel, view_metadata)
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise ValueError(f"torch storage stream: unexpected persistent id {pid!r:.200}")
        stype, key, location, numel = pid[1:5]
        if not isinstance(stype, StorageType | TorchDtype) or not isinstance(key, str) \
                or not isinstance(numel, int) or numel < 0:
            raise ValueError(f"torch storage stream: malformed storage id {pid!r:.200}")
        entries[key] = (stype.dtype, numel, str(location))
        return _StorageRef(key, pid[5] if len(pid) == 6 else None)

    obj = load(f, persistent_load)
    keys = load(f, None)
    if not isinstance(obj, _StorageRef) or not isinstance(keys, list) or obj.key not in keys:
        raise ValueError("torch storage stream: does not hold exactly one storage")
    pos = f.tell()
    arrays: dict[str, np.ndarray] = {}
    for key in keys:
        if key not in entries:
            raise ValueError(f"torch storage stream: data for unknown storage key {key!r}")
        dtype, numel, _ = entries[key]
        count = int.from_bytes(buf[pos:pos + 8], "little", signed=True)
        nbytes = count * dtype.itemsize
        if pos + 8 + nbytes > len(buf) or count != numel:
            raise ValueError(f"torch storage stream truncated or inconsistent (storage {key!r}: {count} "
                             f"elements recorded, {numel} expected)")
        arrays[key] = np.frombuffer(buf, dtype=dtype, count=count, offset=pos + 8)  # read-only, no copy
        pos += 8 + nbytes
    arr = arrays[obj.key]
    if obj.view is not None:  # pre-1.0 torch storage views: (view_key, offset, view_size)
        _, off, size = obj.view
        arr = arr[int(off):int(off) + int(size)]
    return LegacyStorage(arr, entries[obj.key][2])


def rebuild_tensor(storage: LegacyStorage, offset: int, size: Sequence[int], stride: Sequence[int],
                   dtype: np.dtype | None = None) -> np.ndarray:
    """A tensor view of ``storage`` (element offset/strides, like ``torch.as_strided``) as a new C-contiguous
    numpy array. ``dtype`` reinterprets an untyped (byte) storage (``_rebuild_tensor_v3``)."""
    if not isinstance(storage, LegacyStorage):
        raise ValueError(f"tensor storage must come from torch.storage._load_from_bytes, got "
                         f"{type(storage).__name__}")
    data = storage.data
    if dtype is not None and dtype != data.dtype:
        if data.dtype != np.uint8 or data.size % dtype.itemsize:
            raise ValueError(f"cannot view a {data.dtype} storage as {dtype}")
        data = data.view(dtype)
    ints = [offset, *size, *stride]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints) \
            or len(size) != len(stride):
        raise ValueError(f"bad tensor geometry: offset={offset!r} size={size!r} stride={stride!r}")
    shape = tuple(size)
    if 0 in shape:
        return np.zeros(shape, data.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(shape, stride))
    if last >= data.size:  # as_strided does not bounds-check: never read outside the storage
        raise ValueError(f"tensor (offset {offset}, size {shape}, stride {tuple(stride)}) reads element "
                         f"{last} of a storage with {data.size} elements")
    strides = [s * data.itemsize for s in stride]
    view = as_strided(data[offset:], shape=shape, strides=strides, writeable=False)
    return np.array(view, copy=True, order="C")
