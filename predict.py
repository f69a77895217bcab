"""Facial expressions on images, folders, videos and a camera with a trained checkpoint.

    python predict.py [--ckpt best.pt] INPUT ... [--camera N] [--detect] [--tta hflip] [--annotate] [--out DIR]

Without --ckpt it uses the released FER2013 model, pretrained/fer2013.pt (7 classes, 48 px grayscale faces).

Images are face crops by default, read exactly as evaluate.py reads them; with --detect, faces are found first
(--detector: MTCNN by default, or OpenCV's Haar cascades; see detectors.py) and each is classified. Videos and the
camera always detect: all faces of a frame run as one batch, faces are tracked frame to frame and each track's
probabilities are smoothed over time.
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
import utils

# The released model (pretrained/README.md is its card): what predict.py runs when no --ckpt is given.
RELEASED_MODEL = Path(__file__).resolve().parent / "pretrained" / "fer2013.pt"
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
# Face batches are padded up to one of these sizes for the compiled path, so a video with 1-8 faces per frame
# compiles at most four graphs instead of one per face count; larger batches run in chunks of the largest.
FAST_BUCKETS: tuple[int, ...] = (1, 2, 4, 8)

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
    """Fail early, naming the file, when OpenCV cannot open a video."""
    capture = cv2.VideoCapture(path)
    opened = capture.isOpened()
    capture.release()
    if not opened:
        raise utils.UserError(f"cannot open video {path} (not a video, damaged, or a codec OpenCV lacks)")


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
    """Counts and timings of one video, for the FPS summary."""

    frames: int = 0
    analysed: int = 0
    faces: int = 0
    model_calls: int = 0
    seconds: float = 0.0
    detect_s: float = 0.0
    model_s: float = 0.0
    warmup_s: float = 0.0

    def summary(self, name: str) -> str:
        """One line: end-to-end FPS and model-only FPS (one-off compilation left out of both)."""
        wall = max(self.seconds - self.warmup_s, 1e-9)
        model = (f"model {1000 * self.model_s / self.model_calls:.1f} ms per frame with faces = "
                 f"{self.model_calls / self.model_s:.1f} FPS model-only" if self.model_calls else "model-only: no face")
        warm = f"; {self.warmup_s:.1f} s one-off warm-up left out" if self.warmup_s > 0.05 else ""
        detect = f"detection {1000 * self.detect_s / self.analysed:.1f} ms/frame; " if self.analysed else ""
        return (f"{name}: {self.frames} frames ({self.analysed} analysed, {self.faces} faces) in {wall:.1f} s: "
                f"{self.frames / wall:.1f} FPS end to end; {detect}{model}{warm}")


def predict_video(src: Source, cv2: Any, classifier: FaceClassifier, detector: detectors.FaceDetector,
                  transform: Callable[[Image.Image], torch.Tensor], classes: Sequence[str],
                  args: argparse.Namespace, names: OutputNames | None) -> tuple[list[list[Any]], VideoStats]:
    """CSV rows for every analysed frame and face of a video file or camera, and its timing stats."""
    camera = src.kind == "camera"
    capture = cv2.VideoCapture(int(src.path) if camera else src.path)
    if not capture.isOpened():
        raise utils.UserError(f"cannot open {'camera ' + src.path if camera else 'video ' + src.path}")
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not camera else 0
    if args.max_frames:
        total = min(total, args.max_frames) if total > 0 else 0
    fps_in = capture.get(cv2.CAP_PROP_FPS) or 30.0
    tracker = FaceTracker(alpha=args.smooth, max_missed=10 * args.every)
    stats, rows, writer, tmp_path, out_path = VideoStats(), [], None, None, None
    meter = utils.Progress(total, src.name) if total > 0 else None
    start = last_print = time.perf_counter()
    warm_before, model_before, calls_before = classifier.warmup_s, classifier.model_s, classifier.model_calls
    shown: list[tuple[detectors.Box, str]] = []
    try:
        while not args.max_frames or stats.frames < args.max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            index = stats.frames
            stats.frames += 1
            if index % args.every == 0:
                shown = _analyse_frame(src.name, index, frame, classifier, detector, transform, tracker,
                                       classes, args.margin, rows, stats)
            if names is not None:
                if writer is None:
                    out_path = names(src.rel, ".mp4")
                    out_path.parent.mkdir(parents=True, exist_ok=True)
                    tmp_path = out_path.with_name(f".{out_path.stem}.{os.getpid()}.tmp.mp4")
                    writer = cv2.VideoWriter(str(tmp_path), cv2.VideoWriter_fourcc(*"mp4v"), fps_in,
                                             (frame.shape[1], frame.shape[0]))
                    if not writer.isOpened():
                        raise utils.UserError(f"cannot write video {tmp_path} (mp4v codec missing from OpenCV?)")
                annotated = draw_faces(Image.fromarray(frame[:, :, ::-1]), shown)
                writer.write(np.ascontiguousarray(np.asarray(annotated)[:, :, ::-1]))
            if meter is not None:
                meter.step()
            elif time.perf_counter() - last_print >= 5.0:
                last_print = time.perf_counter()
                print(f"{src.name}: {stats.frames} frames, {stats.frames / (last_print - start):.1f} FPS", flush=True)
    except BaseException as err:
        if not (camera and isinstance(err, KeyboardInterrupt)):  # Ctrl-C is how a camera session ends
            _discard(tmp_path)
            raise
        print(f"{src.name}: stopped after {stats.frames} frames", flush=True)
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if stats.frames == 0:
        raise utils.UserError(f"cannot read {'camera ' + src.path if camera else 'video ' + src.path}: "
                              "no frame could be decoded")
    if writer is not None:
        os.replace(tmp_path, out_path)  # the video only appears under its name once complete
    stats.seconds = time.perf_counter() - start
    stats.model_s = classifier.model_s - model_before
    stats.model_calls = classifier.model_calls - calls_before
    stats.warmup_s = classifier.warmup_s - warm_before
    return rows, stats


def _discard(path: Path | None) -> None:
    """Remove a half-written temporary video, if there is one."""
    if path is not None:
        path.unlink(missing_ok=True)


def _analyse_frame(name: str, index: int, frame: np.ndarray, classifier: FaceClassifier,
                   detector: detectors.FaceDetector, transform: Callable[[Image.Image], torch.Tensor],
                   tracker: FaceTracker, classes: Sequence[str], margin: float, rows: list[list[Any]],
                   stats: VideoStats) -> list[tuple[detectors.Box, str]]:
    """Detect, classify (one batch), track and smooth the faces of one BGR frame; appends rows, returns captions."""
    height, width = frame.shape[:2]
    start = time.perf_counter()
    boxes = detector(frame[:, :, ::-1])  # BGR -> RGB view
    stats.detect_s += time.perf_counter() - start
    stats.analysed += 1
    if boxes:
        crops = []
        for box in boxes:
            x, y, w, h = expand_box(box, margin, width, height)
            # BGR -> RGB, the channel order the model was trained on (PIL-decoded images).
            crops.append(transform(Image.fromarray(np.ascontiguousarray(frame[y:y + h, x:x + w, ::-1]))))
        probs = classifier(torch.stack(crops))
    else:
        probs = np.zeros((0, len(classes)))
    tracks = tracker.update(index, boxes, probs)
    stats.faces += len(boxes)
    for box, track in zip(boxes, tracks):
        rows.append(csv_row(name, index, track.id, box, track.probs, classes))
    return [(box, caption(track.probs, classes, track.id)) for box, track in zip(boxes, tracks)]


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
                   help="also read camera N (OpenCV index); stop with Ctrl-C or --max-frames")
    p.add_argument("--detect", action="store_true",
                   help="images: find faces first (default: each image is one face crop); videos always detect")
    p.add_argument("--detector", choices=tuple(detectors.DETECTORS), default=detectors.DEFAULT,
                   help=f"face detector for --detect, videos and the camera (default: {detectors.DEFAULT}; "
                        "see detectors.py)")
    p.add_argument("--tta", choices=("none", "hflip"), default="none",
                   help="hflip: average the logits of each face and its mirror")
    p.add_argument("--annotate", action="store_true",
                   help="also write copies with boxes and labels drawn to OUT/annotated/ (videos as mp4)")
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
    p.add_argument("--max-frames", type=int, default=0, metavar="N",
                   help="videos and camera: stop after N frames (default: 0 = all)")
    p.add_argument("--margin", type=float, default=0.2,
                   help="detected faces: crop this fraction of the box more on each side (default: 0.2)")
    p.add_argument("--min-face", type=int, default=40, metavar="PX", help="smallest face to detect (default: 40)")
    return p


def _check_args(args: argparse.Namespace) -> None:
    """Flag values argparse cannot check by type."""
    for flag, value, ok in (("--batch-size", args.batch_size, args.batch_size >= 1),
                            ("--workers", args.workers, args.workers >= 0),
                            ("--every", args.every, args.every >= 1),
                            ("--max-frames", args.max_frames, args.max_frames >= 0),
                            ("--smooth", args.smooth, 0.0 <= args.smooth < 1.0),
                            ("--margin", args.margin, 0.0 <= args.margin <= 1.0),
                            ("--min-face", args.min_face, args.min_face >= 1)):
        if not ok:
            raise utils.UserError(f"{flag} {value}: out of range (see --help)")


def main(args: argparse.Namespace) -> None:
    """Predict on every input and write OUT/predictions.csv (+ annotated copies)."""
    _check_args(args)
    ckpt = args.ckpt or str(RELEASED_MODEL)
    if args.ckpt is None:
        print(f"no --ckpt: using the released FER2013 model {RELEASED_MODEL} (7 classes, 48 px grayscale; see "
              "pretrained/README.md)", flush=True)
    out_dir = Path(args.out)
    sources = collect_sources(args.inputs, args.camera, out_dir)
    images = [s for s in sources if s.kind == "image"]
    videos = [s for s in sources if s.kind != "image"]
    # OpenCV is checked before the model loads, so a missing install costs the user no waiting.
    cv2 = None
    if videos:
        cv2 = detectors.import_cv2("--camera" if videos[0].kind == "camera" else f"video input {videos[0].name}")
    if args.detect:
        cv2 = detectors.import_cv2("--detect")
    detector = detectors.build(args.detector, cv2, min_face=args.min_face) if cv2 is not None else None
    onnx = Path(ckpt).suffix.lower() == ".onnx"
    if onnx and args.fast == "on":
        raise utils.UserError("--fast on: the compiled path is for .pt checkpoints; an .onnx model runs through "
                              "ONNX Runtime (drop --fast)")
    # Unreadable inputs fail before the model loads, not halfway through the work.
    for src in images:
        image_size(src.path)
    for src in videos:
        if src.kind == "video":
            check_video(cv2, src.path)

    device = models.resolve_device(args.device)
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
    if videos:
        classifier = FaceClassifier(model, device, img_size, fast=not onnx and use_fast_path(args.fast, device),
                                    hflip=args.tta == "hflip", amp=args.amp)
        classifier.warm_up(1)  # the common case, one face, is ready before the clock starts
        print(f"model path: {classifier.describe()} (ready in {classifier.warmup_s:.1f} s)", flush=True)
        transform = functools.partial(data.face_tensor, size=img_size, grayscale=grayscale)
        for src in videos:
            video_rows, stats = predict_video(src, cv2, classifier, detector, transform, classes, args, names)
            rows += video_rows
            print(stats.summary(src.name), flush=True)

    csv_path = out_dir / "predictions.csv"
    utils.write_csv(csv_path, csv_columns(classes), rows)
    print(f"wrote {csv_path} ({len(rows)} rows)" + (f" and annotated copies in {names.root}" if names else ""),
          flush=True)


if __name__ == "__main__":
    args = get_args_parser().parse_args()
    try:
        main(args)
    except utils.UserError as err:
        sys.exit(f"error: {err}")
