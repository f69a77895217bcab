"""summarize.py on results trees built from predictions files: intervals, seeds, the thesis's comparisons."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

import metrics
import summarize
import utils

N = 400
LABELS = np.arange(N) % len(utils.AFFECTNET8)
# Accuracy of each run's predictions: ConvNeXt focal far above CE (the thesis's direction), the 1-block hybrid's
# focal far below its CE (reversed), run 2 = run 1 and run 3 = run 2 up to a handful of images (no evidence).
ACCURACY = {"baseline_resnet50_ce_run1": 0.3, "convnext_tiny_baseline_ce_run1": 0.35,
            "convnext_tiny_baseline_focal_alpha_run1": 0.75, "convnext_tiny_transformer_ce_run1": 0.65,
            "convnext_tiny_transformer_focal_alpha_run1": 0.3}


def predictions(accuracy: float, seed: int) -> np.ndarray:
    """Predictions right with probability `accuracy`, else another class."""
    rng = np.random.default_rng(seed)
    wrong = (LABELS + rng.integers(1, len(utils.AFFECTNET8), N)) % len(utils.AFFECTNET8)
    return np.where(rng.random(N) < accuracy, LABELS, wrong)


def write_run(folder: Path, preds: np.ndarray) -> None:
    """What summarize.py reads of a run folder (or a rescue configuration's report): predictions.csv, summary.json."""
    folder.mkdir(parents=True)
    with open(folder / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "pred"])
        writer.writerows([f"val/{i}.png", int(y), int(p)] for i, (y, p) in enumerate(zip(LABELS, preds)))
    m = metrics.compute_metrics(LABELS, preds, utils.AFFECTNET8)
    (folder / "summary.json").write_text(json.dumps({"accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                                                     "per_class": m["per_class"], "best_epoch": 3,
                                                     "params": 1_000_000}))


def fill_tree(tree: Path, seed: int) -> dict[str, np.ndarray]:
    """Seven runs and a rescue table with a logit-adjusted row; returns every configuration's predictions."""
    preds = {run: predictions(acc, seed * 100 + k) for k, (run, acc) in enumerate(ACCURACY.items())}
    preds["convnext_tiny_transformer_focal_alpha_run2"] = preds["convnext_tiny_transformer_focal_alpha_run1"]
    run3 = preds["convnext_tiny_transformer_focal_alpha_run1"].copy()
    run3[:3] = LABELS[:3]
    preds["convnext_tiny_transformer_focal_alpha_ema_run3"] = run3
    for run, p in preds.items():
        write_run(tree / run, p)
    ensemble = run3.copy()
    ensemble[3:6] = LABELS[3:6]  # 3 more images right than the single checkpoint: the thesis's direction, no evidence
    rescue = {"single checkpoint, no TTA": ("single_no_tta", run3),
              "single checkpoint, h-flip TTA": ("single_hflip", run3),
              "checkpoint ensemble, no TTA": ("ensemble_no_tta", ensemble),
              "checkpoint ensemble + h-flip TTA": ("ensemble_hflip", ensemble),
              "single checkpoint, logit adjustment (tau 1)": ("single_logit_adjusted", predictions(0.6, seed + 2))}
    (tree / "rescue").mkdir()
    with open(tree / "rescue" / "rescue_table.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["configuration", "accuracy", "macro_f1", "report"])
        for name, (folder, p) in rescue.items():
            write_run(tree / "rescue" / folder, p)
            preds[name] = p
            writer.writerow([name, np.mean(p == LABELS), 0.0, folder])
    return preds


def comparisons(results: Path) -> dict[str, dict]:
    with open(results / "summary_comparisons.csv", newline="") as f:
        return {row["comparison"]: row for row in csv.DictReader(f)}


def run_summary(results: Path) -> str:
    summarize.main(summarize.get_args_parser().parse_args(["--results", str(results)]))
    return (results / "summary.md").read_text()


def test_one_seed_intervals_and_verdicts(tmp_path):
    preds = fill_tree(tmp_path, seed=42)
    summary = run_summary(tmp_path)
    assert "7 of 7 experiments finished" in summary

    # Table 3: each cell carries its interval, the same one metrics.json would hold.
    ci = metrics.compute_metrics(LABELS, preds["baseline_resnet50_ce_run1"], utils.AFFECTNET8)["ci95"]
    acc = float(np.mean(preds["baseline_resnet50_ce_run1"] == LABELS))
    assert f"| {acc:.4f} {metrics.fmt_interval(ci['accuracy'])} (0.5326) |" in summary.split("## Table 4")[0]
    assert "±" not in summary.split("## Do the")[0]  # one seed: no spread

    rows = comparisons(tmp_path)
    verdicts = {name.split(" (ours")[0]: row["verdict"] for name, row in rows.items()}
    assert verdicts == {
        "ConvNeXt-Tiny: focal + alpha vs cross-entropy": "holds",
        "Hybrid 1 block: focal + alpha vs cross-entropy": "reversed",
        "Hybrid, focal + alpha: 2 blocks vs 1 block": "not significant",  # identical predictions
        "Hybrid 2 blocks: EMA run (run 3) vs run 2": "not significant (same direction)",
        "Best CNN-only vs best hybrid": "holds",
        "Rescue: single checkpoint, h-flip TTA vs single checkpoint, no TTA": "not significant",
        "Rescue: checkpoint ensemble, no TTA vs single checkpoint, no TTA": "not significant (same direction)",
        "Rescue: checkpoint ensemble + h-flip TTA vs single checkpoint, no TTA": "not significant (same direction)",
        "Rescue: single checkpoint, logit adjustment (tau 1) vs single checkpoint, no TTA": "significant",
    }
    best = next(name for name in rows if name.startswith("Best CNN-only"))
    assert "ours: convnext_tiny_baseline_focal_alpha_run1 vs convnext_tiny_transformer_ce_run1" in best
    assert float(rows[best]["thesis_macro_f1_diff"]) == pytest.approx(0.5772 - 0.5708)

    # The table's numbers are evaluate.py --compare's on the same two files.
    row = rows["Hybrid 1 block: focal + alpha vs cross-entropy"]
    direct = metrics.compare(LABELS, preds["convnext_tiny_transformer_focal_alpha_run1"],
                             preds["convnext_tiny_transformer_ce_run1"], len(utils.AFFECTNET8))
    assert float(row["macro_f1_diff"]) == pytest.approx(direct["macro_f1_diff"])
    assert float(row["macro_f1_p"]) == pytest.approx(direct["macro_f1_p"])
    assert [float(v) for v in row["macro_f1_diff_ci95"].split(";")] == pytest.approx(direct["macro_f1_diff_ci95"],
                                                                                     abs=1e-5)
    lo, hi = direct["macro_f1_diff_ci95"]
    assert f"{direct['macro_f1_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]" in summary.split("## Table 6")[0]  # Table 5's gain
    assert "## Do the thesis's comparisons hold here?" in summary and "## Per-seed results" not in summary


def test_pictures_are_shown_in_the_page_once_they_exist(tmp_path):
    fill_tree(tmp_path, seed=42)
    summary = run_summary(tmp_path)
    assert ": not drawn yet._" in summary.split("## Training curves")[1] and "![" not in summary
    for run_id in ACCURACY:
        (tmp_path / run_id / "curves.png").write_bytes(b"png")
        (tmp_path / run_id / "confusion_matrix_normalized.png").write_bytes(b"png")
    (tmp_path / "benchmark").mkdir()
    (tmp_path / "benchmark" / "tradeoff.png").write_bytes(b"png")
    summary = run_summary(tmp_path)
    assert "![benchmark](benchmark/tradeoff.png)" in summary.split("## Table 7")[1].split("##")[0]
    # Table 8's best CNN-only and best hybrid (by macro-F1): their row-normalised matrices, in the page.
    table8 = summary.split("## Table 8")[1].split("##")[0]
    assert ("![convnext_tiny_baseline_focal_alpha_run1](convnext_tiny_baseline_focal_alpha_run1/"
            "confusion_matrix_normalized.png)") in table8
    assert "![convnext_tiny_transformer_ce_run1](convnext_tiny_transformer_ce_run1/" in table8
    curves = summary.split("## Training curves")[1].split("##")[0]
    assert [line for line in curves.splitlines() if line.startswith("![")] == [
        f"![{run_id}]({run_id}/curves.png)" for run_id in summarize.RUN_IDS if run_id in ACCURACY]  # table order


def test_several_seeds_show_mean_std_and_per_seed_values(tmp_path):
    preds = {seed: fill_tree(tmp_path / f"seed{seed}", seed) for seed in (42, 43)}
    (tmp_path / "seed44").mkdir()  # an empty seed folder: that seed has not run yet
    summary = run_summary(tmp_path)
    assert "0 of 7 experiments finished on each of the 3 seeds" in summary  # seed 44 has nothing yet

    run = "convnext_tiny_baseline_focal_alpha_run1"
    f1 = [metrics.compute_metrics(LABELS, preds[s][run], utils.AFFECTNET8)["macro_f1"] for s in (42, 43)]
    mean, std = np.mean(f1), np.std(f1, ddof=1)
    table7 = summary.split("## Table 7")[1].split("## Table 8")[0]
    assert f"{mean:.4f} ± {std:.4f} [" in table7
    per_seed = summary.split("## Per-seed results")[1]
    assert f"| {run} | " in per_seed and f"{f1[0]:.4f}" in per_seed and f"{f1[1]:.4f}" in per_seed
    assert "Seed 44" in per_seed

    rows = comparisons(tmp_path)
    row = rows["ConvNeXt-Tiny: focal + alpha vs cross-entropy"]
    assert row["seeds"] == "2" and len(row["mcnemar_p_per_seed"].split(";")) == 2 and row["verdict"] == "holds"
    diffs = [metrics.compute_metrics(LABELS, preds[s][run], utils.AFFECTNET8)["macro_f1"]
             - metrics.compute_metrics(LABELS, preds[s]["convnext_tiny_baseline_ce_run1"], utils.AFFECTNET8)["macro_f1"]
             for s in (42, 43)]
    assert float(row["macro_f1_diff"]) == pytest.approx(np.mean(diffs))  # the seed-averaged difference
    with open(tmp_path / "summary_runs.csv", newline="") as f:
        runs = {r["experiment"]: r for r in csv.DictReader(f)}
    assert runs[run]["seeds"] == "42;43" and float(runs[run]["macro_f1_std"]) == pytest.approx(std)


def test_mismatched_seed_files_are_refused(tmp_path):
    fill_tree(tmp_path / "seed42", 42)
    fill_tree(tmp_path / "seed43", 43)
    path = tmp_path / "seed43" / "baseline_resnet50_ce_run1" / "predictions.csv"
    path.write_text(path.read_text().replace("val/0.png", "val/other.png"))
    with pytest.raises(utils.UserError, match="do not hold the same images") as err:
        run_summary(tmp_path)
    assert "\n" not in str(err.value)
