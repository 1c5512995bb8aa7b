"""Annotation round trip: export (demo32) -> masks filled by program in all three formats -> import; refusals."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from radgan_jax.checkpoint import save_generator
from radgan_jax.interpret import annotate
from radgan_jax.interpret import mask_formats as mf
from radgan_jax.interpret.annotate import AnnotationError, import_annotations
from radgan_jax.jobs import interpret_export
from radgan_jax.models.stylegan_xl.builtin import builtin_generator
from radgan_jax.models.stylegan_xl.generator import Generator
from radgan_jax.models.stylegan_xl.sampling import to_uint8, z_from_seed
from tests.jax_utils import jit_apply

LABELS = {"background": 0, "liver": 1, "kidney": 2}


def _export_config(repo_root: Path, **kw):
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_config", repo_root / "configs/interpret/export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.update(dict(classes="0,2", num_per_class=3, seed=3, truncation_psi=0.7, labels="liver,kidney",
                       batch_size=4, **kw))
    return config


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> dict:
    """demo32 saved as a checkpoint, exported by the job from that checkpoint (6 images, classes 0 and 2)."""
    root = tmp_path_factory.mktemp("annotate")
    spec, variables = builtin_generator("demo32", jax.random.key(11))
    variables = jax.device_get(variables)
    save_generator(root / "gen", variables, spec)
    config = _export_config(repo_root, checkpoint=str(root / "gen"))
    interpret_export.run(config, str(root / "work"))
    return dict(folder=root / "work" / "annotation", spec=spec, variables=variables, config=config)


def _copy(exported: dict, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported["folder"], tmp_path / "annotation"))


def _names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.json") if p.name not in annotate.RESERVED_JSON)


def _mask(seed: int, h: int = 32, w: int = 32) -> np.ndarray:
    """An asymmetric two-label mask (a transposed or flipped read would not match)."""
    m = np.zeros((h, w), np.int32)
    r = np.random.RandomState(seed)
    y0, x0 = r.randint(0, h // 3), r.randint(0, w // 4)
    m[y0:y0 + h // 2, x0:x0 + w // 5] = 1
    m[h - 6:h - 1, w // 2:w - 2] = 2
    m[0, w - 1] = 2  # a lone corner pixel pins the orientation
    return m


def test_export_files_sidecars_and_digest(exported: dict):
    folder, spec, variables = exported["folder"], exported["spec"], exported["variables"]
    names = _names(folder)
    assert names == [f"class000_seed{s:05d}" for s in (3, 4, 5)] + [f"class002_seed{s:05d}" for s in (6, 7, 8)]
    for f in ("labels.json", "legend.json", "legend.png", "itksnap_labels.txt", "README.txt"):
        assert (folder / f).is_file(), f
    assert json.loads((folder / "labels.json").read_text()) == LABELS
    assert json.loads((folder / "legend.json").read_text()) == {"background": [0, 0, 0], "liver": [255, 0, 0],
                                                                "kidney": [0, 255, 0]}
    readme = (folder / "README.txt").read_text()
    assert all(s in readme for s in ("NAME_mask.png", "NAME_color.png", "NAME_mask.nii.gz", "kidney"))
    # The digest of the checkpoint's weights (written by the job) equals the in-memory generator's.
    digest = annotate.generator_digest(spec, variables)
    assert digest.startswith("sha256:") and len(digest) == 7 + 64
    for name in names:
        side = json.loads((folder / f"{name}.json").read_text())
        assert side["generator_digest"] == digest
        assert side["class_index"] == int(name[5:8]) and side["class_name"] == name[:8]
        assert side["seed"] == int(name[-5:]) and side["truncation_psi"] == 0.7
        np.testing.assert_array_equal(np.asarray(side["z"], np.float32), z_from_seed(side["seed"], spec.z_dim)[0])
        assert np.asarray(side["ws"]).shape == (spec.num_ws, spec.w_dim) and side["image_size"] == [32, 32]
        with Image.open(folder / f"{name}.png") as im:
            assert im.mode == "RGB" and im.size == (32, 32)
        template = mf.read_index_png(folder / f"{name}_mask.png")
        assert template.shape == (32, 32) and not template.any()
    # Another generator (one weight changed by 1e-3) has another digest.
    other = jax.tree_util.tree_map(lambda x: x, variables)
    other["params"]["mapping"] = jax.tree_util.tree_map(lambda x: x + 1e-3, other["params"]["mapping"])
    assert annotate.generator_digest(spec, other) != digest


def test_sidecar_ws_resynthesizes_the_exported_image(exported: dict):
    folder, spec, variables = exported["folder"], exported["spec"], exported["variables"]
    names = _names(folder)
    ws = np.stack([np.asarray(json.loads((folder / f"{n}.json").read_text())["ws"], np.float32) for n in names])
    img = jit_apply(Generator(spec), variables, ws, method=Generator.synthesize)
    for name, im in zip(names, to_uint8(np.asarray(img)), strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(folder / f"{name}.png")), im, err_msg=name)


def test_reexport_is_deterministic_and_keeps_masks(exported: dict, tmp_path: Path):
    folder = _copy(exported, tmp_path)
    names = _names(folder)
    mf.write_index_png(folder / f"{names[0]}_mask.png", _mask(0))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    interpret_export.export_annotation_set(exported["config"], exported["spec"], exported["variables"],
                                           str(folder), source=exported["config"].checkpoint)
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after == before  # same seed -> same files, byte for byte; the filled mask was not overwritten


def test_round_trip_all_three_formats(exported: dict, tmp_path: Path):
    folder = _copy(exported, tmp_path)
    spec, variables = exported["spec"], exported["variables"]
    names = _names(folder)
    colors = mf.label_colors(LABELS)
    want = {n: _mask(i) for i, n in enumerate(names)}
    mf.write_index_png(folder / f"{names[0]}_mask.png", want[names[0]])           # fills the template
    mf.write_color_png(folder / f"{names[1]}_color.png", want[names[1]], colors)  # template stays all-zero
    mf.write_nifti_mask(folder / f"{names[2]}_mask.nii.gz", want[names[2]])     # ITK-SNAP layout (W, H, 1)
    import nibabel as nib
    itk = nib.Nifti1Image(np.ascontiguousarray(want[names[3]].T[..., None]).astype(np.uint8),
                          np.diag([-1.0, -1.0, 1.0, 1.0]))
    ras = nib.as_closest_canonical(itk)                                            # both axes flipped on disk
    nib.save(nib.Nifti1Image(np.asanyarray(ras.dataobj)[..., 0], ras.affine), str(folder / f"{names[3]}_mask.nii"))
    # names[4]: untouched template (skipped, "not annotated"); names[5]: colour PNG with alpha
    rgba = np.concatenate([np.asarray(Image.open(folder / f"{names[1]}_color.png")), np.full((32, 32, 1), 255,
                                                                                              np.uint8)], -1)
    want[names[5]] = want[names[1]]
    Image.fromarray(rgba, "RGBA").save(folder / f"{names[5]}_color.png")

    ds = import_annotations(folder, LABELS, spec, variables)
    assert ds.names == [n for n in names if n != names[4]] and ds.skipped == [names[4]]
    for i, name in enumerate(ds.names):
        np.testing.assert_array_equal(ds.masks[i], want[name], err_msg=name)
        side = json.loads((folder / f"{name}.json").read_text())
        np.testing.assert_array_equal(ds.ws[i], np.asarray(side["ws"], np.float32))
        assert ds.c[i] == side["class_index"]
    assert ds.ws.dtype == np.float32 and ds.ws.shape == (5, spec.num_ws, spec.w_dim)
    assert ds.c.dtype == np.int32 and ds.masks.dtype == np.int32 and ds.masks.shape == (5, 32, 32)
    assert ds.labels == LABELS and ds.generator_digest == annotate.generator_digest(spec, variables)

    ds_empty = import_annotations(folder, None, spec, variables, allow_empty=True)  # labels from labels.json
    assert len(ds_empty) == 6 and not ds_empty.masks[ds_empty.names.index(names[4])].any()

    ds.save_npz(tmp_path / "set.npz")
    back = annotate.load_annotated_set(tmp_path / "set.npz", spec, variables, LABELS)
    for field in ("ws", "c", "masks"):
        np.testing.assert_array_equal(getattr(back, field), getattr(ds, field))
    assert (back.names, back.labels, back.skipped) == (ds.names, ds.labels, ds.skipped)
    with pytest.raises(AnnotationError, match="set.npz: made with generator"):
        other = jax.tree_util.tree_map(lambda x: x * 1.001, variables)
        annotate.load_annotated_set(tmp_path / "set.npz", spec, other)


def test_refusals_name_each_file(exported: dict, tmp_path: Path):
    folder = _copy(exported, tmp_path)
    spec, variables = exported["spec"], exported["variables"]
    n = _names(folder)
    mf.write_index_png(folder / f"{n[0]}_mask.png", _mask(0, h=31))               # wrong size
    bad = _mask(1)
    bad[5, 9] = 7
    mf.write_index_png(folder / f"{n[1]}_mask.png", bad)                           # undeclared label 7
    rgb = np.asarray(Image.open(folder / f"{n[2]}.png")).copy() * 0
    rgb[4, 6] = (250, 3, 0)
    Image.fromarray(rgb, "RGB").save(folder / f"{n[2]}_color.png")                 # colour not in the legend
    mf.write_index_png(folder / f"{n[3]}_mask.png", _mask(3))
    (folder / f"{n[3]}.json").unlink()                                             # missing sidecar
    mf.write_index_png(folder / f"{n[4]}_mask.png", _mask(4))
    mf.write_nifti_mask(folder / f"{n[4]}_mask.nii.gz", _mask(4))                 # duplicate formats
    (folder / f"{n[5]}.json").write_text("{not json")                              # unparseable sidecar
    with pytest.raises(AnnotationError) as err:
        import_annotations(folder, LABELS, spec, variables)
    problems = {Path(f).name: p for f, p in err.value.problems}
    msg = str(err.value)
    assert f"{n[0]}_mask.png: mask size (H, W) = (31, 32), but the image {n[0]}.png is (32, 32)" in msg
    assert "undeclared label value(s) [7] in 1 pixels, first at row 5, col 9" in problems[f"{n[1]}_mask.png"]
    assert "RGB (250, 3, 0) in 1 pixels, first at row 4, col 6" in problems[f"{n[2]}_color.png"]
    assert f"missing sidecar {n[3]}.json" in problems[f"{n[3]}_mask.png"]
    assert "duplicate masks" in msg and f"{n[4]}_mask.png" in msg and f"{n[4]}_mask.nii.gz" in msg
    assert "sidecar not parseable" in problems[f"{n[5]}.json"]
    assert len(err.value.problems) == 6

    # A generator other than the one the images were made with: every sidecar is refused.
    clean = _copy(exported, tmp_path / "clean")
    mf.write_index_png(clean / f"{n[0]}_mask.png", _mask(0))
    other = jax.tree_util.tree_map(lambda x: x * 1.001, variables)
    with pytest.raises(AnnotationError) as err:
        import_annotations(clean, LABELS, spec, other)
    assert len(err.value.problems) == 6
    assert f"{n[0]}.json: made with generator sha256:" in str(err.value)
    assert f"another generator's image are refused ({n[0]}_mask.png)" in str(err.value)

    with pytest.raises(AnnotationError, match="labels.json: declares"):
        import_annotations(clean, {"background": 0, "liver": 1}, spec, variables)


def test_untouched_folder_is_not_annotated(exported: dict, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING), pytest.raises(AnnotationError, match="no annotated masks"):
        import_annotations(exported["folder"], LABELS, exported["spec"], exported["variables"])
    assert "6 of 6 exported images not annotated" in caplog.text


@pytest.mark.parametrize("h,w", [(5, 7), (8, 3)])
def test_nifti_orientation(tmp_path: Path, h: int, w: int):
    """ITK's reading of a PNG fixes the convention: index (i, j) = (col, row), LPS, so the NIfTI affine is
    diag(-1, -1, 1); any reoriented copy (RAS-canonical) or a 2D (W, H) file reads back the same."""
    import nibabel as nib

    mask = np.arange(h * w, dtype=np.int32).reshape(h, w) % 5
    mf.write_nifti_mask(tmp_path / "a.nii.gz", mask)
    img = nib.load(tmp_path / "a.nii.gz")
    assert img.shape == (w, h, 1) and nib.aff2axcodes(img.affine) == ("L", "P", "S")
    np.testing.assert_array_equal(mf.read_nifti_mask(tmp_path / "a.nii.gz"), mask)
    ras = nib.as_closest_canonical(img)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    nib.save(ras, str(tmp_path / "ras.nii.gz"))
    np.testing.assert_array_equal(mf.read_nifti_mask(tmp_path / "ras.nii.gz"), mask)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(mask.T).astype(np.float32), np.diag([-1.0, -1.0, 1.0, 1.0])),
             str(tmp_path / "flat.nii"))
    np.testing.assert_array_equal(mf.read_nifti_mask(tmp_path / "flat.nii"), mask)

    # What ITK-SNAP / Slicer do: ITK reads the PNG, the label map is saved on the same grid by ITK's writer.
    sitk = pytest.importorskip("SimpleITK")
    Image.fromarray(mask.astype(np.uint8) * 40, "L").save(tmp_path / "img.png")
    png = sitk.ReadImage(str(tmp_path / "img.png"))
    assert png.GetSize() == (w, h) and png.GetPixel(w - 1, 0) == mask[0, w - 1] * 40  # index (col, row)
    seg = sitk.GetImageFromArray(mask.astype(np.uint8))
    seg.CopyInformation(png)
    sitk.WriteImage(sitk.JoinSeries(seg), str(tmp_path / "itk.nii.gz"))  # 3D with one slice, as ITK-SNAP
    np.testing.assert_array_equal(mf.read_nifti_mask(tmp_path / "itk.nii.gz"), mask)


def test_labels_and_colours():
    assert annotate.parse_labels("liver,kidney") == LABELS
    assert annotate.parse_labels("background, disc, thecal_sac, posterior_elements")["posterior_elements"] == 3
    for text, match in (("", "at least one"), ("liver,liver", "twice"), ("3liver", "start with a letter")):
        with pytest.raises(ValueError, match=match):
            annotate.parse_labels(text)
    with pytest.raises(ValueError, match="0..2"):
        annotate.check_labels({"background": 0, "liver": 1, "kidney": 3})
    many = {"background": 0, **{f"l{i}": i for i in range(1, 40)}}
    colours = mf.label_colors(many)
    assert len(set(colours.values())) == 40 and colours[0] == (0, 0, 0) and colours[1] == (255, 0, 0)
    assert mf.mask_format("a_b_mask.nii.gz") == ("nifti", "a_b") and mf.mask_format("a.png") is None


def test_colour_and_index_png_variants(tmp_path: Path):
    colors = mf.label_colors(LABELS)
    mask = _mask(5, 6, 9)
    rgba = np.zeros((6, 9, 4), np.uint8)
    lut = np.array([colors[i] for i in range(3)], np.uint8)
    rgba[..., :3], rgba[..., 3] = lut[mask], 255
    rgba[0, 0] = (17, 99, 3, 0)  # fully transparent: background whatever its colour
    Image.fromarray(rgba, "RGBA").save(tmp_path / "x_color.png")
    want = mask.copy()
    want[0, 0] = 0
    np.testing.assert_array_equal(mf.read_color_png(tmp_path / "x_color.png", colors), want)
    Image.fromarray(lut[mask], "RGB").save(tmp_path / "y_mask.png")
    with pytest.raises(mf.MaskFormatError, match="NAME_color.png"):
        mf.read_index_png(tmp_path / "y_mask.png")
    Image.fromarray(np.repeat(mask[..., None], 3, -1).astype(np.uint8), "RGB").save(tmp_path / "g_mask.png")
    np.testing.assert_array_equal(mf.read_index_png(tmp_path / "g_mask.png"), mask)  # grey saved as RGB
    (tmp_path / "t_mask.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(mf.MaskFormatError, match="not a readable PNG"):
        mf.read_index_png(tmp_path / "t_mask.png")
