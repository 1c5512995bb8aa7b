"""Class tables: the paper's Table S1 as package data, looked up by index or label."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from radgan_jax.data.classes import class_table, normalize_label


def test_sizes_and_products():
    ctmr, gastro = class_table("ctmr"), class_table("gastro")
    assert len(ctmr) == 124 and len(gastro) == 6
    assert [c.index for c in ctmr.classes] == list(range(124))
    assert {c.modality for c in ctmr.classes} == {"CT", "MRI"}
    assert sum(c.modality == "CT" for c in ctmr.classes) == 25
    assert gastro.labels == ["dyed_lifted_polyps", "dyed_resection_margins", "polyps", "pylorus",
                             "retroflex_stomach", "z_line"]
    with pytest.raises(ValueError, match="valid: ctmr, gastro"):
        class_table("xray")


def test_package_copy_equals_the_papers_table(shared_dir: Path):
    """Our shipped copy holds exactly the rows of ../shared/data/radimagegan_classes.tsv."""
    with open(shared_dir / "data" / "radimagegan_classes.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 130
    for r in rows:
        info = class_table(r["generator"])[int(r["class_index"])]
        assert (info.label, info.modality, info.anatomy) == (r["pathological_label"], r["modality"], r["anatomy"])


def test_lookup_by_label_or_index():
    t = class_table("ctmr")
    assert t.index("spine-normal") == t.index("Spine Normal") == t.index("spine_normal") == 118
    assert t.index("118") == t.index(118) == 118
    assert t["spine_ddd"].label == "spine_ddd" and t["spine_ddd"].anatomy == "Spine"
    assert t.parse("0,5-7,spine_ddd") == [0, 5, 6, 7, 120]
    assert t.parse(["abd_normal", 3]) == [0, 3]
    assert len({normalize_label(label) for label in t.labels}) == 124  # normalisation keeps labels distinct


def test_errors_name_the_bad_value():
    t = class_table("ctmr")
    with pytest.raises(ValueError, match=r"out of range for ctmr \(0\.\.123\)"):
        t.index(124)
    with pytest.raises(ValueError, match="did you mean: spine_normal"):
        t.index("spine_normall")
    with pytest.raises(ValueError, match="empty class range"):
        t.parse("7-5")
