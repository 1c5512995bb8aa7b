"""Convert an official StyleGAN-XL / RadImageGAN generator into a radgan_jax checkpoint (no torch needed).

    python -m radgan_jax.tools.convert_stylegan_xl --src params.npz [--config config.json] --out CKPT_DIR
    python -m radgan_jax.tools.convert_stylegan_xl --src network-snapshot.pkl --out CKPT_DIR

Sources:
- `.npz`: an official `G.state_dict()` with official names, plus the `config.json` describing it (the layout
  of ../shared/golden/stylegan_xl_*; by default the `config.json` beside the npz);
- `.pkl`: an official network pickle (a training snapshot dict with `G_ema`, or a bare generator), read by
  the restricted unpickler in `safe_unpickle.py`, which never imports or runs code from the file.
The checkpoint holds the variables (params + buffers incl. per-class `w_avg`) and the full generator spec,
so `radgan_jax.main --config=configs/generate.py --config.checkpoint=CKPT_DIR` needs nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from radgan_jax.models.stylegan_xl.generator import GeneratorSpec
from radgan_jax.models.stylegan_xl.official_names import from_official_state_dict
from radgan_jax.models.stylegan_xl.official_spec import arch_from_official_config, spec_from_arch
from radgan_jax.tools.files import sha256_file


class ConversionError(Exception):
    """A source file that cannot be converted; the message names the file and the problem."""


def _load_npz(src: Path, config_path: Path | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    config_path = config_path or src.with_name("config.json")
    if not config_path.is_file():
        raise ConversionError(f"{src}: a .npz state_dict needs its config.json (looked for {config_path}); "
                              f"pass --config")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{config_path}: not valid JSON ({e})") from None
    try:
        with np.load(src, allow_pickle=False) as f:
            state_dict = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise ConversionError(f"{src}: cannot read as .npz ({e})") from None
    try:
        return state_dict, arch_from_official_config(config, state_dict, source=str(config_path))
    except (ValueError, KeyError, TypeError) as e:
        msg = str(e) if str(config_path) in str(e) else f"{config_path}: {e}"
        raise ConversionError(msg) from None


# Globals that only a code-execution payload would name. Outside the generator an official snapshot holds
# objects we keep as inert placeholders (the dill-pickled hooks and timm modules of D); none of them runs,
# but a snapshot that names one of these is not an honest training snapshot, so it is refused outright.
_PAYLOAD_MODULES = ("os", "posix", "nt", "subprocess", "sys", "importlib", "runpy", "shutil", "socket",
                    "ctypes", "pickle", "marshal", "code", "codeop", "pty", "webbrowser", "multiprocessing")
_PAYLOAD_BUILTINS = ("eval", "exec", "compile", "__import__", "open", "getattr", "setattr", "delattr",
                     "globals", "locals", "vars", "input", "breakpoint")


def _payload_globals(names: list[str]) -> list[str]:
    def suspicious(qualname: str) -> bool:
        module, _, name = qualname.rpartition(".")
        if module in ("builtins", "__builtin__"):
            return name in _PAYLOAD_BUILTINS
        return module.split(".")[0] in _PAYLOAD_MODULES
    return [n for n in names if suspicious(n)]


def _load_pickle(src: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    import warnings

    from radgan_jax.tools.safe_unpickle import (
        PickleFormatError,
        UnsafePickleError,
        extract_generator,
        load_pickle,
        unresolved_globals,
    )

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            snapshot = load_pickle(src, strict=False)  # unknown globals -> inert placeholders, never run
        payload = _payload_globals(unresolved_globals(snapshot))
        if payload:
            raise ConversionError(f"{src}: refused: the pickle names {', '.join(payload)}, which only a "
                                  f"code-execution payload would (nothing from it was run)")
        state_dict, arch = extract_generator(snapshot)
    except (UnsafePickleError, PickleFormatError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise ConversionError(f"{src}: {msg}") from None
    for w in caught:  # placeholders outside the generator: expected for a training snapshot's D
        print(f"convert_stylegan_xl: note: {w.message}", file=sys.stderr)
    embed = state_dict.get("mapping.embed.weight")
    if embed is not None:
        arch.setdefault("mapping", {}).update(embed_num=int(embed.shape[0]), embed_dim=int(embed.shape[1]))
    return state_dict, arch


def load_official(src: str | os.PathLike, config: str | os.PathLike | None = None
                  ) -> tuple[GeneratorSpec, dict[str, Any]]:
    """Official file -> (spec, variables {'params', 'buffers'} as numpy)."""
    src = Path(src)
    if not src.is_file():
        raise ConversionError(f"{src}: no such file")
    suffix = src.suffix.lower()
    if suffix == ".npz":
        state_dict, arch = _load_npz(src, Path(config) if config else None)
    elif suffix in (".pkl", ".pickle"):
        state_dict, arch = _load_pickle(src)
    else:
        raise ConversionError(f"{src}: unknown source type {suffix!r}; expected .npz (+ config.json) or .pkl")
    try:
        spec = spec_from_arch(arch, source=str(src))
        variables = from_official_state_dict(state_dict, spec, source=str(src))
    except ValueError as e:
        raise ConversionError(str(e)) from None
    return spec, variables


def convert(src: str | os.PathLike, out: str | os.PathLike, config: str | os.PathLike | None = None) -> GeneratorSpec:
    """Converts `src` and writes a generator checkpoint to `out` (step 0). Returns the spec."""
    from radgan_jax.checkpoint import save_generator

    spec, variables = load_official(src, config)
    save_generator(out, variables, spec, step=0,
                   extra_metadata={"source": str(Path(src).resolve()), "source_sha256": sha256_file(Path(src))})
    return spec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="official params .npz (+ config.json) or network pickle .pkl")
    p.add_argument("--config", default=None, help="config.json for a .npz source (default: beside it)")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    args = p.parse_args(argv)
    try:
        spec = convert(args.src, args.out, args.config)
    except ConversionError as e:
        print(f"convert_stylegan_xl: error: {e}", file=sys.stderr)
        return 2
    from radgan_jax.models.stylegan_xl.layer_specs import format_table

    print(f"converted {args.src} -> {args.out}: {spec.img_resolution}px, c_dim={spec.c_dim}, "
          f"{len(spec.synthesis.layers)} synthesis layers")
    print(format_table(spec.synthesis))
    return 0


if __name__ == "__main__":
    sys.exit(main())
