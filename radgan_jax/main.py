r"""Single entry point for every radgan_jax job.

    python -m radgan_jax.main --config=configs/NAME.py[:ARG] --workdir=DIR [--config.key=value ...]

Steps: load the config file (`get_config(ARG)`), apply `--config.*` overrides (the config is locked, so a
misspelled key fails instead of silently adding a field), optionally start `jax.distributed`, then look up
`config.mode` in the jobs registry and call `run(config, workdir)`.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from radgan_jax import jobs

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file `path.py[:ARG]`; ARG is passed to its get_config().", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory of the job (required for every mode).")
flags.mark_flags_as_required(["config", "workdir"])


def _load_config_file(spec: str) -> Any:
    """Loads `path.py[:ARG]` exactly as config_flags does (split at the first ':'), unlocked."""
    path, *arg = spec.split(":", 1)
    module_spec = importlib.util.spec_from_file_location("radgan_config_probe", path)
    if module_spec is None or module_spec.loader is None:
        raise OSError(f"cannot load config file {path!r}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(*arg)


def _config_spec(argv: Sequence[str]) -> str | None:
    for i, a in enumerate(argv):
        if m := re.match(r"^--?config=(.*)$", a):
            return m.group(1)
        if a in ("--config", "-config") and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _override_paths(argv: Sequence[str]) -> list[str]:
    """Dotted paths given as `--config.a.b=...`, `--config.a.b ...` or `--noconfig.a.b`."""
    out = []
    for a in argv:
        if m := re.match(r"^--?(?:no)?config\.([^=]+)", a):
            out.append(m.group(1))
    return out


def explain_bad_override(config: Any, path: str) -> str | None:
    """Message naming the first component of `path` missing from `config`, with the valid keys there.

    Returns None when the whole path exists. Public so tests (and jobs validating their own dicts) can use it.
    """
    node, walked = config, "config"
    for part in path.split("."):
        key = part.split("[", 1)[0]  # `a[0]` indexes a tuple field; only the name must exist
        if not isinstance(node, Mapping) and not hasattr(node, "keys"):
            return (f"--config.{path}: {walked} is a {type(node).__name__} ({node!r}), "
                    f"not a ConfigDict, so it has no field {key!r}")
        keys = sorted(node.keys())
        if key not in keys:
            return (f"--config.{path}: no key {key!r} in {walked}. "
                    f"Valid keys at that level: {', '.join(keys) or '(none)'}")
        node, walked = node[key], f"{walked}.{key}"
    return None


def _parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with a readable message for a misspelled/missing `--config.key`.

    config_flags itself raises a bare AttributeError/KeyError traceback (at best with a 'did you mean'
    hint) and never lists the valid keys; we reload the config file to say exactly what is wrong.
    """
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.stderr.write(f"FATAL Flags parsing error: {e}\n")
        sys.stderr.write("Pass --helpshort or --helpfull to see help on flags.\n")
        sys.exit(1)
    except OSError as e:  # config file missing/unreadable while applying overrides
        sys.stderr.write(f"FATAL config error: {e}\n")
        sys.exit(1)
    except (AttributeError, KeyError, TypeError) as e:
        spec = _config_spec(argv)
        try:
            config = _load_config_file(spec) if spec else None
        except Exception:  # the original error is the useful one then
            raise e from None
        messages = [m for p in _override_paths(argv) if (m := explain_bad_override(config, p))]
        if not messages:
            raise
        sys.stderr.write("FATAL config override error:\n  " + "\n  ".join(messages) + "\n")
        sys.exit(1)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    modes = ", ".join(jobs.names())
    try:
        mode = config.mode
    except OSError as e:  # config_flags defers file-load errors to first access
        sys.exit(f"radgan_jax.main: {e}")
    except AttributeError:
        sys.exit(f"radgan_jax.main: the config has no `mode` field; registered modes: {modes}")
    # Fail on a typo before anything slow (distributed start-up, importing the job).
    if mode not in jobs.names():
        sys.exit(f"radgan_jax.main: unknown mode {mode!r}; registered modes: {modes}")
    if config.get("distributed", False):
        from radgan_jax.parallel import distributed  # imports jax; keep --help fast

        distributed.initialize()
    logging.info("mode=%s workdir=%s", mode, _WORKDIR.value)
    jobs.get(mode)(config, _WORKDIR.value)


def run() -> None:
    flags.FLAGS.set_default("logtostderr", True)  # console logging; no absl log files in /tmp
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
