"""What every dataset reader produces and how it reports problems.

A reader turns one original on-disk layout into `Case`s. It works in two steps so that an integrity check can
see every problem of a dataset instead of stopping at the first:

    items, problems = reader.scan()   # walk the layout: one Item per case; layout problems (empty class
                                      # folder, non-image file, unpaired mask, duplicate id) as DataErrors
    case = reader.load(item)          # read the files of one item; raises DataError naming the file

A `Case` is a 2D image (H, W[, C]) or a 3D volume (Z, Y, X) - axial slices first, the nnU-Net/SimpleITK
order - with an optional mask of the same spatial shape holding the reader's *declared* label values (after
the format's documented thresholding / remapping), an optional class label, the patient/group id used for
splits, and the spacing. `reader.records(item)` yields 2D `Case`s (one per axial slice for volumes).

Errors: every problem is a `DataError(path, problem, kind)`; its message starts with the path, so a user
reads which file is bad and why, never a bare traceback.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

# Problem kinds (the integrity report groups by these).
KINDS = ("layout", "unreadable", "corrupt", "label_values", "size_mismatch", "spacing_mismatch", "empty_class",
         "duplicate_id", "not_image")


class DataError(Exception):
    """A problem with one file or folder of a dataset. `str(e)` = 'PATH: problem'."""

    def __init__(self, path: str | Path, problem: str, kind: str = "corrupt"):
        if kind not in KINDS:
            raise ValueError(f"unknown DataError kind {kind!r}; valid: {KINDS}")
        self.path = Path(path)
        self.problem = problem
        self.kind = kind
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # picklable, so a worker process's error reaches the parent naming the file
        return (type(self), (self.path, self.problem, self.kind))


@dataclasses.dataclass(frozen=True)
class Item:
    """One case a reader can load: an id unique in the dataset, the files that make it (quarantine moves these),
    and what the layout alone tells (class label, patient/group)."""

    id: str
    files: tuple[Path, ...]
    label: int | None = None
    group: str | None = None


@dataclasses.dataclass
class Case:
    id: str
    image: np.ndarray                  # 2D: (H, W) or (H, W, C); 3D: (Z, Y, X)
    mask: np.ndarray | None = None     # same spatial shape, integer, declared label values only
    label: int | None = None           # class index (classification datasets)
    group: str | None = None           # patient / sequence id: split by this
    spacing: tuple[float, ...] | None = None   # mm, in the image's axis order (Z, Y, X) / (Y, X)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_volume(self) -> bool:
        return self.meta.get("spatial_dims", 2) == 3

    def slices(self) -> Iterator[Case]:
        """Axial 2D slices of a volume (ids `<id>_z<index:04d>`), or the case itself if it is 2D."""
        if not self.is_volume:
            yield self
            return
        for z in range(self.image.shape[0]):
            meta = dict(self.meta, spatial_dims=2, slice_index=z, volume_id=self.id)
            spacing = tuple(self.spacing[1:]) if self.spacing else None
            yield Case(f"{self.id}_z{z:04d}", self.image[z], None if self.mask is None else self.mask[z],
                       self.label, self.group, spacing, meta)


class Reader(abc.ABC):
    """Base of every layout reader. Subclasses set the class attributes and implement detect/scan/load."""

    name: ClassVar[str]                       # registry key, e.g. 'cvc_clinicdb'
    task: ClassVar[str]                       # 'classification' or 'segmentation'
    spatial_dims: ClassVar[int] = 2
    # Declared mask label values after the format's thresholding/remapping, e.g. {0: 'background', 1: 'polyp'}.
    label_names: ClassVar[Mapping[int, str] | None] = None
    # Paper preprocessing: in-plane size the paper resized this dataset to (None: keep).
    paper_size: ClassVar[int | None] = None

    def __init__(self, root: str | Path, **options: Any):
        self.root = Path(root)
        self.options = options
        if not self.root.exists():
            raise DataError(self.root, "dataset folder does not exist", "layout")
        if not self.root.is_dir():
            raise DataError(self.root, "expected a dataset folder, found a file", "layout")

    @classmethod
    @abc.abstractmethod
    def detect(cls, root: Path) -> bool:
        """True if `root` looks like this layout (cheap: folder/file names only)."""

    @abc.abstractmethod
    def scan(self) -> tuple[list[Item], list[DataError]]:
        """Walk the layout: (items in a deterministic order, layout problems)."""

    @abc.abstractmethod
    def load(self, item: Item) -> Case:
        """Read one item; raises DataError naming the file on any problem."""

    def records(self, item: Item) -> Iterator[Case]:
        """2D records of one item (axial slices for volumes)."""
        yield from self.load(item).slices()

    def check_mask_values(self, mask: np.ndarray, path: Path) -> None:
        """DataError('label_values') if the mask holds values outside `label_names`."""
        if self.label_names is None:
            return
        extra = sorted(set(np.unique(mask).tolist()) - set(self.label_names))
        if extra:
            raise DataError(path, f"mask holds label values {extra[:10]} outside the declared set "
                                  f"{sorted(self.label_names)} ({', '.join(self.label_names.values())})",
                            "label_values")

    @classmethod
    def layout_doc(cls) -> str:
        return (cls.__doc__ or cls.name).strip()
