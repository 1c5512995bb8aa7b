"""Dataset integrity check (what nnU-Net's `--verify_dataset_integrity` does, for every layout we read) and
quarantine of the bad files.

    report = verify_dataset(root, 'auto', quarantine_dir=None)   # -> VerifyReport
    print(report.to_text()); report.ok

Steps: detect the layout (the report says which format was found), `scan()` it (layout problems: stray
files, unpaired masks, empty class folders ...), `load()` every item (unreadable/corrupt files, mask label
values, image/mask size or spacing mismatches), then cross-item checks:

* duplicate ids: every item after the first with the same id is a `duplicate_id` problem;
* classes (classification readers) that had items but none loads: `empty_class`;
* 2D images must agree in dtype and channel count: the items that differ from the majority are
  `inconsistent` problems (a set mixing 8- and 16-bit, or grey and RGB, cannot be stacked into one batch
  and usually means a stray file or a wrong export). Volumes are not checked for dtype (NIfTI stores
  int16/float32 freely; intensities are normalised later anyway);
* volume spacing: a volume whose spacing along some axis is more than `SPACING_OUTLIER_RATIO` times off
  the dataset median is reported as a *warning*, not a problem: real datasets mix slice thicknesses
  (BTCV: 2.5-5 mm), so an outlier is a hint (swapped axes, metres instead of mm), not proof of a bad file.

A reader must turn every problem into a `DataError`. Anything else a reader raises is caught as a last
resort and reported as an `internal` problem (a reader bug) naming the file and the exception type, so
one bad file never aborts the whole check.

With `quarantine_dir`, every item with a problem has its files moved there (`quarantine`), keeping their
paths relative to the dataset root, and a layout problem that is not tied to an item (a stray file, an
empty class folder) moves that single path. Afterwards the layout is scanned once more, so problems the
moves create (e.g. a class folder left empty) are reported instead of hidden.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from radgan_jax.data.base import Case, DataError, Item, Reader
from radgan_jax.data.readers import detect_format, get_reader

# A volume whose spacing along an axis differs from the dataset median by more than this factor is a warning.
# Real sets stay well inside it (BTCV: z 2.5-5 mm, in-plane 0.54-0.98 mm; CHAOS T2: z 5.5-9, in-plane 1.4-1.9),
# while a volume with z and x swapped (0.8 vs 3 mm) or stored in other units falls outside.
SPACING_OUTLIER_RATIO = 3.0


@dataclasses.dataclass
class Problem:
    kind: str                 # a DataError kind, or report-only: 'inconsistent', 'internal' (a reader bug)
    path: Path                # the file or folder at fault
    message: str
    item: str | None = None   # id of the item it belongs to (None: a layout problem of no item)
    quarantined: bool = False
    source: Item | None = dataclasses.field(default=None, repr=False, compare=False)  # that item (ids may repeat)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "message": self.message, "item": self.item,
                "quarantined": self.quarantined}


@dataclasses.dataclass
class VerifyReport:
    root: Path
    format: str
    detected: bool                                   # True: `format` was auto-detected
    items: int = 0
    ok_items: int = 0
    per_class: dict[str, int] = dataclasses.field(default_factory=dict)   # readable items per class
    per_label: dict[str, int] = dataclasses.field(default_factory=dict)   # readable items holding a mask label
    problems: list[Problem] = dataclasses.field(default_factory=list)
    quarantined: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # quarantine.jsonl records
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def remaining(self) -> list[Problem]:
        """Problems still in the dataset (not moved to quarantine)."""
        return [p for p in self.problems if not p.quarantined]

    @property
    def ok(self) -> bool:
        """True when nothing wrong is left in the dataset (every problem quarantined, or none found)."""
        return not self.remaining

    def by_kind(self) -> dict[str, list[Problem]]:
        out: dict[str, list[Problem]] = defaultdict(list)
        for p in self.problems:
            out[p.kind].append(p)
        return dict(sorted(out.items()))

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def to_text(self, max_per_kind: int = 50) -> str:
        how = "detected" if self.detected else "given"
        lines = [f"dataset {self.root}", f"format: {self.format} ({how})",
                 f"items: {self.items}, readable: {self.ok_items}, with problems: {self.items - self.ok_items}"]
        if self.per_class:
            lines.append("per class: " + ", ".join(f"{k}={v}" for k, v in self.per_class.items()))
        if self.per_label:
            lines.append("items per mask label: " + ", ".join(f"{k}={v}" for k, v in self.per_label.items()))
        if not self.problems:
            lines.append("problems: none")
        else:
            lines.append(f"problems: {len(self.problems)} ({len(self.remaining)} left in the dataset)")
            for kind, probs in self.by_kind().items():
                lines.append(f"  {kind} ({len(probs)}):")
                for p in probs[:max_per_kind]:
                    mark = " [quarantined]" if p.quarantined else ""
                    lines.append(f"    {self._rel(p.path)}: {p.message}{mark}")
                if len(probs) > max_per_kind:
                    lines.append(f"    ... {len(probs) - max_per_kind} more (see the JSON report)")
        if self.quarantined:
            lines.append(f"quarantined: {len(self.quarantined)} item(s), "
                         f"{sum(len(r['moved_to']) for r in self.quarantined)} path(s) moved")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        lines.append("OK" if self.ok else "NOT OK: fix or quarantine the files above")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({
            "root": str(self.root), "format": self.format, "detected": self.detected, "ok": self.ok,
            "counts": {"items": self.items, "ok": self.ok_items, "problems": len(self.problems),
                       "remaining": len(self.remaining), "per_class": self.per_class, "per_label": self.per_label},
            "problems": [p.to_dict() for p in self.problems],
            "quarantined": self.quarantined, "warnings": self.warnings,
        }, indent=1)


# ---------------------------------------------------------------------------------------------------- quarantine

def _free_path(dest: Path) -> Path:
    """`dest`, or `name~N.ext` next to it if taken: quarantine never overwrites."""
    if not dest.exists() and not dest.is_symlink():
        return dest
    name = dest.name
    ext = ".nii.gz" if name.lower().endswith(".nii.gz") else dest.suffix
    stem = name[: len(name) - len(ext)] if ext else name
    n = 1
    while True:
        cand = dest.with_name(f"{stem}~{n}{ext}")
        if not cand.exists() and not cand.is_symlink():
            return cand
        n += 1


def _is_under(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def _prune_empty_parents(paths: list[Path], root: Path) -> None:
    """Remove the folders the moves left empty, up to (not including) `root`: an empty patient/series folder
    would otherwise be a new layout problem. Nothing is lost, they hold no file."""
    stop = root.resolve()
    for f in paths:
        parent = f.parent.resolve()
        while parent != stop and stop in parent.parents and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def quarantine(root: Path, item: Item, quarantine_dir: Path, reason: str) -> list[Path]:
    """Move the files of `item` from dataset `root` to `quarantine_dir`, keeping their paths relative to `root`
    (never overwriting: a taken name gets a `~N` suffix), remove the folders of `root` the moves left empty,
    append `{id, files, moved_to, reason}` as one JSON line to `quarantine_dir/quarantine.jsonl`, and return
    the new paths. Missing files are skipped."""
    root, quarantine_dir = Path(root), Path(quarantine_dir)
    if _is_under(quarantine_dir, root):
        raise ValueError(f"quarantine folder {quarantine_dir} lies inside the dataset {root}; choose one outside")
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    moved_from, moved_to = [], []
    for f in item.files:
        f = Path(f)
        if not f.exists() and not f.is_symlink():
            continue
        try:
            rel = f.resolve().relative_to(root.resolve())
        except ValueError:
            rel = Path(f.name)  # outside the root (a reader following a link): keep the name only
        if rel == Path("."):
            raise ValueError(f"refusing to quarantine the dataset folder itself ({root})")
        dest = quarantine_dir / rel
        if f.is_dir() and not any(f.iterdir()) and dest.is_dir():
            f.rmdir()  # an empty folder whose files were quarantined before: nothing to keep twice
        else:
            dest = _free_path(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(f), str(dest))
        moved_from.append(f)
        moved_to.append(dest)
    _prune_empty_parents(moved_from, root)
    record = {"id": item.id, "files": [str(f) for f in moved_from], "moved_to": [str(p) for p in moved_to],
              "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with open(quarantine_dir / "quarantine.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
    return moved_to


# ------------------------------------------------------------------------------------------------------- checks

def _problem(e: DataError, item: Item | None = None) -> Problem:
    return Problem(e.kind, e.path, e.problem, None if item is None else item.id, source=item)


def _owner(path: Path, by_file: dict[Path, Item]) -> Item | None:
    """The item a problem path belongs to: one of its files, or inside one of its folders (a DICOM series)."""
    return next((by_file[p] for p in (path, *path.parents) if p in by_file), None)


@dataclasses.dataclass(frozen=True)
class _Summary:
    """What the cross-item checks need of a loaded case (not its arrays: a dataset can exceed memory)."""

    image_key: tuple[str, int] | None   # (dtype, channels) of a 2D image; None for volumes
    label: int | None
    mask_values: frozenset[int]
    spacing: tuple[float, ...] | None   # of a volume


def _summary(case: Case) -> _Summary:
    key = None if case.is_volume else (str(case.image.dtype), 1 if case.image.ndim == 2 else int(case.image.shape[-1]))
    values = frozenset() if case.mask is None else frozenset(int(v) for v in np.unique(case.mask))
    spacing = tuple(float(v) for v in case.spacing) if case.is_volume and case.spacing is not None else None
    return _Summary(key, case.label, values, spacing)


def _class_name(reader: Reader, label: int) -> str:
    names = getattr(reader, "class_names", None)
    try:
        return f"{label}:{names[label]}" if names is not None else str(label)
    except (IndexError, KeyError, TypeError):
        return str(label)


def _consistency(cases: dict[Item, _Summary]) -> list[Problem]:
    """2D images whose (dtype, channels) differ from the majority."""
    keys = {item: c.image_key for item, c in cases.items() if c.image_key is not None}
    if len(set(keys.values())) <= 1:
        return []
    (dtype, ch), n = Counter(keys.values()).most_common(1)[0]
    out = []
    for item, (d, c) in keys.items():
        if (d, c) != (dtype, ch):
            out.append(Problem("inconsistent", item.files[0],
                               f"image is {d} with {c} channel(s); most of the dataset ({n} of {len(keys)}) is "
                               f"{dtype} with {ch} channel(s)", item.id, source=item))
    return out


def _spacing_warnings(cases: dict[Item, _Summary]) -> list[str]:
    sp = {item: np.asarray(c.spacing, np.float64) for item, c in cases.items()
          if c.spacing is not None and len(c.spacing) == 3}
    if len(sp) < 3:  # a median of fewer volumes says nothing
        return []
    med = np.median(np.stack(list(sp.values())), axis=0)
    out = []
    for item, s in sp.items():
        ratio = np.maximum(s / med, med / s)
        if np.any(ratio > SPACING_OUTLIER_RATIO):
            where = item.files[0] if item.files else item.id
            out.append(f"{where}: spacing (z,y,x) {tuple(np.round(s, 3).tolist())} mm is far "
                       f"from the dataset median {tuple(np.round(med, 3).tolist())} (swapped axes or units?)")
    return out


def _load_all(reader: Reader, items: list[Item], progress: bool, report: VerifyReport) -> dict[Item, _Summary]:
    """load() every item; problems go to the report, summaries of the readable cases are returned."""
    cases: dict[Item, _Summary] = {}
    seen: dict[str, Item] = {}
    for item in tqdm(items, desc=f"verify {reader.name}", unit="item", disable=not progress):
        where = item.files[0] if item.files else reader.root
        if item.id in seen:  # the first item keeps the id; the later ones are the problem
            first = seen[item.id].files[0] if seen[item.id].files else "?"
            report.problems.append(Problem("duplicate_id", where, f"id {item.id!r} is already used by {first}",
                                           item.id, source=item))
            continue
        seen[item.id] = item
        try:
            case = reader.load(item)
        except DataError as e:
            report.problems.append(_problem(e, item))
            continue
        except Exception as e:  # last resort: a reader bug must not abort the whole check
            report.problems.append(Problem("internal", where, f"reader {reader.name} crashed with "
                                           f"{type(e).__name__}: {e} (a reader bug: it should raise DataError)",
                                           item.id, source=item))
            continue
        cases[item] = _summary(case)
    return cases


def _count(reader: Reader, items: list[Item], cases: dict[Item, _Summary], report: VerifyReport) -> None:
    if reader.task == "classification":
        labels = sorted({it.label for it in items if it.label is not None})
        good = Counter(c.label if c.label is not None else it.label for it, c in cases.items())
        report.per_class = {_class_name(reader, lab): good.get(lab, 0) for lab in labels}
        for lab in labels:
            if good.get(lab, 0) == 0:
                files = [it.files[0] for it in items if it.label == lab and it.files]
                folder = files[0].parent if files else reader.root
                report.problems.append(Problem("empty_class", folder,
                                               f"class {_class_name(reader, lab)} has no readable item"))
    masks: Counter[int] = Counter()
    for c in cases.values():
        masks.update(c.mask_values)
    names = reader.label_names or {}
    report.per_label = {f"{v}:{names[v]}" if v in names else str(v): n for v, n in sorted(masks.items())}


def _scan(reader: Reader) -> tuple[list[Item], list[Problem]]:
    try:
        items, errors = reader.scan()
    except DataError as e:
        return [], [_problem(e)]
    except Exception as e:  # last resort, as in _load_all
        return [], [Problem("internal", reader.root, f"reader {reader.name} scan crashed with "
                                                     f"{type(e).__name__}: {e} (a reader bug)")]
    return list(items), [_problem(e) for e in errors]


def _quarantine_all(report: VerifyReport, items: list[Item], quarantine_dir: Path) -> None:
    root = report.root
    bad: dict[Item, list[Problem]] = defaultdict(list)
    stray: list[Problem] = []
    for p in report.problems:
        (bad[p.source] if p.source is not None else stray).append(p)
    existed = {p.path: p.path.exists() for p in stray}  # a problem naming a missing file cannot be moved
    for item, probs in bad.items():
        reason = "; ".join(f"{q.kind}: {q.message}" for q in probs)
        moved = quarantine(root, item, quarantine_dir, reason)
        report.quarantined.append({"id": item.id, "files": [str(f) for f in item.files],
                                   "moved_to": [str(m) for m in moved], "reason": reason})
        for q in probs:
            q.quarantined = True
    good_files = [f for it in items if it not in bad for f in it.files]
    for p in stray:
        path = p.path
        if not path.exists():  # inside a folder moved already, or missing from the start
            p.quarantined = existed[path]
            continue
        # never move the dataset itself, a path outside it, or a folder holding good items (paths of one
        # reader share the root's spelling, so the folder test can be lexical: no syscall per file)
        if (not _is_under(path, root) or path.resolve() == root.resolve()
                or (path.is_dir() and any(path in f.parents for f in good_files))):
            continue
        reason = f"{p.kind}: {p.message}"
        try:
            rel = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = path.name
        moved = quarantine(root, Item(rel, (path,)), quarantine_dir, reason)
        report.quarantined.append({"id": rel, "files": [str(path)], "moved_to": [str(m) for m in moved],
                                   "reason": reason})
        p.quarantined = True


def verify_dataset(root: str | Path, fmt: str = "auto", *, quarantine_dir: Path | None = None,
                   progress: bool = True, reader_options: dict | None = None) -> VerifyReport:
    """Check every file of the dataset at `root` (see the module doc); with `quarantine_dir`, move bad files
    there. Raises DataError if `root` is missing or no layout is recognised, ValueError for an unknown format."""
    root = Path(root)
    name = detect_format(root) if fmt == "auto" else fmt
    reader = get_reader(name)(root, **(reader_options or {}))
    if quarantine_dir is not None and _is_under(Path(quarantine_dir), root):
        raise ValueError(f"quarantine folder {quarantine_dir} lies inside the dataset {root}; choose one outside")
    report = VerifyReport(root=root, format=name, detected=fmt == "auto")
    items, report.problems = _scan(reader)
    by_file = {f: it for it in items for f in it.files}
    for p in report.problems:  # a layout problem naming an item's file makes that item bad
        if (owner := _owner(p.path, by_file)) is not None:
            p.item, p.source = owner.id, owner
    report.items = len(items)
    bad = {p.source for p in report.problems}
    cases = _load_all(reader, [it for it in items if it not in bad], progress, report)
    report.problems += _consistency(cases)
    for p in report.problems:
        cases.pop(p.source, None)
    report.ok_items = len(cases)
    _count(reader, items, cases, report)
    report.warnings = _spacing_warnings(cases)
    if quarantine_dir is not None and report.problems:
        _quarantine_all(report, items, Path(quarantine_dir))
        # the moves may create new layout problems (a folder left empty ...): report them, do not hide them
        known = {(p.kind, p.path) for p in report.problems}
        for p in _scan(reader)[1]:
            if (p.kind, p.path) not in known:
                p.message += " (after quarantine)"
                report.problems.append(p)
    return report
