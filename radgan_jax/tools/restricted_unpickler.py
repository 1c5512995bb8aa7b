"""A pickle reader that never imports or runs anything named by the pickle (core of ``safe_unpickle``).

The stock ``pickle.Unpickler`` imports and calls any global the data names. Here the pure-Python
``pickle._Unpickler`` is used with every opcode that calls or mutates an object (REDUCE, NEWOBJ(_EX), INST,
OBJ, BUILD) overridden, so that only a fixed set of our own functions ever runs:

* torch tensors / parameters -> ``numpy.ndarray`` (``torch_legacy_storage``), ``torch.Size`` -> tuple;
* ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` -> inert :class:`PersistentRecord` (meta
  ``type == 'class'`` and ``version == 6`` checked; the embedded ``module_src`` is hashed, never executed);
* classes under :data:`RECORD_NAMESPACES` -> inert :class:`ObjectRecord` (constructor args, ``__setstate__``
  state); nothing is imported;
* ``collections.OrderedDict``, ``dnnlib.util.EasyDict`` (-> dict), builtin containers, ``_codecs.encode``
  (latin1 only: how protocol <= 2 writes bytes), numpy arrays / dtypes / scalars (bool, int, float, complex
  only; a pickled dtype *state* is never trusted), dill's ``_create_array`` / ``_load_type`` of builtin types.

Any other global raises :class:`UnsafePickleError` as soon as it is *named* (GLOBAL / STACK_GLOBAL opcode),
i.e. before anything that would use it. With ``strict=False`` such globals, and calls of them, become inert
placeholders instead (``GlobalRef.allowed`` / ``ObjectRecord.ref.allowed`` is False); nothing runs either way.
"""

from __future__ import annotations

import _compat_pickle
import collections
import hashlib
import io
import pickle
import struct
import warnings
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from radgan_jax.tools.torch_legacy_storage import (
    StorageType,
    TorchDtype,
    is_storage_name,
    is_torch_dtype_name,
    parse_legacy_stream,
    rebuild_tensor,
)

PERSISTENT_VERSION = 6  # torch_utils/persistence.py `_version`
#: Class/function names under these prefixes (all seen in StyleGAN-XL snapshots) become inert records.
RECORD_NAMESPACES = ("torch.nn.modules", "torch.nn.parameter", "torch.nn.utils", "timm", "torchvision",
                     "pg_modules", "feature_networks", "training", "torch_utils", "functools.partial")


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global, a call or a state change outside the whitelist. Nothing was executed."""


class PickleFormatError(ValueError):
    """The data is not a complete, well-formed pickle (or torch storage stream) of the expected kind."""


class GlobalRef:
    """Inert reference to a class/function named by the pickle; nothing is imported. ``allowed`` is False for
    a global outside the whitelist that was kept only because of ``strict=False``."""

    __slots__ = ("module", "name", "allowed")

    def __init__(self, module: str, name: str, allowed: bool = True):
        self.module, self.name, self.allowed = module, name, allowed

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"GlobalRef({self.qualname}{'' if self.allowed else ', unresolved'})"


class ObjectRecord:
    """Inert stand-in for an instance of ``ref`` (e.g. ``torch.nn.modules.sparse.Embedding``): constructor
    ``args``/``kwargs``, the ``__setstate__`` ``state`` (the instance ``__dict__`` for torch modules) and
    items that pickle appended / set on it. ``tensor_attrs``: state keys whose values were torch tensors."""

    def __init__(self, ref: GlobalRef, args: tuple = (), kwargs: dict | None = None):
        self.ref, self.args, self.kwargs = ref, tuple(args), dict(kwargs or {})
        self.state: Any = {}
        self.slotstate: dict = {}
        self.listitems: list = []
        self.dictitems: dict = {}
        self.tensor_attrs: frozenset[str] = frozenset()

    @property
    def class_name(self) -> str:
        return self.ref.name

    def append(self, item: Any) -> None:  # pickle APPEND(S) on list subclasses
        self.listitems.append(item)

    def extend(self, items: list) -> None:
        self.listitems.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:  # pickle SETITEM(S) on dict subclasses
        self.dictitems[key] = value

    def __repr__(self) -> str:
        return f"ObjectRecord({self.ref.qualname}{'' if self.ref.allowed else ', unresolved'})"


class PersistentRecord:
    """Inert stand-in for a ``torch_utils.persistence`` object (every StyleGAN network class): class name,
    state (the module ``__dict__``) and the sha256 of the embedded module source, which is never run."""

    def __init__(self, class_name: str, state: dict, module_src_sha256: str, tensor_attrs: frozenset[str]):
        self.class_name, self.state = class_name, state
        self.module_src_sha256, self.tensor_attrs = module_src_sha256, tensor_attrs

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args", ()))

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs", {}))

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name}, src sha256 {self.module_src_sha256[:12]})"


class _Func:
    """A whitelisted global: dispatched to the unpickler's ``_f_<method>`` (a bare token if there is none)."""

    __slots__ = ("qualname", "method")

    def __init__(self, qualname: str, method: str):
        self.qualname, self.method = qualname, method

    def __repr__(self) -> str:
        return f"<whitelisted {self.qualname}>"


_FUNCS: dict[str, str] = {
    "torch._utils._rebuild_tensor": "rebuild_tensor_v1",
    "torch._utils._rebuild_tensor_v2": "rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3": "rebuild_tensor_v3",
    "torch._utils._rebuild_parameter": "rebuild_param",
    "torch._utils._rebuild_parameter_with_state": "rebuild_param",
    "torch._tensor._rebuild_from_type": "rebuild_from_type",
    "torch._tensor._rebuild_from_type_v2": "rebuild_from_type",
    "torch.storage._load_from_bytes": "load_from_bytes",
    "torch_utils.persistence._reconstruct_persistent_obj": "persistent_obj",
    "torch.Size": "torch_size", "torch.device": "torch_device",
    "torch.Tensor": "token", "torch.nn.parameter.Parameter": "token",
    "collections.OrderedDict": "ordered_dict",
    "dnnlib.util.EasyDict": "easy_dict", "dnnlib.EasyDict": "easy_dict",
    "copyreg._reconstructor": "reconstructor", "copyreg.__newobj__": "newobj",
    "copyreg.__newobj_ex__": "newobj_ex", "_codecs.encode": "encode",
    "builtins.set": "set", "builtins.frozenset": "frozenset", "builtins.slice": "slice",
    "builtins.complex": "complex", "builtins.bytearray": "bytearray", "builtins.bytes": "bytes",
    "builtins.object": "token", "builtins.dict": "token", "builtins.list": "token",
    "numpy.dtype": "np_dtype", "numpy.ndarray": "token",
    "dill._dill._create_array": "dill_create_array", "dill._dill._load_type": "dill_load_type",
}
for _np in ("numpy.core", "numpy._core"):  # numpy 1.x / 2.x module names
    _FUNCS.update({f"{_np}.multiarray._reconstruct": "np_reconstruct",
                   f"{_np}.multiarray.scalar": "np_scalar", f"{_np}.numeric._frombuffer": "np_frombuffer"})
_DILL_TYPES = {"set": "set", "frozenset": "frozenset", "slice": "slice", "complex": "complex",
               "bytearray": "bytearray", "bytes": "bytes", "dict": "token", "list": "token",
               "object": "token"}
_NP_KINDS = "biufc"  # bool, int, uint, float, complex; never object/void/str/datetime


class _RestrictedUnpickler(pickle._Unpickler):  # pure-Python unpickler: its opcodes can be overridden
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, source: str, strict: bool, pid_loader: Any = None):
        super().__init__(file)
        self.source, self.strict, self.unresolved = source, strict, []
        self._pid_loader = pid_loader
        self._tensors: dict[int, np.ndarray] = {}  # id -> array (kept alive: ids stay unique while loading)
        self._np_pending: dict[int, np.ndarray] = {}  # arrays from _reconstruct awaiting their BUILD
        self._dtype_pending: dict[int, np.dtype] = {}
        self._src_sha: dict[int, tuple[str, str]] = {}

    def _refuse(self, msg: str) -> None:
        raise UnsafePickleError(f"{self.source}: {msg}. Nothing from this pickle was executed.")

    def persistent_load(self, pid: Any) -> Any:
        if self._pid_loader is None:
            self._refuse(f"persistent id {pid!r:.100} outside a torch storage stream")
        return self._pid_loader(pid)

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:  # Python-2 names written by protocol 0-2 (`__builtin__`, ...)
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        qual = f"{module}.{name}"
        if qual in _FUNCS:
            return _Func(qual, _FUNCS[qual])
        if module == "torch" and is_torch_dtype_name(name):
            return TorchDtype(name)
        if module in ("torch", "torch.storage") and is_storage_name(name):
            return StorageType(name)
        if any(qual == ns or qual.startswith(ns + ".") for ns in RECORD_NAMESPACES):
            return GlobalRef(module, name)
        if not self.strict:
            self.unresolved.append(qual)
            return GlobalRef(module, name, allowed=False)
        self._refuse(f"forbidden global {qual!r} (allowed: torch tensors and modules, numpy arrays, builtin "
                     f"containers and classes under {', '.join(RECORD_NAMESPACES)})")

    # ---- the opcodes that call or mutate objects ----
    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args, {})
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._new(self.stack[-1], args, {})
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs, args = self.stack.pop(), self.stack.pop()
        self.stack[-1] = self._new(self.stack[-1], args, kwargs)
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _instantiate(self, klass: Any, args: list) -> None:  # INST / OBJ (protocol 0/1)
        self.append(self._call(klass, tuple(args), {}))

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, ObjectRecord):
            slot = None
            if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict | None):
                state, slot = state
            inst.state, inst.slotstate = state, dict(slot or {})
            if isinstance(state, dict):
                inst.tensor_attrs = frozenset(k for k, v in state.items() if id(v) in self._tensors)
        elif isinstance(inst, np.ndarray) and id(inst) in self._np_pending:
            self._np_setstate(inst, state)
        elif isinstance(inst, np.dtype) and id(inst) in self._dtype_pending:
            self._dtype_setstate(inst, state)
        elif isinstance(inst, dict) and isinstance(state, dict | None):
            pass  # dict subclasses (EasyDict): attributes are stored as items, nothing to restore
        else:
            self._refuse(f"setting the state (BUILD) of a {type(inst).__name__} object is not allowed")
    dispatch[pickle.BUILD[0]] = load_build

    def _call(self, func: Any, args: Any, kwargs: Any) -> Any:
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            self._refuse(f"malformed call of {func!r:.100}")
        if isinstance(func, GlobalRef):
            return ObjectRecord(func, args, kwargs)
        impl = getattr(self, f"_f_{func.method}", None) if isinstance(func, _Func) else None
        if impl is None:
            self._refuse(f"refusing to call {func!r:.100}")
        try:
            return impl(*args, **kwargs)
        except TypeError as e:
            self._refuse(f"unexpected arguments for {func.qualname}: {e}")

    def _new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if isinstance(cls, GlobalRef):
            return self._call(cls, args, kwargs)
        makers = {"easy_dict": dict, "ordered_dict": collections.OrderedDict, "set": set}
        if isinstance(cls, _Func) and cls.method in makers and not args and not kwargs:
            return makers[cls.method]()
        self._refuse(f"refusing to create an object of {cls!r:.100}")

    # ---- torch ----
    def _tensor(self, arr: np.ndarray) -> np.ndarray:
        self._tensors[id(arr)] = arr
        return arr

    def _f_rebuild_tensor_v1(self, storage, offset, size, stride):
        return self._tensor(rebuild_tensor(storage, offset, tuple(size), tuple(stride)))

    def _f_rebuild_tensor_v2(self, storage, offset, size, stride, requires_grad=False, hooks=None,
                             metadata=None):
        return self._f_rebuild_tensor_v1(storage, offset, size, stride)

    def _f_rebuild_tensor_v3(self, storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
        if not isinstance(dtype, TorchDtype):
            self._refuse(f"_rebuild_tensor_v3 dtype must be a torch dtype, got {dtype!r:.60}")
        return self._tensor(rebuild_tensor(storage, offset, tuple(size), tuple(stride), dtype.dtype))

    def _f_rebuild_param(self, data, requires_grad=False, hooks=None, state=None):
        if id(data) not in self._tensors:
            self._refuse("a torch Parameter must wrap a tensor")
        return data

    def _f_rebuild_from_type(self, func, new_type, args, state=None):  # tensors with attributes, subclasses
        if not (isinstance(func, _Func) and func.method.startswith("rebuild_")):
            self._refuse(f"_rebuild_from_type_v2 with {func!r:.60}")
        return self._call(func, tuple(args), {})

    def _f_load_from_bytes(self, data):
        def load(f: io.BytesIO, pid_loader: Any) -> Any:  # always strict: only storage types belong here
            return _RestrictedUnpickler(f, f"{self.source} [torch storage]", True, pid_loader).load()
        return parse_legacy_stream(data, load)

    def _f_torch_size(self, dims=()):
        if not all(isinstance(d, int) for d in dims):
            self._refuse("torch.Size of non-integers")
        return tuple(dims)

    def _f_torch_device(self, kind, index=None):
        return f"{kind}:{index}" if index is not None else str(kind)

    def _f_persistent_obj(self, meta):
        # torch_utils/persistence.py: meta = dict(type, version, module_src, class_name, state)
        if not isinstance(meta, dict):
            self._refuse("_reconstruct_persistent_obj expects a meta dict")
        missing = [k for k in ("type", "version", "module_src", "class_name", "state") if k not in meta]
        name = meta.get("class_name")
        if missing or not isinstance(name, str) or not isinstance(meta["module_src"], str):
            self._refuse(f"persistent object meta is malformed (missing {missing}, class_name {name!r:.60})")
        if meta["version"] != PERSISTENT_VERSION:
            self._refuse(f"persistent object {name!r}: meta field version={meta['version']!r:.40}; only "
                         f"version {PERSISTENT_VERSION} (torch_utils.persistence of StyleGAN2-ADA/3/XL)")
        if meta["type"] != "class":
            self._refuse(f"persistent object {name!r}: meta field type={meta['type']!r:.40}; only 'class'")
        state = {} if meta["state"] is None else meta["state"]
        if not isinstance(state, dict):
            self._refuse(f"persistent object {name!r}: state is a {type(state).__name__}, not a dict")
        src = meta["module_src"]
        cached = self._src_sha.get(id(src))
        if cached is None or cached[0] is not src:
            digest = hashlib.sha256(src.encode("utf-8", "surrogatepass")).hexdigest()
            cached = self._src_sha[id(src)] = (src, digest)
        return PersistentRecord(name, dict(state), cached[1],
                                frozenset(k for k, v in state.items() if id(v) in self._tensors))

    # ---- builtins / collections / dnnlib / copyreg ----
    def _mapping_arg(self, items: Any, what: str) -> Any:
        if not isinstance(items, list | tuple | dict):
            self._refuse(f"{what} of a {type(items).__name__}")
        return items

    def _f_ordered_dict(self, items=()):
        return collections.OrderedDict(self._mapping_arg(items, "OrderedDict"))

    def _f_easy_dict(self, items=(), **kwargs):
        return dict(self._mapping_arg(items, "EasyDict"), **kwargs)

    def _f_reconstructor(self, cls, base, state):  # copyreg._reconstructor: protocol 0/1 object pickles
        if not (isinstance(base, _Func) and base.qualname in ("builtins.object", "builtins.dict")):
            self._refuse(f"copyreg._reconstructor with base {base!r:.60}")
        if isinstance(cls, _Func) and cls.method == "easy_dict":
            return dict(state or {})
        obj = self._new(cls, (), {})
        if isinstance(obj, ObjectRecord) and isinstance(state, dict):
            obj.dictitems.update(state)
        return obj

    def _f_newobj(self, cls, *args):
        return self._new(cls, args, {})

    def _f_newobj_ex(self, cls, args, kwargs):
        return self._new(cls, tuple(args), dict(kwargs))

    def _f_set(self, items=()):
        return set(self._container(items))

    def _f_frozenset(self, items=()):
        return frozenset(self._container(items))

    def _container(self, items: Any) -> Any:
        if not isinstance(items, list | tuple | set | frozenset):
            self._refuse(f"set of a {type(items).__name__}")
        return items

    def _f_slice(self, *args):
        if len(args) > 3 or not all(a is None or isinstance(a, int) for a in args):
            self._refuse("slice of non-integers")
        return slice(*args)

    def _f_complex(self, real=0.0, imag=0.0):
        if not all(isinstance(v, int | float) for v in (real, imag)):
            self._refuse("complex of non-numbers")
        return complex(real, imag)

    def _f_bytes(self, data=b""):
        if not isinstance(data, bytes):
            self._refuse("bytes() of a non-bytes object")
        return data

    def _f_bytearray(self, data=b""):
        return bytearray(self._f_bytes(bytes(data) if isinstance(data, bytearray) else data))

    def _f_encode(self, text, encoding="utf-8", errors="strict"):  # protocol <= 2 writes bytes this way
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            self._refuse(f"_codecs.encode(..., {encoding!r:.20}) (only latin1 text -> bytes is allowed)")
        return text.encode("latin1")

    # ---- numpy ----
    def _safe_np_dtype(self, d: Any) -> np.dtype:
        """A fresh canonical dtype: a pickled dtype *state* can set e.g. the has-object flag; never use it."""
        if not isinstance(d, np.dtype) or d.kind not in _NP_KINDS or d.names is not None or d.subdtype:
            self._refuse(f"numpy dtype {d!r:.60} is not allowed (only bool/int/uint/float/complex)")
        return np.dtype(d.str)

    def _f_np_dtype(self, spec, align=False, copy=False):
        try:
            self._safe_np_dtype(np.dtype(spec) if isinstance(spec, str) else None)
        except TypeError:
            self._refuse(f"numpy dtype {spec!r:.60}")
        d = np.dtype(spec, align=False, copy=True)  # private copy: BUILD may set its byte order
        self._dtype_pending[id(d)] = d
        return d

    def _dtype_setstate(self, d: np.dtype, state: Any) -> None:
        # numpy state: (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[1] in ("<", ">", "|", "=")
                and state[2] is None and state[3] is None and state[4] is None):
            self._refuse(f"numpy dtype state {state!r:.100}")
        canonical = np.dtype(d.str).__reduce__()[2]
        d.__setstate__((canonical[0], state[1], *canonical[2:]))
        del self._dtype_pending[id(d)]

    def _f_np_reconstruct(self, subtype, shape, typecode):
        if not (isinstance(subtype, _Func) and subtype.qualname == "numpy.ndarray"):
            self._refuse(f"numpy _reconstruct of {subtype!r:.60} (only plain ndarrays)")
        arr = np.empty((0,), np.uint8)
        self._np_pending[id(arr)] = arr
        return arr

    def _np_setstate(self, arr: np.ndarray, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            self._refuse(f"numpy array state {state!r:.100}")
        shape, dtype, fortran, raw = state
        dtype, shape = self._safe_np_dtype(dtype), self._shape(shape)
        if not isinstance(raw, bytes | bytearray) or len(raw) != int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"numpy array data ({type(raw).__name__}) does not match shape {shape} {dtype}")
        arr.__setstate__((1, shape, dtype, bool(fortran), bytes(raw)))
        del self._np_pending[id(arr)]

    def _shape(self, shape: Any) -> tuple[int, ...]:
        if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
            self._refuse(f"numpy shape {shape!r:.60}")
        return shape

    def _f_np_scalar(self, dtype, data=None):
        dtype = self._safe_np_dtype(dtype)
        if not isinstance(data, bytes) or len(data) != dtype.itemsize:
            self._refuse(f"numpy scalar data for {dtype}")
        return np.frombuffer(data, dtype)[0]

    def _f_np_frombuffer(self, buf, dtype, shape, order):  # protocol 5 arrays
        dtype, shape = self._safe_np_dtype(dtype), self._shape(shape)
        if not isinstance(buf, bytes | bytearray) or order not in ("C", "F") \
                or len(buf) != int(np.prod(shape)) * dtype.itemsize:
            self._refuse("numpy _frombuffer with malformed data")
        return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)

    # ---- dill (the official training loop writes snapshots with dill.dump) ----
    def _f_dill_create_array(self, f, args, state, npdict=None):
        if not (isinstance(f, _Func) and f.method == "np_reconstruct") or npdict:
            self._refuse("dill._create_array of something other than a plain numpy array")
        arr = self._call(f, tuple(args), {})
        self._np_setstate(arr, state)
        return arr

    def _f_dill_load_type(self, name):
        if name in _DILL_TYPES:
            return _Func(f"builtins.{name}", _DILL_TYPES[name])
        if self.strict:
            self._refuse(f"forbidden global dill._dill._load_type({name!r:.40})")
        self.unresolved.append(f"dill._dill._load_type({name!r})")
        return GlobalRef("types", str(name), allowed=False)


def load_restricted(file: BinaryIO, source: str, strict: bool = True,
                    pid_loader: Callable[[Any], Any] | None = None) -> Any:
    """Unpickle ``file`` (named ``source`` in errors) with the restricted unpickler. Raises
    :class:`UnsafePickleError` or :class:`PickleFormatError`, never a bare error from pickle's internals.
    ``pid_loader`` serves persistent ids (torch's zip/legacy storages)."""
    unpickler = _RestrictedUnpickler(file, source, strict, pid_loader)
    try:
        obj = unpickler.load()
    except (UnsafePickleError, PickleFormatError):
        raise
    except EOFError as e:
        raise PickleFormatError(f"{source}: the data ends before the pickle does (truncated file?)") from e
    except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError, struct.error,
            OverflowError, RecursionError, MemoryError) as e:
        raise PickleFormatError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from e
    if unpickler.unresolved:
        names = sorted(set(unpickler.unresolved))
        warnings.warn(f"{source}: kept {len(names)} unknown globals as inert placeholders (strict=False): "
                      f"{', '.join(names[:20])}{' ...' if len(names) > 20 else ''}", stacklevel=3)
    return obj
