"""Tests for data.py and datasets.py: index CSVs, decoding, transforms, converters, check, demo set and the CLI's
bad-input answers."""
import csv
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

import data
import demo
import models
import utils

ROOT = Path(__file__).resolve().parent.parent
THESIS_ALPHA = "0.403369, 0.301054, 0.691747, 0.929849, 1.382056, 1.789801, 0.699721, 1.802404"


def cli(capsys: pytest.CaptureFixture, *argv: str, script: str = "datasets.py") -> tuple[int, str, str]:
    """Run a script's real __main__ block in-process (no torch re-import); returns (exit code, stdout, stderr)."""
    old_argv = sys.argv
    sys.argv = [str(ROOT / script), *map(str, argv)]
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = old_argv
    out, err = capsys.readouterr()
    if isinstance(code, str):  # what the interpreter does with sys.exit("message")
        err, code = err + code + "\n", 1
    return code or 0, out, err


def spawn(*argv: str) -> subprocess.Popen:
    """Start datasets.py in a real subprocess; several run at once to share the torch import cost."""
    return subprocess.Popen([sys.executable, "datasets.py", *map(str, argv)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """The CLI contract for bad input: exit 1, one stderr line starting 'error:', no traceback."""
    assert code == 1, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def write_csv(path: Path, rows: list, header: tuple = ("path", "label")) -> Path:
    """Small index CSV writer for fabricated inputs."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def photo(path: Path, size: tuple[int, int], seed: int = 0, quality: int = 90) -> Path:
    """A smooth random 'photo' JPEG: low-frequency colour blobs, like real content at JPEG quality 90."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, size[1] // 40), max(2, size[0] // 40), 3), dtype=np.uint8)
    Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(path, "JPEG", quality=quality)
    return path


def table_rows(out: str) -> list[tuple[int, str, int, float, float]]:
    """The class rows of `check`'s table: (index, class, count, share %, alpha)."""
    pattern = re.compile(r"^\s*(\d)\s+(\w+)\s+(\d+)\s+([\d.]+)%\s+([\d.]+)\s*$")
    return [(int(m[1]), m[2], int(m[3]), float(m[4]), float(m[5])) for m in map(pattern.match, out.splitlines()) if m]


# --- demo set and check ----------------------------------------------------------------------------------------------

DEMO_ARGS = ("--seed", "7", "--min-train-per-class", "1", "--val-per-class", "1", "--img-size", "32")


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under folder (relative path -> bytes)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_demo_cli_twice_gives_identical_files(tmp_path, capsys):
    for name in ("a", "b"):
        code, out, err = cli(capsys, "demo", "--out", tmp_path / name, *DEMO_ARGS)
        assert code == 0, err
    first = tree(tmp_path / "a")
    assert first == tree(tmp_path / "b")
    assert len(first) == sum(demo.demo_counts(1)) + 8 + 3  # train + one val image per class, classes.txt, 2 CSVs
    assert "train.csv" in first and "val/contempt/contempt_00000.jpg" in first
    labels = [s.label for s in data.read_index(tmp_path / "a" / "train.csv")]
    assert [labels.count(i) for i in range(8)] == demo.demo_counts(1)
    # A different seed really changes the pictures (the seed is not ignored).
    demo.make_demo(tmp_path / "c", seed=8, min_train_per_class=1, val_per_class=1, img_size=32)
    image = "val/happy/happy_00000.jpg"
    assert (tmp_path / "c" / image).read_bytes() != first[image]


def test_demo_counts_follow_table2():
    counts = demo.demo_counts(24)
    assert min(counts) == 24 and counts[1] == max(counts) == round(134415 * 24 / 3750)
    ratios = np.array(counts) / np.array(data.TABLE2_COUNTS)
    assert ratios.max() / ratios.min() < 1.05  # proportions kept up to rounding


def test_check_demo_prints_class_table_and_alpha(demo_data, capsys):
    train_csv, _ = demo_data
    code, out, err = cli(capsys, "check", "--csv", train_csv)
    assert code == 0, err
    rows = table_rows(out)
    assert [r[:2] for r in rows] == list(enumerate(utils.AFFECTNET8))
    assert [r[2] for r in rows] == demo.demo_counts(3)
    alpha = [r[4] for r in rows]
    assert len(alpha) == 8 and abs(np.mean(alpha) - 1) < 1e-5
    assert alpha[1] == min(alpha) and alpha[7] == max(alpha)  # rarest class weighs most
    assert abs(sum(r[3] for r in rows) - 100) < 0.1


def test_check_table2_counts_gives_thesis_alpha(tmp_path, capsys):
    rows = [(f"train/{i}/{n}.jpg", i) for i, count in enumerate(data.TABLE2_COUNTS) for n in range(count)]
    train_csv = write_csv(tmp_path / "train.csv", rows)
    code, out, err = cli(capsys, "check", "--csv", train_csv, "--no-files")
    assert code == 0, err
    assert THESIS_ALPHA in out
    assert [r[2] for r in table_rows(out)] == list(data.TABLE2_COUNTS)


# --- bad input: one line on stderr, exit 1, no traceback -------------------------------------------------------------

def test_real_processes(tmp_path, capsys):
    """The interpreter-level contract (one stderr line, exit 1, no traceback), including a corrupt image met inside
    a DataLoader worker; and a demo set made in another process is byte-identical to one made here."""
    photo(tmp_path / "good.jpg", (80, 80))
    (tmp_path / "bad.jpg").write_bytes((tmp_path / "good.jpg").read_bytes()[:300])
    index = write_csv(tmp_path / "index.csv", [("good.jpg", 1), ("bad.jpg", 2)])
    # Started together so the three torch imports overlap.
    missing = spawn("check", "--csv", tmp_path / "nope.csv")
    worker = spawn("bench", "--csv", index, "--img-size", "32", "--workers", "1", "--batch-size", "1")
    demo = spawn("demo", "--out", tmp_path / "demo_other", *DEMO_ARGS)
    code, out, err = cli(capsys, "demo", "--out", tmp_path / "demo_here", *DEMO_ARGS)
    assert code == 0, err
    _, err = missing.communicate(timeout=300)
    assert_one_line_error(missing.returncode, err, "index CSV not found", "nope.csv")
    _, err = worker.communicate(timeout=300)
    assert_one_line_error(worker.returncode, err, "bad.jpg (CSV line 3)")
    assert err.startswith(f"error: cannot decode image {tmp_path / 'bad.jpg'} (CSV line 3): ")
    _, err = demo.communicate(timeout=300)
    assert demo.returncode == 0, err
    assert tree(tmp_path / "demo_other") == tree(tmp_path / "demo_here")


@pytest.mark.parametrize("content, needles", [
    (None, ["index CSV not found"]),
    ("", ["empty CSV"]),
    ("path,label\n", ["empty CSV"]),
    ("path,target\na.jpg,1\n", ["missing required column", "label"]),
    ("path,label\na.jpg,1\nb.jpg,x\nc.jpg,8\n", ["line 3", "'x'", "not an integer in 0-7"]),
    ("path,label,face_x,face_y,face_width,face_height\na.jpg,1,0,0,0,10\n", ["line 2", "non-positive"]),
])
def test_check_rejects_bad_csv(tmp_path, capsys, content, needles):
    csv_path = tmp_path / "index.csv"
    if content is not None:
        csv_path.write_text(content)
    code, out, err = cli(capsys, "check", "--csv", csv_path, "--no-files")
    assert_one_line_error(code, err, *needles)
    with pytest.raises(utils.UserError, match=re.escape(needles[-1])):
        data.read_index(csv_path, check_files=False)


def test_check_reports_every_bad_label_line(tmp_path, capsys):
    rows = [("b.jpg", "x"), ("c.jpg", -1), ("d.jpg", 3.5)] + [(f"{i}.jpg", i) for i in range(8)]
    csv_path = write_csv(tmp_path / "index.csv", rows)
    code, out, err = cli(capsys, "check", "--csv", csv_path, "--no-files")
    assert_one_line_error(code, err, "3 problem(s)")
    for line in (2, 3, 4):
        assert f"line {line}: label" in out


def test_missing_files_reported_with_count_and_first_ten(tmp_path, capsys):
    photo(tmp_path / "present.jpg", (40, 40))
    rows = [("present.jpg", 0)] + [(f"gone_{i}.jpg", i % 8) for i in range(12)]
    csv_path = write_csv(tmp_path / "index.csv", rows)
    code, out, err = cli(capsys, "check", "--csv", csv_path)
    assert_one_line_error(code, err, "12 of 13 image files are missing", "line 3:", "gone_0.jpg", "line 12:")
    assert "line 13:" not in err and "gone_10.jpg" not in err  # only the first ten
    with pytest.raises(utils.UserError, match="12 of 13"):
        data.read_index(csv_path)
    assert len(data.read_index(csv_path, check_files=False)) == 13


def test_corrupt_image_and_box_outside(tmp_path, capsys):
    photo(tmp_path / "ok.jpg", (100, 80))
    (tmp_path / "corrupt.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes()[:400])
    (tmp_path / "text.jpg").write_text("not an image")
    rows = [("ok.jpg", 0, 10, 10, 50, 50), ("corrupt.jpg", 1, "", "", "", ""), ("text.jpg", 2, "", "", "", ""),
            ("ok.jpg", 3, 100, 10, 20, 20), ("ok.jpg", 4, -30, -30, 20, 20)]
    csv_path = write_csv(tmp_path / "index.csv", rows, ("path", "label", *data.BOX_COLUMNS))
    code, out, err = cli(capsys, "check", "--csv", csv_path, "--decode", "--img-size", "32")
    assert_one_line_error(code, err, "corrupt.jpg (CSV line 3)")
    assert "decoded 5 images: 4 failed" in out
    problems = [line for line in out.splitlines() if line.startswith("problem:") and "alpha" not in line]
    assert len(problems) == 4
    assert any("corrupt.jpg (CSV line 3)" in p for p in problems)
    assert any("text.jpg (CSV line 4)" in p for p in problems)
    assert any("outside" in p and "(CSV line 5)" in p for p in problems)
    assert any("outside" in p and "(CSV line 6)" in p for p in problems)

    samples = data.read_index(csv_path)
    dataset = data.FaceDataset(samples, img_size=32)
    assert dataset[0][0].shape == (3, 32, 32)
    with pytest.raises(utils.UserError, match=r"outside the 100x80 image .*ok.jpg \(CSV line 5\)"):
        dataset[3]
    with pytest.raises(utils.UserError, match=r"cannot decode image .*corrupt.jpg \(CSV line 3\)"):
        dataset[1]
    # Not from a CSV (predict.py's inputs): the message names the file and no CSV line.
    with pytest.raises(utils.UserError, match=r"cannot decode image \S*corrupt.jpg: ") as raised:
        data.load_face(data.Sample("corrupt.jpg", samples[1].file, 0, None, 0))
    assert "CSV line" not in str(raised.value)
    # (Inside a DataLoader worker: see test_real_processes; in-process, torch's worker shutdown after an error
    # waits 5 s, so that path runs where it overlaps other work.)


def test_data_error_compacts_a_worker_reraise():
    # The text DataLoader builds when it re-raises a worker's exception in the main process.
    reraised = ("Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
                '  File "x.py", line 1, in f\n    raise UserError(msg)\n'
                "utils.UserError: cannot decode image a.jpg (CSV line 7): broken data stream\n")
    assert str(utils.UserError(reraised)) == "cannot decode image a.jpg (CSV line 7): broken data stream"
    assert str(utils.UserError("Caught you: a plain message")) == "Caught you: a plain message"


def test_zero_count_class_is_a_clear_error_for_alpha(tmp_path, capsys):
    csv_path = write_csv(tmp_path / "index.csv", [(f"{i}.jpg", i) for i in range(7)])  # no contempt
    code, out, err = cli(capsys, "check", "--csv", csv_path, "--no-files")
    assert_one_line_error(code, err, "7 contempt")


def test_old_spellings_are_refused_with_a_one_line_pointer(tmp_path, capsys):
    code, out, err = cli(capsys, "check", "--csv", tmp_path / "x.csv", script="data.py")
    assert (code, out) == (2, "") and err == \
        "error: `python data.py` was renamed `python datasets.py` (same sub-commands and flags)\n"
    for command, old in (("demo", "--image-size"), ("prepare", "--size")):
        code, out, err = cli(capsys, command, "--out", tmp_path / "out", old, 32)
        assert (code, out, err) == (2, "", f"error: {old} was renamed --img-size\n")
    assert not (tmp_path / "out").exists()


# --- converters ------------------------------------------------------------------------------------------------------

def test_affectnet_converter(tmp_path, capsys):
    header = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
              "expression", "valence", "arousal")
    lm = "1.0;2.0;3.0;4.0"  # the real file quotes landmark lists like this
    rows = [("689/a.jpg", 10, 20, 100, 120, lm, 0, 0.1, 0.2), ("689/b.jpg", 0, 0, 50, 50, lm, 7, 0, 0),
            ("12/c.jpg", 5, 5, 60, 60, lm, 3, 0, 0),
            ("1/d.jpg", 1, 1, 10, 10, lm, 8, 0, 0), ("1/e.jpg", 1, 1, 10, 10, lm, 9, 0, 0),
            ("1/f.jpg", 1, 1, 10, 10, lm, 10, 0, 0), ("1/g.jpg", 1, 1, 0, 10, lm, 2, 0, 0),
            ("1/h.jpg", 1, 1, 10, -5, lm, 2, 0, 0), ("1/i.jpg", 1, 1, 10, 10, lm, "x", 0, 0)]
    source = write_csv(tmp_path / "training.csv", rows, header)
    out_csv = tmp_path / "index" / "train.csv"
    code, out, err = cli(capsys, "affectnet", "--csv", source, "--images-root", tmp_path / "Manually_Annotated",
                         "--out", out_csv)
    assert code == 0, err
    assert "kept 3, dropped 6" in out
    assert "dropped 2: non-positive face box" in out
    assert "dropped 1: expression 8 (None)" in out and "expression 10 (No-Face)" in out
    assert "dropped 1: expression is not an integer" in out
    written = list(csv.DictReader(open(out_csv)))
    assert list(written[0]) == ["path", "label", *data.BOX_COLUMNS]
    assert [r["label"] for r in written] == ["0", "7", "3"]
    assert written[0]["path"] == "../Manually_Annotated/689/a.jpg"  # resolves from the index's folder
    assert (written[0]["face_x"], written[0]["face_height"]) == ("10", "120")
    samples = data.read_index(out_csv, check_files=False)
    assert samples[0].file == str(out_csv.parent / "../Manually_Annotated/689/a.jpg")
    assert samples[0].box == (10, 20, 100, 120)

    code, out, err = cli(capsys, "affectnet", "--csv", source, "--out", tmp_path / "plain.csv")
    assert code == 0 and [r["path"] for r in csv.DictReader(open(tmp_path / "plain.csv"))][0] == "689/a.jpg"


def test_affectnet_npy_converter(tmp_path, capsys):
    split = tmp_path / "train_set"
    (split / "images").mkdir(parents=True)
    (split / "annotations").mkdir()
    for n in (0, 1, 2, 3, 10, 11):
        photo(split / "images" / f"{n}.jpg", (16, 16), seed=n)
    np.save(split / "annotations" / "0_exp.npy", np.array("3"))  # the release stores strings
    np.save(split / "annotations" / "1_exp.npy", np.array(6))  # some copies store integers
    np.save(split / "annotations" / "2_exp.npy", np.array("7"))
    np.save(split / "annotations" / "10_exp.npy", np.array("9"))  # outside AffectNet-8
    (split / "annotations" / "11_exp.npy").write_bytes(b"garbage")
    np.save(split / "annotations" / "99_exp.npy", np.array("1"))  # annotation without image; 3.jpg has none
    out_csv = tmp_path / "train.csv"
    code, out, err = cli(capsys, "affectnet-npy", "--split-dir", split, "--out", out_csv)
    assert code == 0, err
    assert "kept 3, dropped 4" in out
    assert "dropped 1: image without <n>_exp.npy annotation" in out
    assert "dropped 1: annotation outside 0-7" in out
    assert "dropped 1: unreadable annotation" in out
    assert "dropped 1: annotation without an image" in out
    samples = data.read_index(out_csv)
    assert [(s.path, s.label) for s in samples] == [("train_set/images/0.jpg", 3), ("train_set/images/1.jpg", 6),
                                                    ("train_set/images/2.jpg", 7)]


def test_folder_converter_maps_names_not_sort_order(tmp_path, capsys):
    # Alphabetical order (anger, contempt, disgust, ...) with mixed case and variants must map by name.
    names = {"Anger": 6, "contempt": 7, "DISGUSTED": 5, "fearful": 4, "Happiness": 1, "neutral": 0, "sadness": 2,
             "surprise": 3}
    for i, name in enumerate(sorted(names)):
        (tmp_path / "root" / name).mkdir(parents=True)
        photo(tmp_path / "root" / name / f"img{i}.jpg", (16, 16), seed=i)
    (tmp_path / "root" / "neutral" / "notes.txt").write_text("not an image")
    out_csv = tmp_path / "train.csv"
    code, out, err = cli(capsys, "folder", "--root", tmp_path / "root", "--out", out_csv)
    assert code == 0, err
    assert "kept 8, dropped 1" in out and "not an image file extension" in out
    got = {s.path.split("/")[1]: s.label for s in data.read_index(out_csv)}
    assert got == names

    for i in range(8):  # folders named by index
        (tmp_path / "by_index" / str(i)).mkdir(parents=True)
        photo(tmp_path / "by_index" / str(i) / "x.jpg", (16, 16))
    code, out, err = cli(capsys, "folder", "--root", tmp_path / "by_index", "--out", tmp_path / "idx.csv")
    assert code == 0, err
    assert [(s.path, s.label) for s in data.read_index(tmp_path / "idx.csv")] == [(f"by_index/{i}/x.jpg", i)
                                                                                   for i in range(8)]
    (tmp_path / "root" / "joy").mkdir()
    code, out, err = cli(capsys, "folder", "--root", tmp_path / "root", "--out", tmp_path / "bad.csv")
    assert_one_line_error(code, err, "unknown class folder name(s) joy", "Anger", "surprise")
    assert not (tmp_path / "bad.csv").exists()


# --- decoding, transforms, loader ------------------------------------------------------------------------------------

def test_loader_images_are_uint8_crops_and_normalize_is_imagenets(demo_data):
    samples = data.read_index(demo_data[1])
    dataset = data.FaceDataset(samples, img_size=48)
    image, label = dataset[5]
    assert image.shape == (3, 48, 48) and image.dtype == torch.uint8 and label == samples[5].label
    assert torch.equal(image, dataset[5][0])  # workers draw nothing random
    with Image.open(samples[5].file) as im:
        expected = np.asarray(im.convert("RGB").resize((48, 48), Image.Resampling.BILINEAR))
    assert np.abs(image.permute(1, 2, 0).numpy().astype(int) - expected).max() <= 1
    normalized = models.normalize(image[None])[0].permute(1, 2, 0).numpy()
    want = (expected / 255 - np.array(models.IMAGENET_MEAN)) / np.array(models.IMAGENET_STD)
    assert np.abs(normalized - want).max() < 0.03  # the <= 1 grey level above, in normalised units


def random_batch(n: int, size: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_batch_jitter_equals_torchvision_per_image():
    from torchvision.transforms.v2 import functional as F

    augment = data.BatchAugment(data.Augment(hflip=0.5, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1))
    images = random_batch(12)
    images[0] = 128  # a grey image: no hue, no saturation, no contrast
    params = augment.draw(12, torch.Generator().manual_seed(3))
    ours = augment.apply(images, params)
    for i in range(12):
        x = images[i].float() / 255
        if params.flip[i]:
            x = F.horizontal_flip(x)
        x = F.adjust_brightness(x, float(params.brightness[i]))
        x = F.adjust_contrast(x, float(params.contrast[i]))
        x = F.adjust_saturation(x, float(params.saturation[i]))
        x = F.adjust_hue(x, float(params.hue[i]))
        torch.testing.assert_close(ours[i], x, atol=1e-6, rtol=0)  # docs/thesis-choices.md: "equal within 1e-6"


def test_batch_augmentation_draws_per_image_and_flips_half():
    augment = data.BatchAugment(data.Augment())
    params = augment.draw(4000, torch.Generator().manual_seed(0))
    # Each image its own factors, inside ColorJitter's ranges.
    assert len(set(params.brightness.tolist())) > 3900  # float32 draws: a few may coincide
    assert params.brightness.min() >= 0.8 and params.brightness.max() <= 1.2 and params.hue.abs().max() <= 0.02
    flips = int(params.flip.sum())
    assert 1850 < flips < 2150  # Binomial(4000, 0.5): +-4.7 standard deviations
    two = augment(random_batch(1).repeat(2, 1, 1, 1), torch.Generator().manual_seed(1))
    assert not torch.equal(two[0], two[1])  # the same image twice in a batch comes out differently
    again = augment(random_batch(1).repeat(2, 1, 1, 1), torch.Generator().manual_seed(1))
    assert torch.equal(two, again)  # and the same generator seed draws the same


def test_zero_strength_augmentation_is_the_identity():
    images = random_batch(6)
    off = data.BatchAugment(data.Augment(hflip=0, brightness=0, contrast=0, saturation=0, hue=0))
    assert torch.equal(off(images, torch.Generator().manual_seed(0)), models.normalize(images))
    always = data.BatchAugment(data.Augment(hflip=1, brightness=0, contrast=0, saturation=0, hue=0))
    assert torch.equal(always(images, torch.Generator().manual_seed(0)), models.normalize(images.flip(3)))


def test_face_box_is_cropped_and_clamped(tmp_path):
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:, :100] = (255, 0, 0)
    pixels[:, 100:] = (0, 0, 255)
    Image.fromarray(pixels).save(tmp_path / "two.png")
    red = data.Sample("two.png", str(tmp_path / "two.png"), 0, (10, 10, 60, 80), 2)
    crop = data.load_face(red)
    assert crop.size == (60, 80) and np.asarray(crop)[..., 0].min() == 255
    clamped = data.Sample("two.png", str(tmp_path / "two.png"), 0, (150, -20, 100, 70), 3)
    crop = data.load_face(clamped)
    assert crop.size == (50, 50) and np.asarray(crop)[..., 2].min() == 255
    tensor = data.FaceDataset([red], img_size=16)[0][0]
    assert tensor.float().mean((1, 2)).tolist() == [255.0, 0.0, 0.0]


def test_reduced_scale_decoding_matches_plain(tmp_path, monkeypatch):
    photo(tmp_path / "big.jpg", (1200, 900))
    sample = data.Sample("big.jpg", str(tmp_path / "big.jpg"), 0, (300, 200, 600, 640), 2)
    # The box must keep >= S px: 600 / 8 = 75 >= 64, so S=64 decodes at 1/8; 600 / 4 = 150 < 224, so S=224 gets 1/2.
    assert data._draft_scale(600, 640, 64) == 8 and data._draft_scale(600, 640, 224) == 2
    assert data._draft_scale(600, 640, 301) == 1
    decoded = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: (decoded.append(im.size), load(im))[1])
    draft = data.FaceDataset([sample], img_size=64, draft=True)[0][0]
    plain = data.FaceDataset([sample], img_size=64, draft=False)[0][0]
    assert decoded[0] == (150, 113) and decoded[-1] == (1200, 900)  # 1/8 scale really used, and not for plain
    diff = (draft.float() - plain.float()).abs()
    assert diff.mean() < 2.0 and diff.max() < 12  # in 0-255 pixel levels
    Image.open(tmp_path / "big.jpg").save(tmp_path / "big.png")
    decoded.clear()
    data.load_face(data.Sample("big.png", str(tmp_path / "big.png"), 0, (300, 200, 600, 640), 2), 64)
    assert decoded[0] == (1200, 900)  # only JPEGs have a reduced-scale decoder


def test_prepare_crops_once_resumes_and_names_each_unreadable_image(tmp_path, capsys):
    # Full-release-like input: 1600 x 1200 photos with ~500 px face boxes, one file damaged.
    (tmp_path / "photos").mkdir()
    rows = []
    for i in range(4):
        photo(tmp_path / "photos" / f"{i}.jpg", (1600, 1200), seed=i)
        rows.append((f"photos/{i}.jpg", i, 300 + 50 * i, 200, 500, 520, f"0.{i}"))
    (tmp_path / "photos" / "bad.jpg").write_bytes((tmp_path / "photos" / "0.jpg").read_bytes()[:400])
    rows.append(("photos/bad.jpg", 5, 0, 0, 100, 100, "0.9"))
    index = write_csv(tmp_path / "train.csv", rows, ("path", "label", *data.BOX_COLUMNS, "valence"))
    code, out, err = cli(capsys, "prepare", "--csv", index, "--out", tmp_path / "prep", "--img-size", 64,
                         "--workers", 2)
    assert code == 1 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "cannot decode image" in lines[0] and "bad.jpg (CSV line 6)" in lines[0]
    assert lines[1].startswith("error: 1 image(s) could not be read") and "prepared 4 crops" in out
    with open(tmp_path / "prep" / "index.csv", newline="") as f:
        prepared = list(csv.DictReader(f))
    assert list(prepared[0]) == ["path", "label", "valence"]  # same rows and metadata, no box
    assert [(r["path"], r["label"], r["valence"]) for r in prepared] == [
        (f"photos/{i}.jpg", str(i), f"0.{i}") for i in range(4)]
    # The crops are what on-the-fly decoding gives, within JPEG re-encoding noise.
    fly = data.FaceDataset(data.read_index(index)[:4], img_size=64)
    cached = data.FaceDataset(data.read_index(tmp_path / "prep" / "index.csv"), img_size=64)
    for i in range(4):
        assert cached[i][0].shape == (3, 64, 64)
        assert (cached[i][0].float() - fly[i][0].float()).abs().mean() <= 2.0
    # A second call skips what is done and leaves the files alone.
    first = (tmp_path / "prep" / "photos" / "0.jpg").stat().st_mtime_ns
    code, out, err = cli(capsys, "prepare", "--csv", index, "--out", tmp_path / "prep", "--img-size", 64)
    assert code == 1 and "prepared 0 crops, 4 already there" in out
    assert (tmp_path / "prep" / "photos" / "0.jpg").stat().st_mtime_ns == first


def test_make_loader_is_seeded(demo_data):
    dataset = data.FaceDataset(data.read_index(demo_data[1]), img_size=16)
    order = lambda seed: torch.cat([y for _, y in data.make_loader(dataset, 8, 0, shuffle=True, seed=seed)])
    first = order(1)
    assert torch.equal(first, order(1)) and not torch.equal(first, order(2))
    assert sorted(first.tolist()) == sorted(s.label for s in dataset.samples)


# --- atomic_write ----------------------------------------------------------------------------------------------------

def test_atomic_write_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "sub" / "out.csv"
    with utils.atomic_write(target) as f:
        f.write("old\n")
    with pytest.raises(RuntimeError):
        with utils.atomic_write(target) as f:
            f.write("half-written")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert os.listdir(target.parent) == ["out.csv"]  # no temp file left behind
    with utils.atomic_write(target, "wb") as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"


def test_ctrl_c_ends_a_script_in_one_line_with_exit_130_keeping_what_it_wrote(tmp_path):
    """A real SIGINT in the middle of a script's work (utils.run_cli, every script's entry point but train.py's)."""
    out = tmp_path / "written.json"
    # Python's own Ctrl-C handling, as in a terminal: a test runner may start its children with SIGINT ignored.
    code = ("import argparse, os, signal, time, utils\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "def main(args):\n"
            "    utils.write_json(args.out, {'written': True})\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(60)  # the signal arrives here\n"
            "parser = argparse.ArgumentParser()\n"
            "parser.add_argument('--out')\n"
            "utils.run_cli(main, parser)\n")
    result = subprocess.run([sys.executable, "-c", code, "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 130
    assert result.stderr.splitlines() == ["interrupted (Ctrl-C)"]
    assert out.read_text() == '{\n  "written": true\n}\n'
