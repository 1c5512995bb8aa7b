"""5-fold splits against nnunetv2's generate_crossval_split (sklearn KFold), grouped splits, splits_final.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from radgan_jax.seg import splits as sp


def _ids(n: int, prefix: str = "case") -> list[str]:
    return [f"{prefix}_{i:03d}" for i in range(n)]


@pytest.mark.parametrize("case_ids", [_ids(5), _ids(7), _ids(10), _ids(23), _ids(612, "cvc"),
                                      [f"p{i}_s{j}" for i in range(9, 0, -1) for j in range(3)]])
def test_default_split_equals_nnunet(case_ids) -> None:
    cv = pytest.importorskip("nnunetv2.utilities.crossval_split")
    ref = cv.generate_crossval_split(list(np.sort(case_ids)), seed=12345, n_splits=5)  # as do_split calls it
    ours = sp.default_splits(case_ids)
    assert ours == [{"train": [str(c) for c in f["train"]], "val": [str(c) for c in f["val"]]} for f in ref]
    assert sorted(c for f in ours for c in f["val"]) == sorted(case_ids)


@pytest.mark.parametrize("n,k,seed", [(5, 5, 0), (11, 3, 7), (100, 5, 12345), (13, 4, 2**31 - 1)])
def test_kfold_indices_equal_sklearn(n, k, seed) -> None:
    model_selection = pytest.importorskip("sklearn.model_selection")
    ref = list(model_selection.KFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n)))
    ours = sp.kfold_indices(n, k, seed)
    for (rt, rv), (ot, ov) in zip(ref, ours, strict=True):
        np.testing.assert_array_equal(ot, rt)
        np.testing.assert_array_equal(ov, rv)
    with pytest.raises(ValueError, match="cannot make"):
        sp.kfold_indices(3, 5)


def test_grouped_split_keeps_groups_together() -> None:
    ids = _ids(40)
    groups = {c: f"patient{i % 11}" for i, c in enumerate(ids)}
    splits = sp.default_splits(ids, groups)
    assert len(splits) == 5
    seen: dict[str, int] = {}
    for f, s in enumerate(splits):
        assert sorted(s["train"] + s["val"]) == ids and not set(s["train"]) & set(s["val"])
        for c in s["val"]:
            assert seen.setdefault(groups[c], f) == f  # a patient's cases are in one val fold
    assert len(seen) == 11
    # rule: KFold over the sorted unique groups (11 groups -> 3, 2, 2, 2, 2 per fold)
    unique = sorted(set(groups.values()))
    for s, (_, va) in zip(splits, sp.kfold_indices(len(unique))):
        assert sorted({groups[c] for c in s["val"]}) == sorted(unique[i] for i in va)
    # singleton groups (every case its own group) give exactly nnU-Net's split
    assert sp.generate_grouped_crossval_split(ids, {c: c for c in ids}) == sp.default_splits(ids)
    # ungrouped cases are their own group
    partial = {c: "g" for c in ids[:10]}
    s2 = sp.default_splits(ids, partial)
    assert sum(set(ids[:10]) <= set(s["val"]) for s in s2) == 1
    with pytest.raises(ValueError, match="groups cannot fill"):
        sp.default_splits(ids, {c: f"g{i % 3}" for i, c in enumerate(ids)})
    with pytest.raises(ValueError, match="equal group names"):
        sp.default_splits(ids, {ids[0]: ids[1]})


def test_splits_file_user_wins_and_is_validated(tmp_path) -> None:
    ids = _ids(12)
    path = tmp_path / "pre" / sp.SPLITS_FILE
    splits, created = sp.get_or_create_splits(path, ids)
    assert created and splits == sp.default_splits(ids)
    on_disk = json.loads(path.read_text())
    assert on_disk == splits and path.read_text().startswith("[\n    {\n        \"train\"")  # nnU-Net's save_json
    user = [{"train": ids[:6], "val": ids[6:]}, {"train": ids[6:], "val": ids[:6]}]
    path.write_text(json.dumps(user))
    got, created = sp.get_or_create_splits(path, ids)
    assert not created and got == user  # an existing (user) file wins
    path.write_text(json.dumps([{"train": ids[:6], "val": ids[6:] + ["ghost_1"]}, {"train": ids[6:], "val": ids[:6]}]))
    with pytest.raises(ValueError, match="ghost_1"):
        sp.get_or_create_splits(path, ids)
    path.write_text(json.dumps([{"train": ids[:6], "val": ids[6:]}]))
    with pytest.raises(ValueError, match="exactly one val fold.*case_000"):
        sp.load_splits(path, ids)
    assert sp.load_splits(path, ids, require_partition=False)[0]["val"] == ids[6:]
    path.write_text(json.dumps([{"train": ids, "val": ids[:1]}]))
    with pytest.raises(ValueError, match="both train and val"):
        sp.load_splits(path, ids, require_partition=False)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read splits"):
        sp.load_splits(path, ids)


def test_fold_keys_as_do_split() -> None:
    ids = _ids(20)
    splits = sp.default_splits(ids)
    assert sp.fold_keys(splits, 2, ids) == (splits[2]["train"], splits[2]["val"])
    assert sp.fold_keys(splits, "all", ids) == (ids, ids)
    tr, va = sp.fold_keys(splits, 7, ids)  # beyond the file: nnU-Net's seeded random 80:20 split
    rnd = np.random.RandomState(12345 + 7)
    idx = rnd.choice(20, 16, replace=False)
    assert tr == [ids[i] for i in idx] and va == [ids[i] for i in range(20) if i not in idx]


def test_case_groups_sidecar(tmp_path) -> None:
    assert sp.read_case_groups(tmp_path) is None
    (tmp_path / "case_groups.json").write_text(json.dumps({"a": "p1", "b": 2}))
    assert sp.read_case_groups(tmp_path) == {"a": "p1", "b": "2"}
    (tmp_path / "case_groups.json").write_text("[1]")
    with pytest.raises(ValueError, match="case_groups.json"):
        sp.read_case_groups(tmp_path)


def test_groups_from_a_written_raw_dataset(tmp_path) -> None:
    """case_groups.json as radgan_jax's nnU-Net raw writer stores it drives the grouped split."""
    from radgan_jax.data.base import Case
    from radgan_jax.data.nnunet_raw import write_nnunet_raw

    rng = np.random.default_rng(0)
    cases = [Case(f"seq{g}_f{f}", rng.integers(0, 255, (8, 8), dtype=np.uint8), np.zeros((8, 8), np.uint8),
                  group=f"seq{g}") for g in range(6) for f in range(g % 3 + 1)]
    folder = write_nnunet_raw(cases, tmp_path, 7, "Toy", {"background": 0, "fg": 1}, {"0": "gray"})
    groups = sp.read_case_groups(folder)
    assert groups == {c.id: c.group for c in cases}
    splits = sp.default_splits([c.id for c in cases], groups)
    for s in splits:
        assert {groups[c] for c in s["val"]}.isdisjoint({groups[c] for c in s["train"]})
