"""Other FER datasets and class sets: the RAF-DB, FER2013, FERPlus and AffectNet-7 converters, classes.txt, and a
7-class run end to end (convert, train, evaluate, predict; an AffectNet-8 model scored on it by name)."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import converters
import data
import evaluate
import models
import predict
import train
import utils
from conftest import call

ROOT = Path(__file__).resolve().parent.parent
BASIC7 = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"]


def cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "datasets.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def face(seed: int, size: int = 40) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def make_rafdb(root: Path, per_class: int = 2) -> Path:
    """A RAF-DB basic folder: per_class train and 1 test image per label 1-7, plus rows it must drop."""
    lines = []
    (root / "Image" / "aligned").mkdir(parents=True)
    (root / "EmoLabel").mkdir()
    n = 0
    for label in range(1, 8):
        for split, count in (("train", per_class), ("test", 1)):
            for _ in range(count):
                n += 1
                name = f"{split}_{n:05d}.jpg"
                face(n).save(root / "Image" / "aligned" / f"{split}_{n:05d}_aligned.jpg")
                lines.append(f"{name} {label}")
    lines += ["train_09998.jpg 4",    # listed, but its image is missing
              "train_09999.jpg 8",    # label outside 1-7
              "not a label line"]
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def test_rafdb_converter_maps_labels_by_name_and_reports_drops(tmp_path):
    root = make_rafdb(tmp_path / "RAF")
    result = cli("rafdb", "--root", root, "--split", "train", "--out", tmp_path / "idx" / "train.csv")
    assert result.returncode == 0, result.stderr
    assert "kept 14, dropped 3" in result.stdout
    for reason in ("image missing from aligned/", "label outside 1-7", "line is not '<image> <label>'"):
        assert f"dropped 1: {reason}" in result.stdout
    assert data.read_classes(tmp_path / "idx" / "train.csv") == tuple(BASIC7)
    rows = read_csv(tmp_path / "idx" / "train.csv")
    # RAF-DB label 1 is surprise, 4 happiness, 7 neutral: mapped by name into the canonical order.
    by_file = {Path(r["path"]).name: BASIC7[int(r["label"])] for r in rows}
    assert by_file["train_00001_aligned.jpg"] == "surprise"
    assert by_file["train_00010_aligned.jpg"] == "happy"
    assert by_file["train_00019_aligned.jpg"] == "neutral"
    assert all(s.file.endswith("_aligned.jpg") for s in data.read_index(tmp_path / "idx" / "train.csv"))
    test = cli("rafdb", "--root", root, "--split", "test", "--out", tmp_path / "idx" / "test.csv")
    assert test.returncode == 0 and "kept 7, dropped 1" in test.stdout  # the bad line; the rest are train rows


def fer2013_rows() -> list[list[str]]:
    """fer2013.csv rows: every emotion 0-6 in Training, two PublicTest and one PrivateTest row, 3 bad rows."""
    pixels = lambda seed: " ".join(map(str, np.random.default_rng(seed).integers(0, 256, 48 * 48)))
    rows = [[str(e), pixels(e), "Training"] for e in range(7)]
    rows += [["3", pixels(10), "PublicTest"], ["6", pixels(11), "PublicTest"], ["0", pixels(12), "PrivateTest"]]
    rows += [["7", pixels(13), "Training"],              # emotion outside 0-6
             ["2", "1 2 3", "Training"],                 # not 48 x 48
             ["4", pixels(14).replace("1", "999", 1), "PrivateTest"]]  # a value above 255
    return rows


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_fer2013_converter_writes_pngs_and_one_index_per_split(tmp_path):
    source = write_csv(tmp_path / "fer2013.csv", ["emotion", "pixels", "Usage"], fer2013_rows())
    result = cli("fer2013", "--csv", source, "--out", tmp_path / "fer")
    assert result.returncode == 0, result.stderr
    assert "train.csv: kept 7, dropped 2" in result.stdout and "test.csv: kept 1, dropped 1" in result.stdout
    assert "dropped 1: emotion outside 0-6" in result.stdout
    train_rows = read_csv(tmp_path / "fer" / "train.csv")
    # FER2013 0-6 = angry, disgust, fear, happy, sad, surprise, neutral.
    assert [BASIC7[int(r["label"])] for r in train_rows] == ["anger", "disgust", "fear", "happy", "sad",
                                                              "surprise", "neutral"]
    assert [BASIC7[int(r["label"])] for r in read_csv(tmp_path / "fer" / "val.csv")] == ["happy", "neutral"]
    with Image.open(tmp_path / "fer" / train_rows[3]["path"]) as im:
        assert im.size == (48, 48) and im.mode == "L"
        pixels = np.asarray(im).ravel()
    assert pixels.tolist() == [int(v) for v in fer2013_rows()[3][1].split()]
    assert data.read_classes(tmp_path / "fer" / "val.csv") == tuple(BASIC7)


FER_FOLDERS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]  # as FER2013's JPEG copies name them


def grey_jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8), mode="L").save(path)


def make_fer2013_folder(root: Path, test_folders: dict[str, tuple[str, ...]]) -> Path:
    """FER2013 as JPEG class folders: one Training_ image per class under train/ (two happy), and per test folder
    (name -> the prefixes it holds) one image per prefix in each of angry, happy and surprise."""
    n = 0
    for name in FER_FOLDERS + ["happy"]:
        n += 1
        grey_jpeg(root / "train" / name / f"Training_{n}.jpg", n)
    for folder, prefixes in test_folders.items():
        for name in ("angry", "happy", "surprise"):
            for prefix in prefixes:
                n += 1
                grey_jpeg(root / folder / name / f"{prefix}_{n}.jpg", n)
    return root


def index_rows(csv_path: Path) -> list[tuple[str, str]]:
    """(file name, class name) of every row; each path names a file relative to the CSV's folder."""
    rows = read_csv(csv_path)
    assert all((csv_path.parent / r["path"]).is_file() for r in rows)
    return [(Path(r["path"]).name, BASIC7[int(r["label"])]) for r in rows]


def test_fer2013_folder_with_mixed_test_splits_by_prefix_and_counts_drops(tmp_path):
    root = make_fer2013_folder(tmp_path / "FER", {"test": ("PublicTest", "PrivateTest")})
    grey_jpeg(root / "train" / "contempt" / "Training_900.jpg", 900)      # not a FER2013 class
    grey_jpeg(root / "train" / "happy" / "image_901.jpg", 901)            # no split prefix
    grey_jpeg(root / "train" / "sad" / "PublicTest_902.jpg", 902)         # a test image under train/
    grey_jpeg(root / "test" / "fear" / "Training_903.jpg", 903)           # a training image under test/
    grey_jpeg(root / "test" / "Training_904.jpg", 904)                    # not in a class folder
    (root / "train" / "happy" / "notes.txt").write_text("not an image")
    (root / "test" / "happy" / "PrivateTest_905.txt").write_text("not an image")
    result = cli("fer2013", "--root", root, "--out", tmp_path / "idx")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # A drop counts under the split its name claims (PublicTest_902 under val.csv), else its folder's.
    assert "train.csv: kept 8, dropped 5" in out and "val.csv: kept 3, dropped 1" in out
    assert "test.csv: kept 3, dropped 1" in out
    for reason in ("unknown class folder 'contempt'", "file name has no Training_/PublicTest_/PrivateTest_ prefix",
                   "PublicTest_ file under train/ (its name and folder disagree)",
                   "Training_ file under test/ (its name and folder disagree)", "not in a class folder"):
        assert f"dropped 1: {reason}" in out
    assert out.count("dropped 1: not an image file extension") == 2  # notes.txt (train), PrivateTest_905.txt (test)
    idx = tmp_path / "idx"
    assert sorted(p.name for p in idx.iterdir()) == ["classes.txt", "test.csv", "train.csv", "val.csv"]  # no copies
    train_rows = index_rows(idx / "train.csv")
    assert len(train_rows) == 8 and all(name.startswith("Training_") for name, _ in train_rows)
    assert sorted({c for _, c in train_rows}) == sorted(BASIC7)  # angry -> anger, ...
    assert dict(train_rows)["Training_1.jpg"] == "anger"
    assert all(name.startswith("PublicTest_") for name, _ in index_rows(idx / "val.csv"))
    test_rows = index_rows(idx / "test.csv")
    assert len(test_rows) == 3 and all(name.startswith("PrivateTest_") for name, _ in test_rows)
    assert sorted(c for _, c in test_rows) == ["anger", "happy", "surprise"]
    for split in ("train", "val", "test"):
        samples = data.read_index(idx / f"{split}.csv")
        assert all(Path(s.file).resolve().is_relative_to(root.resolve()) for s in samples)  # referenced in place


@pytest.mark.parametrize("private", [False, True])
def test_fer2013_folder_publictest_layout_gives_the_csv_converters_classes(tmp_path, private):
    folders = {"PublicTest": ("PublicTest",), **({"privatetest": ("PrivateTest",)} if private else {})}
    root = make_fer2013_folder(tmp_path / "FER", folders)
    (root / "train").rename(root / "Train")  # split folder names are matched in any case
    result = cli("fer2013", "--csv", root, "--out", tmp_path / "idx")  # the CSV's flag takes a folder too
    assert result.returncode == 0, result.stderr
    assert "train.csv: kept 8, dropped 0" in result.stdout and "val.csv: kept 3, dropped 0" in result.stdout
    assert ("test.csv: kept 3, dropped 0" in result.stdout) == private
    assert ("no PrivateTest_ images: test.csv not written" in result.stdout) == (not private)
    assert (tmp_path / "idx" / "test.csv").exists() == private
    csv_input = write_csv(tmp_path / "fer2013.csv", ["emotion", "pixels", "Usage"], fer2013_rows())
    from_csv = cli("fer2013", "--root", csv_input, "--out", tmp_path / "from_csv")  # and --root takes the CSV
    assert from_csv.returncode == 0, from_csv.stderr
    assert (tmp_path / "idx" / "classes.txt").read_text() == (tmp_path / "from_csv" / "classes.txt").read_text()
    assert data.read_classes(tmp_path / "idx" / "train.csv") == tuple(BASIC7)
    splits = ("train", "val", "test") if private else ("train", "val")
    assert [len(data.read_index(tmp_path / "idx" / f"{s}.csv")) for s in splits] == [8, 3, 3][:len(splits)]


def test_fer2013_folder_errors_are_one_line(tmp_path):
    (tmp_path / "FER" / "test" / "happy").mkdir(parents=True)
    grey_jpeg(tmp_path / "FER" / "test" / "happy" / "PublicTest_1.jpg", 1)
    for source, message in [(tmp_path / "FER", "no train/ folder"),
                            (tmp_path / "missing", "FER2013 CSV or folder not found")]:
        result = cli("fer2013", "--root", source, "--out", tmp_path / "idx")
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr and str(source) in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "FER" / "train" / "happy").mkdir(parents=True)
    (tmp_path / "FER" / "train" / "happy" / "notes.txt").write_text("not an image")
    with pytest.raises(utils.UserError, match="no usable Training_ images"):
        converters.convert_fer2013(tmp_path / "FER", tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("votes, expected", [
    ([6, 2, 1, 0, 1, 0, 0, 0, 0, 0], 0),                         # clear neutral
    ([0, 0, 1, 0, 0, 0, 0, 5, 3, 1], 7),                         # contempt beats unknown and NF
    ([4, 4, 1, 0, 1, 0, 0, 0, 0, 0], "tied between emotions"),
    ([2, 0, 0, 0, 0, 0, 1, 0, 2, 0], "unknown-majority (unknown votes >= the top emotion's)"),
    ([1, 0, 0, 0, 0, 0, 0, 0, 0, 9], "not a face (NF votes >= the top emotion's)"),
    ([0] * 10, "no votes"),
])
def test_ferplus_majority_rule_on_hand_made_votes(votes, expected):
    assert converters.ferplus_label(votes) == expected


def test_ferplus_converter_keeps_majority_rows_in_affectnet8_order(tmp_path):
    images = fer2013_rows()[:10]
    source = write_csv(tmp_path / "fer2013.csv", ["emotion", "pixels", "Usage"], images)
    votes = [[0] * 10 for _ in images]
    winners = {0: 1, 1: 2, 2: 7, 3: 3, 4: 0}  # FERPlus column: happiness, surprise, contempt, sadness, neutral
    for row, column in winners.items():
        votes[row][column] = 8
    votes[5][:2] = [4, 4]  # a tie
    votes[6][9] = 10       # not a face
    names = [f"fer{i:07d}.png" for i in range(len(images))]
    names[7] = ""          # FERPlus removed this image
    votes[8][0] = votes[9][4] = 5
    plus_rows = [[usage, name, *map(str, v)] for (_, _, usage), name, v in zip(images, names, votes)]
    plus = write_csv(tmp_path / "fer2013new.csv", ["Usage", "Image name", *converters.FERPLUS_VOTES], plus_rows)
    result = cli("ferplus", "--fer2013", source, "--ferplus", plus, "--out", tmp_path / "plus")
    assert result.returncode == 0, result.stderr
    assert "train.csv: kept 5, dropped 2" in result.stdout
    for reason in ("tied between emotions", "not a face (NF votes >= the top emotion's)"):
        assert f"dropped 1: {reason}" in result.stdout
    assert "val.csv: kept 1, dropped 1" in result.stdout and "no image name (removed by FERPlus)" in result.stdout
    assert data.read_classes(tmp_path / "plus" / "train.csv") == utils.AFFECTNET8
    rows = read_csv(tmp_path / "plus" / "train.csv")
    assert [utils.AFFECTNET8[int(r["label"])] for r in rows] == ["happy", "surprise", "contempt", "sad", "neutral"]
    assert [Path(r["path"]).name for r in rows] == names[:5]

    misaligned = write_csv(tmp_path / "short.csv", ["Usage", "Image name", *converters.FERPLUS_VOTES],
                           plus_rows[:-1])
    bad = cli("ferplus", "--fer2013", source, "--ferplus", misaligned, "--out", tmp_path / "bad")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "row for row" in bad.stderr


def test_affectnet7_drops_contempt(tmp_path):
    header = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
              "expression", "valence", "arousal"]
    rows = [[f"1/{i}.jpg", 0, 0, 10, 10, "", code, 0, 0] for i, code in enumerate([0, 1, 6, 7, 7, 9])]
    source = write_csv(tmp_path / "training.csv", header, rows)
    result = cli("affectnet", "--csv", source, "--classes", "7", "--out", tmp_path / "an7" / "train.csv")
    assert result.returncode == 0, result.stderr
    assert "kept 3, dropped 3" in result.stdout and "dropped 2: expression 7 (contempt) is not in AffectNet-7" \
        in result.stdout
    assert data.read_classes(tmp_path / "an7" / "train.csv") == tuple(BASIC7)
    # A second converter writing other classes into the same folder would relabel its CSVs: refused.
    clash = cli("affectnet", "--csv", source, "--out", tmp_path / "an7" / "train8.csv")
    assert clash.returncode == 1 and "already lists other classes" in clash.stderr


def test_classes_txt_bounds_labels_and_is_validated(tmp_path):
    (tmp_path / "classes.txt").write_text("calm\nHappiness\nangry\n")
    assert data.read_classes(tmp_path / "x.csv") == ("calm", "happy", "anger")  # canonical spelling
    (tmp_path / "x.csv").write_text("path,label\na.jpg,2\nb.jpg,3\n")
    with pytest.raises(utils.UserError, match=r"line 3: label '3' is not an integer in 0-2"):
        data.read_index(tmp_path / "x.csv", check_files=False)
    (tmp_path / "classes.txt").write_text("happy\nhappiness\n")
    with pytest.raises(utils.UserError, match="'happy' is listed twice"):
        data.read_classes(tmp_path / "x.csv")


@pytest.fixture(scope="module")
def rafdb_run(tmp_path_factory) -> dict[str, Path]:
    """RAF-DB layout -> index CSVs -> one training epoch at 32 px on CPU."""
    base = tmp_path_factory.mktemp("rafdb")
    root = make_rafdb(base / "RAF", per_class=2)
    for split in ("train", "test"):
        converters.convert_rafdb(root, split, base / f"{split}.csv")
    out = base / "run"
    call(train, "--train-csv", base / "train.csv", "--val-csv", base / "test.csv", "--model", "mobilenet_v3_large",
         "--weights", "none", "--img-size", 32, "--batch-size", 7, "--epochs", 1, "--workers", 0,
         "--loss", "focal", "--alpha", "auto", "--device", "cpu", "--out", out)
    return {"base": base, "run": out}


def test_seven_class_run_trains_and_reports_seven_classes(rafdb_run):
    run = rafdb_run["run"]
    checkpoint = models.load_checkpoint(run / "best.pt")
    assert checkpoint["arch"]["classes"] == BASIC7 and checkpoint["arch"]["num_classes"] == 7
    assert checkpoint["arch"]["class_counts"] == [2] * 7
    config = json.loads((run / "config.json").read_text())
    assert len(config["alpha"]) == 7
    report = json.loads((run / "metrics.json").read_text())
    assert list(report["per_class"]) == BASIC7
    assert report["macro_f1"] == pytest.approx(np.mean([m["f1"] for m in report["per_class"].values()]))
    assert np.array(report["confusion_matrix"]).shape == (7, 7)
    assert [r["class"] for r in read_csv(run / "per_class.csv")] == BASIC7
    assert list(read_csv(run / "history.csv")[0])[6:13] == [f"f1_{c}" for c in BASIC7]


def test_seven_class_checkpoint_evaluates_and_predicts_with_seven_columns(rafdb_run, tmp_path):
    base, run = rafdb_run["base"], rafdb_run["run"]
    call(evaluate, "--ckpt", run / "best.pt", "--val-csv", base / "test.csv", "--workers", 0, "--device", "cpu",
         "--out", tmp_path / "eval")
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["macro_f1"] == \
        json.loads((run / "metrics.json").read_text())["macro_f1"]
    crops = sorted((base / "RAF" / "Image" / "aligned").glob("test_*.jpg"))[:3]
    call(predict, "--ckpt", run / "best.pt", *crops, "--workers", 0, "--device", "cpu", "--out", tmp_path / "pred")
    rows = read_csv(tmp_path / "pred" / "predictions.csv")
    assert len(rows) == 3 and [c for c in rows[0] if c.startswith("prob_")] == [f"prob_{c}" for c in BASIC7]
    assert all(r["name"] == BASIC7[int(r["label"])] for r in rows)


def test_affectnet8_checkpoint_scores_on_seven_classes_by_name(rafdb_run, tmp_path):
    torch.manual_seed(0)
    model = models.build_model("mobilenet_v3_large", num_classes=8, weights="none")
    with torch.no_grad():  # a head that always prefers contempt, then happy: contempt is not in RAF-DB
        model.classifier[3].weight.zero_()
        model.classifier[3].bias.copy_(torch.tensor([0, 5, 0, 0, 0, 0, 0, 9.0]))
    arch = {"name": "mobilenet_v3_large", "blocks": 1, "num_classes": 8, "img_size": 32,
            "classes": list(utils.AFFECTNET8)}
    models.save_checkpoint(tmp_path / "an8.pt", model, arch, "affectnet8")
    stdout = call(evaluate, "--ckpt", tmp_path / "an8.pt", "--val-csv", rafdb_run["base"] / "test.csv",
                  "--workers", 0, "--device", "cpu", "--out", tmp_path / "eval")
    assert "the data lacks contempt" in stdout
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert list(report["per_class"]) == BASIC7
    # Contempt's logit is left out, so every image is predicted happy: recall 1 for happy, accuracy 1/7.
    assert report["per_class"]["happy"]["recall"] == 1.0 and report["accuracy"] == pytest.approx(1 / 7)
    rows = read_csv(tmp_path / "eval" / "predictions.csv")
    assert [c for c in rows[0] if c.startswith("prob_")] == [f"prob_{c}" for c in BASIC7]

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "classes.txt").write_text("calm\nbored\n")
    (tmp_path / "other" / "val.csv").write_text("path,label\n" + "".join(
        f"{s.file},0\n" for s in data.read_index(rafdb_run["base"] / "test.csv")[:2]))
    with pytest.raises(utils.UserError, match="no class in common"):
        call(evaluate, "--ckpt", tmp_path / "an8.pt", "--val-csv", tmp_path / "other" / "val.csv", "--workers", 0,
             "--device", "cpu", "--out", tmp_path / "eval2")
