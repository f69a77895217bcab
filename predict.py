"""Facial expressions on images, folders, videos and a camera with a trained checkpoint.

    python predict.py [--ckpt best.pt] INPUT ... [--camera N] [--detect] [--tta hflip] [--annotate] [--out DIR]

Without --ckpt it uses the released FER2013 model, pretrained/fer2013.pt (7 classes, 48 px grayscale faces).

Images are face crops by default, read exactly as evaluate.py reads them; with --detect, faces are found first
(--detector: MTCNN by default, or OpenCV's Haar cascades; see detectors.py) and each is classified. Videos and the
camera always detect: the whole frame is searched every --detect-every frames and the faces are followed in between
(realtime.FaceFinder), all faces of a frame run as one batch, faces are tracked frame to frame and each track's
probabilities are smoothed over time. A camera is read in its own thread that hands over only the newest frame
(--realtime plays a file that way); Ctrl-C or q (--show) ends with whole outputs. One unreadable file in a folder
or list is named and skipped. --benchmark measures the video pipeline end to end, once per model mode.
Writes OUT/predictions.csv, one row per image or frame and face: file, frame, track (face id in a video), the
face box face_x, face_y, face_w, face_h (the whole image for a crop), label (predicted class index), name (its
class name) and prob_<class> for every class (smoothed over time for videos); with --annotate, annotated copies.
OpenCV and the detector (requirements-video.txt) are only needed for --detect, videos and the camera. --ckpt also
takes a model exported by export.py (.onnx), run by ONNX Runtime through the same pipeline (requirements-onnx.txt).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

import data
import detectors
import models
import onnx_model
import plots
import realtime
import utils

# The released model (pretrained/README.md is its card): what predict.py runs when no --ckpt is given.
RELEASED_MODEL = Path(__file__).resolve().parent / "pretrained" / "fer2013.pt"
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
# Face batches are padded up to one of these sizes for the compiled path, so a video with 1-8 faces per frame
# compiles at most four graphs instead of one per face count; larger batches run in chunks of the largest.
FAST_BUCKETS: tuple[int, ...] = (1, 2, 4, 8)
# Inputs are decoded once before the model loads, at reduced scale down to this side: a damaged file shows at any
# scale, and a reduced-scale JPEG decode costs a fraction of a full one.
CHECK_SIZE = 64
# --detect-every's default: a whole-frame face search every 10th frame, the faces followed in between (--track), so
# a face entering the picture is found within a third of a second at 30 fps. On the 640 x 480 test clip this
# kept every face that detection on every frame found, at twice its frame rate (docs/export.md).
DETECT_EVERY = 10

# ---------------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """One thing to predict on: kind "image" | "video" | "camera", its path (or camera index), its name in the CSV
    and its relative name for annotated copies (a folder input keeps its sub-folders)."""

    kind: str
    path: str
    name: str
    rel: str


def _kind(path: Path) -> str | None:
    """"image" / "video" by extension, None for anything else."""
    suffix = path.suffix.lower()
    if suffix in data.IMAGE_EXTENSIONS:
        return "image"
    return "video" if suffix in VIDEO_EXTENSIONS else None


def collect_sources(inputs: Sequence[str], camera: int | None, out_dir: Path) -> list[Source]:
    """Expand files and folders (recursively, skipping out_dir) into sources; the camera comes last."""
    sources: list[Source] = []
    out_dir = out_dir.resolve()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [p for p in sorted(path.rglob("*"))
                     if p.is_file() and _kind(p) and out_dir not in p.resolve().parents]
            if not found:
                raise utils.UserError(f"no images or videos in folder {item} "
                                      f"(looked for {', '.join(data.IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})")
            top = path.resolve().name or "input"
            sources += [Source(_kind(p), str(p), str(p), str(Path(top, p.relative_to(path)))) for p in found]
        elif path.is_file():
            kind = _kind(path)
            if kind is None:
                raise utils.UserError(f"{item}: not an image or video file (known extensions: "
                                      f"{', '.join(data.IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})")
            sources.append(Source(kind, str(path), item, path.name))
        else:
            raise utils.UserError(f"input not found: {item}")
    if camera is not None:
        sources.append(Source("camera", str(camera), f"camera:{camera}", f"camera{camera}"))
    if not sources:
        raise utils.UserError("nothing to do: give image / video files or folders, or --camera N")
    return sources


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image, failing early with a one-line error naming the file (reads the header only)."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise utils.UserError(f"cannot read image {path}: {err}") from None


def check_video(cv2: Any, path: str) -> None:
    """Fail early, naming the file, when OpenCV cannot open a video or decode its first frame."""
    capture = cv2.VideoCapture(path)
    opened = capture.isOpened()
    decoded = opened and capture.read()[0]
    capture.release()
    if not opened:
        raise utils.UserError(f"cannot open video {path} (not a video, damaged, or a codec OpenCV lacks)")
    if not decoded:
        raise utils.UserError(f"cannot read video {path}: no frame could be decoded")


def input_problem(src: Source, cv2: Any) -> str | None:
    """Why an input cannot be read, as its one-line error, or None. Images are decoded whole (at reduced scale for
    JPEGs), so a truncated file is caught here, not halfway through a batch."""
    try:
        if src.kind == "image":
            image_size(src.path)  # the header: not an image, or over Pillow's decompression-bomb limit
            data.load_face(data.Sample(path=src.name, file=src.path, label=0, box=None, line=0), CHECK_SIZE)
        elif src.kind == "video":
            check_video(cv2, src.path)
    except utils.UserError as err:
        return str(err)
    return None


def read_rgb(path: str, max_side: int) -> tuple[np.ndarray, float]:
    """The image as uint8 RGB for the detector (JPEGs decoded at reduced scale, >= max_side px) and the factor
    from its pixels back to the full image's."""
    try:
        with Image.open(path) as im:
            full_w = im.size[0]
            im.draft("RGB", (max_side, max_side))  # no-op for formats other than JPEG
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise utils.UserError(f"cannot read image {path}: {err}") from None
    return rgb, full_w / rgb.shape[1]


# ---------------------------------------------------------------------------------------------------------------------
# Detection, crops, tracking
# ---------------------------------------------------------------------------------------------------------------------

def expand_box(box: detectors.Box, margin: float, width: int, height: int) -> detectors.Box:
    """The box grown by `margin` of its size on each side, clamped to the image."""
    x, y, w, h = box
    left, top = max(0, round(x - margin * w)), max(0, round(y - margin * h))
    right, bottom = min(width, round(x + w + margin * w)), min(height, round(y + h + margin * h))
    return left, top, right - left, bottom - top


@dataclass
class Track:
    """One face followed over frames: id, last box, smoothed probabilities, last frame it was seen."""

    id: int
    box: detectors.Box
    probs: np.ndarray
    last_seen: int


@dataclass
class FaceTracker:
    """Matches each frame's faces to the tracks of earlier frames and smooths each track's probabilities.

    Matching is greedy on IoU (>= min_iou), falling back to centre distance (< half the face size) for fast
    motion; unmatched faces start new tracks, and tracks unseen for max_missed frames are dropped.
    Smoothing is an exponential moving average: p = alpha * p_previous + (1 - alpha) * p_frame (alpha 0 = off).
    """

    alpha: float = 0.6
    min_iou: float = 0.2
    max_missed: int = 10
    tracks: list[Track] = field(default_factory=list)
    next_id: int = 0

    def _score(self, track: Track, box: detectors.Box) -> float:
        """IoU if the boxes overlap enough, a token score for a near centre, else 0 (no match)."""
        overlap = detectors.iou(track.box, box)
        if overlap >= self.min_iou:
            return overlap
        (tx, ty, tw, th), (x, y, w, h) = track.box, box
        distance = np.hypot(tx + tw / 2 - x - w / 2, ty + th / 2 - y - h / 2)
        return 1e-3 if distance < 0.5 * max(tw, th, w, h) else 0.0

    def update(self, frame: int, boxes: Sequence[detectors.Box], probs: np.ndarray) -> list[Track]:
        """Assign this frame's faces (boxes, probs [N, C]) to tracks; returns their tracks in the order of boxes."""
        self.tracks = [t for t in self.tracks if frame - t.last_seen <= self.max_missed]
        pairs = sorted(((self._score(t, b), ti, bi) for ti, t in enumerate(self.tracks) for bi, b in enumerate(boxes)),
                       reverse=True)
        assigned: dict[int, Track] = {}
        used: set[int] = set()
        for score, ti, bi in pairs:
            if score <= 0 or ti in used or bi in assigned:
                continue
            track = self.tracks[ti]
            track.box, track.last_seen = boxes[bi], frame
            track.probs = self.alpha * track.probs + (1 - self.alpha) * probs[bi]
            assigned[bi] = track
            used.add(ti)
        for bi, box in enumerate(boxes):
            if bi not in assigned:
                assigned[bi] = Track(self.next_id, box, np.asarray(probs[bi], dtype=np.float64), frame)
                self.tracks.append(assigned[bi])
                self.next_id += 1
        return [assigned[bi] for bi in range(len(boxes))]


# ---------------------------------------------------------------------------------------------------------------------
# The model on face batches
# ---------------------------------------------------------------------------------------------------------------------

class FaceClassifier:
    """The checkpoint's model on batches of face crops -> probabilities, eager or models.make_fast.

    The compiled path is built per padded batch size (FAST_BUCKETS); time spent in each bucket's first call
    (compilation, CUDA-graph capture) is kept apart in `warmup_s`, so model-only FPS measures steady state.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, img_size: int, fast: bool,
                 hflip: bool, amp: bool) -> None:
        self.model, self.device, self.img_size, self.fast, self.hflip = model, device, img_size, fast, hflip
        self.amp = amp and device.type == "cuda"  # what models.inference_autocast runs; describe() names it
        self.compiled: dict[int, models.FastModel] = {}
        self.model_s = 0.0
        self.model_calls = 0  # timed calls (batches), one-off compiling calls left out
        self.warmup_s = 0.0

    def _sync(self) -> None:
        """Wait for queued GPU work, so timings cover it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _compiled(self, bucket: int) -> models.FastModel:
        """The fast path for batches of exactly `bucket` images, built (and compiled) on first use."""
        if bucket not in self.compiled:
            example = torch.zeros(bucket, 3, self.img_size, self.img_size, device=self.device)
            self.compiled[bucket] = models.make_fast(self.model, self.device, example)
        return self.compiled[bucket]

    def _run_fast(self, x: torch.Tensor) -> torch.Tensor:
        """Logits through the fast path: chunks of <= 8, each zero-padded up to its bucket size."""
        largest = FAST_BUCKETS[-1]
        outputs = []
        for chunk in x.split(largest):
            n = chunk.shape[0]
            bucket = next(b for b in FAST_BUCKETS if b >= n)
            if n < bucket:
                chunk = torch.cat([chunk, chunk.new_zeros(bucket - n, *chunk.shape[1:])])
            outputs.append(self._compiled(bucket)(chunk)[:n])  # FastModel returns float32
        return torch.cat(outputs)

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits [B, C] on the device for images [B, 3, S, S] (flip TTA averages image and mirror)."""
        with models.inference_autocast(self.device, self.amp and not self.fast):  # the fast path has its own
            plain, mirrored = models.forward_views(self._run_fast if self.fast else self.model, x, self.hflip)
        return plain if mirrored is None else torch.stack([plain, mirrored]).mean(dim=0)

    def describe(self) -> str:
        """Which path runs the model, e.g. 'eager float32' or make_fast's variant."""
        if self.fast and self.compiled:
            return "fast: " + next(iter(self.compiled.values())).variant
        if hasattr(self.model, "runtime"):  # an onnx_model.OnnxModel
            return self.model.runtime
        return "eager " + ("float16 autocast" if self.amp else "float32")

    def warm_up(self, batch: int = 1) -> None:
        """Build and run the path for `batch` faces once, so its one-off cost is not timed as model time."""
        start = time.perf_counter()
        self.logits(torch.zeros(batch, 3, self.img_size, self.img_size, device=self.device))
        self._sync()
        self.warmup_s += time.perf_counter() - start

    def __call__(self, crops: torch.Tensor) -> np.ndarray:
        """Probabilities [B, C] (float64 NumPy) for a CPU batch of uint8 crops (normalised on the device), as
        data.FaceDataset gives them; adds to model_s."""
        built = len(self.compiled)
        self._sync()
        start = time.perf_counter()
        images = models.normalize(crops.to(self.device, non_blocking=True))
        probs = torch.softmax(self.logits(images), dim=1).cpu().double().numpy()
        elapsed = time.perf_counter() - start
        if len(self.compiled) > built:  # this call compiled a new batch size: one-off, not steady state
            self.warmup_s += elapsed
        else:
            self.model_s += elapsed
            self.model_calls += 1
        return probs


def use_fast_path(choice: str, device: torch.device) -> bool:
    """--fast auto: the compiled path on CUDA only. On a CPU it was ~1.2x faster at 224 px here but costs 10-20 s
    of compilation per face-batch size, which only a long video or camera session earns back (--fast on)."""
    if choice == "auto":
        return device.type == "cuda"
    return choice == "on"


# ---------------------------------------------------------------------------------------------------------------------
# Output: CSV rows and annotation
# ---------------------------------------------------------------------------------------------------------------------

def csv_columns(classes: Sequence[str]) -> list[str]:
    """predictions.csv header: where the face is, the predicted label and name, one probability per class."""
    return ["file", "frame", "track", "face_x", "face_y", "face_w", "face_h", "label", "name"] + \
        [f"prob_{c}" for c in classes]


def csv_row(name: str, frame: int, track: int | str, box: detectors.Box, probs: np.ndarray,
            classes: Sequence[str]) -> list[Any]:
    """One predictions.csv row."""
    label = int(np.argmax(probs))
    return [name, frame, track, *box, label, classes[label]] + [f"{p:.6f}" for p in probs]


def draw_faces(image: Image.Image, faces: Sequence[tuple[detectors.Box, str]]) -> Image.Image:
    """The image with a box and a caption drawn for each face."""
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    width = max(2, round(min(image.size) / 200))
    font = plots.load_font(max(12, round(min(image.size) / 30)))
    for (x, y, w, h), text in faces:
        draw.rectangle((x, y, x + w - 1, y + h - 1), outline=(0, 255, 0), width=width)
        left, top, right, bottom = draw.textbbox((x, y), text, font=font)
        ty = y - (bottom - top) - 2 * width if y - (bottom - top) - 2 * width >= 0 else y + h
        draw.rectangle((x, ty, x + right - left + 2 * width, ty + bottom - top + 2 * width), fill=(0, 255, 0))
        draw.text((x + width - (left - x), ty + width - (top - y)), text, fill=(0, 0, 0), font=font)
    return image


def caption(probs: np.ndarray, classes: Sequence[str], track: int | None = None) -> str:
    """'happy 0.83' (with '#id ' for a tracked face)."""
    label = int(np.argmax(probs))
    prefix = f"#{track} " if track is not None else ""
    return f"{prefix}{classes[label]} {probs[label]:.2f}"


class OutputNames:
    """Unique file names under OUT/annotated (two inputs with the same name get _1, _2, ...)."""

    def __init__(self, root: Path) -> None:
        self.root, self.used = root, set()

    def __call__(self, rel: str, suffix: str) -> Path:
        """A fresh path for a source's relative name with the given suffix."""
        base = self.root / Path(rel).with_suffix("")
        path, n = base.with_suffix(suffix), 1
        while path in self.used:
            path, n = base.with_name(f"{base.name}_{n}").with_suffix(suffix), n + 1
        self.used.add(path)
        return path


# ---------------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------------

def predict_images(sources: Sequence[Source], model: torch.nn.Module, device: torch.device, img_size: int,
                   grayscale: bool, classes: Sequence[str], args: argparse.Namespace,
                   detector: detectors.FaceDetector | None, names: OutputNames | None) -> list[list[Any]]:
    """CSV rows for image sources; faces read through data.FaceDataset and models.predict_logits (as evaluate.py)."""
    samples: list[data.Sample] = []
    faces: list[tuple[int, detectors.Box]] = []  # per sample: its source and the box reported for it
    meter = utils.Progress(len(sources), "detecting faces") if detector is not None else None
    for i, src in enumerate(sources):
        width, height = image_size(src.path)
        if detector is None:
            boxes, crops = [(0, 0, width, height)], [None]
        else:
            rgb, scale = read_rgb(src.path, detector.max_side)
            boxes = [tuple(round(v * scale) for v in box) for box in detector(rgb)]
            crops = [expand_box(box, args.margin, width, height) for box in boxes]
            meter.step()
        # line=0: these samples come from no CSV; label 0 is a placeholder the model never sees.
        samples += [data.Sample(path=src.name, file=src.path, label=0, box=crop, line=0) for crop in crops]
        faces += [(i, box) for box in boxes]
    if detector is not None:
        without = len(sources) - len({i for i, _ in faces})
        print(f"{len(faces)} faces in {len(sources)} images ({without} without a face)", flush=True)
    probs = np.zeros((0, len(classes)))
    if samples:
        loader = data.make_loader(data.FaceDataset(samples, img_size, grayscale=grayscale), args.batch_size,
                                  args.workers)
        logits, _ = models.predict_logits(model, loader, device, amp=args.amp, hflip=args.tta == "hflip",
                                          progress="images")
        probs = torch.softmax(logits, dim=1).double().numpy()
    rows = [csv_row(sources[i].name, 0, "", box, p, classes) for (i, box), p in zip(faces, probs)]
    if names is not None:
        drawn: dict[int, list[tuple[detectors.Box, str]]] = {}
        for (i, box), p in zip(faces, probs):
            drawn.setdefault(i, []).append((box, caption(p, classes)))
        for i, src in enumerate(sources):
            _save_annotated(src, drawn.get(i, []), names)
    return rows


def _save_annotated(src: Source, faces: list[tuple[detectors.Box, str]], names: OutputNames) -> None:
    """Write OUT/annotated/<name> with the faces drawn (JPEG stays JPEG, anything else becomes PNG)."""
    suffix = Path(src.path).suffix.lower()
    jpeg = suffix in (".jpg", ".jpeg")
    path = names(src.rel, suffix if jpeg else ".png")
    with Image.open(src.path) as im:
        annotated = draw_faces(im, faces)
    with utils.atomic_write(path, "wb") as f:
        annotated.save(f, format="JPEG" if jpeg else "PNG", quality=95)


# ---------------------------------------------------------------------------------------------------------------------
# Videos and the camera
# ---------------------------------------------------------------------------------------------------------------------

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


class VideoOutput:
    """An annotated mp4 written to a temporary file beside its name, renamed only once complete (finish)."""

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
                raise utils.UserError(f"cannot write video {self.tmp} (mp4v codec missing from OpenCV?)")
        self.writer.write(bgr)

    def finish(self) -> None:
        """Close the file and give it its name."""
        if self.writer is not None:
            self.writer.release()
            os.replace(self.tmp, self.path)

    def discard(self) -> None:
        """Close and remove a half-written file."""
        if self.writer is not None:
            self.writer.release()
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
        raise utils.UserError(f"cannot open {'camera ' + src.path if camera else 'video ' + src.path}")
    total = 0 if camera else max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    return capture, capture.get(cv2.CAP_PROP_FPS) or 30.0, total


def predict_video(src: Source, cv2: Any, classifier: FaceClassifier, detector: detectors.FaceDetector,
                  transform: Callable[[Image.Image], torch.Tensor], classes: Sequence[str],
                  args: argparse.Namespace, names: OutputNames | None) -> tuple[list[list[Any]], VideoStats]:
    """CSV rows for every analysed frame and face of a video file or camera, and its timing stats.

    A camera (and a file with --realtime) is read in its own thread and the newest frame is always taken; a file
    is read frame by frame, every frame taken. Ctrl-C (or q in the --show window) ends it after the frame in
    progress, with the rows and the annotated video complete up to there.
    """
    capture, fps_in, total = open_capture(cv2, src)
    live = src.kind == "camera" or args.realtime
    # A camera paces itself; a file under --realtime is released at its own frame rate.
    reader = realtime.NewestFrame(capture.read, 0.0 if src.kind == "camera" else fps_in) if live \
        else realtime.InOrder(capture.read)
    output = VideoOutput(cv2, names(src.rel, ".mp4"), fps_in) if names is not None else None
    finder = realtime.FaceFinder(detector, args.detect_every, args.track)
    tracker = FaceTracker(alpha=args.smooth, max_missed=10 * args.every)
    total = min(total, args.max_frames) if args.max_frames and total else total
    stats, rows, shown = VideoStats(), [], []
    meter = utils.Progress(total, src.name) if total > 0 and not live else None
    warm_before, model_before, calls_before = classifier.warmup_s, classifier.model_s, classifier.model_calls
    window = None
    start = last_print = time.perf_counter()
    try:
        window = Window(cv2, f"predict.py {src.name} (q: quit)") if args.show else None
        with realtime.stop_on_interrupt() as stop, reader:
            print(f"{src.name}: " + ("always the newest frame" if live else "every frame") + "; Ctrl-C"
                  + (" or q" if window else "") + " stops, keeping what was done", flush=True)
            for frame in reader.frames(stop):
                if stats.frames % args.every == 0:
                    shown = _analyse_frame(src.name, frame, classifier, finder, transform, tracker, classes,
                                           args.margin, rows, stats)
                stats.frames += 1
                if output is not None or window is not None:
                    annotated = np.ascontiguousarray(np.asarray(
                        draw_faces(Image.fromarray(frame.image[:, :, ::-1]), shown))[:, :, ::-1])
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
    except BaseException:
        if output is not None:
            output.discard()
        raise
    finally:
        capture.release()  # after the reading thread has stopped (leaving `with reader` waits for it)
        if window is not None:
            window.close()
    if stats.frames == 0 and not stats.stopped:
        raise utils.UserError(f"cannot read {'camera ' + src.path if src.kind == 'camera' else 'video ' + src.path}"
                              ": no frame could be decoded")
    if output is not None:
        output.finish()  # nothing to do when no frame was written
    stats.seconds = time.perf_counter() - start
    stats.dropped, stats.whole, stats.followed = reader.dropped, finder.whole, finder.followed
    stats.model_s = classifier.model_s - model_before
    stats.model_calls = classifier.model_calls - calls_before
    stats.warmup_s = classifier.warmup_s - warm_before
    return rows, stats


def _analyse_frame(name: str, frame: realtime.Frame, classifier: FaceClassifier, finder: realtime.FaceFinder,
                   transform: Callable[[Image.Image], torch.Tensor], tracker: FaceTracker, classes: Sequence[str],
                   margin: float, rows: list[list[Any]], stats: VideoStats) -> list[tuple[detectors.Box, str]]:
    """Find, classify (one batch), track and smooth the faces of one BGR frame; appends rows, returns captions."""
    image = frame.image
    height, width = image.shape[:2]
    start = time.perf_counter()
    boxes = finder(image[:, :, ::-1])  # BGR -> RGB view
    stats.detect_s += time.perf_counter() - start
    stats.analysed += 1
    if boxes:
        crops = []
        for box in boxes:
            x, y, w, h = expand_box(box, margin, width, height)
            # BGR -> RGB, the channel order the model was trained on (PIL-decoded images).
            crops.append(transform(Image.fromarray(np.ascontiguousarray(image[y:y + h, x:x + w, ::-1]))))
        probs = classifier(torch.stack(crops))
    else:
        probs = np.zeros((0, len(classes)))
    tracks = tracker.update(frame.index, boxes, probs)
    stats.faces += len(boxes)
    for box, track in zip(boxes, tracks):
        rows.append(csv_row(name, frame.index, track.id, box, track.probs, classes))
    return [(box, caption(track.probs, classes, track.id)) for box, track in zip(boxes, tracks)]


# ---------------------------------------------------------------------------------------------------------------------
# End-to-end measurement: --benchmark
# ---------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PipelineMode:
    """How --benchmark runs the model in one mode: the .pt checkpoint (eager, or models.make_fast with fast) or an
    exported .onnx run by ONNX Runtime, which `export` makes in memory from the checkpoint when no file is given."""

    onnx: bool
    fast: bool = False
    export: Callable[[str, torch.device], torch.nn.Module] | None = None
    precision: str = "float32"  # what an .onnx file given to the mode must hold (its metadata's precision)


def export_in_memory(ckpt: str, device: torch.device) -> torch.nn.Module:
    """The checkpoint exported exactly as export.py exports it, kept in memory and run by ONNX Runtime."""
    model, meta = models.load_model(ckpt, "cpu")
    arch = meta["arch"]
    blob = onnx_model.export_bytes(model.float(), arch, meta["experiment"], meta["metrics"], models.arch_img_size(arch))
    return onnx_model.OnnxModel(blob, device).eval()


# --benchmark's modes; MODE=FILE gives a mode its model file. A new mode is one entry. int8 needs its file
# (export.py --int8): quantising needs calibration faces, which a checkpoint does not carry.
PIPELINE_MODES: dict[str, PipelineMode] = {
    "eager": PipelineMode(onnx=False),
    "fast": PipelineMode(onnx=False, fast=True),
    "onnx": PipelineMode(onnx=True, export=export_in_memory),
    "int8": PipelineMode(onnx=True, precision="int8"),
}
# A face counts as kept when a box of the same frame overlaps the every-frame detection's box this much (the usual
# detection criterion).
KEPT_IOU = 0.5


def benchmark_modes(text: str) -> list[tuple[str, str | None]]:
    """argparse type: comma-separated modes, each MODE or MODE=FILE, e.g. eager,fast,onnx=model.onnx."""
    modes = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        mode, _, file = item.partition("=")
        if mode not in PIPELINE_MODES:
            raise argparse.ArgumentTypeError(f"unknown mode {mode!r}: choose from {', '.join(PIPELINE_MODES)}")
        modes.append((mode, file or None))
    if not modes:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(PIPELINE_MODES)}")
    return modes


def _mode_file(mode: str, file: str | None, ckpt: str) -> str | None:
    """The model file a --benchmark mode runs (None: export the checkpoint in memory), checked before any run."""
    spec, path = PIPELINE_MODES[mode], file or ckpt
    is_onnx = Path(path).suffix.lower() == ".onnx"
    if spec.onnx:
        onnx_model.require(f"--benchmark {mode}")  # a missing install fails now, not after the other modes' passes
    if spec.onnx and file is None and not is_onnx and spec.export is not None:
        return None
    if is_onnx != spec.onnx:
        raise utils.UserError(f"--benchmark {mode}: runs {'an .onnx model' if spec.onnx else 'a .pt checkpoint'}, "
                              f"not {path}" + (f"; give one as {mode}=MODEL.onnx" if spec.onnx else ""))
    if spec.onnx and onnx_model.load_any(path)[1]["precision"] != spec.precision:
        raise utils.UserError(f"--benchmark {mode}: {path} is not a {spec.precision} model (see its metadata's "
                              "precision)")
    return path


def _mode_model(mode: str, path: str | None, ckpt: str, device: torch.device) -> tuple[torch.nn.Module, dict, bool]:
    """The model, its meta and whether to compile it, for one --benchmark mode running `path` (_mode_file)."""
    if path is None:
        print(f"{mode}: exporting {ckpt} to ONNX in memory", flush=True)
        model = PIPELINE_MODES[mode].export(ckpt, device)
        return model, onnx_model.meta_of(model, f"{ckpt} (exported in memory)"), False
    model, meta = onnx_model.load_any(path, device)
    return model, meta, PIPELINE_MODES[mode].fast


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


def run_benchmark(src: Source, cv2: Any, detector: detectors.FaceDetector, ckpt: str, device: torch.device,
                  args: argparse.Namespace, out_dir: Path) -> list[dict[str, Any]]:
    """The pipeline on one video once per --benchmark mode (plus, with --detect-every K > 1, the first mode with
    detection on every frame, the reference for faces kept and labels agreeing); writes OUT/realtime.md, .json."""
    runs = [(mode, _mode_file(mode, file, ckpt), args.detect_every) for mode, file in args.benchmark]
    if args.detect_every > 1:
        runs.insert(0, (runs[0][0], runs[0][1], 1))
    results, reference, classes = [], None, None
    for mode, path, every in runs:
        model, meta, fast = _mode_model(mode, path, ckpt, device)
        arch = meta["arch"]
        if classes is not None and list(models.arch_classes(arch)) != classes:
            raise utils.UserError(f"--benchmark {mode}: {path} has other classes than the first mode's model")
        classes, img_size = list(models.arch_classes(arch)), models.arch_img_size(arch)
        classifier = FaceClassifier(model, device, img_size, fast=fast, hflip=args.tta == "hflip", amp=args.amp)
        classifier.warm_up(1)
        transform = functools.partial(data.face_tensor, size=img_size, grayscale=models.arch_grayscale(arch))
        run_args = argparse.Namespace(**{**vars(args), "detect_every": every, "show": False})
        rows, stats = predict_video(src, cv2, classifier, detector, transform, classes, run_args, None)
        print(stats.summary(f"{mode}, whole-frame detection every {every}"), flush=True)
        reference = rows if reference is None else reference
        kept, agree = agreement(reference, rows)
        results.append({
            "mode": mode, "model": path or "the checkpoint, exported in memory", "runtime": classifier.describe(),
            "detect_every": every,
            "track": args.track, "frames": stats.frames, "dropped": stats.dropped, "faces": stats.faces,
            "whole_frame_detections": stats.whole, "detector_ms": 1000 * stats.detect_s / max(stats.analysed, 1),
            "model_ms": 1000 * stats.model_s / stats.model_calls if stats.model_calls else None,
            "fps": stats.fps(), "p50_ms": stats.latency_ms(50), "p95_ms": stats.latency_ms(95),
            "faces_kept": kept, "labels_agree": agree})
        del model, classifier
        if stats.stopped:
            break
    _write_benchmark(results, src, cv2, detector, ckpt, device, args, out_dir)
    return results


def _write_benchmark(results: list[dict[str, Any]], src: Source, cv2: Any, detector: detectors.FaceDetector,
                     ckpt: str, device: torch.device, args: argparse.Namespace, out_dir: Path) -> None:
    """OUT/realtime.json and realtime.md: the table, the machine and the settings it was measured with."""
    capture, fps_in, total = open_capture(cv2, src)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    capture.release()
    total = min(total, args.max_frames) if args.max_frames else total
    setting = {"video": src.name, "size": f"{size[0]}x{size[1]}", "frames": total, "fps": fps_in,
               "realtime": args.realtime, "detector": detector.name, "min_face": args.min_face,
               "max_side": args.max_side, "track": args.track, "device": models.device_name(device),
               "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
               "torch_threads": torch.get_num_threads(), "opencv": cv2.__version__,
               "opencv_threads": cv2.getNumThreads(), "command": " ".join(["python", *sys.argv])}
    utils.write_json(out_dir / "realtime.json", {"setting": setting, "rows": results})

    def pct(value: float | None) -> str:
        return "" if value is None or value != value else f"{100 * value:.1f} %"

    lines = [f"End to end on {src.name} ({setting['size']}, {total} frames at {fps_in:g} fps"
             + (", played in real time" if args.realtime else ", every frame") + f"); detector {detector.name} "
             f"(min face {args.min_face} px, max side {args.max_side} px), --track {args.track}. Machine: "
             f"{setting['device']}, {setting['cpu_capability']}; torch {torch.__version__}, {setting['torch_threads']} "
             f"threads; OpenCV {cv2.__version__}, {setting['opencv_threads']} threads.", "",
             "| mode | detection every | FPS end to end | p50 / p95 latency ms | detector ms/frame | model ms/frame "
             "| faces kept | labels agree | frames (dropped) |", "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(results):
        model_ms = "" if r["model_ms"] is None else f"{r['model_ms']:.1f}"
        given = r["model"] not in (ckpt, "the checkpoint, exported in memory")
        mode = r["mode"] + (f"={r['model']}" if given else "") + (" (reference)" if i == 0 else "")
        lines.append(f"| {mode} | {r['detect_every']} | {r['fps']:.1f} | {r['p50_ms']:.1f} / {r['p95_ms']:.1f} "
                     f"| {r['detector_ms']:.1f} | {model_ms} | {pct(r['faces_kept'])} | {pct(r['labels_agree'])} "
                     f"| {r['frames']} ({r['dropped']}) |")
    lines += ["", "Faces kept: of the faces the reference (detection on every frame) found, the share found in the "
              f"same frame (IoU >= {KEPT_IOU}); labels agree: of those, the share with the same label. Command: "
              f"`{setting['command']}`"]
    text = "\n".join(lines) + "\n"
    with utils.atomic_write(out_dir / "realtime.md") as f:
        f.write(text)
    print(text + f"wrote {out_dir / 'realtime.md'} and realtime.json", flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------

def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image files, video files, or folders (searched recursively for both)")
    p.add_argument("--ckpt", default=None,
                   help="checkpoint written by train.py (best.pt), or a model exported by export.py (.onnx), which "
                        "ONNX Runtime runs (default: the released FER2013 model, pretrained/fer2013.pt)")
    p.add_argument("--camera", type=int, default=None, metavar="N",
                   help="also read camera N (OpenCV index); stop with Ctrl-C, q in the --show window, or --max-frames")
    p.add_argument("--detect", action="store_true",
                   help="images: find faces first (default: each image is one face crop); videos always detect")
    p.add_argument("--detector", choices=tuple(detectors.DETECTORS), default=detectors.DEFAULT,
                   help=f"face detector for --detect, videos and the camera (default: {detectors.DEFAULT}; "
                        "see detectors.py)")
    p.add_argument("--tta", choices=("none", "hflip"), default="none",
                   help="hflip: average the logits of each face and its mirror")
    p.add_argument("--annotate", action="store_true",
                   help="also write copies with boxes and labels drawn to OUT/annotated/ (videos as mp4)")
    p.add_argument("--show", action="store_true",
                   help="videos and camera: show the annotated frames in a window; q in it ends (needs OpenCV with "
                        "a GUI, not the -headless wheel)")
    p.add_argument("--out", default="results/predict", help="output folder (default: results/predict)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="float16 autocast on CUDA, as evaluate.py (default: on; no effect on CPU)")
    p.add_argument("--fast", choices=("auto", "on", "off"), default="auto",
                   help="videos: models.make_fast compiled path; auto = on for CUDA, off on CPU, where compiling "
                        "takes 10-20 s per face count for ~1.2x (worth it for long videos); not for an .onnx "
                        "model (default: auto)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch for image inputs (default: 64)")
    p.add_argument("--workers", type=int, default=2, help="image decoding workers (default: 2)")
    p.add_argument("--smooth", type=float, default=0.6, metavar="ALPHA",
                   help="videos: p = ALPHA * p_previous + (1 - ALPHA) * p_frame per tracked face; 0 = off "
                        "(default: 0.6)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="videos: analyse every N-th frame (default: 1)")
    p.add_argument("--detect-every", type=int, default=DETECT_EVERY, metavar="K",
                   help="videos and camera: search the whole frame for faces every K-th analysed frame and follow "
                        f"the faces found in between (--track); 1 = every frame (default: {DETECT_EVERY})")
    p.add_argument("--track", choices=tuple(realtime.TRACKS), default=realtime.DEFAULT_TRACK,
                   help="between whole-frame searches: near = search again only around each face's last box, with a "
                        "whole-frame search as soon as one is lost; hold = keep the last boxes "
                        f"(default: {realtime.DEFAULT_TRACK})")
    p.add_argument("--realtime", action="store_true",
                   help="video files: play at the file's frame rate as a camera would deliver it, always taking the "
                        "newest frame and dropping the ones the pipeline had no time for (default: every frame is "
                        "analysed, as fast as the machine goes; a camera always drops)")
    p.add_argument("--max-frames", type=int, default=0, metavar="N",
                   help="videos and camera: stop after N frames (default: 0 = all)")
    p.add_argument("--margin", type=float, default=0.2,
                   help="detected faces: crop this fraction of the box more on each side (default: 0.2)")
    p.add_argument("--min-face", type=int, default=40, metavar="PX", help="smallest face to detect (default: 40)")
    p.add_argument("--max-side", type=int, default=640, metavar="PX",
                   help="the detector searches images and frames scaled down to at most PX on their longer side "
                        "(default: 640)")
    p.add_argument("--benchmark", type=benchmark_modes, default=None, metavar="MODES",
                   help="measure the pipeline end to end on one video file, once per mode, instead of predicting: "
                        f"a comma-separated list of {', '.join(PIPELINE_MODES)}, each optionally =MODEL_FILE; "
                        "writes OUT/realtime.md and .json (see docs/export.md)")
    return p


def _check_args(args: argparse.Namespace) -> None:
    """Flag values argparse cannot check by type."""
    for flag, value, ok in (("--batch-size", args.batch_size, args.batch_size >= 1),
                            ("--workers", args.workers, args.workers >= 0),
                            ("--every", args.every, args.every >= 1),
                            ("--detect-every", args.detect_every, args.detect_every >= 1),
                            ("--max-frames", args.max_frames, args.max_frames >= 0),
                            ("--smooth", args.smooth, 0.0 <= args.smooth < 1.0),
                            ("--margin", args.margin, 0.0 <= args.margin <= 1.0),
                            ("--min-face", args.min_face, args.min_face >= 1),
                            ("--max-side", args.max_side, args.max_side >= 32)):
        if not ok:
            raise utils.UserError(f"{flag} {value}: out of range (see --help)")


def _readable_inputs(args: argparse.Namespace, out_dir: Path) -> tuple[list[Source], Any, list[str]]:
    """The inputs that can be read, OpenCV (None when nothing needs it) and one line per input that cannot.
    A single input that cannot be read is a UserError of its own (nothing else to do)."""
    sources = collect_sources(args.inputs, args.camera, out_dir)
    videos = [s for s in sources if s.kind != "image"]
    # OpenCV is checked before the model loads, so a missing install costs the user no waiting.
    cv2 = None
    if videos:
        cv2 = detectors.import_cv2("--camera" if videos[0].kind == "camera" else f"video input {videos[0].name}")
    if args.detect:
        cv2 = detectors.import_cv2("--detect")
    if args.show:
        check_window(detectors.import_cv2("--show"))
    # Unreadable inputs are found before the model loads; one bad file among many does not stop the others.
    problems = {src: problem for src in sources if (problem := input_problem(src, cv2)) is not None}
    if problems and len(sources) == 1:
        raise utils.UserError(problems[sources[0]])
    for problem in problems.values():
        print(f"skipped: {problem}", file=sys.stderr, flush=True)
    readable = [s for s in sources if s not in problems]
    if not readable:
        raise utils.UserError(f"none of the {len(sources)} inputs could be read (each named above)")
    return readable, cv2, list(problems.values())


def main(args: argparse.Namespace) -> None:
    """Predict on every input and write OUT/predictions.csv (+ annotated copies); or --benchmark."""
    _check_args(args)
    ckpt = args.ckpt or str(RELEASED_MODEL)
    if args.ckpt is None:
        print(f"no --ckpt: using the released FER2013 model {RELEASED_MODEL} (7 classes, 48 px grayscale; see "
              "pretrained/README.md)", flush=True)
    out_dir = Path(args.out)
    onnx = Path(ckpt).suffix.lower() == ".onnx"
    if onnx and args.fast == "on":
        raise utils.UserError("--fast on: the compiled path is for .pt checkpoints; an .onnx model runs through "
                              "ONNX Runtime (drop --fast)")
    sources, cv2, problems = _readable_inputs(args, out_dir)
    images = [s for s in sources if s.kind == "image"]
    videos = [s for s in sources if s.kind != "image"]
    detector = (detectors.build(args.detector, cv2, min_face=args.min_face, max_side=args.max_side)
                if cv2 is not None else None)
    device = models.resolve_device(args.device)
    if args.benchmark is not None:
        if problems or len(sources) != 1 or sources[0].kind != "video":
            raise utils.UserError("--benchmark measures one video file: give exactly one (e.g. the test clip, "
                                  "python datasets.py clip --out clip.mp4)")
        run_benchmark(sources[0], cv2, detector, ckpt, device, args, out_dir)
        return

    model, meta = onnx_model.load_any(ckpt, device)
    arch = meta["arch"]
    img_size = models.arch_img_size(arch)
    classes = list(models.arch_classes(arch))
    names = OutputNames(out_dir / "annotated") if args.annotate else None
    print(f"{ckpt}: {arch['name']} at {img_size} px on {device}; {len(images)} images, {len(videos)} videos"
          + (f"; faces found by {detector.name}" if detector is not None and (videos or args.detect) else ""),
          flush=True)

    grayscale = models.arch_grayscale(arch)
    rows = predict_images(images, model, device, img_size, grayscale, classes, args,
                          detector if args.detect else None, names) if images else []
    stopped = None  # the video file Ctrl-C or q cut short, if one was
    if videos:
        classifier = FaceClassifier(model, device, img_size, fast=not onnx and use_fast_path(args.fast, device),
                                    hflip=args.tta == "hflip", amp=args.amp)
        classifier.warm_up(1)  # the common case, one face, is ready before the clock starts
        print(f"model path: {classifier.describe()} (ready in {classifier.warmup_s:.1f} s)", flush=True)
        transform = functools.partial(data.face_tensor, size=img_size, grayscale=grayscale)
        for i, src in enumerate(videos):
            video_rows, stats = predict_video(src, cv2, classifier, detector, transform, classes, args, names)
            rows += video_rows
            print(stats.summary(src.name), flush=True)
            if stats.stopped:  # Ctrl-C or q ends the session: the rest is skipped
                stopped = (src, stats.frames, len(videos) - i - 1)
                break

    csv_path = out_dir / "predictions.csv"
    utils.write_csv(csv_path, csv_columns(classes), rows)
    print(f"wrote {csv_path} ({len(rows)} rows)" + (f" and annotated copies in {names.root}" if names else ""),
          flush=True)
    if stopped is not None and (stopped[0].kind != "camera" or stopped[2]):
        raise utils.UserError(f"stopped by Ctrl-C or q after {stopped[1]} frames of {stopped[0].name}"
                              + (f" ({stopped[2]} more videos skipped)" if stopped[2] else "")
                              + f"; {csv_path} holds every frame analysed up to there")
    if problems:
        raise utils.UserError(f"{len(problems)} of {len(problems) + len(sources)} inputs could not be read (each "
                              f"named above); {csv_path} holds the other {len(sources)}")


if __name__ == "__main__":
    utils.run_cli(main, get_args_parser())
