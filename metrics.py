"""Validation metrics, their statistics, reading predictions files, and the thesis's numbers.

compute_metrics() is the one place metrics are computed (train.py, evaluate.py, ensemble_tta.py, predict.py);
bootstrap() is the one resampling engine behind every confidence interval and paired test (evaluate.py,
summarize.py).
"""
import csv
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

import utils

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
# Tables 9 and 10 (per-class F1 in AffectNet-8 order, utils.AFFECTNET8): best CNN-only and best hybrid single model.
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
        "ci95": ci95(bootstrap(labels, [preds], len(class_names))[0], class_names),
    }


# --- Statistics: bootstrap intervals and paired tests ---

# Fixed, so a report's intervals are the same on every run and a file compared with itself gives exactly the
# intervals of its own report. 2,000 percentile-bootstrap resamples cost ~0.1 s per prediction vector of 4,000
# images and put the interval's ends within a few thousandths of their limit.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
_CHUNK_ELEMENTS = 1 << 24  # resample-index matrix elements drawn at once (64 MiB of int32)


@dataclass
class Resampled:
    """One system's accuracy, macro-F1 and per-class F1 (arrays [C]): point values, per seed, and R replicates."""
    point: dict[str, np.ndarray]  # the mean over seeds
    per_seed: dict[str, np.ndarray]  # [S] or [S, C]
    replicates: dict[str, np.ndarray]  # [R] or [R, C]


def confusion_scores(confusions: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, macro-F1 and per-class F1 ([..., C]) of confusion counts [..., C, C] (rows = true class)."""
    tp = np.diagonal(confusions, axis1=-2, axis2=-1).astype(np.float64)
    # F1 = 2 TP / (support + predicted count): 0 where the class is neither present nor predicted, as sklearn's
    # zero_division=0 in compute_metrics.
    both = confusions.sum(axis=-1) + confusions.sum(axis=-2)
    f1 = np.divide(2 * tp, both, out=np.zeros(both.shape), where=both > 0)
    return {"accuracy": tp.sum(axis=-1) / confusions.sum(axis=(-2, -1)), "macro_f1": f1.mean(axis=-1), "f1": f1}


def bootstrap_confusions(labels: np.ndarray, preds: np.ndarray, num_classes: int,
                         resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Confusion counts [K, R, C, C] of each prediction row preds[k] ([K, N]) under R image resamples shared by all."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64).reshape(-1, labels.size)
    n, cells = labels.size, num_classes * num_classes
    if n == 0:
        raise ValueError("no images to resample")
    dtype = np.int32 if resamples * cells < 2 ** 31 and n < 2 ** 31 else np.int64  # int32 halves the memory traffic
    codes = (labels * num_classes + preds).astype(dtype)  # one confusion cell per image
    counts = np.empty((preds.shape[0], resamples, cells), dtype=np.int64)
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // n)  # depends on n only, so the same n always draws the same indices
    for start in range(0, resamples, rows):  # chunks of resamples bound the memory; each chunk is one matrix
        stop = min(start + rows, resamples)
        index = rng.integers(0, n, size=(stop - start, n), dtype=dtype)
        offset = (np.arange(stop - start, dtype=dtype) * cells)[:, None]
        for k, code in enumerate(codes):
            cell = code[index]
            cell += offset  # resample r's cells land in bins r*C*C ... so one bincount counts all of them
            counts[k, start:stop] = np.bincount(cell.ravel(), minlength=(stop - start) * cells).reshape(-1, cells)
    return counts.reshape(preds.shape[0], resamples, num_classes, num_classes)


def bootstrap(labels: Sequence[int], systems: Sequence[Sequence], num_classes: int,
              resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> list[Resampled]:
    """Point values and bootstrap replicates of each system's scores, all systems resampled with the same draws.

    A system is one configuration's predictions, [N] or [S, N] for S training seeds (seed s of every system
    paired with seed s of the others). A system's value is the mean over its seeds. A replicate draws N images
    with replacement and, with S > 1, also S seeds with replacement, and averages over the drawn seeds: a
    two-level bootstrap, so seed-to-seed spread widens the intervals as image sampling does. Using the same
    draws for every system is what makes differences between them paired.
    """
    stacked = [np.atleast_2d(np.asarray(p, dtype=np.int64)) for p in systems]
    seeds = stacked[0].shape[0]
    if any(p.shape[0] != seeds for p in stacked):
        raise ValueError("every system needs predictions of the same number of seeds")
    labels = np.asarray(labels, dtype=np.int64)
    flat = np.concatenate(stacked)
    replicates = confusion_scores(bootstrap_confusions(labels, flat, num_classes, resamples, seed))  # [K*S, R, ...]
    codes = labels * num_classes + flat
    points = np.stack([np.bincount(c, minlength=num_classes ** 2) for c in codes])
    per_seed = confusion_scores(points.reshape(-1, num_classes, num_classes))  # [K*S, ...]
    # Its own generator: the image draws then do not depend on the number of seeds.
    draws = np.random.default_rng([seed, 1]).integers(0, seeds, size=(resamples, seeds)) if seeds > 1 else None
    parts = (slice(k * seeds, (k + 1) * seeds) for k in range(len(stacked)))
    return [Resampled(point={key: v[part].mean(axis=0) for key, v in per_seed.items()},
                      per_seed={key: v[part] for key, v in per_seed.items()},
                      replicates={key: _seed_mean(v[part], draws) for key, v in replicates.items()})
            for part in parts]


def _seed_mean(values: np.ndarray, draws: np.ndarray | None) -> np.ndarray:
    """Per replicate r, the mean of values[s, r] over the seeds s drawn for r ([S, R, ...] -> [R, ...])."""
    by_replicate = np.moveaxis(values, 0, 1)  # [R, S, ...]
    if draws is None:
        return by_replicate.mean(axis=1)
    index = draws.reshape(draws.shape + (1,) * (by_replicate.ndim - 2))
    return np.take_along_axis(by_replicate, index, axis=1).mean(axis=1)


def interval(replicates: np.ndarray) -> list:
    """The 95 % percentile interval [lo, hi] of bootstrap replicates (along the first axis)."""
    lo, hi = np.percentile(replicates, [2.5, 97.5], axis=0)
    return [lo.tolist(), hi.tolist()]


def ci95(result: Resampled, class_names: Sequence[str]) -> dict:
    """The metrics.json "ci95" entry: [lo, hi] of accuracy, macro-F1 and each class's F1."""
    lo, hi = interval(result.replicates["f1"])
    return {"accuracy": interval(result.replicates["accuracy"]), "macro_f1": interval(result.replicates["macro_f1"]),
            "per_class_f1": {name: [lo[k], hi[k]] for k, name in enumerate(class_names)}}


def bootstrap_p(observed: float, replicates: np.ndarray) -> float:
    """Two-sided p-value of a difference from its paired-bootstrap replicates (centred bootstrap, +1 smoothed).

    Under "no difference" the replicates' spread about the observed difference stands for the observed
    difference's spread about 0, so p is the share of replicates at least |observed| away from observed,
    counting the observed one itself: (1 + #{|d* - d| >= |d|}) / (R + 1). Identical predictions give exactly 1;
    the smallest possible value is 1 / (R + 1).
    """
    far = np.count_nonzero(np.abs(replicates - observed) >= abs(observed))
    return float((1 + far) / (len(replicates) + 1))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p (b, c = images only A / only B gets right): 2 x binomial(b + c, 1/2) tail, max 1."""
    n = b + c
    # Exact integers, so no underflow or rounding until the final division.
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def compare(labels: Sequence[int], preds_a: Sequence, preds_b: Sequence, num_classes: int) -> dict:
    """Paired comparison of A and B on the same images ([N] or [S, N] with seeds paired): differences are A - B.

    Accuracy and macro-F1 differences with their 95 % paired-bootstrap interval and two-sided p (bootstrap_p),
    and McNemar's exact test on accuracy (per seed: it tests one pair of prediction vectors).
    """
    a, b = bootstrap(labels, [preds_a, preds_b], num_classes)
    labels = np.asarray(labels, dtype=np.int64)
    right_a, right_b = (np.atleast_2d(np.asarray(p, dtype=np.int64)) == labels for p in (preds_a, preds_b))
    mcnemar = [mcnemar_exact(int(np.sum(ra & ~rb)), int(np.sum(~ra & rb))) for ra, rb in zip(right_a, right_b)]
    out: dict = {"n": int(labels.size)}
    for key in ("accuracy", "macro_f1"):
        diff = float(a.point[key] - b.point[key])
        replicates = a.replicates[key] - b.replicates[key]
        out |= {f"{key}_diff": diff, f"{key}_diff_ci95": interval(replicates),
                f"{key}_p": bootstrap_p(diff, replicates)}
        if key == "accuracy":
            out["mcnemar_p"] = mcnemar[0] if len(mcnemar) == 1 else None
    out |= {"accuracy_a": float(a.point["accuracy"]), "accuracy_b": float(b.point["accuracy"]),
            "macro_f1_a": float(a.point["macro_f1"]), "macro_f1_b": float(b.point["macro_f1"]),
            "seeds": len(mcnemar), "mcnemar_p_per_seed": mcnemar,
            "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED}}
    return out


def format_comparison(result: dict, name_a: str, name_b: str) -> str:
    """The printed form of compare()'s result."""
    seeds = f", {result['seeds']} seeds (mean over seeds)" if result["seeds"] > 1 else ""
    lines = [f"A: {name_a}", f"B: {name_b}", f"{result['n']} images, matched by path{seeds}; differences are A - B"]
    for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
        lo, hi = result[f"{key}_diff_ci95"]
        line = (f"{label:<9} A {result[f'{key}_a']:.4f}  B {result[f'{key}_b']:.4f}  A - B {result[f'{key}_diff']:+.4f}"
                f"  95% CI [{lo:+.4f}, {hi:+.4f}]  p = {result[f'{key}_p']:.4g}")
        if key == "accuracy":
            line += "  McNemar p = " + " / ".join(f"{p:.4g}" for p in result["mcnemar_p_per_seed"])
        lines.append(line)
    return "\n".join(lines)


def format_table(metrics: dict) -> str:
    """Per-class table in the layout of thesis Tables 9 and 10 (plus F1's 95 % interval), then accuracy and macro-F1."""
    width = max(len("Class"), *(len(n) for n in metrics["per_class"]))
    ci = metrics.get("ci95")
    lines = [f"{'Class':<{width}}  {'Precision':>9}  {'Recall':>9}  {'F1-score':>9}  {'Support':>7}"
             + ("  F1 95% CI" if ci else "")]
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:<{width}}  {m['precision']:>9.4f}  {m['recall']:>9.4f}  {m['f1']:>9.4f}  "
                     f"{m['support']:>7d}" + (f"  {fmt_interval(ci['per_class_f1'][name])}" if ci else ""))
    for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
        lines.append(f"Validation {label}: {metrics[key]:.4f}" + (f"  95% CI {fmt_interval(ci[key])}" if ci else ""))
    return "\n".join(lines)


def fmt_interval(bounds: Sequence[float], digits: int = 4) -> str:
    """[lo, hi] as text."""
    return f"[{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


# --- Predictions files ---

def read_predictions(path: str) -> tuple[list[str], list[int], list[int], tuple[str, ...]]:
    """Paths, labels, preds and class names (from prob_<class> columns, else AffectNet-8's) of a predictions CSV."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in ("path", "label", "pred") if c not in header]
            if missing:
                raise utils.UserError(f"{path}: missing column(s) {', '.join(missing)} (need path,label,pred)")
            names = tuple(c[len("prob_"):] for c in header if c.startswith("prob_")) or utils.AFFECTNET8
            paths, labels, preds = [], [], []
            for row in reader:
                for column, values in (("label", labels), ("pred", preds)):
                    value = (row[column] or "").strip()
                    try:
                        index = int(value)
                    except ValueError:
                        index = -1
                    if not 0 <= index < len(names):
                        raise utils.UserError(f"{path} line {reader.line_num}: {column} {value!r} is not a class index "
                                              f"0..{len(names) - 1}")
                    values.append(index)
                paths.append(row["path"])
    except FileNotFoundError:
        raise utils.UserError(f"{path}: no such predictions file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise utils.UserError(f"{path}: cannot read as CSV ({err})") from None
    if not labels:
        raise utils.UserError(f"{path}: no predictions (empty file)")
    return paths, labels, preds, names


def align_predictions(files: Sequence[str]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Labels [N], predictions [K, N] and class names of predictions files on the same images, matched by path.

    Rows follow the first file's order. Different image sets, labels or class lists are a UserError naming the
    first mismatches.
    """
    first_paths, labels, first_preds, classes = read_predictions(files[0])
    position = _positions(files[0], first_paths)
    preds = [np.asarray(first_preds, dtype=np.int64)]
    for file in files[1:]:
        paths, other_labels, other_preds, other_classes = read_predictions(file)
        if other_classes != classes:
            raise utils.UserError(f"{file}: classes {','.join(other_classes)} differ from {files[0]}'s "
                                  f"{','.join(classes)}")
        where = _positions(file, paths)
        only_first, only_other = [p for p in first_paths if p not in where], [p for p in paths if p not in position]
        if only_first or only_other:
            raise utils.UserError(f"{files[0]} and {file} do not hold the same images: {len(only_first)} only in the "
                                  f"first{_examples(only_first)}, {len(only_other)} only in the second"
                                  f"{_examples(only_other)}")
        order = [where[p] for p in first_paths]
        wrong = [(p, labels[i], other_labels[order[i]]) for i, p in enumerate(first_paths)
                 if other_labels[order[i]] != labels[i]]
        if wrong:
            shown = ", ".join(f"{p}: {a} vs {b}" for p, a, b in wrong[:3])
            raise utils.UserError(f"{files[0]} and {file} disagree on the label of {len(wrong)} image(s) "
                                  f"(first: {shown})")
        preds.append(np.asarray(other_preds, dtype=np.int64)[order])
    return np.asarray(labels, dtype=np.int64), np.stack(preds), classes


def _positions(file: str, paths: list[str]) -> dict[str, int]:
    """Row index of each image path; an image listed twice cannot be paired and is a UserError."""
    position: dict[str, int] = {}
    for i, path in enumerate(paths):
        if path in position:
            # +2: line 1 is the header.
            raise utils.UserError(f"{file} line {i + 2}: image {path} already listed on line {position[path] + 2}")
        position[path] = i
    return position


def _examples(paths: list[str], limit: int = 3) -> str:
    """' (first: a, b, c)' for a non-empty list."""
    return f" (first: {', '.join(paths[:limit])})" if paths else ""
