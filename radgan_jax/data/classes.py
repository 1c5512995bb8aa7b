"""Class tables of the two RadImageGAN generators (the paper's Table S1), the one place they live.

`ctmr`: 124 RadImageNet CT/MR pathology classes; `gastro`: 6 HyperKvasir colonoscopy classes. The table is
package data (`tables/radimagegan_classes.tsv`). Configs and CLIs name classes by index or by label; labels
match after normalisation (case, and ' ', '-', '_' treated alike), since the paper itself mixes them
('spine-normal', 'spine_ddd', 'ankle_accessory ossicle').
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Sequence
from importlib import resources

PRODUCTS = ("ctmr", "gastro")


@dataclasses.dataclass(frozen=True)
class ClassInfo:
    index: int
    label: str      # the paper's pathological label, verbatim
    modality: str   # CT, MRI or Colonoscopy
    anatomy: str


def normalize_label(label: str) -> str:
    """'Spine-Normal' / 'spine normal' / 'spine_normal' -> 'spine_normal'."""
    return re.sub(r"[\s_\-]+", "_", label.strip().lower())


@dataclasses.dataclass(frozen=True)
class ClassTable:
    product: str
    classes: tuple[ClassInfo, ...]

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.classes]

    @functools.cached_property
    def _by_norm(self) -> dict[str, int]:
        return {normalize_label(c.label): c.index for c in self.classes}

    def index(self, name_or_index: str | int) -> int:
        """A class index from an index (int or digit string) or a label; ValueError lists close matches."""
        if isinstance(name_or_index, int) or (isinstance(name_or_index, str) and name_or_index.strip().isdigit()):
            i = int(name_or_index)
            if not 0 <= i < len(self.classes):
                raise ValueError(f"class index {i} out of range for {self.product} (0..{len(self.classes) - 1})")
            return i
        key = normalize_label(str(name_or_index))
        if key in self._by_norm:
            return self._by_norm[key]
        import difflib

        close = difflib.get_close_matches(key, list(self._by_norm), n=5, cutoff=0.6)
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown {self.product} class {name_or_index!r}{hint} "
                         f"(labels are the paper's Table S1; indices 0..{len(self.classes) - 1} work too)")

    def __getitem__(self, name_or_index: str | int) -> ClassInfo:
        return self.classes[self.index(name_or_index)]

    def parse(self, spec: str | Iterable[str | int]) -> list[int]:
        """'0,5-7,spine_ddd' (or a list) -> [0, 5, 6, 7, 120]. Ranges are for indices only."""
        parts: Sequence[str | int]
        parts = [p for p in spec.split(",") if p.strip()] if isinstance(spec, str) else list(spec)
        out: list[int] = []
        for p in parts:
            m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", p) if isinstance(p, str) else None
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
                if hi < lo:
                    raise ValueError(f"empty class range {p!r}")
                out.extend(self.index(i) for i in range(lo, hi + 1))
            else:
                out.append(self.index(p.strip() if isinstance(p, str) else p))
        return out


@functools.cache
def _load_all() -> dict[str, ClassTable]:
    text = resources.files("radgan_jax.data").joinpath("tables/radimagegan_classes.tsv").read_text("utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    header, rows = rows[0], rows[1:]
    if header != ["product", "index", "label", "modality", "anatomy"]:
        raise RuntimeError(f"radgan_jax/data/tables/radimagegan_classes.tsv: unexpected header {header}")
    per: dict[str, list[ClassInfo]] = {p: [] for p in PRODUCTS}
    for product, index, label, modality, anatomy in rows:
        per[product].append(ClassInfo(int(index), label, modality, anatomy))
    tables = {}
    for product, infos in per.items():
        infos.sort(key=lambda c: c.index)
        if [c.index for c in infos] != list(range(len(infos))):
            raise RuntimeError(f"class table {product}: indices are not 0..{len(infos) - 1}")
        tables[product] = ClassTable(product, tuple(infos))
    return tables


def class_table(product: str) -> ClassTable:
    """`class_table('ctmr')` (124 classes) or `class_table('gastro')` (6)."""
    tables = _load_all()
    if product not in tables:
        raise ValueError(f"unknown product {product!r}; valid: {', '.join(PRODUCTS)}")
    return tables[product]
