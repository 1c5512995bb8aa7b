"""2D readers: CVC-ClinicDB on the real shared data (every fact of its README), and the layouts the shared folder
lacks (RadImageNet, HyperKvasir, Kvasir-SEG, generic image folder) on small files written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radgan_jax.data.base import DataError
from radgan_jax.data.classes import class_table
from radgan_jax.data.readers import detect_format, open_dataset
from radgan_jax.data.readers.cvc_clinicdb import CVCClinicDBReader
from radgan_jax.data.readers.image_folder import HyperKvasirReader, ImageFolderReader, RadImageNetReader
from radgan_jax.data.readers.kvasir_seg import KvasirSEGReader

RNG = np.random.default_rng(0)


def _write(path: Path, arr: np.ndarray | Image.Image, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (arr if isinstance(arr, Image.Image) else Image.fromarray(arr)).save(path, **save)
    return path


def _rgb(h: int = 24, w: int = 32) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _by_kind(problems: list[DataError]) -> dict[str, list[DataError]]:
    out: dict[str, list[DataError]] = {}
    for p in problems:
        out.setdefault(p.kind, []).append(p)
    return out


# ----------------------------------------------------------------------------------------------- real CVC-ClinicDB
@pytest.fixture(scope="module")
def cvc(shared_dir: Path) -> dict:
    """Scan + load all 612 pairs once; keep per-case summaries (not the pixels) and the raw-mask facts."""
    root = shared_dir / "data" / "CVC-ClinicDB"
    reader = CVCClinicDBReader(root)
    items, problems = reader.scan()
    s: dict = {"root": root, "ids": [i.id for i in items], "problems": problems, "image_shapes": set(),
               "mask_shapes": set(), "values": set(), "fg": [], "raw_values": set(), "nonbinary_masks": 0,
               "nonbinary_px": 0, "px": 0, "mismatch": []}
    for item in items:
        case = reader.load(item)
        raw = np.asarray(Image.open(item.files[1]))  # the file as stored, not through the reader
        s["image_shapes"].add((case.image.shape, case.image.dtype.str))
        s["mask_shapes"].add((case.mask.shape, case.mask.dtype.str, raw.shape, raw.dtype.str))
        s["values"] |= set(np.unique(case.mask).tolist())
        s["fg"].append(float(case.mask.mean()))
        vals = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
        s["raw_values"] |= set(vals.tolist())
        nonbinary = int(np.count_nonzero((raw != 0) & (raw != 255)))
        s["nonbinary_masks"] += nonbinary > 0
        s["nonbinary_px"] += nonbinary
        s["px"] += raw.size
        if not np.array_equal(case.mask, (raw > 127).astype(np.uint8)):
            s["mismatch"].append(item.id)
    return s


def test_cvc_pairs_and_ids(cvc):
    assert cvc["problems"] == []
    assert cvc["ids"] == [str(i) for i in range(1, 613)]  # 612 pairs, 1..612 without gaps, numeric order


def test_cvc_shapes_and_thresholded_values(cvc):
    assert cvc["image_shapes"] == {((288, 384, 3), "|u1")}
    assert cvc["mask_shapes"] == {((288, 384), "|u1", (288, 384), "|u1")}
    assert cvc["values"] == {0, 1}
    assert cvc["mismatch"] == []                       # mask == (raw grey > 127) for every pair
    fg = np.asarray(cvc["fg"])
    assert fg.min() > 0                                # no mask without foreground
    assert round(float(fg.mean()), 4) == 0.0917
    assert float(f"{fg.min():.3g}") == 0.00337
    assert float(f"{fg.max():.3g}") == 0.490


def test_cvc_raw_mask_values(cvc):
    assert len(cvc["raw_values"]) == 114 and {0, 255} <= cvc["raw_values"]
    assert cvc["nonbinary_masks"] == 138
    assert round(100 * cvc["nonbinary_px"] / cvc["px"], 2) == 0.13


def test_cvc_tif_sample_matches_png(cvc, shared_dir: Path):
    tif = CVCClinicDBReader(shared_dir / "data" / "CVC-ClinicDB-tif-sample")
    items, problems = tif.scan()
    assert problems == [] and [i.id for i in items] == [str(i) for i in range(1, 13)]
    assert all(f.suffix == ".tif" for i in items for f in i.files)
    png = CVCClinicDBReader(cvc["root"])
    png_items = {i.id: i for i in png.scan()[0][:12]}
    for item in items:
        a, b = tif.load(item), png.load(png_items[item.id])
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.group is None and a.label is None


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's warning while it rejects the truncated file
def test_cvc_release_tiff_truncated(shared_dir: Path, tmp_path: Path):
    """The release TIFFs need the tifffile fallback (Pillow refuses them); a truncated one is still 'corrupt'."""
    src = shared_dir / "data" / "CVC-ClinicDB-tif-sample"
    for sub in ("Original", "Ground Truth"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "1.tif").write_bytes((src / sub / "1.tif").read_bytes())
    _truncate(tmp_path / "Original" / "1.tif")
    reader = CVCClinicDBReader(tmp_path)
    with pytest.raises(DataError) as e:
        reader.load(reader.scan()[0][0])
    assert e.value.kind == "corrupt" and str(tmp_path / "Original" / "1.tif") in str(e.value)


def test_cvc_detect_format(cvc, shared_dir: Path):
    for root in (cvc["root"], shared_dir / "data" / "CVC-ClinicDB-tif-sample"):
        assert CVCClinicDBReader.detect(root)
        assert detect_format(root) == "cvc_clinicdb"


# ------------------------------------------------------------------------------------ paired mask layouts (synthetic)
def _pair(root: Path, img_dir: str, mask_dir: str, stem: str, ext: str, size=(24, 32), mask_size=None) -> None:
    h, w = size
    _write(root / img_dir / f"{stem}{ext}", _rgb(h, w))
    mh, mw = mask_size or size
    m = np.zeros((mh, mw), np.uint8)
    m[: mh // 2, : mw // 3] = 255
    m[mh // 2, : mw // 3] = 140  # anti-aliased edge above the threshold
    m[mh // 2 + 1, : mw // 3] = 100  # below it
    _write(root / mask_dir / f"{stem}{ext}", m)


def test_cvc_layout_problems(tmp_path: Path):
    _pair(tmp_path, "Original", "GroundTruth", "1", ".tif")          # 'GroundTruth' spelling accepted
    _pair(tmp_path, "Original", "GroundTruth", "10", ".png")
    _write(tmp_path / "Original" / "2.png", _rgb())                   # image without mask
    _write(tmp_path / "GroundTruth" / "3.png", np.zeros((24, 32), np.uint8))   # mask without image
    (tmp_path / "Original" / "notes.txt").write_text("x")
    (tmp_path / "Original" / "sub").mkdir()
    _write(tmp_path / "Original" / "10.jpg", _rgb())                  # same stem as 10.png
    _pair(tmp_path, "Original", "GroundTruth", "4", ".png", mask_size=(20, 32))
    _pair(tmp_path, "Original", "GroundTruth", "5", ".tif")
    _truncate(tmp_path / "Original" / "5.tif")

    assert detect_format(tmp_path) == "cvc_clinicdb"
    reader = CVCClinicDBReader(tmp_path)
    items, problems = reader.scan()
    assert [i.id for i in items] == ["1", "4", "5", "10"]
    kinds = _by_kind(problems)
    assert sorted(kinds) == ["duplicate_id", "layout", "not_image"]
    layout = {e.path.name: str(e) for e in kinds["layout"]}
    assert sorted(layout) == ["2.png", "3.png", "sub"]
    assert str(tmp_path / "Original" / "2.png") in layout["2.png"] and "no mask" in layout["2.png"]
    assert "no image" in layout["3.png"]
    assert kinds["not_image"][0].path.name == "notes.txt"
    assert kinds["duplicate_id"][0].path.name == "10.png"  # sorted: 10.jpg seen first

    case = reader.load(items[0])
    assert case.image.dtype == np.uint8 and case.image.shape == (24, 32, 3)
    assert case.mask.dtype == np.uint8 and set(np.unique(case.mask).tolist()) == {0, 1}
    assert case.mask[12, 0] == 1 and case.mask[13, 0] == 0          # 140 -> 1, 100 -> 0
    assert int(case.mask.sum()) == 13 * 10
    with pytest.raises(DataError) as e:
        reader.load(items[1])
    assert e.value.kind == "size_mismatch" and str(tmp_path / "GroundTruth" / "4.png") in str(e.value)
    with pytest.raises(DataError) as e:
        reader.load(items[2])
    assert e.value.kind == "corrupt" and str(tmp_path / "Original" / "5.tif") in str(e.value)


def test_cvc_missing_mask_folder(tmp_path: Path):
    _write(tmp_path / "Original" / "1.png", _rgb())
    assert not CVCClinicDBReader.detect(tmp_path)
    items, problems = CVCClinicDBReader(tmp_path).scan()
    assert items == [] and problems[0].kind == "layout" and "Ground Truth" in str(problems[0])


def test_kvasir_seg(tmp_path: Path):
    for stem in ("cju0qkwl35piu0993l0dewei2", "cju0roawvklrq0799vmjorwfv"):
        _pair(tmp_path, "images", "masks", stem, ".jpg")
    m = np.zeros((24, 32, 3), np.uint8)                               # Kvasir-SEG masks are RGB JPEGs
    m[4:20, 8:24] = 255
    _write(tmp_path / "masks" / "cju0roawvklrq0799vmjorwfv.jpg", m, quality=90)
    (tmp_path / "kavsir_bboxes.json").write_text("{}")
    _write(tmp_path / "masks" / "orphan.jpg", m)
    _pair(tmp_path, "images", "masks", "small", ".jpg", mask_size=(12, 16))
    _write(tmp_path / "images" / "trunc.jpg", _rgb(64, 64), quality=95)
    _write(tmp_path / "masks" / "trunc.jpg", np.zeros((64, 64), np.uint8))
    _truncate(tmp_path / "images" / "trunc.jpg")

    assert detect_format(tmp_path) == "kvasir_seg" and isinstance(open_dataset(tmp_path), KvasirSEGReader)
    reader = KvasirSEGReader(tmp_path)
    items, problems = reader.scan()
    assert [i.id for i in items] == ["cju0qkwl35piu0993l0dewei2", "cju0roawvklrq0799vmjorwfv", "small", "trunc"]
    assert [(p.kind, p.path.name) for p in problems] == [("layout", "orphan.jpg")]
    assert str(tmp_path / "masks" / "orphan.jpg") in str(problems[0])
    case = reader.load(items[1])
    assert case.image.shape == (24, 32, 3) and case.mask.shape == (24, 32)
    assert int(case.mask.sum()) == 16 * 16 and set(np.unique(case.mask).tolist()) == {0, 1}
    with pytest.raises(DataError) as e:
        reader.load(items[2])
    assert e.value.kind == "size_mismatch" and "small.jpg" in str(e.value)
    with pytest.raises(DataError) as e:
        reader.load(items[3])
    assert e.value.kind == "corrupt" and str(tmp_path / "images" / "trunc.jpg") in str(e.value)


# --------------------------------------------------------------------------------- classification folders (synthetic)
def test_image_folder_labels_and_conversions(tmp_path: Path):
    rgb = _rgb()
    _write(tmp_path / "benign" / "a.png", rgb)
    _write(tmp_path / "benign" / "b.jpg", rgb)
    _write(tmp_path / "malignant" / "c.png", np.dstack([rgb, np.full((24, 32), 255, np.uint8)]))   # RGBA
    grey = RNG.integers(0, 256, (24, 32), dtype=np.uint8)
    pal = Image.fromarray(grey).convert("P")                                                          # grey palette
    _write(tmp_path / "malignant" / "d.png", pal)
    _write(tmp_path / "malignant" / "e.png", Image.fromarray(rgb).quantize(16))                       # colour palette
    _write(tmp_path / "malignant" / "f.png", (RNG.integers(0, 4096, (24, 32))).astype(np.uint16))    # 16-bit grey
    _write(tmp_path / "malignant" / "g.tif", grey > 128)                                              # 1-bit
    (tmp_path / "README.md").write_text("ignored")

    assert detect_format(tmp_path) == "image_folder"
    reader = ImageFolderReader(tmp_path)
    assert reader.class_names == ["benign", "malignant"]
    items, problems = reader.scan()
    assert problems == []
    assert [(i.id, i.label) for i in items] == [("benign/a", 0), ("benign/b", 0), ("malignant/c", 1),
                                                ("malignant/d", 1), ("malignant/e", 1), ("malignant/f", 1),
                                                ("malignant/g", 1)]
    cases = {i.id: reader.load(i) for i in items}
    np.testing.assert_array_equal(cases["benign/a"].image, rgb)
    np.testing.assert_array_equal(cases["malignant/c"].image, rgb)          # opaque alpha -> identity
    np.testing.assert_array_equal(cases["malignant/d"].image, grey)         # grey palette -> (H, W)
    assert cases["malignant/e"].image.shape == (24, 32, 3) and cases["malignant/e"].image.dtype == np.uint8
    f = cases["malignant/f"]
    assert f.image.dtype == np.uint16 and f.meta["bit_depth"] == 16 and f.image.max() > 255
    assert set(np.unique(cases["malignant/g"].image).tolist()) == {0, 255}
    assert cases["benign/b"].label == 0 and cases["malignant/c"].meta["class_name"] == "malignant"


def test_flat_image_folder_is_one_unlabeled_set(tmp_path: Path):
    rgb = _rgb()
    _write(tmp_path / "frame1.png", rgb)
    _write(tmp_path / "frame2.jpg", rgb)
    (tmp_path / "notes.txt").write_text("not an image")
    assert detect_format(tmp_path) == "image_folder"
    reader = ImageFolderReader(tmp_path)
    assert reader.flat and reader.class_names == []
    items, problems = reader.scan()
    assert [(i.id, i.label) for i in items] == [("frame1", None), ("frame2", None)]
    assert [p.kind for p in problems] == ["not_image"] and "notes.txt" in str(problems[0])
    case = reader.load(items[0])
    np.testing.assert_array_equal(case.image, rgb)
    assert case.label is None and "class_name" not in case.meta
    items, problems = ImageFolderReader(tmp_path, product="ctmr").scan()  # a table needs class folders
    assert items == [] and problems[0].kind == "layout" and "needs class folders" in str(problems[0])


def test_image_folder_alpha_composited(tmp_path: Path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 0
    rgba[0, 0, 3] = 255
    _write(tmp_path / "x" / "a.png", rgba)
    case = ImageFolderReader(tmp_path).load(ImageFolderReader(tmp_path).scan()[0][0])
    assert case.image[0, 0].tolist() == [200, 200, 200] and case.image[1, 1].tolist() == [0, 0, 0]


def test_image_folder_product_mapping(tmp_path: Path):
    for folder in ("spine-normal", "Spine DDD", "knee_acl tear", "spine_nromal"):
        _write(tmp_path / folder / "1.png", _rgb())
    reader = ImageFolderReader(tmp_path, product="ctmr")
    assert reader.class_names == class_table("ctmr").labels
    items, problems = reader.scan()
    assert {i.id: i.label for i in items} == {"spine-normal/1": 118, "Spine DDD/1": 120, "knee_acl tear/1": 61}
    assert [p.kind for p in problems] == ["layout"]
    assert str(tmp_path / "spine_nromal") in str(problems[0]) and "spine_normal" in str(problems[0])
    assert reader.skipped == {"spine_nromal": 1}


def test_image_folder_problems(tmp_path: Path):
    _write(tmp_path / "a" / "1.png", _rgb())
    _write(tmp_path / "a" / "1.jpg", _rgb())                     # duplicate id a/1
    (tmp_path / "a" / "notes.txt").write_text("x")                # not an image
    (tmp_path / "a" / "nested").mkdir()                           # folder where an image is expected
    (tmp_path / "a" / ".DS_Store").write_text("x")                # hidden: ignored
    (tmp_path / "empty").mkdir()                                  # empty class
    _write(tmp_path / "stray.png", _rgb())                        # image outside a class folder
    for stem, ext in (("tp", ".png"), ("tj", ".jpg"), ("tt", ".tif")):
        _truncate(_write(tmp_path / "b" / f"{stem}{ext}", _rgb(64, 64)))
    reader = ImageFolderReader(tmp_path)
    assert reader.class_names == ["a", "b", "empty"]
    items, problems = reader.scan()
    assert [(i.id, i.files[0].name) for i in items] == [("a/1", "1.jpg"), ("b/tj", "tj.jpg"), ("b/tp", "tp.png"),
                                                        ("b/tt", "tt.tif")]
    got = sorted((p.kind, p.path.relative_to(tmp_path).as_posix()) for p in problems)
    assert got == [("duplicate_id", "a/1.png"), ("empty_class", "empty"), ("layout", "a/nested"),
                   ("layout", "stray.png"), ("not_image", "a/notes.txt")]
    assert all(str(p.path) in str(p) for p in problems)
    for item in items[1:]:                                        # truncated PNG, JPEG and TIFF
        with pytest.raises(DataError) as e:
            reader.load(item)
        assert e.value.kind == "corrupt" and str(item.files[0]) in str(e.value)


def _radimagenet(root: Path) -> dict[str, int]:
    """A small tree in the release layout; returns folder -> expected ctmr label."""
    expected = {"CT/lung/normal": "lung-normal", "CT/abd/normal": "abd_normal",
                "CT/lung/Bronchiectasis": "lung_abd_Bronchiectasis", "CT/abd/hepatic cyst": "lung_abd_hepatic cyst",
                "MR/abd/hepatic cyst": "mri_abd_hepatic cyst", "MR/abd/normal": "mriabd-normal",
                "MR/spine/ddd": "spine_ddd", "MR/knee/acl tear": "knee_acl tear", "MR/af/normal": "af_normal"}
    for rel in [*expected, "MR/knee/unicorn", "US/thyroid/nodule"]:
        _write(root / rel / f"{rel.replace('/', '-').replace(' ', '_')}000001.png", _rgb()[..., 0])
    table = class_table("ctmr")
    return {k: table.index(v) for k, v in expected.items()}


def test_radimagenet(tmp_path: Path):
    expected = _radimagenet(tmp_path)
    assert RadImageNetReader.detect(tmp_path) and not HyperKvasirReader.detect(tmp_path)
    assert not ImageFolderReader.detect(tmp_path)
    assert detect_format(tmp_path) == "radimagenet"
    reader = RadImageNetReader(tmp_path)
    items, problems = reader.scan()
    assert {i.id.rsplit("/", 1)[0]: i.label for i in items} == expected
    assert expected["CT/abd/hepatic cyst"] == 88 and expected["MR/abd/hepatic cyst"] == 102
    assert items[0].id == "CT/abd/hepatic cyst/CT-abd-hepatic_cyst000001"
    assert [(p.kind, p.path.relative_to(tmp_path).as_posix()) for p in problems] == [("layout", "MR/knee/unicorn")]
    assert "MR/knee/unicorn" in str(problems[0])
    assert reader.skipped == {"unicorn": 1, "US": 1}
    case = reader.load(items[0])
    assert case.image.shape == (24, 32) and case.image.dtype == np.uint8 and case.label == 88
    aliased = RadImageNetReader(tmp_path, aliases={"MR/knee/unicorn": "knee_effusion"})
    items, problems = aliased.scan()
    assert problems == [] and {i.label for i in items if "unicorn" in i.id} == {64}


def test_hyperkvasir_nested(tmp_path: Path):
    base = tmp_path / "labeled-images"
    counts = {"lower-gi-tract/pathological-findings/polyps": 2,
              "lower-gi-tract/therapeutic-interventions/dyed-lifted-polyps": 1,
              "lower-gi-tract/quality-of-mucosal-views/bbps-0-1": 3,
              "upper-gi-tract/anatomical-landmarks/z-line": 1,
              "upper-gi-tract/anatomical-landmarks/retroflex-stomach": 1,
              "upper-gi-tract/pathological-findings/esophagitis-a": 2}
    for rel, n in counts.items():
        for k in range(n):
            _write(base / rel / f"{rel.rsplit('/', 1)[1]}-{k}.jpg", _rgb())
    (base / "image-labels.csv").write_text("Video file,Finding\n")
    assert HyperKvasirReader.detect(tmp_path) and detect_format(tmp_path) == "hyperkvasir"
    reader = HyperKvasirReader(tmp_path)
    items, problems = reader.scan()
    assert problems == []
    assert sorted((i.id, i.label) for i in items) == [
        ("dyed-lifted-polyps/dyed-lifted-polyps-0", 0), ("polyps/polyps-0", 2), ("polyps/polyps-1", 2),
        ("retroflex-stomach/retroflex-stomach-0", 4), ("z-line/z-line-0", 5)]
    assert reader.skipped == {"bbps-0-1": 3, "esophagitis-a": 2}
    assert reader.load(items[0]).image.shape == (24, 32, 3)


def test_hyperkvasir_flat_and_problems(tmp_path: Path):
    _write(tmp_path / "pylorus" / "a.jpg", _rgb())
    _write(tmp_path / "cecum" / "b.jpg", _rgb())
    (tmp_path / "dyed-resection-margins").mkdir()
    (tmp_path / "pylorus" / "labels.csv").write_text("x")
    assert detect_format(tmp_path) == "hyperkvasir"
    items, problems = HyperKvasirReader(tmp_path).scan()
    assert [(i.id, i.label) for i in items] == [("pylorus/a", 3)]
    assert sorted((p.kind, p.path.name) for p in problems) == [("empty_class", "dyed-resection-margins"),
                                                               ("not_image", "labels.csv")]
