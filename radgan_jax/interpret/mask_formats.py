"""The three mask file formats annotators may return for an exported image NAME.png, and the legend.

    NAME_mask.png        index PNG: pixel value = label id (8- or 16-bit grey, or palette indices). The export
                         writes this file as an all-zero template.
    NAME_color.png       colour-coded PNG: RGB colours of the legend (`label_colors`); any other colour is an
                         error (antialiased or smoothed brushes create such colours). Alpha 0 = background.
    NAME_mask.nii[.gz]   NIfTI label map as ITK-SNAP / 3D Slicer save it, shape (W, H) or (W, H, 1).

NIfTI orientation. ITK (which ITK-SNAP uses to read images, and 3D Slicer too) reads a 2D PNG as an image of
size (W, H) with origin 0, spacing 1 and identity direction in ITK's LPS world: index i = PNG column (+x =
patient left), j = PNG row (+y = posterior); ITK-SNAP adds a third axis of size 1. A segmentation drawn on it
is saved on the same voxel grid; ITK's NIfTI writer turns LPS into RAS, so the file's affine is
diag(-1, -1, 1) and nibabel's data array is (W, H, 1) with data[col, row, 0] = label. A tool that reorients
on save (e.g. to RAS-canonical, flipping i and j) records it in the affine, so we read the affine, bring the
voxels back to that LPS frame (nibabel `io_orientation`) and transpose: mask[row, col] = lps[col, row, 0].
The voxel spacing and origin are ignored (a PNG carries none); a cropped label map (3D Slicer crops a
segmentation to its extent unless exported with the reference volume's geometry) fails the size check.
Tested with nibabel and against files written by SimpleITK from the PNG's own ITK image.

Readers raise `MaskFormatError(problem)`; the caller adds the file name (`annotate.import_annotations`
collects every problem of a folder into one error).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# format name -> file-name suffixes (after the image's stem NAME)
MASK_SUFFIXES: dict[str, tuple[str, ...]] = {
    "index": ("_mask.png",),
    "color": ("_color.png",),
    "nifti": ("_mask.nii.gz", "_mask.nii"),
}

# ITK-SNAP's default colours for labels 1-6 (red, green, blue, yellow, cyan, magenta), then more that are easy
# to tell apart; `label_colors` continues with a deterministic colour cube when a task has more labels.
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
    (255, 128, 0), (128, 0, 255), (0, 128, 255), (255, 0, 128), (128, 255, 0), (0, 255, 128),
)
_MAX_REPORTED_COLOURS = 3


class MaskFormatError(ValueError):
    """A mask file that cannot be read as its format says (the message is the problem, without the path)."""


def mask_format(path: str | Path) -> tuple[str, str] | None:
    """(format, image stem) of a mask file name, e.g. 'a_color.png' -> ('color', 'a'); None if not a mask."""
    name = Path(path).name
    for fmt, suffixes in MASK_SUFFIXES.items():
        for suffix in suffixes:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                return fmt, name[: -len(suffix)]
    return None


def label_colors(labels: Mapping[str, int]) -> dict[int, tuple[int, int, int]]:
    """Legend colour of each label id: background black, then `_PALETTE`, then a colour cube (deterministic)."""
    extra = (c for levels in ((0, 128, 255), (0, 64, 128, 192, 255)) for c in itertools.product(levels, repeat=3))
    colours = list(dict.fromkeys(itertools.chain(_PALETTE, extra)))
    colours = [c for c in colours if c != (0, 0, 0)]
    ids = sorted(v for v in labels.values() if v != 0)
    if len(ids) > len(colours):
        raise ValueError(f"{len(ids)} labels but only {len(colours)} legend colours")
    out = {0: (0, 0, 0)}
    out.update({i: colours[k] for k, i in enumerate(ids)})
    return out


def _open(path: Path) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
    except FileNotFoundError:
        raise MaskFormatError("file does not exist") from None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, UnidentifiedImageError ...
        raise MaskFormatError(f"not a readable PNG ({type(e).__name__}: {e})") from None
    return im


def read_index_png(path: str | Path) -> np.ndarray:
    """Index PNG -> int32 [H, W] of label ids (grey value, or palette index for a palette PNG)."""
    with _open(Path(path)) as im:
        mode = im.mode
        arr = np.asarray(im)
    if mode in ("L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N", "1"):
        return arr.astype(np.int32)
    if mode == "LA":
        return arr[..., 0].astype(np.int32)
    if mode in ("RGB", "RGBA"):
        rgb = arr[..., :3]
        if (rgb == rgb[..., :1]).all():  # grey saved as RGB by some editors: the value is the label id
            return rgb[..., 0].astype(np.int32)
        raise MaskFormatError(f"a colour ({mode}) image where an index mask (pixel value = label id) is expected; "
                              "save colour-coded masks as NAME_color.png instead of NAME_mask.png")
    raise MaskFormatError(f"PNG mode {mode!r} cannot hold label ids (expected grey 8/16-bit or palette)")


def read_color_png(path: str | Path, colors: Mapping[int, tuple[int, int, int]]) -> np.ndarray:
    """Colour-coded PNG -> int32 [H, W] label ids via the legend `colors` (id -> RGB).

    Fully transparent pixels are background. A colour that is not in the legend raises, naming the colour, how
    many pixels have it and where the first one is (row, col).
    """
    with _open(Path(path)) as im:
        rgba = np.asarray(im.convert("RGBA"))
    code = (rgba[..., 0].astype(np.int64) << 16) | (rgba[..., 1].astype(np.int64) << 8) | rgba[..., 2]
    code = np.where(rgba[..., 3] == 0, 0, code)  # transparent = background whatever its RGB
    lut = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in colors.items()}
    if len(lut) != len(colors):
        raise ValueError(f"legend colours are not unique: {dict(colors)}")
    uniq, inverse = np.unique(code, return_inverse=True)
    unknown = [u for u in uniq.tolist() if u not in lut]
    if unknown:
        parts = []
        for u in unknown[:_MAX_REPORTED_COLOURS]:
            hits = np.argwhere(code == u)
            row, col = hits[0].tolist()
            parts.append(f"RGB ({u >> 16}, {(u >> 8) & 255}, {u & 255}) in {len(hits)} pixels, first at row {row}, "
                         f"col {col}")
        extra = len(unknown) - _MAX_REPORTED_COLOURS
        more = f" and {extra} more colours" if extra > 0 else ""
        legend = ", ".join(f"{i}={c}" for i, c in sorted(colors.items()))
        raise MaskFormatError(f"colours not in the legend: {'; '.join(parts)}{more} (legend: {legend}; paint with "
                              "a hard brush, no antialiasing or smoothing)")
    ids = np.array([lut[u] for u in uniq.tolist()], np.int32)
    return ids[inverse.reshape(code.shape)]


def read_nifti_mask(path: str | Path) -> np.ndarray:
    """NIfTI 2D label map (W, H) or (W, H, 1) in any orientation -> int [H, W] in PNG row/column order.

    See the module docstring for the convention. Non-integer values raise.
    """
    import nibabel as nib
    import nibabel.orientations as nio

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, np.float64)
    except FileNotFoundError:
        raise MaskFormatError("file does not exist") from None
    except Exception as e:  # nibabel raises many types on corrupt headers / truncated gzip
        raise MaskFormatError(f"not a readable NIfTI file ({type(e).__name__}: {e})") from None
    shape = data.shape
    while data.ndim > 2 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 2:
        raise MaskFormatError(f"expected a 2D label map of shape (W, H) or (W, H, 1), got {shape}")
    try:
        ornt = nio.io_orientation(affine)
        lps = nio.apply_orientation(data[..., None], nio.ornt_transform(ornt, nio.axcodes2ornt(("L", "P", "S"))))
    except Exception as e:  # singular / NaN affine
        raise MaskFormatError(f"unusable NIfTI orientation (affine {affine.tolist()}: {e})") from None
    if lps.shape[2] != 1:
        raise MaskFormatError(f"label map is not in the image plane: affine {np.round(affine, 3).tolist()} puts "
                              f"its axes along {''.join(nio.ornt2axcodes(ornt))}, expected an axial (L/R, A/P) plane")
    out = np.ascontiguousarray(lps[:, :, 0].T)
    if np.issubdtype(out.dtype, np.floating):
        if not np.isfinite(out).all() or np.abs(out - np.rint(out)).max(initial=0) > 1e-3:
            bad = np.unique(out[~np.isfinite(out) | (np.abs(out - np.rint(out)) > 1e-3)])[:5].tolist()
            raise MaskFormatError(f"non-integer label values, e.g. {bad}")
        out = np.rint(out)
    elif not (np.issubdtype(out.dtype, np.integer) or out.dtype == bool):
        raise MaskFormatError(f"label map has non-numeric dtype {out.dtype}")
    return out.astype(np.int64)


def read_mask(path: str | Path, colors: Mapping[int, tuple[int, int, int]]) -> np.ndarray:
    """Any of the three formats, chosen by the file name -> int [H, W]."""
    found = mask_format(path)
    if found is None:
        raise MaskFormatError(f"not a mask file name (expected NAME{{{', '.join(_all_suffixes())}}})")
    fmt = found[0]
    if fmt == "index":
        return read_index_png(path)
    if fmt == "color":
        return read_color_png(path, colors)
    return read_nifti_mask(path)


def _all_suffixes() -> list[str]:
    return [s for suffixes in MASK_SUFFIXES.values() for s in suffixes]


# ---- writers: the export's template, tests, and users converting their own masks ----

def write_index_png(path: str | Path, mask: np.ndarray) -> None:
    """int [H, W] -> index PNG (8-bit grey, 16-bit when a label id exceeds 255)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or (mask.size and mask.min() < 0):
        raise ValueError(f"{path}: expected a non-negative [H, W] label array, got {mask.shape}")
    if mask.max(initial=0) > 255:
        Image.fromarray(mask.astype(np.uint16)).save(path)
    else:
        Image.fromarray(mask.astype(np.uint8), "L").save(path)


def write_color_png(path: str | Path, mask: np.ndarray, colors: Mapping[int, tuple[int, int, int]]) -> None:
    """int [H, W] -> RGB PNG in the legend's colours."""
    lut = np.zeros((max(colors) + 1, 3), np.uint8)
    for i, c in colors.items():
        lut[i] = c
    Image.fromarray(lut[np.asarray(mask)], "RGB").save(path)


def write_nifti_mask(path: str | Path, mask: np.ndarray) -> None:
    """int [H, W] -> NIfTI as ITK-SNAP saves a segmentation of the PNG: (W, H, 1), affine diag(-1, -1, 1)."""
    import nibabel as nib

    data = np.ascontiguousarray(np.asarray(mask).T[..., None]).astype(np.uint16 if mask.max() > 255 else np.uint8)
    nib.save(nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0])), str(path))


def legend_image(labels: Mapping[str, int], colors: Mapping[int, tuple[int, int, int]], cell: int = 24) -> np.ndarray:
    """uint8 [H, W, 3] legend: one row per label, a colour swatch then 'id  name  (r, g, b)'."""
    font = ImageFont.load_default()
    rows = sorted(labels.items(), key=lambda kv: kv[1])
    texts = [f"{i:3d}  {name}  {colors[i]}" for name, i in rows]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = cell + 12 + max(int(probe.textbbox((0, 0), t, font=font)[2]) for t in texts) + 8
    im = Image.new("RGB", (width, cell * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    for k, ((_, i), text) in enumerate(zip(rows, texts, strict=True)):
        y = k * cell
        draw.rectangle((2, y + 2, cell - 2, y + cell - 2), fill=tuple(colors[i]), outline=(128, 128, 128))
        draw.text((cell + 8, y + cell // 2 - 6), text, fill=(0, 0, 0), font=font)
    return np.asarray(im)


def itksnap_label_file(labels: Mapping[str, int], colors: Mapping[int, tuple[int, int, int]]) -> str:
    """ITK-SNAP label description file (Segmentation > Import Label Descriptions) with our names and colours."""
    lines = ["################################################",
             "# ITK-SnAP Label Description File",
             "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
             "################################################"]
    for name, i in sorted(labels.items(), key=lambda kv: kv[1]):
        r, g, b = colors[i]
        alpha, vis = (0, 0) if i == 0 else (1, 1)
        lines.append(f"{i:5d} {r:5d} {g:4d} {b:4d} {alpha:8d} {vis:2d} {vis:2d}    \"{name}\"")
    return "\n".join(lines) + "\n"


def annotator_readme(labels: Mapping[str, int], colors: Mapping[int, tuple[int, int, int]]) -> str:
    """README.txt of an annotation folder: what to draw and the three accepted mask formats."""
    rows = sorted(labels.items(), key=lambda t: t[1])
    table = "\n".join(f"    {i:3d}  {name:<24s} RGB {colors[i]}" for name, i in rows)
    return f"""Annotation folder (radgan_jax interpret_export)
==============================================

Each synthetic image NAME.png comes with NAME.json (its latent and the generator it was made with: do not
edit, rename or delete it) and an empty mask template NAME_mask.png (all zeros).
Draw one mask per image, the same size as the image, with these labels (also in labels.json):

{table}

Return each mask in ONE of three formats, named after its image:

1. Index PNG      NAME_mask.png   grey (8 or 16 bit) or palette PNG; pixel value = label id. Fill the template.
2. Colour PNG     NAME_color.png  RGB in exactly the colours above (legend.png, legend.json). Paint with a hard
                                  brush: no antialiasing, smoothing or blending; any other colour is refused.
                                  Fully transparent pixels count as background.
3. NIfTI          NAME_mask.nii.gz (or .nii), a 2D label map as ITK-SNAP / 3D Slicer save it.
   ITK-SNAP:  File > Open Main Image > NAME.png; Segmentation > Import Label Descriptions > itksnap_labels.txt;
              paint; Segmentation > Save Segmentation Image as NAME_mask.nii.gz.
   3D Slicer: load NAME.png, segment it in Segment Editor, export the segmentation to a labelmap with the
              image as reference geometry (not cropped) and label values as in the table, save NAME_mask.nii.gz.

Images you skip: leave their template untouched (all zero); they are reported as "not annotated" and left out.
If a structure is truly absent from an image, say so to whoever imports the folder (allow_empty).
When you keep a filled NAME_color.png or NAME_mask.nii.gz, the untouched NAME_mask.png template may stay;
two filled masks for one image are refused.
"""
