"""Classification readers for 'one folder per class' layouts: a generic image folder, the RadImageNet release
(modality/anatomy/pathology folders) and HyperKvasir labeled-images, the last two mapped onto the paper's class
table (Table S1, `radgan_jax.data.classes`).

All three share one scan: every file in a class folder is one item (id `<class>/<stem>`); a sub-folder, a
non-image file, an empty class folder and two files with the same stem are reported as problems, not raised.
Images load as uint8 (H, W) or (H, W, 3); 16-bit greyscale stays uint16 (meta 'bit_depth' = 16).
"""

from __future__ import annotations

import abc
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from radgan_jax.data.base import Case, DataError, Item, Reader
from radgan_jax.data.classes import class_table, normalize_label
from radgan_jax.data.io import IMAGE_SUFFIXES, is_image_file, read_image

# OS bookkeeping files that are never data (macOS / Windows); hidden files (".*") are skipped as well.
_IGNORED = {"thumbs.db", "desktop.ini"}


def _entries(folder: Path) -> list[Path]:
    """Sorted folder entries without hidden and OS bookkeeping files."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name.lower() not in _IGNORED)


def _subdirs(folder: Path) -> list[Path]:
    return [p for p in _entries(folder) if p.is_dir()]


def _has_images(folder: Path, limit: int = 50) -> bool:
    """Cheap detection check: an image among the first `limit` entries."""
    return any(is_image_file(p) and p.is_file() for p in itertools.islice(folder.iterdir(), limit))


def load_picture(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """A 2D picture as uint8 (H, W) / (H, W, 3), or uint16 (H, W) for 16-bit grey, plus meta on conversions.

    Palette images become grey when the palette is grey, else RGB; alpha is composited onto black (medical
    PNG exports carry an all-opaque alpha, for which this is the identity); 1-bit becomes 0/255; CMYK/YCbCr
    become RGB. Float images are refused (no safe 8/16-bit mapping).
    """
    from PIL import Image

    path = Path(path)
    mode, grey_palette, alpha = None, False, False
    try:  # header only: decide the conversion; read_image below reports any problem with the file name
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("P", "PA"):
                pal = np.asarray(im.getpalette() or [0, 0, 0], dtype=np.uint8).reshape(-1, 3)
                grey_palette = bool(np.all(pal[:, :1] == pal))
                alpha = mode == "PA" or "transparency" in im.info
    except Exception:
        mode = None
    meta: dict[str, Any] = {"source_mode": mode}
    if mode is None or mode in ("L", "RGB"):
        arr = read_image(path)
    elif mode == "1":
        arr = read_image(path, "L")
    elif mode in ("P", "PA"):
        arr = read_image(path, "RGBA" if alpha else ("L" if grey_palette else "RGB"))
    elif mode in ("LA", "La"):
        arr = read_image(path, "LA")
    elif mode in ("RGBA", "RGBa"):
        arr = read_image(path, "RGBA")
    elif mode.startswith("I;16") or mode == "I":
        arr = read_image(path)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(path, f"32-bit integer image with values {arr.min()}..{arr.max()} (only 8-bit and "
                                  "16-bit images are supported)", "not_image")
        arr = arr.astype(np.uint16)
        meta["bit_depth"] = 16
    elif mode == "F":
        raise DataError(path, "32-bit float image: only 8-bit grey/colour and 16-bit grey images are supported",
                        "not_image")
    else:  # CMYK, YCbCr, LAB, HSV
        arr = read_image(path, "RGB")
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        color, a = arr[..., :-1].astype(np.uint16), arr[..., -1:].astype(np.uint16)
        arr = ((color * a + 127) // 255).astype(np.uint8)
        meta["alpha"] = "composited onto black"
        if arr.shape[2] == 1 or (mode in ("P", "PA") and grey_palette):
            arr = arr[..., 0]
    return np.ascontiguousarray(arr), meta


class _ClassFolderReader(Reader):
    """Shared scan/load of layouts whose leaf folders are classes holding image files."""

    task = "classification"
    product: str | None = None

    def __init__(self, root: str | Path, **options: Any):
        super().__init__(root, **options)
        self.class_names: list[str] = []
        self.skipped: dict[str, int] = {}   # folder name -> images not used (classes outside the table)

    @abc.abstractmethod
    def _class_folders(self) -> tuple[list[tuple[Path, str, int]], list[DataError]]:
        """(class folder, id prefix, class index) for every usable class folder, and layout problems."""

    def scan(self) -> tuple[list[Item], list[DataError]]:
        self.skipped = {}
        folders, problems = self._class_folders()
        items: list[Item] = []
        seen: dict[str, Path] = {}
        for folder, prefix, label in folders:
            n = 0
            for p in _entries(folder):
                item_id = f"{prefix}/{p.stem}" if prefix else p.stem
                if p.is_dir():
                    problems.append(DataError(p, "a folder where an image is expected (class folders hold image "
                                                 "files only)", "layout"))
                elif not is_image_file(p):
                    problems.append(DataError(p, f"not an image file (expected {', '.join(IMAGE_SUFFIXES)})",
                                              "not_image"))
                elif item_id in seen:
                    problems.append(DataError(p, f"duplicate id {item_id}: {seen[item_id].name} "
                                                 "has the same name stem", "duplicate_id"))
                else:
                    seen[item_id] = p
                    items.append(Item(item_id, (p,), label))
                    n += 1
            if n == 0:
                problems.append(DataError(folder, "class folder holds no images", "empty_class"))
        return items, problems

    def load(self, item: Item) -> Case:
        image, meta = load_picture(item.files[0])
        meta["path"] = str(item.files[0])
        if item.label is not None and item.label < len(self.class_names):
            meta["class_name"] = self.class_names[item.label]
        return Case(item.id, image, None, item.label, item.group, None, meta)

    def _skip(self, folder: Path) -> None:
        self.skipped[folder.name] = self.skipped.get(folder.name, 0) + sum(
            1 for p in folder.iterdir() if p.is_file() and is_image_file(p))

    def _stray_images(self, folder: Path, expected: str) -> list[DataError]:
        """Images lying at a level of the tree that should hold only folders (README files etc. are fine)."""
        return [DataError(p, f"image outside a class folder (expected {expected})", "layout")
                for p in _entries(folder) if p.is_file() and is_image_file(p)]


def _table_index(table, name: str) -> int | None:
    """Class index of a label, None if the table lacks it (digit-only names are not treated as indices here)."""
    if name.strip().isdigit():
        return None
    try:
        return table.index(name)
    except ValueError:
        return None


class ImageFolderReader(_ClassFolderReader):
    """Generic classification folder: one sub-folder per class, images directly inside.

        root/
          CLASS_A/xxx.png  yyy.jpg ...     (.png .jpg .jpeg .tif .tiff .bmp)
          CLASS_B/...

    Class labels: by default the sorted class-folder names get indices 0..K-1 (`reader.class_names`). With
    option `product='ctmr'|'gastro'` a folder name is a label (or index) of the paper's class table (Table S1),
    matched ignoring case and ' ', '-', '_' (so 'spine-normal', 'Spine Normal' and 'spine_normal' are one
    class); `class_names` is then the whole table and a folder that is not in it is a 'layout' problem naming
    close matches (its images are skipped). Item id: 'CLASS/stem'. Hidden files and Thumbs.db/desktop.ini are
    ignored; other files at the top level are ignored unless they are images (then a 'layout' problem).

    A flat folder (images directly in root, no sub-folders at all) is an unlabeled set: item id 'stem', label
    None, no class names (GAN training treats it as one class).
    """

    name = "image_folder"

    def __init__(self, root: str | Path, product: str | None = None, **options: Any):
        super().__init__(root, product=product, **options)
        self.product = product
        self.table = class_table(product) if product is not None else None
        self.flat = self.root.is_dir() and not _subdirs(self.root) and _has_images(self.root)
        self.class_names = (self.table.labels if self.table else
                            [] if self.flat else [d.name for d in _subdirs(self.root)])

    @classmethod
    def detect(cls, root: Path) -> bool:
        subdirs = _subdirs(root)
        return any(_has_images(d) for d in subdirs[:5]) or (not subdirs and _has_images(root))

    def _class_folders(self) -> tuple[list[tuple[Path, str, int | None]], list[DataError]]:
        if self.flat:
            if self.table is not None:
                return [], [DataError(self.root, f"product={self.product!r} needs class folders (root/CLASS/image); "
                                                 "this folder holds images only", "layout")]
            return [(self.root, "", None)], []
        problems = self._stray_images(self.root, "root/CLASS/image")
        dirs = _subdirs(self.root)
        if not dirs:
            problems.append(DataError(self.root, "no class folders (expected root/CLASS/image files)", "layout"))
        out = []
        for i, d in enumerate(dirs):
            if self.table is None:
                out.append((d, d.name, i))
                continue
            try:
                out.append((d, d.name, self.table.index(d.name)))
            except ValueError as e:
                problems.append(DataError(d, f"class folder name is not a class of the paper's table: {e}", "layout"))
                self._skip(d)
        return out, problems


# RadImageNet modality folders -> the table's modality column ('MR' in the release, 'MRI' in the paper).
_MODALITIES = {"ct": "CT", "mr": "MRI", "mri": "MRI"}


class RadImageNetReader(_ClassFolderReader):
    """RadImageNet release (Mei et al., Radiology: AI 2022), CT and MR parts, mapped to the 124 'ctmr' classes.

        root/                            (the release's 'radiology_ai' folder)
          CT/<anatomy>/<pathology>/*.png   e.g. CT/lung/normal/lung-normal000032.png
          MR/<anatomy>/<pathology>/*.png   e.g. MR/spine/ddd/...
          US/...                           skipped: the ctmr generator has no ultrasound classes

    Assumed folder names (the release could not be inspected here): modality 'CT' and 'MR' (also 'MRI', any
    case); anatomy folders use the table's prefixes ('abd', 'af', 'ankle', 'brain', 'foot', 'hip', 'knee',
    'lung', 'shoulder', 'spine'); pathology folders use the table's wording ('acl tear', 'bakers cyst'...).
    A class folder maps to the first table label (compared ignoring case and ' ', '-', '_') with the same
    modality among: '<anatomy>_<pathology>', '<pathology>' (already prefixed), for CT 'lung_abd_<pathology>'
    (the paper's prefix of CT classes) and for MR abdomen 'mri_abd_<pathology>' / 'mriabd_<pathology>'.
    Option `aliases={'CT/chest/nodule': 'lung_abd_pulm nodule', ...}` maps other folder names explicitly.
    A folder no rule maps is a 'layout' problem (its images are skipped and counted in `reader.skipped`).
    Item id: 'MODALITY/anatomy/pathology/stem'.
    """

    name = "radimagenet"
    product = "ctmr"

    def __init__(self, root: str | Path, aliases: dict[str, str | int] | None = None, **options: Any):
        super().__init__(root, aliases=aliases, **options)
        self.table = class_table("ctmr")
        self.class_names = self.table.labels
        self.aliases = {k.strip("/"): self.table.index(v) for k, v in (aliases or {}).items()}

    @classmethod
    def detect(cls, root: Path) -> bool:
        for mod in _subdirs(root):
            if mod.name.lower() in _MODALITIES:
                for anatomy in _subdirs(mod)[:3]:
                    if any(_has_images(p) for p in _subdirs(anatomy)[:3]):
                        return True
        return False

    def class_index(self, modality: str, anatomy: str, pathology: str) -> int | None:
        """Table index of folder MODALITY/anatomy/pathology, None if no naming rule maps it."""
        rel = f"{modality}/{anatomy}/{pathology}"
        if rel in self.aliases:
            return self.aliases[rel]
        mod = _MODALITIES[modality.lower()]
        a, p = normalize_label(anatomy), normalize_label(pathology)
        candidates = [f"{a}_{p}", p]
        if mod == "CT":
            candidates.append(f"lung_abd_{p}")
        elif a == "abd":
            candidates += [f"mri_abd_{p}", f"mriabd_{p}"]
        for cand in candidates:
            i = _table_index(self.table, cand)
            if i is not None and self.table.classes[i].modality == mod:
                return i
        return None

    def _class_folders(self) -> tuple[list[tuple[Path, str, int]], list[DataError]]:
        problems: list[DataError] = self._stray_images(self.root, "root/MODALITY/anatomy/pathology/image")
        out = []
        mods = [m for m in _subdirs(self.root) if m.name.lower() in _MODALITIES]
        if not mods:
            problems.append(DataError(self.root, "no CT or MR folder (expected root/{CT,MR}/anatomy/pathology/)",
                                      "layout"))
        for m in _subdirs(self.root):
            if m not in mods:
                self._skip_tree(m)
        for mod in mods:
            problems += self._stray_images(mod, f"{mod.name}/anatomy/pathology/image")
            for anatomy in _subdirs(mod):
                problems += self._stray_images(anatomy, f"{mod.name}/{anatomy.name}/pathology/image")
                for path_dir in _subdirs(anatomy):
                    i = self.class_index(mod.name, anatomy.name, path_dir.name)
                    rel = f"{mod.name}/{anatomy.name}/{path_dir.name}"
                    if i is None:
                        problems.append(DataError(path_dir, f"class {rel} is not in the paper's ctmr table (tried "
                                                            f"anatomy_pathology and the table's prefixes; map it "
                                                            f"with aliases={{'{rel}': LABEL}}); skipped", "layout"))
                        self._skip(path_dir)
                    else:
                        out.append((path_dir, rel, i))
        return out, problems

    def _skip_tree(self, folder: Path) -> None:
        n = sum(1 for p in folder.rglob("*") if p.is_file() and is_image_file(p))
        self.skipped[folder.name] = self.skipped.get(folder.name, 0) + n


# The 23 finding folders of HyperKvasir labeled-images (Borgli et al., Sci. Data 2020, Table 2), by tract and
# category; only 6 are classes of the paper's gastro generator, the rest are skipped.
HYPERKVASIR_FINDINGS = {
    "lower-gi-tract": {
        "anatomical-landmarks": ("cecum", "ileum", "retroflex-rectum"),
        "pathological-findings": ("hemorrhoids", "polyps", "ulcerative-colitis-grade-0-1", "ulcerative-colitis-grade-1",
                                  "ulcerative-colitis-grade-1-2", "ulcerative-colitis-grade-2",
                                  "ulcerative-colitis-grade-2-3", "ulcerative-colitis-grade-3"),
        "quality-of-mucosal-views": ("bbps-0-1", "bbps-2-3", "impacted-stool"),
        "therapeutic-interventions": ("dyed-lifted-polyps", "dyed-resection-margins"),
    },
    "upper-gi-tract": {
        "anatomical-landmarks": ("pylorus", "retroflex-stomach", "z-line"),
        "pathological-findings": ("barretts", "barretts-short-segment", "esophagitis-a", "esophagitis-b-d"),
    },
}
_ALL_FINDINGS = {f for cats in HYPERKVASIR_FINDINGS.values() for fs in cats.values() for f in fs}


class HyperKvasirReader(_ClassFolderReader):
    """HyperKvasir labeled images (Borgli et al., Sci. Data 2020), mapped to the 6 'gastro' classes.

        root/                                   ('labeled-images', or the HyperKvasir root holding it)
          lower-gi-tract/<category>/<finding>/*.jpg   e.g. lower-gi-tract/pathological-findings/polyps/
          upper-gi-tract/<category>/<finding>/*.jpg   e.g. upper-gi-tract/anatomical-landmarks/z-line/
          image-labels.csv                            (ignored)
      or flat:
        root/<finding>/*.jpg

    Findings map to the paper's gastro table by name ignoring case and '-'/'_': dyed-lifted-polyps,
    dyed-resection-margins, polyps, pylorus, retroflex-stomach, z-line. The 17 other findings (bbps-0-1,
    cecum, esophagitis-a ...) are skipped, not errors: `reader.skipped` counts their images per finding.
    Item id: 'finding/stem'.
    """

    name = "hyperkvasir"
    product = "gastro"

    def __init__(self, root: str | Path, **options: Any):
        super().__init__(root, **options)
        self.table = class_table("gastro")
        self.class_names = self.table.labels
        self.base = self.root / "labeled-images" if (self.root / "labeled-images").is_dir() else self.root

    @classmethod
    def detect(cls, root: Path) -> bool:
        base = root / "labeled-images" if (root / "labeled-images").is_dir() else root
        names = {d.name.lower() for d in _subdirs(base)}
        if names & set(HYPERKVASIR_FINDINGS):
            return True
        # flat layout: only HyperKvasir finding folders, at least two of them
        return len(names) >= 2 and names <= _ALL_FINDINGS

    def _class_folders(self) -> tuple[list[tuple[Path, str, int]], list[DataError]]:
        tracts = [d for d in _subdirs(self.base) if d.name.lower() in HYPERKVASIR_FINDINGS]
        if tracts:
            problems = self._stray_images(self.base, "TRACT/category/finding/image")
            findings = []
            for t in tracts:
                problems += self._stray_images(t, f"{t.name}/category/finding/image")
                for cat in _subdirs(t):
                    problems += self._stray_images(cat, f"{t.name}/{cat.name}/finding/image")
                    findings += _subdirs(cat)
        else:
            problems = self._stray_images(self.base, "root/finding/image")
            findings = _subdirs(self.base)
        if not findings:
            problems.append(DataError(self.base, "no finding folders (expected TRACT/category/finding/ or "
                                                 "finding/ folders of images)", "layout"))
        out = []
        for f in findings:
            i = _table_index(self.table, f.name)
            if i is None:
                self._skip(f)
            else:
                out.append((f, f.name, i))
        return out, problems
