"""Real-time video: the frame-dropping reader, whole-frame detection every k-th frame with faces followed in between
(on a real photo moved as a camera would see it), Ctrl-C ending a video with complete outputs, --benchmark, and one
bad file not stopping a batch. No test measures time."""
import csv
import json
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
import detectors
import models
import predict
import realtime
import utils

ROOT = Path(__file__).resolve().parent.parent
# The astronaut's face centre in scikit-image's 512 x 512 portrait (as tests/test_detectors.py marks it).
ASTRONAUT_FACE = (222, 115)


class NumberedSource:
    """A fake camera: read() returns frames whose pixels hold their number, as fast as asked, `limit` of them (None:
    endless); `produced` counts the frames handed out. Optionally blocks before frame `gate_at` until released."""

    def __init__(self, limit: int | None = None, fail_at: int | None = None) -> None:
        self.limit, self.fail_at = limit, fail_at
        self.lock = threading.Lock()
        self.produced = 0
        self.gates: dict[int, threading.Event] = {}  # frame number -> released before it is read
        self.waiting: dict[int, threading.Event] = {}  # frame number -> set once the reader waits for it

    def gate(self, number: int) -> None:
        """Make the reader wait before frame `number` until release(number)."""
        self.gates[number], self.waiting[number] = threading.Event(), threading.Event()

    def release(self, number: int) -> None:
        self.gates[number].set()

    def read(self) -> tuple[bool, np.ndarray | None]:
        number = self.produced
        if number in self.gates:
            self.waiting[number].set()
            self.gates[number].wait()
        if self.limit is not None and number >= self.limit:
            return False, None
        if number == self.fail_at:
            raise OSError("camera unplugged")
        with self.lock:
            self.produced += 1
        return True, np.full((2, 2, 3), number % 256, np.uint8)


def test_newest_frame_is_always_the_one_taken():
    source = NumberedSource(limit=8)
    source.gate(5)
    source.gate(8)
    stop = threading.Event()
    with realtime.NewestFrame(source.read) as reader:
        # Frames 0-4 arrive while the pipeline is busy: it then gets frame 4, and 0-3 are dropped unseen.
        assert source.waiting[5].wait(10)
        first = reader.take(stop)
        assert first.index == 4 and first.image[0, 0, 0] == 4 and reader.dropped == 4
        source.release(5)
        assert source.waiting[8].wait(10)
        second = reader.take(stop)
        assert second.index == 7 and second.image[0, 0, 0] == 7 and reader.dropped == 6
        source.release(8)
        assert reader.take(stop) is None  # the source ended: nothing newer will come
        assert first.captured <= second.captured
    assert not reader.running


def test_a_slow_pipeline_on_a_fast_source_drops_stale_frames():
    source = NumberedSource(limit=400)
    stop, taken = threading.Event(), []
    with realtime.NewestFrame(source.read) as reader:
        while True:
            with source.lock:
                produced_before = source.produced
            frame = reader.take(stop)
            if frame is None:
                break
            # Frames up to produced_before - 2 were published before take() was called (the reader publishes frame
            # n before it reads n + 1), so the frame taken is at least that new: never an old frame from a queue.
            assert frame.index >= produced_before - 2
            assert frame.image[0, 0, 0] == frame.index % 256
            taken.append(frame.index)
            time.sleep(0.002)  # a pipeline slower than its source (no assertion depends on the clock)
    assert not reader.running
    assert taken == sorted(set(taken))  # strictly increasing
    assert reader.dropped > 0 and len(taken) + reader.dropped == source.produced == 400
    assert taken[-1] == 399  # the last frame read is never dropped


def test_stop_ends_an_endless_source_and_read_errors_reach_the_pipeline():
    source, stop = NumberedSource(limit=None), threading.Event()
    with realtime.NewestFrame(source.read) as reader:
        frames = []
        for frame in reader.frames(stop):
            frames.append(frame.index)
            if len(frames) == 3:
                stop.set()
        assert len(frames) == 3 and frames == sorted(set(frames))
    assert not reader.running  # leaving the block stopped the thread although the source never ends

    with realtime.NewestFrame(NumberedSource(limit=None, fail_at=5).read) as reader:
        with pytest.raises(OSError, match="camera unplugged"):
            for _ in reader.frames(threading.Event()):
                pass
    assert not reader.running

    in_order = [f.index for f in realtime.InOrder(NumberedSource(limit=6).read).frames(threading.Event())]
    assert in_order == list(range(6))


# ---------------------------------------------------------------------------------------------------------------------
# Following faces between whole-frame detections, on a real photo
# ---------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cv2():
    return pytest.importorskip("cv2", reason="video tests need: pip install -r requirements-video.txt")


@pytest.fixture(scope="module")
def clip_frames(cv2) -> list[tuple[np.ndarray, tuple[float, float]]]:
    """The test clip's first 24 frames (the astronaut portrait panned, zoomed and rolled at 30 fps) as RGB, each with
    where the face centre is in it."""
    skimage_data = pytest.importorskip("skimage.data", reason="real photos need: pip install -r requirements-test.txt")
    photo = skimage_data.astronaut()
    frames = []
    for i in range(24):
        matrix = realtime.clip_matrix(cv2, i / 30)
        centre = matrix @ np.array([*ASTRONAUT_FACE, 1.0])
        frames.append((realtime.clip_frame(cv2, photo, i / 30), (float(centre[0]), float(centre[1]))))
    return frames


def holds(box: tuple, point: tuple) -> bool:
    x, y, w, h = box
    return x <= point[0] < x + w and y <= point[1] < y + h


def test_faces_are_followed_between_whole_frame_detections(cv2, clip_frames):
    detector = detectors.build("mtcnn", cv2)
    finder = realtime.FaceFinder(detector, every=8, track="near")
    centres = []
    for rgb, face in clip_frames:
        boxes = finder(rgb)
        assert len(boxes) == 1 and holds(boxes[0], face)  # the face is kept, and the box is on it
        # ... and agrees with a whole-frame detection of the same frame.
        assert detectors.iou(boxes[0], detector(rgb)[0]) > 0.6
        centres.append((boxes[0][0] + boxes[0][2] / 2, boxes[0][1] + boxes[0][3] / 2))
    assert (finder.whole, finder.followed) == (3, 21)  # frames 0, 8, 16 searched whole
    # The box follows the face: the face moves 30+ px over these frames and the box centre with it.
    moved = np.array(centres[-1]) - np.array(centres[0])
    truth = np.array(clip_frames[-1][1]) - np.array(clip_frames[0][1])
    assert np.hypot(*truth) > 30 and np.hypot(*(moved - truth)) < 0.25 * np.hypot(*truth)

    # hold keeps the last boxes unchanged until the next whole-frame search.
    hold = realtime.FaceFinder(detector, every=4, track="hold")
    boxes = [hold(rgb) for rgb, _ in clip_frames[:5]]
    assert boxes[1] == boxes[2] == boxes[3] == boxes[0] and boxes[4] != boxes[0] and hold.whole == 2


def test_a_lost_face_gets_a_whole_frame_search_at_once(cv2, clip_frames):
    finder = realtime.FaceFinder(detectors.build("mtcnn", cv2), every=10, track="near")
    empty = np.full_like(clip_frames[0][0], 128)
    assert len(finder(clip_frames[0][0])) == 1 and finder.whole == 1
    assert finder(empty) == [] and finder.whole == 2  # lost near its box: the whole frame is searched at once
    assert finder(clip_frames[2][0]) == [] and finder.whole == 2  # nothing to follow until the next whole search
    for rgb, _ in clip_frames[3:11]:
        assert finder(rgb) == []
    # Found again by the next whole-frame search, 10 frames after the last one (frame 1's).
    boxes = finder(clip_frames[11][0])
    assert finder.whole == 3 and len(boxes) == 1 and holds(boxes[0], clip_frames[11][1])


def test_clip_command_writes_the_test_clip(cv2, tmp_path, monkeypatch):
    pytest.importorskip("skimage.data", reason="the clip needs: pip install -r requirements-test.txt")
    out = tmp_path / "clip.mp4"
    datasets.main(datasets.get_args_parser().parse_args(["clip", "--out", str(out), "--frames", "12"]))
    capture = cv2.VideoCapture(str(out))
    frames = []
    while (frame := capture.read())[0]:
        frames.append(frame[1])
    assert len(frames) == 12 and frames[0].shape == (480, 640, 3) and capture.get(cv2.CAP_PROP_FPS) == 30
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temporary file left

    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(utils.UserError, match="pip install -r requirements-test.txt"):
        datasets.main(datasets.get_args_parser().parse_args(["clip", "--out", str(tmp_path / "x.mp4")]))


# ---------------------------------------------------------------------------------------------------------------------
# predict.py: a video cut short by Ctrl-C, --benchmark, bad files in a batch
# ---------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight vgg_face48 checkpoint (48 px grayscale, FER2013's 7 classes): the released model's shape."""
    torch.manual_seed(0)
    classes = ["anger", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    arch = {"name": "vgg_face48", "blocks": 1, "num_classes": 7, "img_size": 48, "classes": classes,
            "grayscale": True}
    models.save_checkpoint(path, models.build_model("vgg_face48", num_classes=7, weights="none"), arch, "rt_test")
    return path


@pytest.fixture(scope="module")
def clip(cv2, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test clip, 150 frames at 30 fps (5 s when played in real time)."""
    pytest.importorskip("skimage.data", reason="the clip needs: pip install -r requirements-test.txt")
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    realtime.write_clip(cv2, path, frames=150)
    return path


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_ctrl_c_ends_a_video_with_complete_outputs(ckpt, clip, tmp_path, cv2):
    out = tmp_path / "out"
    # --realtime plays the clip at 30 fps, so it is still running when Ctrl-C comes.
    proc = subprocess.Popen([sys.executable, "predict.py", str(clip), "--ckpt", str(ckpt), "--out", str(out),
                             "--annotate", "--realtime", "--device", "cpu"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if "Ctrl-C stops" in line:  # printed once the loop is ready for it
                break
        time.sleep(1.0)  # let some frames through (how many does not matter)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: stopped by Ctrl-C or q after ")
    taken = int(stderr.split("after ")[1].split()[0])
    assert 0 < taken < 150
    rows = read_rows(out / "predictions.csv")
    frames = [int(r["frame"]) for r in rows]
    assert len(rows) == taken and frames == sorted(set(frames))  # one face per frame taken, newest first
    capture = cv2.VideoCapture(str(out / "annotated" / "clip.mp4"))
    written = 0
    while capture.read()[0]:
        written += 1
    assert written == taken  # the annotated video is whole and holds every frame taken
    assert [p.name for p in (out / "annotated").iterdir()] == ["clip.mp4"]  # no temporary file left


def test_show_without_a_gui_says_what_to_install(ckpt, clip, cv2, tmp_path):
    try:
        cv2.namedWindow("probe")
        cv2.destroyWindow("probe")
        pytest.skip("this OpenCV has a GUI: --show works")
    except cv2.error:
        pass
    with pytest.raises(utils.UserError, match="--show needs OpenCV with a GUI.*pip install 'opencv-python<5'"):
        predict.main(predict.get_args_parser().parse_args([str(clip), "--ckpt", str(ckpt), "--show", "--out",
                                                           str(tmp_path / "o")]))
    assert not (tmp_path / "o").exists()


def test_benchmark_table(ckpt, clip, tmp_path):
    out = tmp_path / "bench"
    predict.main(predict.get_args_parser().parse_args(
        [str(clip), "--ckpt", str(ckpt), "--out", str(out), "--device", "cpu", "--max-frames", "20",
         "--detect-every", "5", "--benchmark", "eager"]))
    results = json.loads((out / "realtime.json").read_text())["rows"]
    assert [(r["mode"], r["detect_every"], r["frames"]) for r in results] == [("eager", 1, 20), ("eager", 5, 20)]
    assert results[0]["faces_kept"] == results[0]["labels_agree"] == 1.0  # the reference against itself
    assert results[1]["faces_kept"] == 1.0 and results[1]["whole_frame_detections"] == 4
    assert 0.0 <= results[1]["labels_agree"] <= 1.0
    assert (out / "realtime.md").read_text().count("| eager") == 2
    parser = predict.get_args_parser()
    with pytest.raises(SystemExit):
        parser.parse_args([str(clip), "--benchmark", "eager,int9"])
    with pytest.raises(utils.UserError, match="--benchmark onnx: runs an .onnx model, not .*best.pt"):
        predict.main(parser.parse_args([str(clip), "--ckpt", str(ckpt), "--out", str(out), "--benchmark",
                                        f"onnx={ckpt}"]))


def test_agreement_counts_kept_faces_and_same_labels():
    def row(frame: int, box: tuple, label: int) -> list:
        return ["v.mp4", frame, 0, *box, label, "x"]

    reference = [row(0, (0, 0, 100, 100), 1), row(1, (0, 0, 100, 100), 2), row(2, (0, 0, 100, 100), 3),
                 row(3, (0, 0, 100, 100), 4)]
    run = [row(0, (10, 0, 100, 100), 1),  # IoU 0.82: kept, same label
           row(1, (0, 0, 100, 100), 5),  # kept, another label
           row(2, (60, 0, 100, 100), 3),  # IoU 0.25: not kept
           row(4, (0, 0, 100, 100), 4)]  # another frame: frame 3's face is not kept
    assert realtime.agreement(reference, run) == (0.5, 0.5)


def test_one_bad_file_does_not_stop_a_batch(ckpt, tmp_path, capsys):
    skimage_data = pytest.importorskip("skimage.data", reason="real photos need: pip install -r requirements-test.txt")
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(skimage_data.astronaut()).save(folder / "astronaut.jpg", quality=90)
    # A PNG whose header claims 30000 x 30000 pixels: over Pillow's decompression-bomb limit, a few bytes on disk.
    Image.new("RGB", (1, 1)).save(folder / "huge.png")
    png = bytearray((folder / "huge.png").read_bytes())
    png[16:24] = (30000).to_bytes(4, "big") * 2
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")  # the IHDR chunk's CRC, over its type and data
    (folder / "huge.png").write_bytes(bytes(png))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes((folder / "astronaut.jpg").read_bytes()[:20000])
    (folder / "notes.jpg").write_text("not a picture\n")
    bad = ("huge.png", "empty.jpg", "truncated.jpg", "notes.jpg")

    out = tmp_path / "out"
    capsys.readouterr()
    # The count comes last, as a UserError: the CLI prints it as one "error: ..." line and exits with code 1.
    with pytest.raises(utils.UserError, match=r"^4 of 5 inputs could not be read \(each named above\)"):
        predict.main(predict.get_args_parser().parse_args([str(folder), "--ckpt", str(ckpt), "--out", str(out),
                                                           "--annotate", "--workers", "0", "--device", "cpu"]))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("skipped: ") for line in lines), lines
    for name in bad:  # each bad file named once, on a line of its own with the reason
        assert sum(name in line for line in lines) == 1
    reasons = {name: next(line for line in lines if name in line) for name in bad}
    assert "decompression bomb" in reasons["huge.png"] and "truncated" in reasons["truncated.jpg"]
    rows = read_rows(out / "predictions.csv")
    assert [Path(r["file"]).name for r in rows] == ["astronaut.jpg"]
    assert [p.name for p in (out / "annotated" / "photos").iterdir()] == ["astronaut.jpg"]

    # A bad file given alone: the one-line error it always had, naming it.
    for name in bad:
        with pytest.raises(utils.UserError, match=f"cannot (read|decode) image .*{name}") as err:
            predict.main(predict.get_args_parser().parse_args([str(folder / name), "--ckpt", str(ckpt), "--out",
                                                              str(tmp_path / "alone"), "--workers", "0"]))
        assert "\n" not in str(err.value)
    assert not (tmp_path / "alone").exists()

