"""Line plots as PNG, drawn with Pillow only (matplotlib is deliberately not a dependency).

Used for FD-vs-kimg, the GAN loss curves and segmentation curves: a few series, tens to thousands of points.
Lines are drawn without antialiasing so every series keeps its exact palette colour (tests rely on that).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

# matplotlib's tab10: distinct, colour-blind friendly enough, and familiar from the original repos' plots.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
MARKER_MAX_POINTS = 30  # markers only when a series is short enough for them not to smear into a band
_GRID = (225, 225, 225)
_BLACK = (0, 0, 0)
_WHITE = (255, 255, 255)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)  # scalable built-in font (Pillow >= 10.1 with FreeType)
    except (TypeError, ImportError):  # older Pillow / no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: Font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def _expand(lo: float, hi: float) -> tuple[float, float]:
    """A non-empty range: constant data gets a +-5% (or +-0.5 around zero) band."""
    if hi > lo:
        return lo, hi
    half = abs(lo) * 0.05 or 0.5
    return lo - half, hi + half


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    base = 10.0 ** math.floor(math.log10(raw))
    for mult in (1.0, 2.0, 2.5, 5.0, 10.0):
        if base * mult >= raw:
            return base * mult
    return base * 10.0


def linear_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """'Nice' tick values (1/2/2.5/5 x 10^k steps) inside [lo, hi]."""
    step = _nice_step(hi - lo, target)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + step * 1e-9:
        ticks.append(round(k * step, 12))
        k += 1
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Decades in [lo, hi] (lo, hi > 0); 1-2-5 mantissas or linear ticks when the range spans too few decades."""
    e0, e1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for mantissas in ((1.0,), (1.0, 2.0, 5.0)):
        ticks = [m * 10.0 ** e for e in range(e0, e1 + 1) for m in mantissas]
        ticks = [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
        if len(ticks) >= 3:
            return ticks
    return [t for t in linear_ticks(lo, hi, 4) if t > 0]


def _tick_label(value: float, step: float | None) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.1e}".replace("e+0", "e").replace("e-0", "e-").replace(".0e", "e")
    if step is not None and step > 0:
        decimals = max(0, -math.floor(math.log10(step) + 1e-9))
        if step * 10 ** decimals % 1 > 1e-6:  # 2.5 x 10^k steps need one more digit
            decimals += 1
        return f"{value:.{decimals}f}"
    return f"{value:g}"


def _put_text(draw: ImageDraw.ImageDraw, x: float, y: float, text: str, font: Font, fill: tuple[int, int, int],
              h: str = "l", v: str = "t") -> None:
    """Draw `text` with its ink box's left/centre/right (h) and top/middle (v) edge at (x, y).

    Done with textbbox rather than Pillow anchors, which the bitmap fallback font does not support.
    """
    l0, t0, r0, b0 = draw.textbbox((0, 0), text, font=font)
    dx = {"l": 0, "c": (r0 - l0) / 2, "r": r0 - l0}[h] + l0
    dy = {"t": 0, "m": (b0 - t0) / 2}[v] + t0
    draw.text((round(x - dx), round(y - dy)), text, fill=fill, font=font)


def _finite_points(xs: Sequence[float], ys: Sequence[float], logy: bool) -> list[tuple[float, float] | None]:
    """Points in order; None marks a gap (NaN/inf, or y <= 0 on a log axis)."""
    if len(xs) != len(ys):
        raise ValueError(f"series has {len(xs)} x values but {len(ys)} y values")
    points: list[tuple[float, float] | None] = []
    for x, y in zip(xs, ys):
        x, y = float(x), float(y)
        ok = math.isfinite(x) and math.isfinite(y) and (y > 0 or not logy)
        points.append((x, math.log10(y) if logy else y) if ok else None)
    return points


def frame_box(draw: ImageDraw.ImageDraw, ylabels: Sequence[str], width: int, height: int, font: Any
              ) -> tuple[int, int, int, int, int]:
    """(left, top, right, bottom, label height) of the plot area: room for the y tick labels, the axis labels
    and the title. ValueError when the picture is too small."""
    label_h = _text_size(draw, "Ag", font)[1]
    left = 16 + label_h + 8 + max((_text_size(draw, s, font)[0] for s in ylabels), default=0) + 6
    top, right, bottom = 40, width - 20, height - (2 * label_h + 24)
    if right - left < 50 or bottom - top < 50:
        raise ValueError(f"plot of {width}x{height} is too small for its labels")
    return left, top, right, bottom, label_h


def plot_curves(path: str | os.PathLike, series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str,
                xlabel: str, ylabel: str, logy: bool = False, width: int = 800, height: int = 500) -> None:
    """Line plot of `{name: (xs, ys)}` -> RGB PNG at `path`.

    NaN/inf points (and y <= 0 with `logy`) are skipped and break the line; isolated points and short series get
    markers, so a single point is still visible. An empty or all-NaN plot still produces axes and the legend.
    """
    data = {name: _finite_points(xs, ys, logy) for name, (xs, ys) in series.items()}
    valid = [p for pts in data.values() for p in pts if p is not None]
    xlo, xhi = _expand(min((p[0] for p in valid), default=0.0), max((p[0] for p in valid), default=1.0))
    ylo, yhi = _expand(min((p[1] for p in valid), default=0.0), max((p[1] for p in valid), default=1.0))
    ypad = (yhi - ylo) * 0.05  # breathing room so extreme points do not sit on the frame
    ylo, yhi = ylo - ypad, yhi + ypad

    image = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(image)
    font, title_font = _font(12), _font(15)

    # Ticks first: the left margin must fit the widest y tick label.
    if logy:
        yticks = [math.log10(t) for t in log_ticks(10.0 ** ylo, 10.0 ** yhi)]
        ylabels = [_tick_label(10.0 ** t, None) for t in yticks]
    else:
        yticks = linear_ticks(ylo, yhi)
        ystep = yticks[1] - yticks[0] if len(yticks) > 1 else None
        ylabels = [_tick_label(t, ystep) for t in yticks]
    xticks = linear_ticks(xlo, xhi, 8)
    xstep = xticks[1] - xticks[0] if len(xticks) > 1 else None
    xlabels = [_tick_label(t, xstep) for t in xticks]

    left, top, right, bottom, label_h = frame_box(draw, ylabels, width, height, font)

    def to_px(x: float, y: float) -> tuple[int, int]:
        px = left + (x - xlo) / (xhi - xlo) * (right - left)
        py = bottom - (y - ylo) / (yhi - ylo) * (bottom - top)
        return round(px), round(py)

    # Grid, ticks and tick labels.
    for t, s in zip(yticks, ylabels):
        _, py = to_px(xlo, t)
        draw.line([(left, py), (right, py)], fill=_GRID)
        draw.line([(left - 4, py), (left, py)], fill=_BLACK)
        _put_text(draw, left - 6, py, s, font, _BLACK, h="r", v="m")
    for t, s in zip(xticks, xlabels):
        px, _ = to_px(t, ylo)
        draw.line([(px, top), (px, bottom)], fill=_GRID)
        draw.line([(px, bottom), (px, bottom + 4)], fill=_BLACK)
        _put_text(draw, px, bottom + 7, s, font, _BLACK, h="c")
    draw.rectangle([left, top, right, bottom], outline=_BLACK)

    # Title, axis labels (the y label is drawn on its own strip and rotated).
    _put_text(draw, (left + right) / 2, 12, title, title_font, _BLACK, h="c")
    _put_text(draw, (left + right) / 2, height - label_h - 10, xlabel, font, _BLACK, h="c")
    if ylabel:
        tw, th = _text_size(draw, ylabel, font)
        strip = Image.new("RGB", (tw + 4, th + 6), _WHITE)
        _put_text(ImageDraw.Draw(strip), 2, 3, ylabel, font, _BLACK)
        strip = strip.rotate(90, expand=True)
        image.paste(strip, (12, max((top + bottom - strip.height) // 2, 0)))

    # Curves.
    for i, points in enumerate(data.values()):
        colour = PALETTE[i % len(PALETTE)]
        n_valid = sum(p is not None for p in points)
        for j, p in enumerate(points):
            if p is None:
                continue
            prev = points[j - 1] if j > 0 else None
            nxt = points[j + 1] if j + 1 < len(points) else None
            if prev is not None:
                draw.line([to_px(*prev), to_px(*p)], fill=colour, width=2)
            if n_valid <= MARKER_MAX_POINTS or (prev is None and nxt is None):
                cx, cy = to_px(*p)
                draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)

    # Legend, top right inside the axes.
    if data:
        rows = [(name, PALETTE[i % len(PALETTE)]) for i, name in enumerate(data)]
        box_w = max(_text_size(draw, name, font)[0] for name, _ in rows) + 36
        row_h = label_h + 6
        x0, y0 = right - box_w - 8, top + 8
        draw.rectangle([x0, y0, x0 + box_w, y0 + row_h * len(rows) + 6], fill=_WHITE, outline=(160, 160, 160))
        for k, (name, colour) in enumerate(rows):
            cy = y0 + 6 + k * row_h + row_h // 2
            draw.line([(x0 + 6, cy), (x0 + 24, cy)], fill=colour, width=3)
            _put_text(draw, x0 + 30, cy, name, font, _BLACK, v="m")

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
