"""Faces to expressions for predict.py's photos and realtime.py's videos: the crop around a detected box, the model on
batches of face crops, faces tracked over frames with smoothed probabilities, each face's CSV row, caption and box."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

import detectors
import models
import plots

# Face batches are padded up to one of these sizes for the compiled path, so a video with 1-8 faces per frame
# compiles at most four graphs instead of one per face count; larger batches run in chunks of the largest.
FAST_BUCKETS: tuple[int, ...] = (1, 2, 4, 8)

# ---------------------------------------------------------------------------------------------------------------------
# Crops and tracking
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
        return 1e-3 if detectors.centre_distance(track.box, box) < 0.5 * max(*track.box[2:], *box[2:]) else 0.0

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

    def _run_fast(self, x: torch.Tensor) -> torch.Tensor:
        """Logits through the fast path: chunks of <= 8, each zero-padded up to its bucket size."""
        outputs = []
        for chunk in x.split(FAST_BUCKETS[-1]):
            n = chunk.shape[0]
            bucket = next(b for b in FAST_BUCKETS if b >= n)
            if bucket not in self.compiled:  # each bucket's path is built (and compiled) on first use
                example = torch.zeros(bucket, 3, self.img_size, self.img_size, device=self.device)
                self.compiled[bucket] = models.make_fast(self.model, self.device, example)
            if n < bucket:
                chunk = torch.cat([chunk, chunk.new_zeros(bucket - n, *chunk.shape[1:])])
            outputs.append(self.compiled[bucket](chunk)[:n])  # FastModel returns float32
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
    return device.type == "cuda" if choice == "auto" else choice == "on"


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
