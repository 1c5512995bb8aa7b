"""Cross-validation splits as nnU-Net v2 makes them, plus a patient-grouped variant and `splits_final.json`.

nnU-Net (nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py `do_split`, utilities/crossval_split.py
`generate_crossval_split`): the case ids are sorted, then sklearn `KFold(n_splits=5, shuffle=True,
random_state=12345)` splits them; the result is written to `<preprocessed dataset>/splits_final.json` as
`[{"train": [...], "val": [...]}, ...]`. An existing file is used as is (so a user can supply their own split).

sklearn is not a runtime dependency, so `kfold_indices` reproduces KFold's permutation itself: a legacy
`np.random.RandomState(seed).shuffle(arange(n))` (sklearn's `check_random_state(int)`), folds are consecutive
chunks of that permutation, the first `n % k` folds one element larger, and the train/val index lists of every
fold come back sorted ascending (KFold returns `arange(n)[mask]`).

Grouped variant (ours; nnU-Net has none). Rule: every case gets a group key, its group from `case_groups.json`
(patient / video sequence) or, for an ungrouped case, its own case id. The sorted unique keys are split with
exactly the KFold above; a fold's val cases are all cases whose key is in that fold's val keys (train = the
rest), both lists sorted. When every case is its own group the result equals nnU-Net's split. Folds are
balanced in number of groups, not of cases.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from radgan_jax.data.nnunet_raw import GROUPS_FILE

SPLITS_FILE = "splits_final.json"
NNUNET_SPLIT_SEED = 12345  # nnUNetTrainer.do_split
NNUNET_NUM_FOLDS = 5

Split = dict[str, list[str]]


def kfold_indices(n: int, n_splits: int = NNUNET_NUM_FOLDS, seed: int = NNUNET_SPLIT_SEED
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, val_idx) per fold, identical to sklearn `KFold(n_splits, shuffle=True, random_state=seed)`."""
    if n_splits < 2:
        raise ValueError(f"n_splits must be at least 2, got {n_splits}")
    if n_splits > n:
        raise ValueError(f"cannot make {n_splits} folds from {n} samples (sklearn KFold needs n_splits <= n)")
    perm = np.arange(n)
    np.random.RandomState(seed).shuffle(perm)  # sklearn check_random_state(int) -> legacy RandomState
    sizes = np.full(n_splits, n // n_splits, dtype=int)
    sizes[: n % n_splits] += 1
    out = []
    start = 0
    for size in sizes:
        mask = np.zeros(n, dtype=bool)
        mask[perm[start:start + size]] = True
        out.append((np.flatnonzero(~mask), np.flatnonzero(mask)))
        start += size
    return out


def generate_crossval_split(case_ids: Sequence[str], seed: int = NNUNET_SPLIT_SEED,
                            n_splits: int = NNUNET_NUM_FOLDS) -> list[Split]:
    """nnU-Net's `generate_crossval_split`: KFold over `case_ids` in the order given (nnU-Net sorts first)."""
    ids = [str(c) for c in case_ids]
    return [{"train": [ids[i] for i in tr], "val": [ids[i] for i in va]}
            for tr, va in kfold_indices(len(ids), n_splits, seed)]


def group_keys(case_ids: Sequence[str], groups: Mapping[str, str] | None) -> dict[str, str]:
    """case id -> group key (its group, or its own id when ungrouped). A group named like an ungrouped case
    would silently merge the two, so that is an error."""
    groups = {str(k): str(v) for k, v in (groups or {}).items()}
    keys = {c: groups.get(c, c) for c in case_ids}
    named = {g for c, g in keys.items() if c in groups}
    clash = sorted(c for c in case_ids if c not in groups and c in named)
    if clash:
        raise ValueError(f"ungrouped case ids {clash[:10]} equal group names used by other cases; give them a group")
    return keys


def generate_grouped_crossval_split(case_ids: Sequence[str], groups: Mapping[str, str] | None,
                                    seed: int = NNUNET_SPLIT_SEED, n_splits: int = NNUNET_NUM_FOLDS) -> list[Split]:
    """KFold over the sorted unique group keys; every group's cases land in one val fold (rule: module doc)."""
    ids = sorted(str(c) for c in case_ids)
    keys = group_keys(ids, groups)
    unique = sorted(set(keys.values()))
    if len(unique) < n_splits:
        raise ValueError(f"{len(unique)} groups cannot fill {n_splits} folds (groups: {unique[:10]})")
    out = []
    for _, va in kfold_indices(len(unique), n_splits, seed):
        val_keys = {unique[i] for i in va}
        out.append({"train": [c for c in ids if keys[c] not in val_keys],
                    "val": [c for c in ids if keys[c] in val_keys]})
    return out


def default_splits(case_ids: Sequence[str], groups: Mapping[str, str] | None = None, seed: int = NNUNET_SPLIT_SEED,
                   n_splits: int = NNUNET_NUM_FOLDS) -> list[Split]:
    """The split nnU-Net would create (sorted ids), or the grouped one when `groups` maps any case to a group."""
    if groups and any(str(c) in groups for c in case_ids):
        return generate_grouped_crossval_split(case_ids, groups, seed, n_splits)
    return generate_crossval_split(sorted(str(c) for c in case_ids), seed, n_splits)


def validate_splits(splits: object, case_ids: Sequence[str], source: str = "splits",
                    require_partition: bool = True) -> list[Split]:
    """Check a (user-supplied) split list; returns it normalised to lists of str. ValueError names the problem:
    bad structure, ids not in the dataset, a case in train and val of one fold, and (require_partition) a case
    in no or in several val folds."""
    if not isinstance(splits, list) or not splits:
        raise ValueError(f"{source}: expected a non-empty list of {{'train': [...], 'val': [...]}}, got "
                         f"{type(splits).__name__}")
    known = {str(c) for c in case_ids}
    out: list[Split] = []
    val_count: dict[str, int] = {}
    for f, split in enumerate(splits):
        if not isinstance(split, dict) or set(split) != {"train", "val"}:
            keys = sorted(split) if isinstance(split, dict) else type(split).__name__
            raise ValueError(f"{source}: fold {f} must have exactly the keys 'train' and 'val', got {keys}")
        tr, va = [str(c) for c in split["train"]], [str(c) for c in split["val"]]
        unknown = sorted((set(tr) | set(va)) - known)
        if unknown:
            raise ValueError(f"{source}: fold {f} names {len(unknown)} case id(s) not in the dataset: {unknown[:20]}")
        both = sorted(set(tr) & set(va))
        if both:
            raise ValueError(f"{source}: fold {f} has {len(both)} case(s) in both train and val: {both[:20]}")
        dup = sorted(c for c, n in Counter(tr + va).items() if n > 1)
        if dup:
            raise ValueError(f"{source}: fold {f} lists case(s) twice: {dup[:20]}")
        for c in va:
            val_count[c] = val_count.get(c, 0) + 1
        out.append({"train": tr, "val": va})
    if require_partition:
        missing = sorted(known - set(val_count))
        several = sorted(c for c, n in val_count.items() if n > 1)
        if missing or several:
            raise ValueError(f"{source}: every case must be in exactly one val fold; in none: {missing[:20]} "
                             f"({len(missing)}), in several: {several[:20]} ({len(several)})")
    return out


def save_splits(splits: Sequence[Split], path: str | os.PathLike) -> Path:
    """Write `splits_final.json` as nnU-Net does (save_json: indent 4, key order train, val)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"train": list(s["train"]), "val": list(s["val"])} for s in splits], indent=4))
    return path


def load_splits(path: str | os.PathLike, case_ids: Sequence[str] | None = None,
                require_partition: bool = True) -> list[Split]:
    """Read a splits_final.json; validated against `case_ids` when given."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read splits: {e}") from e
    if case_ids is None:
        case_ids = sorted({str(c) for s in data for k in ("train", "val") for c in s.get(k, [])}) \
            if isinstance(data, list) and all(isinstance(s, dict) for s in data) else []
    return validate_splits(data, case_ids, str(path), require_partition)


def get_or_create_splits(path: str | os.PathLike, case_ids: Sequence[str], groups: Mapping[str, str] | None = None,
                         require_partition: bool = True) -> tuple[list[Split], bool]:
    """nnU-Net's do_split policy: an existing file at `path` wins (validated); otherwise the default split
    (grouped when `groups` is given) is written there. Returns (splits, created)."""
    path = Path(path)
    if path.is_file():
        return load_splits(path, case_ids, require_partition), False
    splits = default_splits(case_ids, groups)
    save_splits(splits, path)
    return splits, True


def fold_keys(splits: Sequence[Split], fold: int | str, case_ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """(train, val) case ids of `fold` as nnUNetTrainer.do_split picks them: fold 'all' trains and validates on
    every case; a fold beyond the split list gets nnU-Net's seeded random 80:20 split."""
    ids = sorted(str(c) for c in case_ids)
    if fold == "all":
        return ids, ids
    fold = int(fold)
    if fold < len(splits):
        return list(splits[fold]["train"]), list(splits[fold]["val"])
    rnd = np.random.RandomState(seed=NNUNET_SPLIT_SEED + fold)  # do_split: RandomState(12345 + fold)
    idx_tr = rnd.choice(len(ids), int(len(ids) * 0.8), replace=False)
    chosen = set(idx_tr.tolist())
    return [ids[i] for i in idx_tr], [ids[i] for i in range(len(ids)) if i not in chosen]


def read_case_groups(raw_dataset_folder: str | os.PathLike) -> dict[str, str] | None:
    """The `case_groups.json` sidecar of a raw dataset written by radgan_jax.data.nnunet_raw, or None."""
    path = Path(raw_dataset_folder) / GROUPS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read case groups: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object case id -> group, got {type(data).__name__}")
    return {str(k): str(v) for k, v in data.items()}
