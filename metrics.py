"""Validation metrics, their report files (JSON, CSV, Pillow heatmaps) and the evaluation pipeline.

compute_metrics() is the one place metrics are computed (train.py, evaluate.py, ensemble_tta.py all call it).
The last section holds what evaluate.py and ensemble_tta.py share: loading checkpoints, their validation
logits, and writing a report with predictions.csv.
"""
import argparse
import csv
import json
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

import data
import models

# --- Thesis reference numbers (SPEC.md), shown beside ours by ensemble_tta.py and summarize.py ---

# experiment id -> (model, accuracy, macro-F1, params M, latency ms, FPS)   (Tables 3, 4, 7)
THESIS_RUNS = {
    "baseline_resnet50_ce_run1": ("ResNet50, cross-entropy", 0.5326, 0.5026, 23.524, 3.4479, 290.03),
    "convnext_tiny_baseline_ce_run1": ("ConvNeXt-Tiny, cross-entropy", 0.5259, 0.5048, 27.826, 4.0567, 246.51),
    "convnext_tiny_transformer_ce_run1": ("Hybrid 1 block, cross-entropy", 0.5239, 0.5009, 28.546, 4.5061, 221.92),
    "convnext_tiny_transformer_focal_alpha_run1": ("Hybrid 1 block, focal + alpha", 0.5706, 0.5634, 28.546, 4.5224,
                                                   221.12),
    "convnext_tiny_baseline_focal_alpha_run1": ("ConvNeXt-Tiny, focal + alpha", 0.5829, 0.5772, 27.826, 3.9226, 254.94),
    "convnext_tiny_transformer_focal_alpha_run2": ("Hybrid 2 blocks, focal + alpha", 0.5761, 0.5681, 29.073, 4.8656,
                                                   205.53),
    "convnext_tiny_transformer_focal_alpha_ema_run3": ("Hybrid 2 blocks, focal + alpha, EMA, warmup, clip", 0.5799,
                                                       0.5708, 29.073, 4.6650, 214.36),
}
# Table 6; keys are the configuration names ensemble_tta.py writes to rescue_table.csv.
THESIS_RESCUE = {
    "single checkpoint, no TTA": (0.5796, 0.5704),
    "single checkpoint, h-flip TTA": (0.5776, 0.5677),
    "checkpoint ensemble, no TTA": (0.5799, 0.5714),
    "checkpoint ensemble + h-flip TTA": (0.5821, 0.5741),
}
# Tables 9 and 10 (per-class F1 in data.CLASSES order): best CNN-only and best hybrid single model.
THESIS_PER_CLASS_F1 = {
    "cnn": (0.5131, 0.6795, 0.6176, 0.5508, 0.6173, 0.6093, 0.5843, 0.4460),
    "hybrid": (0.5149, 0.6894, 0.6325, 0.5668, 0.6438, 0.5608, 0.5726, 0.3852),
}


# --- Metrics ---

def compute_metrics(labels: Sequence[int], preds: Sequence[int],
                    class_names: Sequence[str] = data.CLASSES) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and raw + row-normalised confusion matrices."""
    # Imported here: scikit-learn pulls in SciPy (seconds), which callers that never score (summarize.py's
    # constants, a CLI stopping at bad input) should not pay for.
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    idx = list(range(len(class_names)))  # absent classes still get a row, a column and an F1 of 0
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=idx, zero_division=0)
    cm = confusion_matrix(labels, preds, labels=idx)
    rows = cm.sum(axis=1, keepdims=True)
    cm_norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(np.mean(f1)),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(class_names)},
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": cm_norm.tolist(),
    }


def format_table(metrics: dict) -> str:
    """Per-class table in the layout of thesis Tables 9 and 10, then the accuracy and macro-F1 lines."""
    names = list(metrics["per_class"])
    width = max(len("Class"), *(len(n) for n in names))
    lines = [f"{'Class':<{width}}  {'Precision':>9}  {'Recall':>9}  {'F1-score':>9}  {'Support':>7}"]
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:<{width}}  {m['precision']:>9.4f}  {m['recall']:>9.4f}  {m['f1']:>9.4f}  "
                     f"{m['support']:>7d}")
    lines += [f"Validation accuracy: {metrics['accuracy']:.4f}", f"Validation macro-F1: {metrics['macro_f1']:.4f}"]
    return "\n".join(lines)


# --- Report files ---

def write_report(out_dir: str, metrics: dict, class_names: Sequence[str], predictions: tuple | None = None,
                 title: str = "") -> None:
    """Write metrics.json, per_class.csv, both confusion matrices as CSV and PNG, and predictions.csv if given."""
    out = os.fspath(out_dir)
    with data.atomic_write(os.path.join(out, "metrics.json")) as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    with data.atomic_write(os.path.join(out, "per_class.csv")) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        for name, m in metrics["per_class"].items():
            writer.writerow([name, f"{m['precision']:.6f}", f"{m['recall']:.6f}", f"{m['f1']:.6f}", m["support"]])
    for key, suffix in (("confusion_matrix", ""), ("confusion_matrix_normalized", "_normalized")):
        matrix = np.asarray(metrics[key], dtype=np.float64)
        normalized = bool(suffix)
        with data.atomic_write(os.path.join(out, f"confusion_matrix{suffix}.csv")) as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["true\\predicted", *class_names])
            for name, row in zip(class_names, matrix):
                writer.writerow([name, *(f"{v:.6f}" if normalized else int(v) for v in row)])
        heading = f"{title or 'Confusion matrix'}{' (row-normalised)' if normalized else ''}"
        subtitle = (f"accuracy {metrics['accuracy']:.4f}    macro-F1 {metrics['macro_f1']:.4f}    "
                    f"n = {int(np.sum(metrics['confusion_matrix']))}")
        image = draw_confusion_matrix(matrix, class_names, heading, subtitle, normalized)
        with data.atomic_write(os.path.join(out, f"confusion_matrix{suffix}.png"), "wb") as f:
            image.save(f, format="PNG")
    if predictions is not None:
        paths, labels, preds, probs = predictions
        with data.atomic_write(os.path.join(out, "predictions.csv")) as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["path", "label", "pred", *(f"prob_{name}" for name in class_names)])
            for path, label, pred, prob in zip(paths, labels, preds, np.asarray(probs)):
                writer.writerow([path, int(label), int(pred), *(f"{p:.6f}" for p in prob)])


def read_predictions(path: str) -> tuple[list[str], list[int], list[int], tuple[str, ...]]:
    """Paths, labels, preds and class names (from prob_<class> columns, else data.CLASSES) of a predictions CSV."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in ("path", "label", "pred") if c not in header]
            if missing:
                raise data.DataError(f"{path}: missing column(s) {', '.join(missing)} (need path,label,pred)")
            names = tuple(c[len("prob_"):] for c in header if c.startswith("prob_")) or data.CLASSES
            paths, labels, preds = [], [], []
            for row in reader:
                for column, values in (("label", labels), ("pred", preds)):
                    value = (row[column] or "").strip()
                    try:
                        index = int(value)
                    except ValueError:
                        index = -1
                    if not 0 <= index < len(names):
                        raise data.DataError(f"{path} line {reader.line_num}: {column} {value!r} is not a class index "
                                             f"0..{len(names) - 1}")
                    values.append(index)
                paths.append(row["path"])
    except FileNotFoundError:
        raise data.DataError(f"{path}: no such predictions file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise data.DataError(f"{path}: cannot read as CSV ({err})") from None
    if not labels:
        raise data.DataError(f"{path}: no predictions (empty file)")
    return paths, labels, preds, names


# --- Confusion-matrix heatmap (Pillow only) ---

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


def _font(size: int) -> ImageFont.ImageFont:
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
    title_font, label_font, cell_font, tick_font = _font(20), _font(16), _font(18), _font(15)
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


# --- Evaluation pipeline shared by evaluate.py and ensemble_tta.py ---

def add_eval_args(parser: argparse.ArgumentParser, require_val: bool) -> None:
    """The validation-set and inference flags common to evaluate.py and ensemble_tta.py."""
    parser.add_argument("--val-csv", required=require_val, help="validation index CSV (path,label[,face box])")
    parser.add_argument("--data-root", default=None, help="folder relative image paths start from (default: the CSV's)")
    parser.add_argument("--tta", choices=("none", "hflip"), default="none",
                        help="hflip: average the logits of each image and its mirror")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="data-loading processes")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                        help="float16 autocast on CUDA (default: on)")
    parser.add_argument("--out", required=True, help="folder for the report files")


@dataclass
class ValLogits:
    """Validation logits of one or more checkpoints on one validation set, one tensor [N, C] per checkpoint."""
    plain: list[torch.Tensor]
    flipped: list[torch.Tensor] | None  # mirrored view, only when computed
    labels: torch.Tensor
    samples: list[data.Sample]
    classes: list[str]
    names: list[str]  # experiment name of each checkpoint

    def average(self, count: int | None = None, hflip: bool = False) -> torch.Tensor:
        """Mean logits of the first `count` checkpoints (all when None), over both views when hflip."""
        count = len(self.plain) if count is None else count
        if not hflip:
            return torch.stack(self.plain[:count]).mean(dim=0)
        if self.flipped is None:
            raise ValueError("mirrored logits were not computed (pass hflip=True to infer_checkpoints)")
        # Views first, then checkpoints: a checkpoint ensembled with itself then gives exactly its own logits.
        views = [torch.stack([p, f]).mean(dim=0) for p, f in zip(self.plain[:count], self.flipped[:count])]
        return torch.stack(views).mean(dim=0)

    def title(self, count: int | None = None, hflip: bool = False) -> str:
        """Report title naming the checkpoints and the TTA."""
        names = self.names[:len(self.plain) if count is None else count]
        prefix = f"ensemble of {len(names)}: " if len(names) > 1 else ""
        return f"{prefix}{' + '.join(names)}, {'h-flip' if hflip else 'no'} TTA"


def _classes_and_size(arch: dict) -> tuple[list[str], int]:
    """A checkpoint's class list and input size (the thesis's when the arch predates those keys)."""
    return list(arch.get("classes", data.CLASSES)), int(arch.get("img_size", 224))


def infer_checkpoints(ckpts: Sequence[str], val_csv: str, data_root: str | None = None, batch_size: int = 128,
                      workers: int = 0, device: str = "auto", amp: bool = True, hflip: bool = False) -> ValLogits:
    """Validation logits of checkpoints that share classes and image size: one pass per checkpoint (both views)."""
    samples = data.read_index(val_csv, data_root)
    dev = models.resolve_device(device)
    loaded = [(path, *models.load_model(path, dev)) for path in ckpts]  # all first: a mismatch fails before inference
    classes, size = _classes_and_size(loaded[0][2]["arch"])
    for path, _, meta in loaded[1:]:
        other_classes, other_size = _classes_and_size(meta["arch"])
        if other_classes != classes:
            raise data.DataError(f"{path}: classes {','.join(other_classes)} differ from {ckpts[0]}'s "
                                 f"{','.join(classes)}; ensembled checkpoints need the same class list")
        if other_size != size:
            raise data.DataError(f"{path}: image size {other_size} px differs from {ckpts[0]}'s {size} px; "
                                 "ensembled checkpoints need the same image size")
    loader = data.make_loader(data.FaceDataset(samples, img_size=size, train=False), batch_size=batch_size,
                              workers=workers)
    plain, flipped, labels = [], [], None
    for path, model, _ in loaded:
        logits, mirrored, labels = models.predict_views(model, loader, dev, amp=amp, hflip=hflip,
                                                        progress=os.path.basename(path))
        plain.append(logits)
        flipped.append(mirrored)
    names = [meta.get("experiment") or os.path.splitext(os.path.basename(path))[0] for path, _, meta in loaded]
    return ValLogits(plain, flipped if hflip else None, labels, samples, classes, names)


def report_logits(out_dir: str, logits: torch.Tensor, val: ValLogits, title: str) -> dict:
    """Score logits against the validation labels, write the full report with predictions.csv, return the metrics."""
    preds = logits.argmax(dim=1)
    probs = torch.softmax(logits.float(), dim=1).numpy()
    metrics = compute_metrics(val.labels.tolist(), preds.tolist(), val.classes)
    paths = [s.path for s in val.samples]
    write_report(out_dir, metrics, val.classes, predictions=(paths, val.labels.tolist(), preds.tolist(), probs),
                 title=title)
    return metrics
