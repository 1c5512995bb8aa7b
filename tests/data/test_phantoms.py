"""Procedural phantoms: determinism, shapes/labels at several resolutions, findings only where declared,
anatomical variation, contrast between organs, non-trivial segmentation, folder export, speed sanity."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from radgan_jax.data.base import DataError
from radgan_jax.data.classes import class_table
from radgan_jax.data.phantoms import PHANTOM_KINDS, phantom_dataset, render, write_image_folder
from radgan_jax.data.phantoms.__main__ import main as gallery_main

KINDS = list(PHANTOM_KINDS)
ALL_VARIANTS = [(k, v) for k in KINDS for v in PHANTOM_KINDS[k].variants]


def expected_labels(kind: str, variant: str) -> set[int]:
    spec = PHANTOM_KINDS[kind]
    labels = set(spec.label_names) - {0}
    if spec.finding_label is not None and not spec.findings[variant]:
        labels.discard(spec.finding_label)
    return labels


def test_required_kinds_and_declarations():
    assert {"ct_abdomen", "mr_abdomen", "mr_spine", "endoscopy"} <= set(KINDS)
    assert PHANTOM_KINDS["ct_abdomen"].label_names[1] == "liver"
    assert PHANTOM_KINDS["ct_abdomen"].label_names[2] == "kidney"
    assert PHANTOM_KINDS["mr_spine"].label_names == {0: "background", 1: "disc", 2: "posterior_element",
                                                     3: "thecal_sac", 4: "vertebral_body"}
    assert PHANTOM_KINDS["endoscopy"].label_names[1] == "polyp"
    assert PHANTOM_KINDS["endoscopy"].channels == 3 and PHANTOM_KINDS["mr_spine"].channels == 1
    for spec in PHANTOM_KINDS.values():
        assert set(spec.findings) == set(spec.class_names)
        assert any(spec.findings.values()) and not all(spec.findings.values())


@pytest.mark.parametrize("kind", KINDS)
def test_class_names_exist_in_the_tables(kind):
    spec = PHANTOM_KINDS[kind]
    table = class_table(spec.product)
    indices = {v: table.index(name) for v, name in spec.class_names.items()}
    assert len(set(indices.values())) == len(indices)  # each variant is its own class
    assert indices == {v: spec.class_index(v) for v in spec.variants}
    expected = {"ct_abdomen": ("normal", "abd_normal"), "mr_spine": ("herniation", "spine_herniation"),
                "endoscopy": ("polyp", "polyps"), "mr_abdomen": ("normal", "mriabd-normal")}[kind]
    assert table[indices[expected[0]]].label == expected[1]


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_by_seed(kind):
    a, b = render(kind, 7, 48), render(kind, 7, 48)
    assert a.meta["variant"] == b.meta["variant"]
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    c = render(kind, 8, 48, a.meta["variant"])
    assert not np.array_equal(a.image, c.image)
    with_finding = next(v for v, has in PHANTOM_KINDS[kind].findings.items() if has)
    assert not np.array_equal(render(kind, 7, 48, with_finding).mask, render(kind, 8, 48, with_finding).mask)


@pytest.mark.parametrize("resolution", [16, 64, 256])
@pytest.mark.parametrize("kind,variant", ALL_VARIANTS)
def test_shapes_dtypes_ranges_labels(kind, variant, resolution):
    spec = PHANTOM_KINDS[kind]
    case = render(kind, 3, resolution, variant)
    shape = (resolution, resolution) + ((3,) if spec.channels == 3 else ())
    assert case.image.shape == shape and case.image.dtype == np.float32
    assert np.isfinite(case.image).all() and case.image.min() >= 0.0 and case.image.max() <= 1.0
    assert case.image.std() > 0.05  # not a blank frame
    assert case.mask.shape == (resolution, resolution) and case.mask.dtype == np.uint8
    present = set(np.unique(case.mask).tolist())
    assert present <= set(spec.label_names)
    if resolution >= 64:
        assert present - {0} == expected_labels(kind, variant)
    assert case.label == class_table(spec.product).index(spec.class_names[variant])
    assert case.meta["synthetic"] is True
    assert (case.meta["kind"], case.meta["variant"], case.meta["product"]) == (kind, variant, spec.product)


@pytest.mark.parametrize("kind,variant", ALL_VARIANTS)
def test_findings_only_in_their_variant_over_seeds(kind, variant):
    for seed in range(4):
        mask = render(kind, seed, 64, variant).mask
        assert set(np.unique(mask).tolist()) - {0} == expected_labels(kind, variant), (kind, variant, seed)


@pytest.mark.parametrize("kind,normal,finding", [("ct_abdomen", "normal", "lesion"),
                                                 ("mr_abdomen", "normal", "lesion"),
                                                 ("endoscopy", "dyed_resection_margin", "dyed_lifted_polyp")])
def test_finding_variant_is_the_same_patient_plus_the_finding(kind, normal, finding):
    label = PHANTOM_KINDS[kind].finding_label
    for seed in range(3):
        a, b = render(kind, seed, 96, normal), render(kind, seed, 96, finding)
        lesion = b.mask == label
        assert lesion.any() and not (a.mask == label).any()
        assert np.array_equal(a.mask[~lesion], b.mask[~lesion])
        if kind != "endoscopy":  # abdomen lesions sit inside the liver
            assert (a.mask[lesion] == 1).all()


def test_herniation_adds_disc_material_into_the_canal():
    for seed in range(4):
        normal, hern = render("mr_spine", seed, 96, "normal").mask, render("mr_spine", seed, 96, "herniation").mask
        grown = (hern == 1) & (normal != 1)
        assert grown.sum() >= 3, seed
        assert ((normal == 3) & grown).sum() >= 1  # it takes space from the canal
        assert (hern == 3).sum() < (normal == 3).sum()
        assert np.array_equal(np.isin(normal, (2, 4)), np.isin(hern, (2, 4)))  # bone unchanged


@pytest.mark.parametrize("kind,label,name", [("ct_abdomen", 1, "liver"), ("mr_abdomen", 2, "kidney"),
                                             ("mr_spine", 1, "disc"), ("endoscopy", 1, "polyp")])
def test_shapes_vary_across_seeds(kind, label, name):
    spec = PHANTOM_KINDS[kind]
    variant = next(v for v in spec.variants if label in expected_labels(kind, v))
    areas = np.array([(render(kind, s, 64, variant).mask == label).sum() for s in range(10)], np.float64)
    assert areas.min() > 0
    assert areas.std() / areas.mean() > 0.05, (name, areas)


def test_same_anatomy_at_every_resolution():
    for kind, label in [("ct_abdomen", 1), ("mr_spine", 4)]:
        fractions = [(render(kind, 5, r, PHANTOM_KINDS[kind].variants[0]).mask == label).mean() for r in (64, 128, 256)]
        assert max(fractions) / min(fractions) < 1.1, (kind, fractions)


@pytest.mark.parametrize("kind", ["ct_abdomen", "mr_abdomen"])
def test_organ_intensities_differ_and_lesions_contrast(kind):
    case = render(kind, 2, 128, "lesion")
    img, m = case.image, case.mask
    body = img > 0.02
    means = {n: float(img[m == v].mean()) for v, n in PHANTOM_KINDS[kind].label_names.items() if v}
    means["background"] = float(img[(m == 0) & body].mean())
    for a, b in [("liver", "kidney"), ("liver", "background"), ("kidney", "background"), ("liver_lesion", "liver")]:
        assert abs(means[a] - means[b]) > 0.03, (kind, a, b, means)


def test_polyp_differs_from_the_mucosa_around_it():
    from scipy import ndimage

    for variant in ("polyp", "dyed_lifted_polyp"):
        case = render("endoscopy", 1, 128, variant)
        polyp = case.mask == 1
        ring = ndimage.binary_dilation(polyp, iterations=6) & ~polyp
        diff = np.abs(case.image[polyp].mean(0) - case.image[ring].mean(0))
        assert diff.max() > 0.04, (variant, diff)


@pytest.mark.parametrize("kind,label", [("ct_abdomen", 1), ("mr_abdomen", 1), ("mr_spine", 1), ("endoscopy", 1)])
def test_not_trivially_separable_by_intensity(kind, label):
    """Noise inside a structure, and other tissue in the structure's intensity range: a threshold can't segment."""
    case = render(kind, 4, 128, PHANTOM_KINDS[kind].variants[0])
    gray = case.image.mean(-1) if case.image.ndim == 3 else case.image
    inside = gray[case.mask == label]
    assert inside.std() > 0.015
    lo, hi = np.percentile(inside, [5, 95])
    confusers = ((gray >= lo) & (gray <= hi) & (case.mask != label)).sum()
    assert confusers > 0.2 * inside.size, (kind, confusers, inside.size)


def test_phantom_dataset_ids_and_balance():
    cases = list(phantom_dataset(["ct_abdomen", "endoscopy"], 6, 32, seed=1))
    assert [c.id for c in cases[:2]] == ["ct_abdomen_00000", "ct_abdomen_00001"]
    assert len(cases) == 12 and len({c.id for c in cases}) == 12
    for kind in ("ct_abdomen", "endoscopy"):
        variants = [c.meta["variant"] for c in cases if c.meta["kind"] == kind]
        counts = {v: variants.count(v) for v in PHANTOM_KINDS[kind].variants}
        assert set(counts.values()) == {6 // len(counts)}
    again = next(phantom_dataset("ct_abdomen", 1, 32, seed=1))
    assert np.array_equal(again.image, cases[0].image)
    other = next(phantom_dataset("ct_abdomen", 1, 32, seed=2))
    assert not np.array_equal(other.image, cases[0].image)


def test_write_image_folder_layout(tmp_path):
    root = write_image_folder(tmp_path / "phantoms", ["ct_abdomen", "endoscopy"], 2, 32, seed=3)
    assert root == tmp_path / "phantoms"
    classes = sorted(p.name for p in root.iterdir())
    expected = sorted(n for k in ("ct_abdomen", "endoscopy") for n in PHANTOM_KINDS[k].class_names.values())
    assert classes == expected
    for folder in root.iterdir():
        images = sorted(p.name for p in folder.glob("*.png"))
        masks = sorted(p.name for p in (tmp_path / "phantoms_masks" / folder.name).glob("*.png"))
        assert len(images) == 2 and images == masks
        img = np.asarray(Image.open(folder / images[0]))
        mask = np.asarray(Image.open(tmp_path / "phantoms_masks" / folder.name / images[0]))
        assert img.dtype == np.uint8 and mask.shape == (32, 32)
        assert img.shape == ((32, 32, 3) if folder.name in PHANTOM_KINDS["endoscopy"].class_names.values()
                             else (32, 32))


def test_write_image_folder_reports_an_unwritable_target(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="cannot write the phantom dataset") as err:
        write_image_folder(blocker / "out", "endoscopy", 1, 16)
    assert str(err.value).startswith(str(blocker))


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="unknown phantom kind 'xray'"):
        render("xray", 0, 64)
    with pytest.raises(ValueError, match="unknown variant 'tumour'.*normal, lesion"):
        render("ct_abdomen", 0, 64, "tumour")
    with pytest.raises(ValueError, match="resolution 8 outside 16..512"):
        render("mr_spine", 0, 8)


def test_gallery_cli_writes_a_png(tmp_path):
    out = tmp_path / "g" / "phantoms.png"
    assert gallery_main(["--out", str(out), "--resolution", "32"]) == 0
    img = np.asarray(Image.open(out))
    assert img.shape[0] == len(PHANTOM_KINDS) * 36 and img.shape[2] == 3


def test_render_speed_sanity():
    t0 = time.perf_counter()
    for i in range(20):
        render(KINDS[i % len(KINDS)], i, 128)
    assert time.perf_counter() - t0 < 10.0
