"""Real-time video for predict.py: frames in order or always the newest, faces found every k-th frame and followed
in between, Ctrl-C as a clean stop, a video or camera run end to end (predict_video: CSV rows, timings, annotated mp4,
--show window), its agreement with detection on every frame, and the test clip the end-to-end measurements run on.

    with realtime.NewestFrame(capture.read) as source:      # a camera: reading runs in its own thread
        for frame in source.frames(stop):                   # the newest frame each time; stale ones are dropped
            boxes = finder(frame.image[:, :, ::-1])         # realtime.FaceFinder: whole-frame detection every k-th

    python datasets.py clip --out clip.mp4                  # the 640 x 480 test clip (needs scikit-image)
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

import detectors
import expressions
import utils

# How often a waiting pipeline looks at its stop flag, in seconds: Ctrl-C ends a wait for a frame this soon.
POLL_S = 0.05
Reader = Callable[[], tuple[bool, Any]]  # cv2.VideoCapture.read: (ok, BGR image)


@dataclass(frozen=True)
class Frame:
    """One frame: its position in the source (gaps are frames dropped unseen), when it was read
    (time.perf_counter(), the start of its capture-to-label latency), and the image as read (BGR)."""

    index: int
    captured: float
    image: np.ndarray


# ---------------------------------------------------------------------------------------------------------------------
# Frame sources
# ---------------------------------------------------------------------------------------------------------------------

@dataclass
class InOrder(contextlib.AbstractContextManager):
    """Every frame of a source, read when the pipeline asks for the next one (a video file: nothing is dropped)."""

    read: Reader
    dropped: int = 0

    def __exit__(self, *exc: object) -> None:
        """Nothing to start or stop: frames are read by the pipeline's own thread."""

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Frames until the source ends or `stop` is set."""
        index = 0
        while not stop.is_set():
            ok, image = self.read()
            if not ok:
                return
            yield Frame(index, time.perf_counter(), image)
            index += 1


class NewestFrame:
    """Reads a source in its own thread and keeps only the newest frame, so a slow pipeline never falls behind.

    A camera delivers frames at its own rate whether or not they are taken; a queue would make a pipeline slower
    than the camera show ever older frames. Here each frame replaces the one before it if that one was not taken
    yet (counted in `dropped`), and frames() always yields the newest frame read. pace_fps > 0 releases frame i
    no earlier than i / pace_fps seconds after the start: a video file played as if it came from a camera.
    Use it as a context manager: leaving it stops the thread and waits for it.
    """

    def __init__(self, read: Reader, pace_fps: float = 0.0) -> None:
        self.read, self.pace_fps = read, pace_fps
        self.dropped = 0  # frames replaced by a newer one before the pipeline took them
        self.read_count = 0  # frames read from the source
        self._ready = threading.Condition()
        self._newest: Frame | None = None
        self._ended = False
        self._error: BaseException | None = None
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-reader", daemon=True)

    def __enter__(self) -> NewestFrame:
        """Start the reading thread."""
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop reading and wait for the thread (it finishes the read in progress, at most one frame's time)."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def running(self) -> bool:
        """Whether the reading thread is alive."""
        return self._thread.is_alive()

    def _run(self) -> None:
        """The reading thread: read, wait for the frame's due time when paced, publish as the newest."""
        start = time.perf_counter()
        try:
            while not self._closing.is_set():
                ok, image = self.read()
                if not ok:
                    break
                if self.pace_fps > 0:
                    due = start + self.read_count / self.pace_fps
                    if self._closing.wait(max(0.0, due - time.perf_counter())):
                        break
                frame = Frame(self.read_count, time.perf_counter(), image)
                self.read_count += 1
                with self._ready:
                    if self._newest is not None:
                        self.dropped += 1
                    self._newest = frame
                    self._ready.notify()
        except BaseException as err:  # handed to the pipeline's thread, which raises it
            self._error = err
        finally:
            with self._ready:
                self._ended = True
                self._ready.notify()

    def take(self, stop: threading.Event) -> Frame | None:
        """The newest frame not taken yet, waiting for one; None once the source has ended or `stop` is set."""
        with self._ready:
            while self._newest is None and not self._ended:
                if stop.is_set():
                    return None
                self._ready.wait(POLL_S)
            if self._error is not None:
                raise self._error
            frame, self._newest = self._newest, None
            return frame

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """The newest frame each time the pipeline asks, until the source ends or `stop` is set."""
        while not stop.is_set() and (frame := self.take(stop)) is not None:
            yield frame


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[threading.Event]:
    """An event that the first Ctrl-C (SIGINT) sets instead of raising, so the frame in progress finishes and every
    output is closed whole; a second Ctrl-C raises KeyboardInterrupt as usual. Outside the main thread (where
    Python cannot install a handler) the event is only set by the caller."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        stop.set()
        signal.signal(signal.SIGINT, previous)  # the next Ctrl-C interrupts at once

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------------------------------------------------------------
# Faces between detections
# ---------------------------------------------------------------------------------------------------------------------

def _follow(detector: detectors.FaceDetector, rgb: np.ndarray,
            boxes: list[detectors.Box]) -> list[detectors.Box] | None:
    """Each face searched again near its last box (FaceDetector.near); None when one is lost."""
    found = []
    for box in boxes:
        if (near := detector.near(rgb, box)) is None:
            return None
        found.append(near)
    # Two faces that walked into each other are found as one: keep it once.
    return detectors.merge(found)


def _hold(detector: detectors.FaceDetector, rgb: np.ndarray, boxes: list[detectors.Box]) -> list[detectors.Box]:
    """The last boxes, unchanged (no detection at all between whole-frame detections)."""
    return list(boxes)


# --track: how faces are followed between whole-frame detections. A new way is one function and one entry here.
TRACKS: dict[str, Callable[[detectors.FaceDetector, np.ndarray, list[detectors.Box]], list[detectors.Box] | None]] = {
    "near": _follow,
    "hold": _hold,
}
DEFAULT_TRACK = next(iter(TRACKS))


@dataclass
class FaceFinder:
    """The faces of each frame of a video: the detector on the whole frame every `every`-th frame, and in between
    the previous frame's faces followed by TRACKS[track]. A face lost in between (and every frame when every is 1)
    gets a whole-frame detection at once. Counts both kinds of search, for the summary."""

    detector: detectors.FaceDetector
    every: int = 1
    track: str = DEFAULT_TRACK
    boxes: list[detectors.Box] = field(default_factory=list)
    countdown: int = 0  # frames until the next whole-frame detection
    whole: int = 0
    followed: int = 0

    def __call__(self, rgb: np.ndarray) -> list[detectors.Box]:
        """Face boxes (x, y, w, h) in a uint8 RGB frame, left to right."""
        found = None
        if self.countdown > 0:
            self.countdown -= 1
            found = TRACKS[self.track](self.detector, rgb, self.boxes) if self.boxes else []
            self.followed += found is not None
        if found is None:
            found = self.detector(rgb)
            self.whole += 1
            self.countdown = self.every - 1
        self.boxes = sorted(found)
        return self.boxes


# ---------------------------------------------------------------------------------------------------------------------
# Videos and the camera
# ---------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """One thing to predict on: kind "image" | "video" | "camera", its path (or camera index), its name in the CSV
    and its relative name for annotated copies (a folder input keeps its sub-folders)."""

    kind: str
    path: str
    name: str
    rel: str


@dataclass
class VideoStats:
    """Counts and timings of one video or camera session, for the summary line and --benchmark."""

    frames: int = 0  # frames the pipeline took (each one written to the annotated video)
    analysed: int = 0  # frames whose faces were found and classified (--every)
    faces: int = 0
    dropped: int = 0  # frames a camera (or --realtime) delivered while the pipeline was busy: never seen
    whole: int = 0  # whole-frame detections
    followed: int = 0  # frames whose faces were followed near their last boxes (--track)
    model_calls: int = 0
    seconds: float = 0.0
    detect_s: float = 0.0
    model_s: float = 0.0
    warmup_s: float = 0.0
    latencies: list[float] = field(default_factory=list)  # capture to label, seconds, one per frame taken
    stopped: bool = False  # ended by Ctrl-C or q before the source ended

    def latency_ms(self, percent: float) -> float:
        """A percentile of the capture-to-label latency, in ms."""
        return 1000 * float(np.percentile(self.latencies, percent)) if self.latencies else float("nan")

    def fps(self) -> float:
        """Frames taken per second of wall time, one-off compilation left out."""
        return self.frames / max(self.seconds - self.warmup_s, 1e-9)

    def summary(self, name: str) -> str:
        """One line: end-to-end FPS, latency, detection and model-only time (one-off compilation left out)."""
        model = (f"model {1000 * self.model_s / self.model_calls:.1f} ms per frame with faces = "
                 f"{self.model_calls / self.model_s:.1f} FPS model-only" if self.model_calls else "model-only: no face")
        warm = f"; {self.warmup_s:.1f} s one-off warm-up left out" if self.warmup_s > 0.05 else ""
        detect = (f"detection {1000 * self.detect_s / self.analysed:.1f} ms/frame ({self.whole} whole-frame, "
                  f"{self.followed} followed); " if self.analysed else "")
        dropped = f", {self.dropped} dropped" if self.dropped else ""
        dropped += ", stopped by Ctrl-C or q" if self.stopped else ""
        return (f"{name}: {self.frames} frames ({self.analysed} analysed, {self.faces} faces{dropped}) in "
                f"{self.seconds - self.warmup_s:.1f} s: {self.fps():.1f} FPS end to end; capture to label p50 "
                f"{self.latency_ms(50):.1f} ms, p95 {self.latency_ms(95):.1f} ms; {detect}{model}{warm}")


class VideoOutput(contextlib.AbstractContextManager):
    """An annotated mp4 written to a temporary file beside its name; leaving the `with` block gives the file its
    name, or removes it, half-written, when the block raised."""

    def __init__(self, cv2: Any, path: Path, fps: float) -> None:
        self.cv2, self.path, self.fps = cv2, path, fps
        self.tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
        self.writer: Any = None

    def write(self, bgr: np.ndarray) -> None:
        """Append a frame (opened at the first frame's size)."""
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = self.cv2.VideoWriter(str(self.tmp), self.cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                               (bgr.shape[1], bgr.shape[0]))
            if not self.writer.isOpened():
                raise utils.UserError(f"cannot write video {self.path} (mp4v codec missing from OpenCV?)")
        self.writer.write(bgr)

    def __exit__(self, error: type[BaseException] | None, *exc: object) -> None:
        """Close the file (nothing to do when no frame was written) and rename it, or remove it after an error."""
        if self.writer is not None:
            self.writer.release()
            if error is None:
                os.replace(self.tmp, self.path)
            else:
                self.tmp.unlink(missing_ok=True)


class Window:
    """--show: the annotated frames in an OpenCV window; q (or Esc) in it ends the session."""

    QUIT_KEYS = (ord("q"), 27)

    def __init__(self, cv2: Any, title: str) -> None:
        self.cv2, self.title = cv2, title
        cv2.namedWindow(title)  # main() checked that this OpenCV has a GUI

    def show(self, bgr: np.ndarray) -> bool:
        """Draw a frame; True when q or Esc was pressed."""
        self.cv2.imshow(self.title, bgr)
        return (self.cv2.waitKey(1) & 0xFF) in self.QUIT_KEYS

    def close(self) -> None:
        """Close the window."""
        self.cv2.destroyWindow(self.title)


def check_window(cv2: Any) -> None:
    """--show fails at once, with the install to fix it, when this OpenCV has no GUI (the -headless wheel)."""
    try:
        cv2.namedWindow("predict.py")
        cv2.destroyWindow("predict.py")
    except cv2.error:
        raise utils.UserError("--show needs OpenCV with a GUI, not opencv-python-headless: pip uninstall "
                              "opencv-python-headless && pip install 'opencv-python<5'") from None


def open_capture(cv2: Any, src: Source) -> tuple[Any, float, int]:
    """The opened capture of a video file or camera, its frame rate (30 when unknown) and frame count (0: unknown)."""
    camera = src.kind == "camera"
    capture = cv2.VideoCapture(int(src.path) if camera else src.path)
    if not capture.isOpened():
        raise utils.UserError(f"cannot open {src.kind} {src.path}")
    total = 0 if camera else max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    return capture, capture.get(cv2.CAP_PROP_FPS) or 30.0, total


def predict_video(src: Source, cv2: Any, classifier: expressions.FaceClassifier, detector: detectors.FaceDetector,
                  transform: Callable[[Image.Image], torch.Tensor], classes: Sequence[str],
                  args: argparse.Namespace, names: expressions.OutputNames | None
                  ) -> tuple[list[list[Any]], VideoStats]:
    """CSV rows for every analysed frame and face of a video file or camera, and its timing stats.

    A camera (and a file with --realtime) is read in its own thread and the newest frame is always taken; a file
    is read frame by frame, every frame taken. Ctrl-C (or q in the --show window) ends it after the frame in
    progress, with the rows and the annotated video complete up to there.
    """
    capture, fps_in, total = open_capture(cv2, src)
    live = src.kind == "camera" or args.realtime
    # A camera paces itself; a file under --realtime is released at its own frame rate.
    reader = NewestFrame(capture.read, 0.0 if src.kind == "camera" else fps_in) if live \
        else InOrder(capture.read)
    output = VideoOutput(cv2, names(src.rel, ".mp4"), fps_in) if names is not None else None
    finder = FaceFinder(detector, args.detect_every, args.track)
    tracker = expressions.FaceTracker(alpha=args.smooth, max_missed=10 * args.every)
    total = min(total, args.max_frames) if args.max_frames and total else total
    stats, rows, shown = VideoStats(), [], []
    meter = utils.Progress(total, src.name) if total > 0 and not live else None
    warm_before, model_before, calls_before = classifier.warmup_s, classifier.model_s, classifier.model_calls
    window = None
    start = last_print = time.perf_counter()
    try:
        window = Window(cv2, f"predict.py {src.name} (q: quit)") if args.show else None
        with stop_on_interrupt() as stop, reader, output or contextlib.nullcontext():
            print(f"{src.name}: " + ("always the newest frame" if live else "every frame") + "; Ctrl-C"
                  + (" or q" if window else "") + " stops, keeping what was done", flush=True)
            for frame in reader.frames(stop):
                if stats.frames % args.every == 0:
                    shown = _analyse_frame(src.name, frame, classifier, finder, transform, tracker, classes,
                                           args.margin, rows, stats)
                stats.frames += 1
                if output is not None or window is not None:
                    annotated = np.ascontiguousarray(np.asarray(
                        expressions.draw_faces(Image.fromarray(frame.image[:, :, ::-1]), shown))[:, :, ::-1])
                    if output is not None:
                        output.write(annotated)
                    if window is not None and window.show(annotated):
                        stop.set()
                stats.latencies.append(time.perf_counter() - frame.captured)
                if meter is not None:
                    meter.step()
                elif time.perf_counter() - last_print >= 5.0:
                    last_print = time.perf_counter()
                    print(f"{src.name}: {stats.frames} frames, {stats.frames / (last_print - start):.1f} FPS",
                          flush=True)
                if stats.frames == args.max_frames:
                    break
            stats.stopped = stop.is_set()
    finally:
        capture.release()  # after the reading thread has stopped (leaving `with reader` waits for it)
        if window is not None:
            window.close()
    if stats.frames == 0 and not stats.stopped:
        raise utils.UserError(f"cannot read {src.kind} {src.path}: no frame could be decoded")
    stats.seconds = time.perf_counter() - start
    stats.dropped, stats.whole, stats.followed = reader.dropped, finder.whole, finder.followed
    stats.model_s = classifier.model_s - model_before
    stats.model_calls = classifier.model_calls - calls_before
    stats.warmup_s = classifier.warmup_s - warm_before
    return rows, stats


def _analyse_frame(name: str, frame: Frame, classifier: expressions.FaceClassifier, finder: FaceFinder,
                   transform: Callable[[Image.Image], torch.Tensor], tracker: expressions.FaceTracker,
                   classes: Sequence[str], margin: float, rows: list[list[Any]],
                   stats: VideoStats) -> list[tuple[detectors.Box, str]]:
    """Find, classify (one batch), track and smooth the faces of one BGR frame; appends rows, returns captions."""
    image = frame.image
    height, width = image.shape[:2]
    start = time.perf_counter()
    boxes = finder(image[:, :, ::-1])  # BGR -> RGB view
    stats.detect_s += time.perf_counter() - start
    stats.analysed += 1
    # BGR -> RGB, the channel order the model was trained on (PIL-decoded images).
    crops = [transform(Image.fromarray(np.ascontiguousarray(image[y:y + h, x:x + w, ::-1])))
             for x, y, w, h in (expressions.expand_box(box, margin, width, height) for box in boxes)]
    probs = classifier(torch.stack(crops)) if crops else np.zeros((0, len(classes)))
    tracks = tracker.update(frame.index, boxes, probs)
    stats.faces += len(boxes)
    for box, track in zip(boxes, tracks):
        rows.append(expressions.csv_row(name, frame.index, track.id, box, track.probs, classes))
    return [(box, expressions.caption(track.probs, classes, track.id)) for box, track in zip(boxes, tracks)]


# ---------------------------------------------------------------------------------------------------------------------
# Faces kept: a run against detection on every frame
# ---------------------------------------------------------------------------------------------------------------------

# A face counts as kept when a box of the same frame overlaps the every-frame detection's box this much (the usual
# detection criterion).
KEPT_IOU = 0.5


def agreement(reference: Sequence[Sequence[Any]], rows: Sequence[Sequence[Any]]) -> tuple[float, float]:
    """Of the faces in the reference rows (detection on every frame): the share a run found in the same frame
    (IoU >= KEPT_IOU) and, of those, the share given the same label. Rows are predictions.csv rows."""
    by_frame: dict[int, list[Sequence[Any]]] = {}
    for row in rows:
        by_frame.setdefault(row[1], []).append(row)
    kept = agree = 0
    for ref in reference:
        scored = [(detectors.iou(tuple(ref[3:7]), tuple(row[3:7])), row) for row in by_frame.get(ref[1], [])]
        best = max(scored, key=lambda pair: pair[0], default=(0.0, None))
        if best[0] >= KEPT_IOU:
            kept += 1
            agree += best[1][7] == ref[7]
    return (kept / len(reference) if reference else float("nan")), (agree / kept if kept else float("nan"))


# ---------------------------------------------------------------------------------------------------------------------
# The test clip
# ---------------------------------------------------------------------------------------------------------------------

CLIP_SIZE = (640, 480)  # width, height: a laptop camera's usual size
# The astronaut portrait's face (scikit-image's astronaut(), 512 x 512) is centred near (225, 117) and ~86 px wide.
# The view follows a point near it: zoom 1.7 +- 0.4 (8 s period), pan +- 60 px (4 s) and +- 25 px (3 s) in the
# photo's pixels, and a roll of +- 10 degrees (5 s), so the face is 110-180 px wide, moves up to ~7 px a frame at 30
# fps and turns, as a head in front of a laptop does, and stays whole in the frame.
_CENTRE, _ZOOM, _PAN, _ROLL = (225.0, 140.0), (1.7, 0.4, 8.0), ((60.0, 4.0), (25.0, 3.0)), (10.0, 5.0)


def clip_matrix(cv2: Any, seconds: float) -> np.ndarray:
    """The 2 x 3 affine map from the photo's pixels to the clip's frame at `seconds` (where the face goes)."""
    def wave(amplitude: float, period: float) -> float:
        return amplitude * math.sin(2 * math.pi * seconds / period)

    (cx, cy), (zoom, zoom_amp, zoom_period) = _CENTRE, _ZOOM
    cx, cy = cx + wave(*_PAN[0]), cy + wave(*_PAN[1])
    matrix = cv2.getRotationMatrix2D((cx, cy), wave(*_ROLL), zoom + wave(zoom_amp, zoom_period))
    matrix[:, 2] += (CLIP_SIZE[0] / 2 - cx, CLIP_SIZE[1] / 2 - cy)  # the followed point to the frame's centre
    return matrix


def clip_frame(cv2: Any, photo: np.ndarray, seconds: float) -> np.ndarray:
    """The clip's frame at `seconds`: the photo zoomed, panned and rolled (uint8 RGB, CLIP_SIZE)."""
    # Edge pixels repeated, not mirrored: a mirrored border could show part of a second face.
    return cv2.warpAffine(photo, clip_matrix(cv2, seconds), CLIP_SIZE, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def write_clip(cv2: Any, path: str | os.PathLike, frames: int = 300, fps: float = 30.0) -> None:
    """A CLIP_SIZE mp4 clip of `frames` frames moving over the astronaut portrait (one real face per frame),
    written to a temporary file and renamed when complete (VideoOutput)."""
    try:
        photo = importlib.import_module("skimage.data").astronaut()
    except ImportError:
        raise utils.UserError("the test clip needs scikit-image (its astronaut photo): "
                              "pip install -r requirements-test.txt") from None
    with VideoOutput(cv2, Path(path), fps) as output:
        for i in range(frames):
            output.write(np.ascontiguousarray(clip_frame(cv2, photo, i / fps)[:, :, ::-1]))
