"""predict.py: face crops agree with evaluate.py, videos give one row per frame and face, a real photo's face is boxed
where it is and cropped with the 20 % margin, errors are one line."""
import csv
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data
import detectors
import evaluate
import expressions
import models
import predict
import utils

ROOT = Path(__file__).resolve().parent.parent
INSTALL = "needs OpenCV: pip install -r requirements-video.txt"
# Two cartoon faces (centre x, centre y, width) that OpenCV's Haar cascade finds; they drift right 3 px a frame.
FACES = ((180, 240, 120), (460, 220, 100))
# The centre of the face in scikit-image's astronaut portrait (512 x 512), marked by hand: halfway between the eyes
# (203-246, 100-103) and the mouth (~224, 145).
ASTRONAUT_FACE_CENTRE = (224, 122)
MARGIN = 0.2  # docs/face-detection.md: "Faces are cropped with a 20 % margin"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight ConvNeXt-Tiny checkpoint at 64 px (classification quality is irrelevant here)."""
    torch.manual_seed(0)
    model = models.build_model("convnext_tiny", weights="none")
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    arch = {"name": "convnext_tiny", "blocks": 1, "num_classes": 8, "img_size": 64, "classes": list(utils.AFFECTNET8)}
    models.save_checkpoint(path, model, arch, "predict_test")
    return path


def run_cli(*args: object, code: str | None = None) -> subprocess.CompletedProcess:
    """predict.py as a user runs it (or `code` executed first, then predict.py as __main__)."""
    argv = [str(a) for a in args]
    if code is None:
        cmd = [sys.executable, "predict.py", *argv]
    else:
        cmd = [sys.executable, "-c", f"{code}\nimport runpy, sys\nsys.argv = ['predict.py', *{argv!r}]\n"
                                     "runpy.run_path('predict.py', run_name='__main__')"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def probs_of(row: dict) -> np.ndarray:
    return np.array([float(row[f"prob_{c}"]) for c in utils.AFFECTNET8])


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


def predict_main(*args: object) -> None:
    """predict.py's main() in this process (no interpreter start-up), as the CLI would call it."""
    predict.main(predict.get_args_parser().parse_args([str(a) for a in args]))


def draw_face(cv2, img: np.ndarray, cx: int, cy: int, size: int) -> None:
    """A cartoon face (skin ellipse, dark eyes under brows, nose, mouth) that the Haar cascade detects."""
    s = size
    cv2.ellipse(img, (cx, cy), (s // 2, int(s * 0.65)), 0, 0, 360, (150, 180, 220), -1)
    ey = int(cy - s * 0.12)
    for side in (-1, 1):
        ex = cx + side * int(s * 0.2)
        cv2.ellipse(img, (ex, ey), (int(s * 0.1), int(s * 0.05)), 0, 0, 360, (40, 40, 40), -1)
        cv2.line(img, (ex - int(s * 0.12), ey - int(s * 0.1)), (ex + int(s * 0.12), ey - int(s * 0.1)),
                 (30, 30, 30), max(2, s // 25))
    cv2.line(img, (cx, ey + int(s * 0.05)), (cx, cy + int(s * 0.15)), (110, 140, 190), max(2, s // 30))
    cv2.ellipse(img, (cx, cy + int(s * 0.32)), (int(s * 0.18), int(s * 0.06)), 0, 0, 360, (60, 60, 150), -1)


def face_frame(cv2, shift: int = 0) -> np.ndarray:
    img = np.full((480, 640, 3), 120, np.uint8)
    for cx, cy, s in FACES:
        draw_face(cv2, img, cx + shift, cy, s)
    return img


def contains(row: dict, x: int, y: int) -> bool:
    fx, fy, fw, fh = (int(row[k]) for k in ("face_x", "face_y", "face_w", "face_h"))
    return fx <= x < fx + fw and fy <= y < fy + fh


@pytest.mark.parametrize("tta", ["none", "hflip"])
def test_crops_match_evaluate(demo_data, ckpt, tmp_path, tta):
    _, val_csv = demo_data
    eval_args = evaluate.get_args_parser().parse_args(
        ["--ckpt", str(ckpt), "--val-csv", str(val_csv), "--out", str(tmp_path / "eval"), "--workers", "0",
         "--device", "cpu", "--tta", tta])
    evaluate.main(eval_args)
    expected = {str(val_csv.parent / r["path"]): r for r in read_rows(tmp_path / "eval" / "predictions.csv")}

    # A folder input and a single file: both must be read exactly as evaluate.py reads the CSV's images.
    one_file = sorted(expected)[0]
    predict_main(val_csv.parent / "val", one_file, "--ckpt", ckpt, "--out", tmp_path / "pred", "--workers", 0,
                 "--device", "cpu", "--tta", tta)
    rows = read_rows(tmp_path / "pred" / "predictions.csv")
    assert len(rows) == len(expected) + 1
    assert {r["file"] for r in rows} == set(expected)
    for row in rows:
        want = expected[row["file"]]
        probs = probs_of(row)
        assert probs.sum() == pytest.approx(1.0, abs=1e-4)
        np.testing.assert_allclose(probs, [float(want[f"prob_{c}"]) for c in utils.AFFECTNET8], atol=2e-6)
        assert int(row["label"]) == int(want["pred"]) == int(np.argmax(probs))
        assert row["name"] == utils.AFFECTNET8[int(row["label"])]
        assert (row["frame"], row["face_x"], row["face_y"], row["face_w"], row["face_h"]) == ("0", "0", "0", "64", "64")


def test_tracker_matches_moving_faces_and_smooths():
    tracker = expressions.FaceTracker(alpha=0.25, max_missed=2)
    a, b = np.eye(8)[0], np.eye(8)[1]
    first = tracker.update(0, [(100, 100, 50, 50), (300, 100, 50, 50)], np.stack([a, b]))
    assert [t.id for t in first] == [0, 1]
    # Listed in the other order and moved: matched by overlap, not by position in the list.
    second = tracker.update(1, [(306, 104, 50, 50), (104, 98, 50, 50)], np.stack([a, a]))
    assert [t.id for t in second] == [1, 0]
    np.testing.assert_allclose(second[0].probs, 0.25 * b + 0.75 * a)
    np.testing.assert_allclose(second[1].probs, a)
    # A fast jump with no overlap still matches by centre distance; a far face starts a new track.
    third = tracker.update(2, [(130, 100, 50, 50), (500, 300, 50, 50)], np.stack([b, b]))
    assert [t.id for t in third] == [0, 2]
    np.testing.assert_allclose(third[0].probs, 0.25 * a + 0.75 * b)
    # Tracks unseen for more than max_missed frames are dropped: the same place later is a new face.
    assert [t.id for t in tracker.update(6, [(300, 100, 50, 50)], np.stack([a]))] == [3]


def test_video_and_detect_rows(ckpt, tmp_path):
    cv2 = pytest.importorskip("cv2", reason="video tests need: pip install -r requirements-video.txt")
    folder = tmp_path / "in"
    (folder / "clips").mkdir(parents=True)
    writer = cv2.VideoWriter(str(folder / "clips" / "two_faces.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 480))
    for i in range(10):
        writer.write(face_frame(cv2, shift=3 * i))
    writer.release()
    cv2.imwrite(str(folder / "photo.png"), face_frame(cv2))
    cv2.imwrite(str(folder / "empty.jpg"), np.full((240, 320, 3), 90, np.uint8))

    # Cartoon faces: the Haar cascade's test (the default detector is for real photos, tests/test_detectors.py).
    result = run_cli(folder, "--ckpt", ckpt, "--detect", "--detector", "haar", "--annotate", "--out", tmp_path / "out",
                     "--device", "cpu", "--workers", "0", "--smooth", "0.5")
    assert result.returncode == 0, result.stderr
    assert "FPS end to end" in result.stdout and "FPS model-only" in result.stdout
    rows = read_rows(tmp_path / "out" / "predictions.csv")
    video = [r for r in rows if r["file"].endswith("two_faces.mp4")]
    photo = [r for r in rows if r["file"].endswith("photo.png")]
    assert len(rows) == len(video) + len(photo)  # the empty image has no face, so no row

    # One row per frame and face, both faces found where they were drawn, each keeping its track id.
    assert sorted(int(r["frame"]) for r in video) == sorted(list(range(10)) * 2)
    for frame in range(10):
        faces = sorted((r for r in video if int(r["frame"]) == frame), key=lambda r: int(r["face_x"]))
        for row, (cx, cy, _) in zip(faces, FACES):
            assert contains(row, cx + 3 * frame, cy)
        assert [r["track"] for r in faces] == ["0", "1"]
    for row in rows:
        assert probs_of(row).sum() == pytest.approx(1.0, abs=1e-4)
        assert row["name"] == utils.AFFECTNET8[int(row["label"])] and int(row["label"]) == np.argmax(probs_of(row))
    assert len(photo) == 2 and all(contains(r, cx, cy) for r, (cx, cy, _) in zip(
        sorted(photo, key=lambda r: int(r["face_x"])), FACES))

    annotated = tmp_path / "out" / "annotated" / "in"
    assert (annotated / "photo.png").is_file() and (annotated / "empty.jpg").is_file()
    capture = cv2.VideoCapture(str(annotated / "clips" / "two_faces.mp4"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 10 and int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == 640
    capture.release()
    # Boxes are drawn in green: the annotated photo differs from the input exactly around the faces.
    drawn = np.asarray(cv2.imread(str(annotated / "photo.png")), dtype=int) - face_frame(cv2)
    assert np.abs(drawn).sum() > 0 and np.abs(drawn[:, :40]).sum() == 0


def test_bad_inputs_give_one_line_errors(ckpt, tmp_path):
    bad_image = tmp_path / "broken.jpg"
    bad_image.write_bytes(b"this is not a JPEG")
    not_ours = tmp_path / "not_ours.pt"
    torch.save({"weights": torch.zeros(3)}, not_ours)
    good_image = tmp_path / "face.png"
    Image.new("RGB", (64, 64), (128, 100, 90)).save(good_image)
    out = tmp_path / "o"

    # The CLI turns every UserError into one line on stderr and exit code 1 (checked once, end to end) ...
    assert_one_line_error(run_cli(good_image, "--ckpt", not_ours, "--out", out), "not_ours.pt", "not a FER checkpoint")
    # ... and each bad input raises a one-line UserError naming it.
    cases = [((tmp_path / "missing.jpg", "--ckpt", ckpt), "input not found: .*missing.jpg"),
             ((bad_image, "--ckpt", ckpt), "cannot read image .*broken.jpg"),
             ((tmp_path / "notes.txt", "--ckpt", ckpt), "notes.txt: not an image or video")]
    (tmp_path / "notes.txt").write_text("hello")
    if importlib.util.find_spec("cv2") is not None:
        bad_video = tmp_path / "broken.mp4"
        bad_video.write_bytes(b"\x00" * 100)
        cases.append(((bad_video, "--ckpt", ckpt), "cannot open video .*broken.mp4"))
    for args, message in cases:
        with pytest.raises(utils.UserError, match=message) as err:
            predict_main(*args, "--out", out, "--workers", 0)
        assert "\n" not in str(err.value)
    assert not out.exists()


def test_without_opencv_crops_work_and_detection_says_what_to_install(demo_data, ckpt, tmp_path, monkeypatch):
    _, val_csv = demo_data
    image = next((val_csv.parent / "val").rglob("*.jpg"))
    block = "import sys; sys.modules['cv2'] = None  # as if opencv-python-headless were not installed"
    assert_one_line_error(run_cli(image, "--ckpt", ckpt, "--detect", code=block), f"--detect {INSTALL}")

    monkeypatch.setitem(sys.modules, "cv2", None)
    predict_main(image, "--ckpt", ckpt, "--out", tmp_path / "o", "--workers", 0, "--annotate")
    assert len(read_rows(tmp_path / "o" / "predictions.csv")) == 1
    assert (tmp_path / "o" / "annotated" / image.name).is_file()
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    for args, message in (((video,), f"video input {video} {INSTALL}"),
                          ((image, "--camera", 0), f"--camera {INSTALL}")):
        with pytest.raises(utils.UserError, match=re.escape(message)):
            predict_main(*args, "--ckpt", ckpt)


def grown(box: tuple[int, int, int, int], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The box with `margin` of its width / height added on each side, clamped to the image: (x, y, w, h)."""
    x, y, w, h = box
    left, top = max(0, round(x - margin * w)), max(0, round(y - margin * h))
    right, bottom = min(width, round(x + w + margin * w)), min(height, round(y + h + margin * h))
    return left, top, right - left, bottom - top


def test_a_real_photos_face_is_boxed_where_it_is_and_read_with_the_margin(ckpt, tmp_path):
    cv2 = pytest.importorskip("cv2", reason="face detection needs: pip install -r requirements-video.txt")
    skimage_data = pytest.importorskip("skimage.data", reason="the real photo needs: pip install -r "
                                                              "requirements-test.txt")
    rgb = skimage_data.astronaut()
    photo = tmp_path / "astronaut.png"
    Image.fromarray(rgb).save(photo)
    predict_main(photo, "--ckpt", ckpt, "--detect", "--annotate", "--out", tmp_path / "out", "--workers", 0,
                 "--device", "cpu")  # the default detector, margin and smallest face
    (row,) = read_rows(tmp_path / "out" / "predictions.csv")
    box = tuple(int(row[k]) for k in ("face_x", "face_y", "face_w", "face_h"))
    assert contains(row, *ASTRONAUT_FACE_CENTRE) and 60 <= box[2] <= 140  # around the face, face-sized
    assert box == detectors.build("mtcnn", cv2)(rgb)[0]  # the detector's own box is the one reported

    # The model read the box grown by 20 % on each side: the probabilities are those of exactly that crop, and
    # clearly not those of the bare box.
    model, _ = models.load_model(ckpt)

    def probs_of_crop(crop: tuple[int, int, int, int]) -> np.ndarray:
        sample = data.Sample(path=photo.name, file=str(photo), label=0, box=crop, line=0)
        loader = data.make_loader(data.FaceDataset([sample], 64), batch_size=1, workers=0)
        return models.predict_logits(model, loader, torch.device("cpu"))[0].softmax(dim=1)[0].double().numpy()

    with_margin = probs_of_crop(grown(box, MARGIN, 512, 512))
    np.testing.assert_allclose(probs_of(row), with_margin, rtol=0, atol=2e-6)
    assert np.abs(probs_of_crop(box) - with_margin).max() > 1e-4

    # The annotated copy draws that box: a green frame on its edges, the face inside left as it was.
    annotated = np.asarray(Image.open(tmp_path / "out" / "annotated" / "astronaut.png").convert("RGB"))
    green = np.all(annotated == (0, 255, 0), axis=-1)
    x, y, w, h = box
    assert green[y:y + h, x].all() and green[y:y + h, x + w - 1].all() and green[y + h - 1, x:x + w].all()
    cx, cy = ASTRONAUT_FACE_CENTRE
    assert np.array_equal(annotated[y + 8:y + h - 8, x + 8:x + w - 8], rgb[y + 8:y + h - 8, x + 8:x + w - 8])
    assert not green[cy, cx]

    # --min-face reaches the detector: searched only for faces of 300 px and more, the ~90 px face is not found.
    predict_main(photo, "--ckpt", ckpt, "--detect", "--min-face", 300, "--out", tmp_path / "big_only", "--workers",
                 0, "--device", "cpu")
    assert read_rows(tmp_path / "big_only" / "predictions.csv") == []
