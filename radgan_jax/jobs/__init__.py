"""Jobs registry: `config.mode` -> a `run(config, workdir) -> None` function.

Job modules are imported lazily, by name, so `radgan_jax.main` (and `--help`) never pays for importing
every model, dataset reader and TensorFlow. Adding a job is one line in `_MODULES`; the module either
defines a module-level `run(config, workdir)` or decorates some function with `@register(name)`.

Jobs do I/O; libraries compute (docs/ARCHITECTURE.md): only job modules read flags, paths and files.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol


class JobFn(Protocol):
    def __call__(self, config: Any, workdir: str) -> None: ...


# mode -> module that implements it. One line per job.
_MODULES: dict[str, str] = {
    "data_verify": "radgan_jax.jobs.data_verify",
    "data_convert": "radgan_jax.jobs.data_convert",
    "generate": "radgan_jax.jobs.generate",
    "interpret_export": "radgan_jax.jobs.interpret_export",
    "interpret_sample": "radgan_jax.jobs.interpret_sample",
    "interpret_train": "radgan_jax.jobs.interpret_train",
    "print_config": "radgan_jax.jobs.print_config",
    "seg_evaluate": "radgan_jax.jobs.seg_evaluate",
    "seg_plan": "radgan_jax.jobs.seg_plan",
    "seg_predict": "radgan_jax.jobs.seg_predict",
    "seg_train": "radgan_jax.jobs.seg_train",
    "summary": "radgan_jax.jobs.summary",
    "train_gan": "radgan_jax.jobs.train_gan",
}

# Functions registered with @register (filled as job modules are imported).
_REGISTRY: dict[str, JobFn] = {}


def register(name: str) -> Callable[[JobFn], JobFn]:
    """Decorator: `@register("train_gan") def run(config, workdir): ...`."""

    def wrap(fn: JobFn) -> JobFn:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"job {name!r} registered twice ({_REGISTRY[name]} and {fn})")
        _REGISTRY[name] = fn
        return fn

    return wrap


def names() -> list[str]:
    """All known modes (lazy modules and already-registered functions), sorted."""
    return sorted(set(_MODULES) | set(_REGISTRY))


def get(name: str) -> JobFn:
    """Returns the job function for `name`, importing its module on first use.

    Raises KeyError listing the valid modes for an unknown name.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name not in _MODULES:
        raise KeyError(f"unknown mode {name!r}; registered modes: {', '.join(names())}")
    module = importlib.import_module(_MODULES[name])
    if name not in _REGISTRY:
        fn = getattr(module, "run", None)
        if not callable(fn):
            raise AttributeError(
                f"job module {_MODULES[name]} neither registers {name!r} nor defines run(config, workdir)"
            )
        _REGISTRY[name] = fn
    return _REGISTRY[name]
