"""Real-time video for predict.py: frames in order or always the newest, faces found every k-th frame and followed
in between, Ctrl-C as a clean stop, and the test clip the end-to-end measurements run on.

    with realtime.NewestFrame(capture.read) as source:      # a camera: reading runs in its own thread
        for frame in source.frames(stop):                   # the newest frame each time; stale ones are dropped
            boxes = finder(frame.image[:, :, ::-1])         # realtime.FaceFinder: whole-frame detection every k-th

    python datasets.py clip --out clip.mp4                  # the 640 x 480 test clip (needs scikit-image)
"""
from __future__ import annotations

import contextlib
import importlib
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

import detectors
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

class InOrder:
    """Every frame of a source, read when the pipeline asks for the next one (a video file: nothing is dropped)."""

    dropped = 0

    def __init__(self, read: Reader) -> None:
        self.read = read

    def __enter__(self) -> InOrder:
        """Nothing to start: frames are read by the pipeline's own thread."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to stop."""

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
        """Stop the reading thread and wait for it."""
        self.close()

    def close(self) -> None:
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

    def take(self, stop: threading.Event | None = None) -> Frame | None:
        """The newest frame not taken yet, waiting for one; None once the source has ended or `stop` is set."""
        with self._ready:
            while self._newest is None and not self._ended:
                if stop is not None and stop.is_set():
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
        near = detector.near(rgb, box)
        if near is None:
            return None
        found.append(near)
    # Two faces that walked into each other are found as one: keep it once.
    return detectors.merge(found, [-float(i) for i in range(len(found))])


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
# The test clip
# ---------------------------------------------------------------------------------------------------------------------

CLIP_SIZE = (640, 480)  # width, height: a laptop camera's usual size
# The astronaut portrait's face (scikit-image's astronaut(), 512 x 512) is centred near (225, 117) and ~86 px wide.
# The view follows a point near it: zoom 1.7 +- 0.4 (8 s period), pan +- 60 px (4 s) and +- 25 px (3 s) in the
# photo's pixels, and a roll of +- 10 degrees (5 s), so the face is 110-180 px wide, moves up to ~7 px a frame at 30
# fps and turns, as a head in front of a laptop does, and stays whole in the frame.
_CENTRE, _ZOOM, _PAN, _ROLL = (225.0, 140.0), (1.7, 0.4, 8.0), ((60.0, 4.0), (25.0, 3.0)), (10.0, 5.0)


def _astronaut() -> np.ndarray:
    """scikit-image's astronaut portrait (uint8 RGB); a one-line UserError naming the install when it is missing."""
    try:
        return importlib.import_module("skimage.data").astronaut()
    except ImportError:
        raise utils.UserError("the test clip needs scikit-image (its astronaut photo): "
                              "pip install -r requirements-test.txt") from None


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
    written to a temporary file and renamed when complete."""
    photo = _astronaut()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, CLIP_SIZE)
    try:
        if not writer.isOpened():
            raise utils.UserError(f"cannot write video {path} (mp4v codec missing from OpenCV?)")
        for i in range(frames):
            writer.write(np.ascontiguousarray(clip_frame(cv2, photo, i / fps)[:, :, ::-1]))
        writer.release()
        os.replace(tmp, path)
    finally:
        writer.release()
        tmp.unlink(missing_ok=True)
