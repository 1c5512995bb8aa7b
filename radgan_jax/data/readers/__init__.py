"""Registry of dataset layout readers: `format name -> module`, imported lazily.

`get_reader(name)` returns the Reader class; `detect_format(root)` tries every reader's `detect` in
`DETECT_ORDER` (most specific layouts first; the generic image folder last) and says which it found.
Adding a reader is one line in `_MODULES` (and its place in DETECT_ORDER).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from radgan_jax.data.base import DataError, Reader

# format name -> "module:Class"
_MODULES: dict[str, str] = {
    "nnunet_raw": "radgan_jax.data.readers.nnunet_raw:NnUNetRawReader",
    "cvc_clinicdb": "radgan_jax.data.readers.cvc_clinicdb:CVCClinicDBReader",
    "kvasir_seg": "radgan_jax.data.readers.kvasir_seg:KvasirSEGReader",
    "btcv": "radgan_jax.data.readers.btcv:BTCVReader",
    "chaos_dicom": "radgan_jax.data.readers.chaos:ChaosDicomReader",
    "chaos_nifti": "radgan_jax.data.readers.chaos:ChaosNiftiReader",
    "lumbar_spine": "radgan_jax.data.readers.lumbar_spine:LumbarSpineReader",
    "radimagenet": "radgan_jax.data.readers.image_folder:RadImageNetReader",
    "hyperkvasir": "radgan_jax.data.readers.image_folder:HyperKvasirReader",
    "image_folder": "radgan_jax.data.readers.image_folder:ImageFolderReader",
}
DETECT_ORDER = ("nnunet_raw", "cvc_clinicdb", "kvasir_seg", "btcv", "chaos_dicom", "chaos_nifti", "lumbar_spine",
                "radimagenet", "hyperkvasir", "image_folder")


def names() -> list[str]:
    return list(_MODULES)


def get_reader(name: str) -> type[Reader]:
    if name not in _MODULES:
        raise ValueError(f"unknown dataset format {name!r}; valid: auto, {', '.join(_MODULES)}")
    module, cls = _MODULES[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:  # e.g. an optional dependency missing: say which reader and what to install
        raise RuntimeError(f"dataset format {name!r}: cannot import its reader {module} ({e})") from None


def detect_format(root: str | Path) -> str:
    """The first format in DETECT_ORDER whose `detect(root)` is true; DataError('layout') if none is."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder does not exist" if not root.exists() else "not a folder", "layout")
    for name in DETECT_ORDER:
        if get_reader(name).detect(root):
            return name
    raise DataError(root, f"no known dataset layout found; formats: {', '.join(_MODULES)} "
                          f"(see docs/DATA.md for the layout each expects)", "layout")


def open_dataset(root: str | Path, fmt: str = "auto", **options) -> Reader:
    """A reader for `root`; fmt 'auto' detects the layout."""
    name = detect_format(root) if fmt == "auto" else fmt
    return get_reader(name)(root, **options)
