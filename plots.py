"""Pictures drawn with Pillow alone (no plotting package): confusion-matrix heatmaps and the shared text helpers."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Viridis sampled at 9 points: perceptually even, readable in grey scale.
_VIRIDIS = np.array([(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                     (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)], dtype=np.float64)


def _colour(t: float) -> tuple[int, int, int]:
    """Viridis colour of t in [0, 1]."""
    pos = min(max(t, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(_VIRIDIS) - 1)
    rgb = _VIRIDIS[lo] + (_VIRIDIS[hi] - _VIRIDIS[lo]) * (pos - lo)
    return tuple(int(round(c)) for c in rgb)


def _luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG relative luminance; above ~0.179 black text has more contrast than white."""
    linear = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def load_font(size: int) -> ImageFont.ImageFont:
    """Pillow's scalable default font; the fixed bitmap font when FreeType (or Pillow >= 10.1) is missing."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError, AttributeError):
        return ImageFont.load_default()


def _size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    """Width and height of text in pixels."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _centered(draw: ImageDraw.ImageDraw, cx: float, cy: float, text: str, font, fill) -> None:
    """Text centred on (cx, cy)."""
    # Manual centring: anchors are not available for the bitmap fallback font.
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text((cx - (left + right) / 2, cy - (top + bottom) / 2), text, font=font, fill=fill)


def _vertical(image: Image.Image, cx: float, cy: float, text: str, font, fill) -> None:
    """Text rotated 90 degrees counter-clockwise, centred on (cx, cy)."""
    w, h = _size(ImageDraw.Draw(image), text, font)
    mask = Image.new("L", (w + 4, h + 8), 0)
    _centered(ImageDraw.Draw(mask), (w + 4) / 2, (h + 8) / 2, text, font, 255)
    mask = mask.rotate(90, expand=True)
    image.paste(Image.new("RGB", mask.size, fill), (int(cx - mask.width / 2), int(cy - mask.height / 2)), mask)


def _ticks(vmax: float, integer: bool) -> list[float]:
    """About five round tick values from 0 to vmax."""
    raw = vmax / 4
    magnitude = 10 ** np.floor(np.log10(raw))
    steps = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(s * magnitude for s in steps if s * magnitude >= raw - 1e-12)
    step = max(step, 1.0) if integer else step
    return [float(v) for v in np.arange(0, vmax + step * 1e-6, step)]


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Text broken at spaces into lines at most `width` pixels wide (a single long word stays whole)."""
    lines, line = [], ""
    for word in text.split(" "):
        trial = f"{line} {word}".strip()
        if line and _size(draw, trial, font)[0] > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line]


def draw_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], title: str, subtitle: str,
                          normalized: bool) -> Image.Image:
    """A labelled heatmap of a confusion matrix with values in the cells and a colour scale bar."""
    title_font, label_font, cell_font, tick_font = load_font(20), load_font(16), load_font(18), load_font(15)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    n = len(class_names)
    name_w = max(_size(probe, name, label_font)[0] for name in class_names)
    text_h = _size(probe, "Ag", label_font)[1]
    cell = min(max(72, name_w + 12), 110)  # wide enough for horizontal column names where possible
    columns_fit = name_w <= cell - 6
    pad, gap = 20, 10
    grid = n * cell
    vmax = 1.0 if normalized else max(float(matrix.max()), 1.0)
    ticks = _ticks(vmax, integer=not normalized)
    tick_text = [f"{t:.2f}" if normalized else f"{int(t)}" for t in ticks]
    tick_w = max(_size(probe, t, tick_font)[0] for t in tick_text)

    x0 = pad + text_h + gap + name_w + gap  # 'true' label, row names, then the grid
    bar_x = x0 + grid + 24
    width = bar_x + 22 + 6 + 4 + tick_w + pad
    title_lines = _wrap(probe, title, title_font, width - 2 * pad) + [subtitle]
    line_h = _size(probe, "Ag", title_font)[1] + 10
    width = max(width, max(_size(probe, line, title_font)[0] for line in title_lines) + 2 * pad)
    y0 = pad + line_h * len(title_lines) + 14
    col_label_h = text_h if columns_fit else name_w
    height = y0 + grid + gap + col_label_h + 2 * gap + text_h + pad

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(title_lines):
        _centered(draw, width / 2, pad + line_h * i + line_h / 2, line, title_font, "black")

    for r in range(n):
        for c in range(n):
            value = float(matrix[r, c])
            fill = _colour(value / vmax)
            x, y = x0 + c * cell, y0 + r * cell
            draw.rectangle([x, y, x + cell - 2, y + cell - 2], fill=fill)  # 2 px white gutter between cells
            text = f"{value:.2f}" if normalized else f"{int(round(value))}"
            _centered(draw, x + cell / 2 - 1, y + cell / 2 - 1, text, cell_font,
                      "black" if _luminance(fill) > 0.179 else "white")

    for i, name in enumerate(class_names):
        centre = i * cell + cell / 2 - 1
        w, _ = _size(draw, name, label_font)
        _centered(draw, x0 - gap - w / 2, y0 + centre, name, label_font, "black")  # right-aligned row names
        if columns_fit:
            _centered(draw, x0 + centre, y0 + grid + gap + text_h / 2, name, label_font, "black")
        else:
            _vertical(image, x0 + centre, y0 + grid + gap + w / 2, name, label_font, "black")  # top-aligned
    _centered(draw, x0 + grid / 2, y0 + grid + gap + col_label_h + 2 * gap + text_h / 2, "predicted", label_font,
              "black")
    _vertical(image, pad + text_h / 2, y0 + grid / 2, "true", label_font, "black")

    for k in range(grid):  # colour bar, top = vmax
        draw.line([bar_x, y0 + k, bar_x + 21, y0 + k], fill=_colour(1 - k / max(grid - 1, 1)))
    draw.rectangle([bar_x, y0, bar_x + 21, y0 + grid - 1], outline="black")
    for value, text in zip(ticks, tick_text):
        y = y0 + (grid - 1) * (1 - value / vmax)
        draw.line([bar_x + 21, y, bar_x + 27, y], fill="black")
        w, _ = _size(draw, text, tick_font)
        _centered(draw, bar_x + 31 + w / 2, y, text, tick_font, "black")
    return image
