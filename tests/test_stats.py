"""Statistics (issue 15): bootstrap intervals, paired comparisons, McNemar, seeds, logit adjustment."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import data
import ensemble_tta
import evaluate
import metrics
import models
import utils
from conftest import ROOT

# Thesis Table 9 (best CNN-only model, 3,999 balanced validation images): precision, recall, support per class.
TABLE9 = ((0.4173, 0.6660, 500), (0.5526, 0.8820, 500), (0.5985, 0.6380, 500), (0.6072, 0.5040, 500),
          (0.7315, 0.5340, 500), (0.6798, 0.5520, 500), (0.5971, 0.5720, 500), (0.7659, 0.3146, 499))


def noisy(n: int, accuracy: float, seed: int, classes: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels and predictions that are right with probability `accuracy`, else a random class."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    wrong = (labels + rng.integers(1, classes, n)) % classes
    return labels, np.where(rng.random(n) < accuracy, labels, wrong)


def write_predictions(path: Path, labels, preds, order=None) -> Path:
    """A predictions.csv (path,label,pred) with image i named img_i.png, rows in `order` (default: as given)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "pred"])
        for i in (range(len(labels)) if order is None else order):
            writer.writerow([f"img_{i}.png", int(labels[i]), int(preds[i])])
    return path


def compare_files(a: Path, b: Path, out: Path) -> dict:
    """evaluate.py --predictions A --compare B --out OUT in-process; comparison.json."""
    evaluate.main(evaluate.get_args_parser().parse_args(["--predictions", str(a), "--compare", str(b),
                                                         "--out", str(out)]))
    return json.loads((out / "comparison.json").read_text())


def one_line_error(*args: str) -> str:
    """Run evaluate.py; assert it failed with one `error:` line and no traceback; return that line."""
    result = subprocess.run([sys.executable, "evaluate.py", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_interval_contains_the_point_value_and_narrows_as_the_set_grows():
    widths = []
    for n in (200, 800, 3200):
        labels, preds = noisy(n, 0.6, seed=n)
        m = metrics.compute_metrics(labels, preds, utils.AFFECTNET8)
        ci = m["ci95"]
        for key in ("accuracy", "macro_f1"):
            assert ci[key][0] < m[key] < ci[key][1], (n, key)
        for name in utils.AFFECTNET8:
            lo, hi = ci["per_class_f1"][name]
            assert lo < m["per_class"][name]["f1"] < hi, (n, name)
        widths.append([ci[k][1] - ci[k][0] for k in ("accuracy", "macro_f1")])
    widths = np.array(widths)
    assert np.all(widths[1:] < widths[:-1])
    # 4x the images, about half the width (the standard error goes as 1 / sqrt(n)).
    assert np.all((widths[1:] / widths[:-1] > 0.35) & (widths[1:] / widths[:-1] < 0.65))
    # Fixed seed: the same file gets the same interval every time.
    assert metrics.compute_metrics(labels, preds, utils.AFFECTNET8)["ci95"] == ci


def test_bootstrap_resamples_images_and_scores_like_compute_metrics():
    labels, preds = noisy(300, 0.5, seed=1)
    preds[preds == 7] = 6  # contempt never predicted: its F1 is 0, and it still counts in the macro mean
    counts = metrics.bootstrap_confusions(labels, preds[None], 8)
    assert counts.shape == (1, 2000, 8, 8)  # docs/statistics.md: 2,000 resamples
    assert np.all(counts.sum(axis=(2, 3)) == 300)  # each resample draws as many images as the set holds
    observed = np.zeros((8, 8))
    np.add.at(observed, (labels, preds), 1)
    # With replacement and uniform over images: on average a resample's confusion matrix is the observed one.
    assert np.abs(counts[0].mean(axis=0) - observed).max() < 0.5
    assert not np.all(counts[0] == counts[0, :1])  # and the resamples differ

    (result,) = metrics.bootstrap(labels, [preds], 8)
    reference = metrics.compute_metrics(labels, preds, utils.AFFECTNET8)
    assert result.point["accuracy"] == pytest.approx(reference["accuracy"], abs=1e-12)
    assert result.point["macro_f1"] == pytest.approx(reference["macro_f1"], abs=1e-12)
    assert result.point["f1"] == pytest.approx([reference["per_class"][c]["f1"] for c in utils.AFFECTNET8], abs=1e-12)
    assert result.point["f1"][7] == 0


def test_table9_macro_f1_interval():
    """A predictions file with exactly Table 9's per-class precision, recall and support: its macro-F1 interval."""
    tp = [round(recall * support) for _, recall, support in TABLE9]
    predicted = [round(t / precision) for t, (precision, _, _) in zip(tp, TABLE9)]
    need = [support - t for t, (_, _, support) in zip(tp, TABLE9)]  # errors per true class (row)
    room = [p - t for p, t in zip(predicted, tp)]  # wrong predictions per predicted class (column)
    matrix = np.diag(tp)
    while sum(need):  # any zero-diagonal filling of the margins: the interval hardly depends on which
        i = max(range(8), key=lambda k: need[k])
        j = max((k for k in range(8) if k != i), key=lambda k: room[k])
        matrix[i, j] += 1
        need[i] -= 1
        room[j] -= 1
    assert max(room) == 0 and matrix.sum() == 3999
    cells = np.arange(64)
    labels, preds = np.repeat(cells // 8, matrix.ravel()), np.repeat(cells % 8, matrix.ravel())

    m = metrics.compute_metrics(labels, preds, utils.AFFECTNET8)
    for name, (precision, recall, support) in zip(utils.AFFECTNET8, TABLE9):
        got = m["per_class"][name]
        assert (round(got["precision"], 4), round(got["recall"], 4), got["support"]) == (precision, recall, support)
    assert round(m["macro_f1"], 4) == 0.5772 and round(m["accuracy"], 4) == 0.5829  # the thesis's Table 3 values
    lo, hi = m["ci95"]["macro_f1"]
    assert lo == pytest.approx(0.562, abs=0.003) and hi == pytest.approx(0.593, abs=0.003)


def test_identical_files_compare_to_zero_difference_with_p_one(tmp_path):
    labels, preds = noisy(500, 0.55, seed=2)
    a = write_predictions(tmp_path / "a.csv", labels, preds)
    b = write_predictions(tmp_path / "b.csv", labels, preds, order=np.random.default_rng(0).permutation(500))
    result = compare_files(a, b, tmp_path / "out")  # rows in another order: matched by path
    assert result["n"] == 500
    for key in ("accuracy", "macro_f1"):
        assert result[f"{key}_diff"] == 0 and result[f"{key}_diff_ci95"] == [0, 0] and result[f"{key}_p"] == 1
    assert result["mcnemar_p"] == 1


def test_fixing_ten_percent_of_the_errors_is_significant(tmp_path):
    labels, preds_a = noisy(1000, 0.5, seed=3)
    errors = np.flatnonzero(preds_a != labels)
    fixed = np.random.default_rng(1).choice(errors, size=len(errors) // 10, replace=False)
    preds_b = preds_a.copy()
    preds_b[fixed] = labels[fixed]
    a = write_predictions(tmp_path / "a.csv", labels, preds_a)
    b = write_predictions(tmp_path / "b.csv", labels, preds_b)
    result = compare_files(b, a, tmp_path / "out")  # B - A: B is the better one
    assert result["accuracy_diff"] == pytest.approx(len(fixed) / 1000)
    assert result["accuracy_diff_ci95"][0] > 0 and result["macro_f1_diff_ci95"][0] > 0
    assert result["accuracy_p"] < 0.01 and result["macro_f1_p"] < 0.01
    # No resample comes near zero: the smallest p-value there is, 1 / 2,001 (docs/statistics.md).
    assert result["accuracy_p"] == 1 / 2001 and result["bootstrap"] == {"resamples": 2000, "seed": 0}
    assert result["mcnemar_p"] == pytest.approx(2 * 0.5 ** len(fixed))  # b = 0 of n = 50 discordant pairs
    # Swapped sides: the same evidence, the sign flips.
    swapped = compare_files(a, b, tmp_path / "swapped")
    assert swapped["accuracy_diff"] == -result["accuracy_diff"] and swapped["accuracy_diff_ci95"][1] < 0
    # Two fixed errors in 1,000 images are not evidence of anything.
    few = preds_a.copy()
    few[fixed[:2]] = labels[fixed[:2]]
    small = compare_files(write_predictions(tmp_path / "few.csv", labels, few), a, tmp_path / "few")
    assert small["accuracy_p"] > 0.05 and small["mcnemar_p"] == 0.5


def test_mcnemar_against_hand_computation():
    # b = 10 images only A gets right, c = 2 only B gets right: p = 2 * P(X <= 2), X ~ Binomial(12, 1/2)
    #   = 2 * (1 + 12 + 66) / 4096 = 0.0385742...
    assert metrics.mcnemar_exact(10, 2) == pytest.approx(2 * 79 / 4096, abs=1e-15)
    assert metrics.mcnemar_exact(2, 10) == metrics.mcnemar_exact(10, 2)
    assert metrics.mcnemar_exact(5, 5) == 1 and metrics.mcnemar_exact(0, 0) == 1
    assert metrics.mcnemar_exact(3000, 2000) < 1e-40  # exact integers: no overflow at large counts

    # The same case through compare(): 20 images both get right, 10 only A, 2 only B, 8 neither.
    labels = np.zeros(40, dtype=int)
    preds_a = np.array([0] * 20 + [0] * 10 + [1] * 2 + [1] * 8)
    preds_b = np.array([0] * 20 + [1] * 10 + [0] * 2 + [2] * 8)
    assert metrics.compare(labels, preds_a, preds_b, 3)["mcnemar_p"] == pytest.approx(2 * 79 / 4096)


def test_mismatched_images_or_labels_are_refused_in_one_line(tmp_path):
    labels, preds = noisy(20, 0.5, seed=4)
    a = write_predictions(tmp_path / "a.csv", labels, preds)
    b = write_predictions(tmp_path / "b.csv", labels, preds, order=range(1, 20))  # img_0 missing
    line = one_line_error("--predictions", str(a), "--compare", str(b))  # as the user sees it
    assert "a.csv" in line and "b.csv" in line and "1 only in the first (first: img_0.png)" in line
    assert not (tmp_path / "out").exists()

    other = labels.copy()
    other[5] = (other[5] + 1) % 8
    c = write_predictions(tmp_path / "c.csv", other, preds)
    twice = write_predictions(tmp_path / "twice.csv", labels, preds, order=[*range(20), 3])
    for files, message in (((a, c), "disagree on the label of 1 image(s) (first: img_5.png"),
                           ((twice, a), "twice.csv line 22: image img_3.png already listed on line 5")):
        with pytest.raises(utils.UserError) as err:
            metrics.align_predictions([str(f) for f in files])
        assert message in str(err.value) and "\n" not in str(err.value)


def test_seed_averaged_comparison_resamples_seeds_too():
    labels, a1 = noisy(2000, 0.5, seed=5)
    _, b1 = noisy(2000, 0.4, seed=6)
    single = metrics.compare(labels, a1, b1, 8)
    assert single["macro_f1_p"] < 0.01 and single["seeds"] == 1
    # Two identical seeds add no spread: exactly the single-seed result.
    twice = metrics.compare(labels, np.stack([a1, a1]), np.stack([b1, b1]), 8)
    for key in ("accuracy_diff", "accuracy_diff_ci95", "accuracy_p", "macro_f1_diff", "macro_f1_diff_ci95",
                "macro_f1_p"):
        assert twice[key] == pytest.approx(single[key], abs=1e-12), key
    assert twice["mcnemar_p"] is None and twice["mcnemar_p_per_seed"] == [single["mcnemar_p"]] * 2
    # A second seed where the sides swap: the mean difference is ~0, and seed-to-seed spread is not evidence.
    swapped = metrics.compare(labels, np.stack([a1, b1]), np.stack([b1, a1]), 8)
    assert swapped["macro_f1_diff"] == pytest.approx(0, abs=1e-12) and swapped["macro_f1_p"] > 0.5
    lo, hi = swapped["macro_f1_diff_ci95"]
    assert lo < -0.5 * single["macro_f1_diff"] and hi > 0.5 * single["macro_f1_diff"]  # wide: it spans the seeds


# --- Logit adjustment ---

def test_logit_adjustment_removes_the_training_prior():
    counts = [500, 100, 20, 5]
    prior = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    labels = torch.arange(400) % 4  # balanced evaluation set
    signal = torch.nn.functional.one_hot(labels, 4).float() * 1.5 + torch.randn(400, 4, generator=torch.Generator()
                                                                                  .manual_seed(0))
    # What a model fitted to the imbalanced training set outputs: the balanced score plus the log prior.
    fitted = signal + prior.log().float()
    val = evaluate.ValLogits([fitted], None, labels, [], ["a", "b", "c", "d"], ["run"],
                             evaluate.log_prior({"classes": list("abcd"), "class_counts": counts}, "run.pt")[None])
    torch.testing.assert_close(val.average(tau=1.0), signal)
    torch.testing.assert_close(val.average(tau=0.5), signal + 0.5 * prior.log().float())
    assert torch.equal(val.average(), fitted) and "logit adjustment tau 1" in val.title(tau=1.0)
    plain = metrics.compute_metrics(labels.tolist(), fitted.argmax(1).tolist(), list("abcd"))["macro_f1"]
    adjusted = metrics.compute_metrics(labels.tolist(), val.average(tau=1.0).argmax(1).tolist(), list("abcd"))
    assert adjusted["macro_f1"] > plain + 0.1

    with pytest.raises(utils.UserError, match="old.pt: the checkpoint records no training class counts"):
        evaluate.log_prior({"classes": list("abcd")}, "old.pt")
    with pytest.raises(utils.UserError, match="z.pt: no training images of class c"):
        evaluate.log_prior({"classes": list("abcd"), "class_counts": [3, 1, 0, 2]}, "z.pt")
    # A balanced sampler already showed the model a uniform prior: subtracting the data's would over-correct.
    with pytest.raises(utils.UserError, match="b.pt: trained with --sampler balanced"):
        evaluate.log_prior({"classes": list("abcd"), "class_counts": counts, "sampler": "balanced"}, "b.pt")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """Random-weight 64 px ResNet50 checkpoints with (A, B) and without (old) recorded training class counts."""
    out = tmp_path_factory.mktemp("ckpt")
    arch = {"name": "resnet50", "blocks": 1, "num_classes": 8, "img_size": 64, "classes": list(utils.AFFECTNET8)}
    paths = {}
    for name, seed, counts in (("A", 0, list(data.TABLE2_COUNTS)), ("B", 1, [10] * 8), ("old", 0, None)):
        torch.manual_seed(seed)
        extra = {"class_counts": counts} if counts else {}
        paths[name] = out / f"{name}.pt"
        models.save_checkpoint(paths[name], models.build_model("resnet50", weights="none"), arch | extra, name)
    return paths


def test_logit_adjust_on_checkpoints_and_the_rescue_row(ckpts, demo_data, tmp_path):
    val_csv = demo_data[1]
    common = ["--val-csv", str(val_csv), "--workers", "0", "--device", "cpu"]
    evaluate.main(evaluate.get_args_parser().parse_args(
        ["--ckpt", str(ckpts["A"]), *common, "--logit-adjust", "1", "--out", str(tmp_path / "eval")]))
    ensemble_tta.main(ensemble_tta.get_args_parser().parse_args(
        ["--ckpt", str(ckpts["A"]), str(ckpts["B"]), *common, "--table", "--logit-adjust", "1",
         "--out", str(tmp_path / "rescue")]))
    with open(tmp_path / "rescue" / "rescue_table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["configuration"] for r in rows] == [*metrics.THESIS_RESCUE, "single checkpoint, logit adjustment (tau 1)"]
    assert rows[-1]["thesis_macro_f1"] == "" and rows[-1]["report"] == "single_logit_adjusted"
    for row in rows:
        lo, hi = float(row["macro_f1_ci95_lo"]), float(row["macro_f1_ci95_hi"])
        assert lo <= float(row["macro_f1"]) <= hi
    # The table's row is what evaluate.py --logit-adjust gives for the single checkpoint.
    adjusted = (tmp_path / "rescue" / "single_logit_adjusted" / "predictions.csv").read_bytes()
    assert adjusted == (tmp_path / "eval" / "predictions.csv").read_bytes()
    assert adjusted != (tmp_path / "rescue" / "single_no_tta" / "predictions.csv").read_bytes()

    # Paired comparison of two checkpoints = the comparison of their predictions files.
    evaluate.main(evaluate.get_args_parser().parse_args(
        ["--ckpt", str(ckpts["A"]), "--compare", str(ckpts["B"]), *common, "--out", str(tmp_path / "cmp")]))
    evaluate.main(evaluate.get_args_parser().parse_args(
        ["--ckpt", str(ckpts["B"]), *common, "--out", str(tmp_path / "b")]))
    by_ckpt = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    by_file = compare_files(tmp_path / "rescue" / "single_no_tta" / "predictions.csv", tmp_path / "b" /
                            "predictions.csv", tmp_path / "cmp_files")
    def numbers(result: dict) -> dict:
        return {k: v for k, v in result.items() if k not in ("a", "b")}  # all but the two sides' names
    assert numbers(by_ckpt) == numbers(by_file)


def test_logit_adjust_needs_recorded_counts(ckpts, demo_data, tmp_path):
    labels, preds = noisy(10, 0.5, seed=0)
    for source in (["--ckpt", str(ckpts["old"]), "--val-csv", str(demo_data[1])],
                   ["--ckpt", str(ckpts["A"]), "--compare", str(ckpts["old"]), "--val-csv", str(demo_data[1])],
                   ["--predictions", str(write_predictions(tmp_path / "p.csv", labels, preds))]):
        args = evaluate.get_args_parser().parse_args([*source, "--device", "cpu", "--logit-adjust", "1",
                                                      "--out", str(tmp_path / "out")])
        with pytest.raises(utils.UserError) as err:
            evaluate.main(args)
        message = str(err.value)
        assert ("old.pt: the checkpoint records no training class counts" in message if "--ckpt" in source
                else "--logit-adjust" in message and "--ckpt" in message)
    assert not (tmp_path / "out").exists()
