"""Reading what `seg_plan` wrote: plans, dataset.json and the preprocessed cases (`<data_identifier>/CASE.npz` with
data float32 [C, 1, H, W] and seg [1, 1, H, W], `CASE.json` with the properties and class_locations).

Cases are loaded on first use and kept in host memory (2D datasets: the paper's largest task is a few thousand
slices; CVC-ClinicDB at full size is ~0.8 GB as float32), so sampling a patch is a slice, not a file read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from radgan_jax.seg.sampler import SegCase

PLANS_FILE = "nnUNetPlans.json"


class PreprocessedError(ValueError):
    """A missing or inconsistent seg_plan output; the message names the file."""


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise PreprocessedError(f"{path}: missing (run the seg_plan job first: --config=configs/seg/plan.py)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PreprocessedError(f"{path}: not valid JSON ({e})") from None


def _location_key(key: str) -> int | tuple[int, ...]:
    """CASE.json keys: '1' -> 1 (a label), '-1,1,2' -> (-1, 1, 2) (a region / the annotated-pixels key)."""
    parts = [int(p) for p in str(key).split(",")]
    return parts[0] if len(parts) == 1 and "," not in str(key) else tuple(parts)


class PreprocessedDataset:
    """The 2d configuration of a seg_plan output folder."""

    def __init__(self, plans_dir: str | Path, configuration: str = "2d") -> None:
        self.root = Path(plans_dir)
        self.plans = _read_json(self.root / PLANS_FILE)
        self.dataset_json = _read_json(self.root / "dataset.json")
        if configuration not in self.plans.get("configurations", {}):
            raise PreprocessedError(f"{self.root / PLANS_FILE}: no {configuration!r} configuration")
        self.configuration = self.plans["configurations"][configuration]
        self.folder = self.root / self.configuration["data_identifier"]
        if not self.folder.is_dir():
            raise PreprocessedError(f"{self.folder}: missing (run seg_plan with --config.preprocess=True)")
        self.case_ids = sorted(p.stem for p in self.folder.glob("*.npz"))
        if not self.case_ids:
            raise PreprocessedError(f"{self.folder}: no preprocessed cases (*.npz)")
        self._cache: dict[str, SegCase] = {}
        self._props: dict[str, dict] = {}

    @property
    def labels(self) -> dict[str, Any]:
        return dict(self.dataset_json["labels"])

    @property
    def ignore_label(self) -> int | None:
        value = self.labels.get("ignore")
        return None if value is None else int(value)

    @property
    def foreground_labels(self) -> list[int]:
        return sorted(int(v) for k, v in self.labels.items() if k not in ("background", "ignore")
                      and not isinstance(v, (list, tuple)) and int(v) > 0)

    @property
    def num_segmentation_heads(self) -> int:
        """label_manager.num_segmentation_heads: background + foreground labels (no regions)."""
        return len(self.foreground_labels) + 1

    @property
    def num_input_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    def properties(self, case_id: str) -> dict[str, Any]:
        if case_id not in self._props:
            self._props[case_id] = _read_json(self.folder / f"{case_id}.json")
        return self._props[case_id]

    def load(self, case_id: str) -> SegCase:
        if case_id not in self._cache:
            path = self.folder / f"{case_id}.npz"
            if not path.is_file():
                raise PreprocessedError(f"{path}: no such preprocessed case")
            with np.load(path) as z:
                data, seg = z["data"].astype(np.float32), z["seg"]
            if data.ndim != 4 or seg.shape != (1, *data.shape[1:]):
                raise PreprocessedError(f"{path}: data {data.shape} / seg {seg.shape}, expected [C, 1, H, W] and "
                                        "[1, 1, H, W]")
            locs = {_location_key(k): np.asarray(v, np.int64).reshape(-1, 4)
                    for k, v in self.properties(case_id).get("class_locations", {}).items()}
            self._cache[case_id] = SegCase(data, seg, locs)
        return self._cache[case_id]


__all__ = ["PLANS_FILE", "PreprocessedDataset", "PreprocessedError"]
