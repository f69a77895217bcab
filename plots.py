"""Pictures drawn with Pillow alone (no plotting package): confusion-matrix heatmaps, training curves, the
accuracy-efficiency trade-off, the shared text and axis helpers; and an evaluation's report folder (write_report)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from utils import atomic_write, write_csv, write_json

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


def _round_step(raw: float, steps: Sequence[float] = (1, 2, 2.5, 5, 10)) -> float:
    """The smallest step of the form s x 10^k (s in steps) that is at least raw."""
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(s * magnitude for s in steps if s * magnitude >= raw - 1e-12)


def _ticks(vmax: float, integer: bool) -> list[float]:
    """About five round tick values from 0 up to (not past) vmax, for a colour bar."""
    step = _round_step(vmax / 4, (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10))
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


def save_png(path: str | os.PathLike, image: Image.Image) -> None:
    """Write a picture atomically (a reader never sees half a PNG; a full disk is a one-line WriteError)."""
    with atomic_write(path, "wb") as f:
        image.save(f, format="PNG")


def write_report(out_dir: str, metrics: dict, class_names: Sequence[str], predictions: tuple | None = None,
                 title: str = "") -> None:
    """Write metrics.json, per_class.csv, both confusion matrices as CSV and PNG, and predictions.csv if given."""
    out = os.fspath(out_dir)
    write_json(os.path.join(out, "metrics.json"), metrics)
    ci = metrics.get("ci95", {}).get("per_class_f1", {})
    write_csv(os.path.join(out, "per_class.csv"),
              ["class", "precision", "recall", "f1", "support", "f1_ci95_lo", "f1_ci95_hi"],
              ([name, f"{m['precision']:.6f}", f"{m['recall']:.6f}", f"{m['f1']:.6f}", m["support"],
                *((f"{v:.6f}" for v in ci[name]) if name in ci else ("", ""))]
               for name, m in metrics["per_class"].items()))
    for key, suffix in (("confusion_matrix", ""), ("confusion_matrix_normalized", "_normalized")):
        matrix = np.asarray(metrics[key], dtype=np.float64)
        normalized = bool(suffix)
        write_csv(os.path.join(out, f"confusion_matrix{suffix}.csv"), ["true\\predicted", *class_names],
                  ([name, *(f"{v:.6f}" if normalized else int(v) for v in row)]
                   for name, row in zip(class_names, matrix)))
        heading = f"{title or 'Confusion matrix'}{' (row-normalised)' if normalized else ''}"
        subtitle = (f"accuracy {metrics['accuracy']:.4f}    macro-F1 {metrics['macro_f1']:.4f}    "
                    f"n = {int(np.sum(metrics['confusion_matrix']))}")
        save_png(os.path.join(out, f"confusion_matrix{suffix}.png"),
                 draw_confusion_matrix(matrix, class_names, heading, subtitle, normalized))
    if predictions is not None:
        paths, labels, preds, probs = predictions
        write_csv(os.path.join(out, "predictions.csv"),
                  ["path", "label", "pred", *(f"prob_{name}" for name in class_names)],
                  ([path, int(label), int(pred), *(f"{p:.6f}" for p in prob)]
                   for path, label, pred, prob in zip(paths, labels, preds, np.asarray(probs))))


# --- Line and point charts ---

# Colour-blind-safe categorical colours (Okabe-Ito), in the order series and model families use them.
SERIES_COLOURS = ((0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233),
                  (0, 0, 0))


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 x 10^k)."""
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    step = _round_step(span / max(count - 1, 1))
    first = math.floor(lo / step + 1e-9) * step
    return [round(first + i * step, 10) for i in range(int(math.ceil((hi - first) / step - 1e-9)) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Round values from the largest one <= lo to the smallest one >= hi, for a log axis: 1, 2, 5 x 10^k, or every
    m x 10^k when that gives fewer than four (a narrow range)."""
    for mantissas in ((1, 2, 5), range(1, 10)):
        candidates = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
                      for m in mantissas]
        first = max(v for v in candidates if v <= lo * (1 + 1e-9))
        last = min(v for v in candidates if v >= hi * (1 - 1e-9))
        ticks = [v for v in candidates if first <= v <= last]
        if len(ticks) >= 4:
            break
    return ticks


def _tick_text(value: float, step: float) -> str:
    """A tick label with as many decimals as the step needs (0.025 -> 3)."""
    decimals = next((d for d in range(6) if abs(step * 10 ** d - round(step * 10 ** d)) < 1e-6), 6)
    return f"{value:.{decimals}f}"


@dataclass
class Axes:
    """A plot area: data limits mapped onto a pixel box, with its frame, grid, ticks and axis titles drawn."""
    box: tuple[int, int, int, int]  # left, top, right, bottom in pixels
    xticks: list[float]
    yticks: list[float]
    xlog: bool = False
    xlim: tuple[float, float] | None = None  # x range when it is not first to last tick

    def x(self, value: float) -> float:
        """Pixel column of a data x value."""
        lo, hi = self.xlim or (self.xticks[0], self.xticks[-1])
        if self.xlog:
            value, lo, hi = math.log10(value), math.log10(lo), math.log10(hi)
        return self.box[0] + (value - lo) / ((hi - lo) or 1.0) * (self.box[2] - self.box[0])

    def y(self, value: float) -> float:
        """Pixel row of a data y value."""
        lo, hi = self.yticks[0], self.yticks[-1]
        return self.box[3] - (value - lo) / ((hi - lo) or 1.0) * (self.box[3] - self.box[1])

    def draw(self, image: Image.Image, title: str, xlabel: str, ylabel: str, x_integer: bool = False) -> None:
        """Grid lines, frame, tick labels and the three titles."""
        draw = ImageDraw.Draw(image)
        font, title_font = load_font(14), load_font(17)
        left, top, right, bottom = self.box
        ystep = self.yticks[1] - self.yticks[0] if len(self.yticks) > 1 else 1.0
        for value in self.yticks:
            y = self.y(value)
            draw.line([left, y, right, y], fill=(225, 225, 225))
            text = _tick_text(value, ystep)
            w, _ = _size(draw, text, font)
            _centered(draw, left - 8 - w / 2, y, text, font, "black")
        xstep = self.xticks[1] - self.xticks[0] if len(self.xticks) > 1 else 1.0
        for value in self.xticks:
            x = self.x(value)
            draw.line([x, top, x, bottom], fill=(225, 225, 225))
            text = (f"{int(round(value))}" if x_integer else
                    f"{value:g}" if self.xlog else _tick_text(value, xstep))
            _centered(draw, x, bottom + 14, text, font, "black")
        draw.rectangle([left, top, right, bottom], outline="black")
        _centered(draw, (left + right) / 2, top - 18, title, title_font, "black")
        _centered(draw, (left + right) / 2, bottom + 38, xlabel, font, "black")
        _vertical(image, left - 58, (top + bottom) / 2, ylabel, font, "black")


def _legend(image: Image.Image, x: int, y: int, entries: Sequence[tuple[str, tuple[int, int, int], str]]) -> None:
    """Legend entries (text, colour, 'line' or 'dashed') in one row from (x, y)."""
    draw, font = ImageDraw.Draw(image), load_font(14)
    for text, colour, style in entries:
        if style == "dashed":
            for k in range(0, 24, 6):
                draw.line([x + k, y, x + k + 3, y], fill=colour, width=2)
        else:
            draw.line([x, y, x + 24, y], fill=colour, width=3)
        w, _ = _size(draw, text, font)
        _centered(draw, x + 30 + w / 2, y, text, font, "black")
        x += 30 + w + 22


def _padded(values: Sequence[float], floor: float = -math.inf, ceiling: float = math.inf) -> list[float]:
    """Round ticks around values, with a little room at both ends (clamped to floor / ceiling)."""
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.1, 0.05)
    return _nice_ticks(max(lo - pad, floor), min(hi + pad, ceiling))


def draw_curves(history: Sequence[dict], best_epoch: int | None, title: str) -> Image.Image:
    """Training curves of one run: train and validation loss (left), validation accuracy and macro-F1 (right),
    per epoch, the best epoch marked. history: rows of history.csv (epoch, train_loss, val_loss, val_accuracy,
    val_macro_f1); one row draws too."""
    epochs = [int(r["epoch"]) for r in history]
    series = {key: [float(r[key]) for r in history] for key in ("train_loss", "val_loss", "val_accuracy",
                                                                "val_macro_f1")}
    width, height, pad = 1100, 470, 80
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    _centered(draw, width / 2, 22, title, load_font(20), "black")
    # Whole epochs as ticks, half an epoch of room at both ends so the first and last points and the best-epoch
    # line stay off the frame.
    xticks = [t for t in _nice_ticks(min(epochs), max(epochs)) if t == int(t) and min(epochs) <= t <= max(epochs)]
    xlim = (min(epochs) - 0.5, max(epochs) + 0.5)
    panels = [("Loss", ("train_loss", "val_loss"), ("train loss", "validation loss"), -math.inf, math.inf),
              ("Validation accuracy and macro-F1", ("val_accuracy", "val_macro_f1"), ("accuracy", "macro-F1"),
               0.0, 1.0)]
    panel_w = (width - 2 * pad - 70) // 2
    for k, (panel_title, keys, names, floor, ceiling) in enumerate(panels):
        left = pad + k * (panel_w + 70 + pad // 2)
        values = [v for key in keys for v in series[key] if math.isfinite(v)] or [0.0, 1.0]
        axes = Axes((left, 80, left + panel_w, height - 110), xticks or epochs, _padded(values, floor, ceiling),
                    xlim=xlim)  # a lone epoch such as 7 has no round tick of its own
        axes.draw(image, panel_title, "epoch", "loss" if k == 0 else "score", x_integer=True)
        if best_epoch is not None:  # the best epoch: a dashed grey line across both panels
            bx = axes.x(best_epoch)
            for y in range(axes.box[1], axes.box[3], 10):
                draw.line([bx, y, bx, min(y + 5, axes.box[3])], fill=(110, 110, 110), width=2)
        for j, key in enumerate(keys):
            colour = SERIES_COLOURS[j + 2 * k]
            points = [(axes.x(e), axes.y(v)) for e, v in zip(epochs, series[key]) if math.isfinite(v)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=3, joint="curve")
            for px, py in points:
                draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour)
        entries = [(n, SERIES_COLOURS[j + 2 * k], "line") for j, n in enumerate(names)]
        if best_epoch is not None and k == 1:
            entries.append((f"best epoch ({best_epoch})", (110, 110, 110), "dashed"))
        _legend(image, left, height - 30, entries)
    return image


def draw_tradeoff(panels: Sequence[tuple[str, Sequence[dict]]], names: Sequence[str], title: str) -> Image.Image:
    """Macro-F1 against latency, one panel per point set (e.g. ours and the thesis's), on a log latency axis.

    panels: (panel title, points), each point {"name", "latency_ms", "macro_f1", "mode"}; a point is drawn as its
    number in `names` (1-based) in a marker whose shape gives the mode, and the legend below lists the numbers."""
    width, pad, panel_w, panel_h = 1150, 85, 440, 400
    font = load_font(14)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    legend_rows = [f"{i}  {name}" for i, name in enumerate(names, 1)]
    line_h = _size(probe, "Ag", font)[1] + 8
    columns = 2
    legend_h = line_h * math.ceil(len(legend_rows) / columns) + 40
    height = 60 + 40 + panel_h + 70 + legend_h
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    _centered(draw, width / 2, 24, title, load_font(20), "black")
    for k, (panel_title, points) in enumerate(panels):
        left = pad + k * (panel_w + pad + 60)
        box = (left, 100, left + panel_w, 100 + panel_h)
        usable = [p for p in points if p.get("latency_ms") and p.get("macro_f1") is not None]
        if not usable:
            draw.rectangle(box, outline="black")
            _centered(draw, (box[0] + box[2]) / 2, box[1] - 18, panel_title, load_font(17), "black")
            _centered(draw, (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, "no points (no metrics or timings)",
                      font, "black")
            continue
        lat = [p["latency_ms"] for p in usable]
        xticks = _log_ticks(min(lat) / 1.25, max(lat) * 1.25)
        axes = Axes(box, xticks, _padded([p["macro_f1"] for p in usable], 0.0, 1.0), xlog=True)
        axes.draw(image, panel_title, "latency per image, ms (log scale)", "macro-F1")
        for p in usable:
            number = names.index(p["name"]) + 1
            colour = SERIES_COLOURS[(number - 1) % len(SERIES_COLOURS)]
            x, y = axes.x(p["latency_ms"]), axes.y(p["macro_f1"])
            r = 11
            if p.get("mode", "eager") == "eager":
                draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
            elif p["mode"] == "fast":
                draw.rectangle([x - r, y - r, x + r, y + r], fill=colour)
            else:
                draw.polygon([(x, y - r - 2), (x + r + 2, y), (x, y + r + 2), (x - r - 2, y)], fill=colour)
            _centered(draw, x, y, str(number), load_font(13), "white" if _luminance(colour) < 0.4 else "black")
    y = 100 + panel_h + 70
    _centered(draw, width / 2, y, "circle: eager    square: fast path    diamond: ONNX Runtime", font, "black")
    col_w = (width - 2 * pad) // columns
    for i, text in enumerate(legend_rows):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        cx, cy = pad + (i % columns) * col_w, y + 30 + (i // columns) * line_h
        draw.ellipse([cx, cy - 7, cx + 14, cy + 7], fill=colour)
        draw.text((cx + 22, cy - _size(draw, text, font)[1] / 2 - 2), text, font=font, fill="black")
    return image
