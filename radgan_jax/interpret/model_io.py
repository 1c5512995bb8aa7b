"""Interpreter checkpoints: the trained head plus everything needed to use it without its training config.

An interpreter only makes sense on the generator it was trained on, so the checkpoint records that
generator's digest (`interpret.annotate.generator_digest`) and, for convenience, the checkpoint path it was
loaded from. `load_interpreter` rebuilds the module from the metadata alone; `check_generator` refuses a
generator whose digest differs (an interpreter read on another generator's features produces garbage masks
without any error).

Layout: one orbax step (`radgan_jax.checkpoint.Checkpointer`) whose items are the variable collections
('params', 'batch_stats', 'spectral') and whose metadata is `InterpreterMeta.to_dict()`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from radgan_jax.checkpoint import Checkpointer
from radgan_jax.models.interpreter import DEFAULT_WIDTHS, Interpreter

INTERPRETER_KIND = "bigdatasetgan_interpreter"


@dataclasses.dataclass(frozen=True)
class InterpreterMeta:
    """What an interpreter checkpoint says about itself (JSON-able)."""

    labels: dict[str, int]            # nnU-Net style label map, background 0
    num_outputs: int                  # 1: one foreground class (sigmoid), else len(labels) (softmax)
    feature_shapes: dict[str, list[int]]  # group -> [h, w, C] the head was built for
    y_dim: int                        # class-vector width (the generator's class embedding)
    generator_digest: str
    widths: tuple[int, int, int] = DEFAULT_WIDTHS
    include_input: bool = False       # whether the synthesis input layer is part of the features
    generator_checkpoint: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. epochs, loss, training Dice

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return {"kind": INTERPRETER_KIND, **d}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InterpreterMeta:
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields}
        kw["widths"] = tuple(int(w) for w in kw.get("widths", DEFAULT_WIDTHS))
        kw["labels"] = {str(k): int(v) for k, v in kw["labels"].items()}
        kw["feature_shapes"] = {str(k): [int(s) for s in v] for k, v in kw["feature_shapes"].items()}
        return cls(**kw)

    def module(self) -> Interpreter:
        return Interpreter(num_outputs=int(self.num_outputs), widths=tuple(self.widths))


def save_interpreter(directory: str | Path, variables: Mapping[str, Any], meta: InterpreterMeta,
                     step: int = 0) -> None:
    """Writes `variables` ({'params', 'batch_stats', 'spectral'}) and `meta` as one checkpoint step."""
    with Checkpointer(directory, max_to_keep=None, async_save=False) as ck:
        ck.save(int(step), {k: v for k, v in variables.items()}, metadata=meta.to_dict(), force=True)


def load_interpreter(directory: str | Path, step: int | None = None
                     ) -> tuple[Interpreter, dict[str, Any], InterpreterMeta]:
    """(module, variables as host arrays, meta) of a checkpoint written by `save_interpreter`."""
    with Checkpointer(directory, max_to_keep=None) as ck:
        if ck.latest_step() is None:
            raise ValueError(f"{directory}: no interpreter checkpoint there")
        raw = ck.metadata(step)
        if raw.get("kind") != INTERPRETER_KIND:
            raise ValueError(f"{directory} is not an interpreter checkpoint (metadata kind={raw.get('kind')!r}); "
                             "train one with configs/interpret/train.py")
        variables, raw, _ = ck.restore(step)
    meta = InterpreterMeta.from_dict(raw)
    return meta.module(), dict(variables), meta


def check_generator(meta: InterpreterMeta, digest: str, where: str = "interpreter") -> None:
    """Raises ValueError when the interpreter was trained on another generator than the one given."""
    if meta.generator_digest and digest != meta.generator_digest:
        src = f" ({meta.generator_checkpoint})" if meta.generator_checkpoint else ""
        raise ValueError(f"{where} was trained on generator {meta.generator_digest}{src}, but the generator given "
                         f"has digest {digest}: use the generator it was trained on")
