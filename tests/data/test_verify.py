"""verify_dataset / quarantine against small fake readers written on the base Reader interface (the real
readers are exercised by test_fuzz_corpus.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radgan_jax.data import verify as verify_mod
from radgan_jax.data.base import Case, DataError, Item, Reader
from radgan_jax.data.io import is_image_file, read_image
from radgan_jax.data.readers import get_reader as real_get_reader
from radgan_jax.data.verify import quarantine, verify_dataset


class PairsReader(Reader):
    """images/<id>.png + masks/<id>.png, mask values {0, 1}."""

    name, task, label_names = "fake_pairs", "segmentation", {0: "background", 1: "lesion"}

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / "images").is_dir()

    def scan(self):
        items, problems = [], []
        for f in sorted((self.root / "images").iterdir()):
            if not is_image_file(f):
                problems.append(DataError(f, "not an image file", "not_image"))
                continue
            mask = self.root / "masks" / f.name
            if not mask.exists():
                problems.append(DataError(f, "image without a mask", "layout"))
                continue
            items.append(Item(f.stem, (f, mask)))
        return items, problems

    def load(self, item: Item) -> Case:
        image, mask = read_image(item.files[0]), read_image(item.files[1])
        if image.shape[:2] != mask.shape:
            raise DataError(item.files[1], f"mask {mask.shape} vs image {image.shape[:2]}", "size_mismatch")
        self.check_mask_values(mask, item.files[1])
        return Case(item.id, image, mask)


class FolderReader(Reader):
    """<class>/<id>.png; class index = sorted folder position; id = file stem (so ids can repeat); option
    `min_per_class`: fewer files in a class folder is a layout problem."""

    name, task = "fake_folder", "classification"

    @classmethod
    def detect(cls, root: Path) -> bool:
        return True

    @property
    def class_names(self) -> list[str]:
        return sorted(d.name for d in self.root.iterdir() if d.is_dir())

    def scan(self):
        items, problems = [], []
        for label, name in enumerate(self.class_names):
            files = sorted((self.root / name).iterdir())
            if not files:
                problems.append(DataError(self.root / name, "class folder is empty", "empty_class"))
            elif len(files) < self.options.get("min_per_class", 1):
                problems.append(DataError(self.root / name, f"only {len(files)} file(s)", "layout"))
            items += [Item(f.stem, (f,), label) for f in files]
        return items, problems

    def load(self, item: Item) -> Case:
        if item.files[0].name == "crash.png":
            raise KeyError("boom")  # a reader bug: verify must report it, not die
        return Case(item.id, read_image(item.files[0]), label=item.label)


class VolumeReader(Reader):
    """<id>.npy volumes; spacing per id from the reader option `spacing`."""

    name, task, spatial_dims = "fake_volumes", "segmentation", 3

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any(root.glob("*.npy"))

    def scan(self):
        return [Item(f.stem, (f,)) for f in sorted(self.root.glob("*.npy"))], []

    def load(self, item: Item) -> Case:
        return Case(item.id, np.load(item.files[0]), spacing=tuple(self.options["spacing"][item.id]),
                    meta={"spatial_dims": 3})


FAKES = {r.name: r for r in (PairsReader, VolumeReader, FolderReader)}  # detect order: folder last


@pytest.fixture(autouse=True)
def fake_registry(monkeypatch):
    def detect(root):
        root = Path(root)
        if not root.is_dir():
            raise DataError(root, "dataset folder does not exist", "layout")
        return next(n for n, r in FAKES.items() if r.detect(root))

    def get(name):  # the real registry for a format given by name (real-data tests)
        return FAKES[name] if name in FAKES else real_get_reader(name)

    monkeypatch.setattr(verify_mod, "detect_format", detect)
    monkeypatch.setattr(verify_mod, "get_reader", get)


def _png(path: Path, arr) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr)).save(path)
    return path


def _pairs(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        _png(root / "images" / f"c{i}.png", rng.integers(0, 255, (16, 16), dtype=np.uint8))
        mask = np.zeros((16, 16), np.uint8)
        mask[4:8, 4:8] = i % 2
        _png(root / "masks" / f"c{i}.png", mask)
    return root


def _folder(root: Path, classes=("a", "b"), n: int = 2) -> Path:
    for c in classes:
        for i in range(n):
            _png(root / c / f"{c}{i}.png", np.full((8, 8), 40 * i, np.uint8))
    return root


def test_clean_dataset_reports_format_and_counts(tmp_path):
    r = verify_dataset(_pairs(tmp_path / "ds"), progress=False)
    assert r.ok and r.format == "fake_pairs" and r.detected
    assert (r.items, r.ok_items) == (4, 4) and not r.problems
    assert r.per_label == {"0:background": 4, "1:lesion": 2}
    assert "format: fake_pairs (detected)" in r.to_text() and "problems: none" in r.to_text()
    js = json.loads(r.to_json())
    assert js["ok"] and js["counts"]["items"] == 4 and js["format"] == "fake_pairs"


def test_every_problem_is_named_with_its_file_and_kind(tmp_path):
    root = _pairs(tmp_path / "ds", 6)
    data = (root / "images" / "c0.png").read_bytes()
    (root / "images" / "c0.png").write_bytes(data[: len(data) // 2])                 # truncated
    _png(root / "masks" / "c1.png", np.full((16, 16), 7, np.uint8))                   # extra label
    _png(root / "masks" / "c2.png", np.zeros((8, 8), np.uint8))                       # other size
    (root / "images" / "notes.txt").write_text("hi")                                  # stray file
    _png(root / "images" / "c9.png", np.zeros((16, 16), np.uint8))                   # no mask
    r = verify_dataset(root, "fake_pairs", progress=False)
    got = {(p.kind, p.path.relative_to(root).as_posix()) for p in r.problems}
    assert got == {("corrupt", "images/c0.png"), ("label_values", "masks/c1.png"),
                   ("size_mismatch", "masks/c2.png"), ("not_image", "images/notes.txt"),
                   ("layout", "images/c9.png")}
    assert not r.ok and r.ok_items == 3 and not r.detected
    text = r.to_text()
    assert "  label_values (1):\n    masks/c1.png: mask holds label values [7]" in text
    assert "NOT OK" in text
    assert {p["path"] for p in json.loads(r.to_json())["problems"]} == {str(p.path) for p in r.problems}


def test_quarantine_moves_bad_files_keeps_relative_paths_and_leaves_a_clean_dataset(tmp_path):
    root, qdir = _pairs(tmp_path / "ds", 5), tmp_path / "q"
    (root / "images" / "c3.png").write_bytes(b"")
    _png(root / "masks" / "c4.png", np.full((16, 16), 9, np.uint8))
    (root / "images" / "readme.txt").write_text("stray")
    r = verify_dataset(root, quarantine_dir=qdir, progress=False)
    assert r.ok and len(r.problems) == 3 and all(p.quarantined for p in r.problems)
    for rel in ("images/c3.png", "masks/c3.png", "images/c4.png", "masks/c4.png", "images/readme.txt"):
        assert (qdir / rel).exists() and not (root / rel).exists(), rel
    lines = [json.loads(x) for x in (qdir / "quarantine.jsonl").read_text().splitlines()]
    assert sorted(x["id"] for x in lines) == ["c3", "c4", "images/readme.txt"]
    assert all(x["reason"] and x["files"] for x in lines)
    again = verify_dataset(root, progress=False)
    assert again.ok and again.items == 3 and not again.problems


def test_quarantine_never_overwrites(tmp_path):
    root, qdir = tmp_path / "ds", tmp_path / "q"
    for n in range(2):
        f = root / "x" / "case.nii.gz"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(bytes([n]))
        moved = quarantine(root, Item("case", (f,)), qdir, f"round {n}")
        assert moved == [qdir / "x" / ("case.nii.gz" if n == 0 else "case~1.nii.gz")]
    assert (qdir / "x" / "case.nii.gz").read_bytes() == b"\x00"
    assert (qdir / "x" / "case~1.nii.gz").read_bytes() == b"\x01"
    assert len((qdir / "quarantine.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ValueError, match="inside the dataset"):
        quarantine(root, Item("case", (root / "x" / "a",)), root / "q", "no")


def test_classification_duplicate_ids_empty_and_crashing_reader(tmp_path):
    root = _folder(tmp_path / "ds", ("a", "b", "c"))
    _png(root / "b" / "a0.png", np.zeros((8, 8), np.uint8))   # id a0 again: the later item is the problem
    (root / "d").mkdir()                                         # empty class folder
    for f in (root / "c").iterdir():                             # class c: nothing readable left
        f.write_bytes(b"garbage")
    _png(root / "a" / "crash.png", np.zeros((8, 8), np.uint8))
    r = verify_dataset(root, progress=False)
    kinds = {(p.kind, p.path.relative_to(root).as_posix()) for p in r.problems}
    assert ("duplicate_id", "b/a0.png") in kinds and ("empty_class", "d") in kinds
    assert ("empty_class", "c") in kinds and ("not_image", "c/c0.png") in kinds
    internal = [p for p in r.problems if p.kind == "internal"]
    assert len(internal) == 1 and internal[0].path == root / "a" / "crash.png"
    assert "KeyError" in internal[0].message
    assert r.per_class == {"0:a": 2, "1:b": 2, "2:c": 0}
    q = verify_dataset(root, quarantine_dir=tmp_path / "q", progress=False)
    assert q.ok, q.remaining
    assert (root / "a" / "a0.png").exists() and (tmp_path / "q" / "b" / "a0.png").exists()
    assert not (root / "d").exists() and (tmp_path / "q" / "d").is_dir()
    # class c: its files moved, then the folder left empty (merged into q/c, not a second copy)
    assert not (root / "c").exists() and sorted(f.name for f in (tmp_path / "q" / "c").iterdir()) == ["c0.png",
                                                                                                     "c1.png"]
    assert verify_dataset(root, progress=False).ok


def test_problems_created_by_the_moves_are_reported(tmp_path):
    root = _folder(tmp_path / "ds", ("a", "b"), 2)
    (root / "b" / "b1.png").write_bytes(b"\x89PNG broken")
    q = verify_dataset(root, quarantine_dir=tmp_path / "q", progress=False, reader_options={"min_per_class": 2})
    assert [(p.kind, p.path, p.quarantined) for p in q.problems] == [
        ("not_image", root / "b" / "b1.png", True), ("layout", root / "b", False)]
    assert "(after quarantine)" in q.problems[1].message and not q.ok


def test_mixed_dtype_or_channels_are_inconsistent(tmp_path):
    root = _folder(tmp_path / "ds", ("a",), 3)
    _png(root / "a" / "rgb.png", np.zeros((8, 8, 3), np.uint8))
    _png(root / "a" / "deep.png", np.full((8, 8), 1000, np.uint16))
    r = verify_dataset(root, progress=False)
    bad = {p.path.name: p.message for p in r.problems if p.kind == "inconsistent"}
    assert set(bad) == {"rgb.png", "deep.png"} and "uint16 with 1 channel" in bad["deep.png"]
    assert "most of the dataset (3 of 5) is uint8 with 1 channel" in bad["rgb.png"]


def test_spacing_outlier_is_a_warning_not_a_problem(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    spacing = {"v0": (3.0, 0.8, 0.8), "v1": (2.5, 0.7, 0.7), "v2": (5.0, 0.9, 0.9), "v3": (0.8, 0.8, 3.0)}
    for k in spacing:
        np.save(root / f"{k}.npy", np.zeros((2, 4, 4), np.int16))
    r = verify_dataset(root, reader_options={"spacing": spacing}, progress=False)
    assert r.ok and len(r.warnings) == 1 and "v3.npy" in r.warnings[0]
    assert "warning:" in r.to_text()


def test_missing_folder_and_unknown_format_raise_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        verify_dataset(tmp_path / "nope", progress=False)
    with pytest.raises(ValueError, match="unknown dataset format"):
        verify_dataset(_pairs(tmp_path / "ds"), "nope", progress=False)
    with pytest.raises(ValueError, match="inside the dataset"):
        verify_dataset(tmp_path / "ds", quarantine_dir=tmp_path / "ds" / "q", progress=False)


@pytest.mark.parametrize("name, fmt, n, labels", [
    ("CVC-ClinicDB-tif-sample", "cvc_clinicdb", 12, {"0:background": 12, "1:polyp": 12}),
    # README: label values {0..4} in every volume; the paper's map keeps liver and kidney
    ("CHAOS-MR-T2", "chaos_nifti", 10, {"0:background": 10, "1:liver": 10, "2:kidney": 10}),
    pytest.param("CVC-ClinicDB", "cvc_clinicdb", 612, {"0:background": 612, "1:polyp": 612},
                 marks=pytest.mark.slow),
])
def test_real_datasets_verify_clean(shared_dir, name, fmt, n, labels):
    r = verify_dataset(shared_dir / "data" / name, fmt, progress=False)
    assert r.ok and not r.problems and not r.warnings, r.to_text()
    assert (r.format, r.items, r.ok_items, r.per_label) == (fmt, n, n, labels)
