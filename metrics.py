"""Validation metrics and their report files (JSON, CSV, heatmap PNGs), and the thesis's reference numbers.

compute_metrics() is the one place metrics are computed (train.py, evaluate.py, ensemble_tta.py, predict.py).
"""
import csv
import json
import os
from typing import Sequence

import numpy as np

import data
import plots

# --- Thesis reference numbers, shown beside ours by ensemble_tta.py, summarize.py and benchmark.py ---

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
# Tables 9 and 10 (per-class F1 in AffectNet-8 order, data.AFFECTNET8): best CNN-only and best hybrid single model.
THESIS_PER_CLASS_F1 = {
    "cnn": (0.5131, 0.6795, 0.6176, 0.5508, 0.6173, 0.6093, 0.5843, 0.4460),
    "hybrid": (0.5149, 0.6894, 0.6325, 0.5668, 0.6438, 0.5608, 0.5726, 0.3852),
}


# --- Metrics ---

def compute_metrics(labels: Sequence[int], preds: Sequence[int], class_names: Sequence[str]) -> dict:
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
        image = plots.draw_confusion_matrix(matrix, class_names, heading, subtitle, normalized)
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
    """Paths, labels, preds and class names (from prob_<class> columns, else AffectNet-8's) of a predictions CSV."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in ("path", "label", "pred") if c not in header]
            if missing:
                raise data.UserError(f"{path}: missing column(s) {', '.join(missing)} (need path,label,pred)")
            names = tuple(c[len("prob_"):] for c in header if c.startswith("prob_")) or data.AFFECTNET8
            paths, labels, preds = [], [], []
            for row in reader:
                for column, values in (("label", labels), ("pred", preds)):
                    value = (row[column] or "").strip()
                    try:
                        index = int(value)
                    except ValueError:
                        index = -1
                    if not 0 <= index < len(names):
                        raise data.UserError(f"{path} line {reader.line_num}: {column} {value!r} is not a class index "
                                             f"0..{len(names) - 1}")
                    values.append(index)
                paths.append(row["path"])
    except FileNotFoundError:
        raise data.UserError(f"{path}: no such predictions file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise data.UserError(f"{path}: cannot read as CSV ({err})") from None
    if not labels:
        raise data.UserError(f"{path}: no predictions (empty file)")
    return paths, labels, preds, names
