"""Evaluation: metrics against hand computation, ensembling and flip TTA, the Table 6 run, bad input."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data
import ensemble_tta
import evaluate
import models
import utils
from conftest import call, heatmap_values

ROOT = Path(__file__).resolve().parent.parent
IMG = 64

# Rows = true class, columns = predicted. Fear is never predicted right (precision and recall 0, F1 0);
# contempt has no support but is predicted once (precision 0, recall 0 by zero_division, row stays zero).
MATRIX = [
    [5, 1, 0, 0, 0, 0, 0, 1],
    [0, 6, 1, 0, 0, 0, 0, 0],
    [1, 0, 4, 0, 0, 0, 2, 0],
    [0, 0, 0, 3, 1, 0, 0, 0],
    [0, 0, 0, 2, 0, 0, 0, 0],
    [0, 0, 1, 0, 0, 2, 0, 0],
    [0, 1, 0, 0, 0, 1, 5, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
]
# Thesis Table 6 (accuracy, macro-F1), the numbers the rescue table prints beside ours: literals, so a change to the
# code's copy of them shows here.
TABLE6 = {
    "single checkpoint, no TTA": (0.5796, 0.5704),
    "single checkpoint, h-flip TTA": (0.5776, 0.5677),
    "checkpoint ensemble, no TTA": (0.5799, 0.5714),
    "checkpoint ensemble + h-flip TTA": (0.5821, 0.5741),
}


def run(script: str, *args) -> subprocess.CompletedProcess:
    """The script as a user runs it (for exit code and stderr)."""
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def write_predictions(path: Path, rows: list[tuple[int, int]], columns=("path", "label", "pred")) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i, (label, pred) in enumerate(rows):
            writer.writerow([f"img_{i}.jpg", label, pred][:len(columns)])
    return path


def hand_metrics(m: list[list[int]]) -> dict:
    """Precision/recall/F1 straight from the definitions (0 where undefined)."""
    n = len(m)
    rows = [sum(m[i]) for i in range(n)]
    cols = [sum(m[i][j] for i in range(n)) for j in range(n)]
    precision = [m[k][k] / cols[k] if cols[k] else 0.0 for k in range(n)]
    recall = [m[k][k] / rows[k] if rows[k] else 0.0 for k in range(n)]
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall)]
    return {"accuracy": sum(m[k][k] for k in range(n)) / sum(rows), "macro_f1": sum(f1) / n,
            "precision": precision, "recall": recall, "f1": f1, "support": rows}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Random-weight 64 px checkpoints: resnet50 (A), convnext_tiny (B), and A claiming 96 px (A96)."""
    out = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    arch = {"blocks": 1, "num_classes": len(utils.AFFECTNET8), "img_size": IMG, "classes": list(utils.AFFECTNET8)}
    resnet = models.build_model("resnet50", weights="none")
    models.save_checkpoint(out / "A.pt", resnet, {**arch, "name": "resnet50"}, "exp_a")
    models.save_checkpoint(out / "A96.pt", resnet, {**arch, "name": "resnet50", "img_size": 96}, "exp_a96")
    models.save_checkpoint(out / "B.pt", models.build_model("convnext_tiny", weights="none"),
                           {**arch, "name": "convnext_tiny"}, "exp_b")
    return {"A": out / "A.pt", "A96": out / "A96.pt", "B": out / "B.pt"}


@pytest.fixture(scope="module")
def small_val(demo_data, tmp_path_factory) -> Path:
    """The first 8 demo validation images (absolute paths): enough for the equality tests, 4x cheaper."""
    path = tmp_path_factory.mktemp("small") / "val.csv"
    path.write_text("path,label\n" + "".join(f"{s.file},{s.label}\n" for s in data.read_index(demo_data[1])[:8]))
    return path


@pytest.fixture(scope="module")
def table_run(checkpoints, demo_data, tmp_path_factory) -> tuple[str, Path]:
    """One `ensemble_tta.py --table` run on two checkpoints of different architectures: (stdout, out folder)."""
    out = tmp_path_factory.mktemp("rescue")
    stdout = call(ensemble_tta, "--ckpt", checkpoints["A"], checkpoints["B"], "--val-csv", demo_data[1], "--table",
                  "--workers", 0, "--device", "cpu", "--out", out)
    return stdout, out


def test_rescore_reproduces_hand_computed_metrics(tmp_path):
    pairs = [(t, p) for t in range(8) for p in range(8) for _ in range(MATRIX[t][p])]
    pairs = pairs[::2] + pairs[1::2]  # row order must not matter
    preds_csv = write_predictions(tmp_path / "predictions.csv", pairs)
    stdout = call(evaluate, "--predictions", preds_csv, "--out", tmp_path / "out")

    got = json.loads((tmp_path / "out" / "metrics.json").read_text())
    want = hand_metrics(MATRIX)
    assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-12)
    assert got["macro_f1"] == pytest.approx(want["macro_f1"], abs=1e-12)
    assert list(got["per_class"]) == list(utils.AFFECTNET8)
    for k, name in enumerate(utils.AFFECTNET8):
        for key in ("precision", "recall", "f1"):
            assert got["per_class"][name][key] == pytest.approx(want[key][k], abs=1e-12), (name, key)
        assert got["per_class"][name]["support"] == want["support"][k]
    assert got["confusion_matrix"] == MATRIX
    for row, normalized in zip(MATRIX, got["confusion_matrix_normalized"]):
        expected = [v / sum(row) for v in row] if sum(row) else [0.0] * 8  # the empty contempt row stays zero
        assert normalized == pytest.approx(expected, abs=1e-12)

    assert f"Validation macro-F1: {want['macro_f1']:.4f}" in stdout
    assert f"Validation accuracy: {want['accuracy']:.4f}" in stdout
    neutral = next(line for line in stdout.splitlines() if line.startswith("neutral"))
    assert neutral.split()[1:5] == [f"{want[k][0]:.4f}" for k in ("precision", "recall", "f1")] + \
        [str(want["support"][0])]
    lo, hi = got["ci95"]["per_class_f1"]["neutral"]
    assert neutral.endswith(f"[{lo:.4f}, {hi:.4f}]") and lo <= want["f1"][0] <= hi  # F1's 95 % interval
    with open(tmp_path / "out" / "confusion_matrix.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == list(utils.AFFECTNET8) and [list(map(int, r[1:])) for r in rows[1:]] == MATRIX
    for png, shows in (("confusion_matrix.png", np.array(MATRIX) / np.max(MATRIX)),
                       ("confusion_matrix_normalized.png", np.array(got["confusion_matrix_normalized"]))):
        with Image.open(tmp_path / "out" / png) as image:
            assert image.format == "PNG" and min(image.size) > 8 * 60
            # The picture shows the matrix: each cell's colour, read off the colour bar, is its value.
            np.testing.assert_allclose(heatmap_values(image, 8), shows, atol=0.02)
    assert not (tmp_path / "out" / "predictions.csv").exists()  # only written when a model made the predictions


def test_self_ensemble_equals_single_checkpoint(checkpoints, small_val):
    pair = evaluate.infer_checkpoints([str(checkpoints["A"])] * 2, str(small_val), workers=0, device="cpu", hflip=True)

    model, _ = models.load_model(checkpoints["A"])
    loader = data.make_loader(data.FaceDataset(pair.samples, img_size=IMG), batch_size=8, workers=0)
    # The same batches as the ensemble's (images and mirrors in one forward): a CPU GEMM need not give the
    # same bits for a batch of 8 as for the 16 rows it is part of.
    alone, _, labels = models.predict_views(model, loader, torch.device("cpu"), hflip=True)
    alone_tta, _ = models.predict_logits(model, loader, torch.device("cpu"), hflip=True)
    assert alone.dtype == torch.float32 and alone.shape == (len(pair.samples), len(utils.AFFECTNET8))
    assert torch.equal(labels, pair.labels)
    assert torch.equal(pair.average(), alone)
    assert torch.equal(pair.average(hflip=True), alone_tta)
    assert not torch.equal(alone_tta, alone)


@pytest.fixture(scope="module")
def alone(checkpoints, demo_data) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Each of checkpoints A and B run by itself on the demo validation set: (logits, mirrored logits, labels), in
    the batches the ensemble code uses (images and mirrors in one forward, 128 at a time)."""
    samples = data.read_index(demo_data[1])
    loader = data.make_loader(data.FaceDataset(samples, img_size=IMG), batch_size=128, workers=0)
    views = {}
    for name in ("A", "B"):
        model, _ = models.load_model(checkpoints[name])
        views[name] = models.predict_views(model, loader, torch.device("cpu"), hflip=True)
    return views


def test_ensemble_of_two_checkpoints_is_the_mean_of_their_logits(checkpoints, demo_data, alone):
    pair = evaluate.infer_checkpoints([str(checkpoints["A"]), str(checkpoints["B"])], str(demo_data[1]), workers=0,
                                      device="cpu", hflip=True)
    (a, a_flip, labels), (b, b_flip, _) = alone["A"], alone["B"]
    assert torch.equal(pair.labels, labels)
    # Two different models (ResNet50 and ConvNeXt-Tiny): an "average" that kept either one would show.
    assert (a - b).abs().max() > 0.1 and (a - a_flip).abs().max() > 0.01
    exact = {"rtol": 0, "atol": 1e-6}
    torch.testing.assert_close(pair.average(), (a + b) / 2, **exact)
    torch.testing.assert_close(pair.average(hflip=True), (a + a_flip + b + b_flip) / 4, **exact)
    torch.testing.assert_close(pair.average(1), a, **exact)
    torch.testing.assert_close(pair.average(1, hflip=True), (a + a_flip) / 2, **exact)


def symmetric_images(folder: Path, count: int) -> Path:
    """Random images whose right half mirrors the left half, and their index CSV."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    with open(folder / "index.csv", "w", newline="") as f:
        f.write("path,label\n")
        for i in range(count):
            half = rng.integers(0, 256, (IMG, IMG // 2, 3), dtype=np.uint8)
            Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1)).save(folder / f"{i}.png")
            f.write(f"{i}.png,{i % 8}\n")
    return folder / "index.csv"


def test_flip_tta_on_symmetric_images_equals_no_tta(checkpoints, small_val, tmp_path):
    model, _ = models.load_model(checkpoints["A"])
    cpu = torch.device("cpu")

    def loader(samples):
        return data.make_loader(data.FaceDataset(samples, img_size=IMG), batch_size=8, workers=0)

    sym = loader(data.read_index(symmetric_images(tmp_path / "sym", 8)))
    plain, _ = models.predict_logits(model, sym, cpu)
    tta, _ = models.predict_logits(model, sym, cpu, hflip=True)
    assert torch.allclose(tta, plain, rtol=1e-4, atol=1e-4)

    # The mirror really is computed: on ordinary images it differs, and equals the model on flipped input.
    faces = loader(data.read_index(small_val))
    plain, mirrored, _ = models.predict_views(model, faces, cpu, hflip=True)
    images = torch.cat([x for x, _ in faces])
    with torch.inference_mode():
        assert torch.allclose(mirrored, model(models.normalize(images).flip(3)), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(plain, mirrored, rtol=1e-3, atol=1e-3)
    assert model.training is False


def test_table_writes_four_configurations(table_run, alone):
    stdout, out = table_run
    with open(out / "rescue_table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["configuration"] for r in rows] == list(TABLE6)
    (a, a_flip, labels), (b, b_flip, _) = alone["A"], alone["B"]
    # What each row must be, from the two checkpoints run separately: the first one alone, then the mean of both,
    # each without and with its mirror.
    expected = {"single checkpoint, no TTA": a, "single checkpoint, h-flip TTA": (a + a_flip) / 2,
                "checkpoint ensemble, no TTA": (a + b) / 2,
                "checkpoint ensemble + h-flip TTA": (a + a_flip + b + b_flip) / 4}
    shown = {}
    for row in rows:
        thesis_acc, thesis_f1 = TABLE6[row["configuration"]]
        assert float(row["thesis_accuracy"]) == thesis_acc and float(row["thesis_macro_f1"]) == thesis_f1
        logits = expected[row["configuration"]]
        with open(out / row["report"] / "predictions.csv", newline="") as f:
            predictions = list(csv.DictReader(f))
        shown[row["configuration"]] = probs = torch.tensor(
            [[float(r[f"prob_{c}"]) for c in utils.AFFECTNET8] for r in predictions], dtype=torch.float64)
        torch.testing.assert_close(probs, logits.softmax(dim=1).double(), rtol=0, atol=2e-6)
        assert float(row["accuracy"]) == pytest.approx((logits.argmax(dim=1) == labels).double().mean().item(),
                                                       abs=1e-6)
        report = json.loads((out / row["report"] / "metrics.json").read_text())
        assert float(row["accuracy"]) == pytest.approx(report["accuracy"], abs=1e-6)
        assert float(row["macro_f1"]) == pytest.approx(report["macro_f1"], abs=1e-6)
        assert (out / row["report"] / "confusion_matrix_normalized.png").is_file()
    # The four rows are four different predictions: no configuration silently repeats another.
    names = list(shown)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            assert (shown[first] - shown[second]).abs().max() > 1e-3, (first, second)
    table_lines = [line for line in (out / "rescue_table.md").read_text().splitlines() if line.startswith("| ")]
    assert len(table_lines) == 1 + 4  # header + four configurations
    assert "exp_a + exp_b" in stdout


def test_evaluate_ckpt_matches_table_single_checkpoint(checkpoints, demo_data, table_run, tmp_path):
    _, table_out = table_run
    out = tmp_path / "eval"
    call(evaluate, "--ckpt", checkpoints["A"], "--val-csv", demo_data[1], "--tta", "hflip", "--workers", 0,
         "--device", "cpu", "--out", out)
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "label", "pred", *(f"prob_{c}" for c in utils.AFFECTNET8)]
    assert len(rows) == len(data.read_index(demo_data[1]))
    probs = np.array([[float(r[f"prob_{c}"]) for c in utils.AFFECTNET8] for r in rows])
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert [int(r["pred"]) for r in rows] == probs.argmax(axis=1).tolist()
    # The table's cached flipped logits give exactly what a fresh single-checkpoint h-flip run gives.
    assert (out / "predictions.csv").read_bytes() == (table_out / "single_hflip" / "predictions.csv").read_bytes()
    assert json.loads((out / "metrics.json").read_text()) == \
        json.loads((table_out / "single_hflip" / "metrics.json").read_text())


@pytest.mark.parametrize("case", ["missing column", "label out of range"])
def test_bad_predictions_file(tmp_path, case):
    if case == "missing column":
        path = write_predictions(tmp_path / "p.csv", [(0, 0), (1, 1)], columns=("path", "label"))
        needles = ("p.csv", "pred")
    else:
        path = write_predictions(tmp_path / "p.csv", [(0, 0), (8, 1)])
        needles = ("p.csv line 3", "label")
    assert_one_line_error(run("evaluate.py", "--predictions", path, "--out", tmp_path / "out"), *needles)
    assert not (tmp_path / "out").exists()


def test_checkpoint_that_is_not_ours(demo_data, tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    result = run("evaluate.py", "--ckpt", tmp_path / "other.pt", "--val-csv", demo_data[1], "--device", "cpu",
                 "--out", tmp_path / "out")
    assert_one_line_error(result, "other.pt")


def test_val_csv_with_missing_images(checkpoints, tmp_path):
    (tmp_path / "val.csv").write_text("path,label\nnowhere/a.jpg,0\nnowhere/b.jpg,3\n")
    result = run("ensemble_tta.py", "--ckpt", checkpoints["A"], "--val-csv", tmp_path / "val.csv", "--device", "cpu",
                 "--out", tmp_path / "out")
    assert_one_line_error(result, "val.csv", "a.jpg")


def test_mismatched_checkpoints_and_single_checkpoint_table(checkpoints, demo_data, tmp_path):
    with pytest.raises(utils.UserError, match="image size") as err:
        evaluate.infer_checkpoints([str(checkpoints["A"]), str(checkpoints["A96"])], str(demo_data[1]), device="cpu")
    assert "\n" not in str(err.value)
    args = ensemble_tta.get_args_parser().parse_args(
        ["--ckpt", str(checkpoints["A"]), "--val-csv", str(demo_data[1]), "--table", "--out", str(tmp_path)])
    with pytest.raises(utils.UserError, match="two or more"):
        ensemble_tta.main(args)
