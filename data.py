"""The data library: index CSVs and their classes, face-crop decoding, transforms, loaders, and the check, bench
and prepare work behind `python datasets.py` (which also holds the converters' and the demo set's commands)."""
from __future__ import annotations

import csv
import io
import math
import multiprocessing
import multiprocessing.pool
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T

import losses
import models
from utils import AFFECTNET8, DEFAULT_IMG_SIZE, Progress, UserError, atomic_write, canonical_class, write_csv

# An index CSV declares its class names in this file beside it, one per line in label order (label 0 first);
# every converter writes it. Names are compared across datasets (an AffectNet-8 model scored on RAF-DB), so each
# is stored in the canonical spelling (utils.CLASS_ALIASES).
CLASSES_FILE = "classes.txt"
# AffectNet-8 training split class counts (thesis Table 2); the demo set and the alpha test use them.
TABLE2_COUNTS: tuple[int, ...] = (74874, 134415, 25459, 14090, 6378, 3803, 24882, 3750)
BOX_COLUMNS: tuple[str, ...] = ("face_x", "face_y", "face_width", "face_height")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def process_pool(workers: int, preload: Sequence[str] = ("data",)) -> multiprocessing.pool.Pool:
    """A pool of worker processes, started by a fork server where there is one. Forking this process itself is
    not safe once torch's thread pools run (a child can inherit a lock another thread held and wait on it
    forever); the server imports `preload` (the worker's module) once, so each worker starts with torch loaded.
    A fork server must re-import the main script, so code run from stdin (`python - <<EOF`) keeps the default."""
    main_file = getattr(sys.modules["__main__"], "__file__", None)
    if "forkserver" in multiprocessing.get_all_start_methods() and (main_file is None or os.path.isfile(main_file)):
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(preload))
        return context.Pool(workers)
    return multiprocessing.Pool(workers)


# ---------------------------------------------------------------------------------------------------------------------
# Index CSVs
# ---------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """One index row: path as written in the CSV, resolved file, label, optional face box (x, y, w, h), CSV line
    (0 for an image that does not come from a CSV, e.g. predict.py's inputs)."""

    path: str
    file: str
    label: int
    box: tuple[int, int, int, int] | None
    line: int


def parse_int(text: str) -> int:
    """Integer from '12' or '12.0' (box columns exported by pandas/Excel often carry a '.0')."""
    value = float(text)
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


def read_classes(csv_path: str | os.PathLike) -> tuple[str, ...]:
    """The class names of an index CSV: its folder's classes.txt (label order), else AffectNet-8's."""
    path = Path(csv_path).parent / CLASSES_FILE
    if not path.is_file():
        return AFFECTNET8
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read ({err})") from None
    classes = tuple(canonical_class(n) for n in names)
    if len(classes) < 2:
        raise UserError(f"{path}: needs at least two class names, one per line (found {len(classes)})")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise UserError(f"{path}: class {repeated[0]!r} is listed twice (names are compared after aliasing: "
                        "happiness = happy, angry = anger, ...)")
    return classes


def write_classes(folder: str | os.PathLike, classes: Sequence[str]) -> Path:
    """Write folder/classes.txt; a different classes.txt already there is an error (it would relabel its CSVs)."""
    path = Path(folder) / CLASSES_FILE
    if path.is_file() and read_classes(path) != tuple(classes):
        raise UserError(f"{path} already lists other classes ({', '.join(read_classes(path))}); it belongs to the "
                        f"index CSVs beside it, so write this one ({', '.join(classes)}) to another folder")
    with atomic_write(path) as f:
        f.write("".join(f"{name}\n" for name in classes))
    return path


@contextmanager
def open_csv(path: Path, required: Sequence[str] = (), kind: str = "required") -> Iterator[csv.DictReader]:
    """A DictReader with stripped column names; a missing header, a missing `required` column (`kind` says whose:
    required, AffectNet, ...) or undecodable text is a UserError."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's UTF-8 exports start with a BOM
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise UserError(f"{path}: empty CSV (no header line)")
            reader.fieldnames = [c.strip() for c in reader.fieldnames]
            missing = [c for c in required if c not in reader.fieldnames]
            if missing:
                raise UserError(f"{path}: missing {kind} column(s) {', '.join(missing)} "
                                f"(found: {', '.join(reader.fieldnames)})")
            yield reader
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{path}: not a readable UTF-8 CSV ({err})") from None


def _scan_index(csv_path: str | os.PathLike, data_root: str | os.PathLike | None,
                check_files: bool) -> tuple[list[Sample], list[str]]:
    """Parse an index CSV, collecting every row problem as one line; structural problems raise at once."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise UserError(f"index CSV not found: {csv_path}")
    root = Path(data_root) if data_root is not None else csv_path.parent
    classes = read_classes(csv_path)
    if data_root is not None and not root.is_dir():
        raise UserError(f"--data-root is not a folder: {root}")
    with open_csv(csv_path, ("path", "label")) as reader:
        columns = reader.fieldnames
        present_box = [c for c in BOX_COLUMNS if c in columns]
        if present_box and len(present_box) != len(BOX_COLUMNS):
            raise UserError(f"{csv_path}: face box needs all of {', '.join(BOX_COLUMNS)} "
                            f"(found only {', '.join(present_box)})")
        samples, problems = [], []
        for row in reader:
            line = reader.line_num  # physical line of the row's end; header = 1
            path = (row.get("path") or "").strip()
            raw_label = (row.get("label") or "").strip()
            if not path:
                problems.append(f"{csv_path} line {line}: empty path")
                continue
            try:
                label = int(raw_label)
            except ValueError:
                label = -1
            if not 0 <= label < len(classes):
                name = canonical_class(raw_label)
                hint = f" (write {classes.index(name)} for {name})" if name in classes else ""
                problems.append(f"{csv_path} line {line}: label {raw_label!r} is not an integer in "
                                f"0-{len(classes) - 1}{hint}")
                continue
            box = None
            raw_box = [(row.get(c) or "").strip() for c in BOX_COLUMNS]  # all "" without box columns
            if any(raw_box):
                try:
                    box = tuple(parse_int(v) for v in raw_box)
                except ValueError:
                    problems.append(f"{csv_path} line {line}: face box {','.join(raw_box)} is not 4 integers")
                    continue
                if box[2] <= 0 or box[3] <= 0:
                    problems.append(f"{csv_path} line {line}: face box {box} has a non-positive size")
                    continue
            file = path if os.path.isabs(path) else str(root / path)
            samples.append(Sample(path=path, file=file, label=label, box=box, line=line))
    if not samples and not problems:
        raise UserError(f"{csv_path}: empty CSV (header but no rows)")
    if check_files:
        absent = [s for s in samples if not os.path.isfile(s.file)]
        if absent:
            first = "; ".join(f"line {s.line}: {s.file}" for s in absent[:10])
            problems.append(f"{csv_path}: {len(absent)} of {len(samples)} image files are missing "
                            f"(first {min(10, len(absent))}: {first})")
    return samples, problems


def read_index(csv_path: str | os.PathLike, data_root: str | os.PathLike | None = None,
               check_files: bool = True) -> list[Sample]:
    """Read and validate an index CSV (path,label[,face box]); raises UserError on any problem."""
    samples, problems = _scan_index(csv_path, data_root, check_files)
    if problems:
        more = f" (and {len(problems) - 1} more problems; see `python datasets.py check --csv {csv_path}`)" \
            if len(problems) > 1 else ""
        raise UserError(problems[0] + more)
    return samples


def class_counts(samples: Sequence[Sample], num_classes: int) -> list[int]:
    """Number of samples per class index."""
    return np.bincount([s.label for s in samples], minlength=num_classes).tolist()


# ---------------------------------------------------------------------------------------------------------------------
# Decoding, transforms, dataset, loader
# ---------------------------------------------------------------------------------------------------------------------

def _draft_scale(box_w: int, box_h: int, min_side: int) -> int:
    """Largest JPEG DCT scale (1, 2, 4, 8) that keeps the face box >= min_side pixels on both sides."""
    return next((scale for scale in (8, 4, 2) if min(box_w, box_h) // scale >= min_side), 1)


def _where(sample: Sample) -> str:
    """The sample's file, with its CSV line when it comes from one."""
    return sample.file + (f" (CSV line {sample.line})" if sample.line else "")


def load_face(sample: Sample, size: int | None = None, draft: bool = True, grayscale: bool = False) -> Image.Image:
    """Decode the sample's image as RGB and crop its face box (clamped); with size, resize it to (size, size),
    decoding JPEGs at reduced scale while the crop keeps >= size pixels. grayscale: its luma in all three channels
    (what a model trained on grayscale faces, such as FER2013's, must see)."""
    where = _where(sample)
    try:
        with Image.open(sample.file) as im:
            full_w, full_h = im.size
            box = (0, 0, full_w, full_h)
            if sample.box is not None:
                x, y, w, h = sample.box
                box = (max(0, x), max(0, y), min(full_w, x + w), min(full_h, y + h))
                if box[2] <= box[0] or box[3] <= box[1]:
                    raise UserError(f"face box {sample.box} lies outside the {full_w}x{full_h} image {where}")
            ratio = 1.0  # decoded pixels per original pixel
            if size and draft and im.format == "JPEG":
                scale = _draft_scale(box[2] - box[0], box[3] - box[1], size)
                # Pillow picks the largest DCT scale whose output is still >= the requested size, so asking for
                # full // scale gives `scale`; it returns the original image's extent on the decoded grid.
                drafted = im.draft("RGB", (full_w // scale, full_h // scale)) if scale > 1 else None
                if drafted:
                    ratio = drafted[1][2] / full_w
            im.load()
            im = to_model_mode(im, grayscale)
            if not size:
                return im.crop(box)
            # Crop + resize in one step with a sub-pixel box: rounding the crop to the reduced grid would shift the
            # face by up to half a decoded pixel (the decoded size is rounded up, so the ratio comes from draft).
            return im.resize((size, size), Image.Resampling.BILINEAR, box=tuple(v * ratio for v in box))
    except UserError:
        raise
    except Exception as err:  # Pillow reports damaged files with many exception types; all mean "unreadable"
        raise UserError(f"cannot decode image {where}: {err or type(err).__name__}") from None


def to_model_mode(image: Image.Image, grayscale: bool = False) -> Image.Image:
    """An image as a model reads it: RGB, or with grayscale its luma (ITU-R 601-2, Pillow's "L") in all three
    channels, so a colour webcam crop reaches a grayscale-trained model as its training faces did."""
    if grayscale and image.mode != "L":
        image = image.convert("L")
    return image if image.mode == "RGB" else image.convert("RGB")


def save_image(image: Image.Image, path: str | os.PathLike, durable: bool = True, **options: object) -> None:
    """Encode `image` in memory with Pillow's save options (format, quality, ...), then write it atomically;
    durable=False skips the fsync (bulk writers of many small files that a rerun rewrites)."""
    buffer = io.BytesIO()
    image.save(buffer, **options)
    with atomic_write(path, "wb", durable=durable) as f:
        f.write(buffer.getvalue())


@dataclass(frozen=True)
class Augment:
    """Training augmentation: horizontal flip probability and colour jitter strengths (torchvision's meaning:
    brightness, contrast and saturation factors in [1 - x, 1 + x], hue shift in [-x, x] of a full turn).
    The thesis says "light colour jitter" without strengths; these defaults are ours (train.py's flags).
    Beyond the thesis, off by default: a random affine (rotation in [-rotate, rotate] degrees, shift up to `shift`
    of the side on each axis, zoom in [1 - scale, 1 + scale]) and random erasing with probability `erase`
    (torchvision's RandomErasing ranges: 2-33 % of the area, aspect 0.3-3.3, filled with the mean colour)."""

    hflip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    rotate: float = 0.0
    shift: float = 0.0
    scale: float = 0.0
    erase: float = 0.0


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a uint8 tensor [3, H, W] (what loader workers hand over: 4x less than float32)."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def face_tensor(image: Image.Image, size: int, grayscale: bool = False) -> torch.Tensor:
    """A face crop already in memory (a video frame's) as the loader gives one: resized to (size, size) as
    load_face resizes, uint8 [3, size, size]."""
    return to_uint8_tensor(to_model_mode(image, grayscale).resize((size, size), Image.Resampling.BILINEAR))


class FaceDataset(Dataset):
    """Face crops from index samples as (uint8 tensor [3, S, S], label): workers only decode, crop and resize.

    Flip, colour jitter and normalisation run on whole batches on the training device (BatchAugment,
    models.normalize), where they cost a fraction of what they cost per image on a loader core.
    """

    def __init__(self, samples: list[Sample], img_size: int = DEFAULT_IMG_SIZE, draft: bool = True,
                 grayscale: bool = False) -> None:
        self.samples = samples
        self.img_size = img_size
        self.draft = draft  # False only to measure / compare against plain full-size decoding
        self.grayscale = grayscale

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[i]
        return to_uint8_tensor(load_face(sample, self.img_size, self.draft, self.grayscale)), sample.label


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma [B, 1, H, W] of float RGB [B, 3, H, W] with torchvision's rgb_to_grayscale weights and op order."""
    r, g, b = x.unbind(dim=1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """ratio * x + (1 - ratio) * other, clamped to [0, 1]: torchvision's _blend with one ratio per image."""
    ratio = ratio.view(-1, 1, 1, 1)
    return (x * ratio + other * (1 - ratio)).clamp_(0, 1)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """Float RGB [B, 3, H, W] in [0, 1] -> HSV, hue in [0, 1) (the formulas torchvision and Pillow use)."""
    r, g, b = x.unbind(dim=1)
    maxc, minc = x.amax(dim=1), x.amin(dim=1)
    equal = maxc == minc  # grey pixels: no hue, no saturation (and no division by zero below)
    span = maxc - minc
    s = span / torch.where(equal, torch.ones_like(maxc), maxc)
    rc, gc, bc = ((maxc.unsqueeze(1) - x) / torch.where(equal, torch.ones_like(span), span).unsqueeze(1)).unbind(1)
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    return torch.stack(((h * (1.0 / 6.0) + 1.0).fmod(1.0), s, maxc), dim=1)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV [B, 3, H, W] (hue in [0, 1)) -> float RGB in [0, 1].

    The closed form c = v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6 h) mod 6 with n = 5, 3, 1 for r, g, b:
    the same function as the six-sector formula (within 1e-6), with no per-pixel gather, ~2x faster on a CPU.
    """
    h, s, v = hsv.unbind(dim=1)
    n = models.device_constant((5.0, 3.0, 1.0), hsv.device)
    k = (n + (h * 6.0).unsqueeze(1)).remainder(6.0)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


@dataclass(frozen=True)
class AugmentParams:
    """One batch's augmentation draws, one value per image: flip yes/no and the four jitter factors; the affine
    matrices [B, 2, 3] and erasing boxes [B, 5] (on, top, left, height, width as fractions) only when asked for."""

    flip: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    affine: torch.Tensor | None = None
    erase: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> AugmentParams:
        """The same draws on another device (to apply one batch's parameters on CPU and GPU alike)."""
        return AugmentParams(*(None if v is None else v.to(device) for v in vars(self).values()))


class BatchAugment:
    """The training augmentation on a whole uint8 batch on its device, returning normalised float32 images.

    Per image: horizontal flip with probability hflip, then brightness, contrast, saturation and hue, each with
    its own factor drawn uniformly from torchvision ColorJitter's ranges and applied with torchvision's
    definitions (transforms.v2.functional.adjust_*), in that fixed order; then ImageNet normalisation.
    Vectorised: no Python loop over images. The draws come from the generator the caller passes, seeded per
    step, so a run's numbers do not depend on the number of loader workers and a resumed step redraws exactly.
    """

    def __init__(self, augment: Augment) -> None:
        self.augment = augment

    def draw(self, batch: int, generator: torch.Generator) -> AugmentParams:
        """Per-image parameters from the generator (on the generator's device)."""
        a = self.augment
        u = torch.rand(5, batch, generator=generator, device=generator.device)
        factor = lambda strength, row: 1.0 + strength * (2.0 * u[row] - 1.0)  # uniform in [1 - x, 1 + x]
        # The affine and erasing draws come after, and only when on: with them off a run draws what it always did.
        affine = erase = None
        if a.rotate or a.shift or a.scale:
            g = 2.0 * torch.rand(4, batch, generator=generator, device=generator.device) - 1.0  # uniform [-1, 1]
            angle, zoom = torch.deg2rad(a.rotate * g[0]), 1.0 + a.scale * g[3]
            cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
            # affine_grid maps output to input coordinates in [-1, 1]: a shift of f of the side is 2f there.
            affine = torch.stack([torch.stack([cos, -sin, 2.0 * a.shift * g[1]], 1),
                                  torch.stack([sin, cos, 2.0 * a.shift * g[2]], 1)], 1)
        if a.erase:
            e = torch.rand(5, batch, generator=generator, device=generator.device)
            area = 0.02 + (0.33 - 0.02) * e[1]
            ratio = torch.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * e[2])
            h, w = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
            erase = torch.stack([(e[0] < a.erase).float(), e[3] * (1 - h), e[4] * (1 - w), h, w], 1)
        return AugmentParams(flip=u[0] < a.hflip, brightness=factor(a.brightness, 1),
                             contrast=factor(a.contrast, 2), saturation=factor(a.saturation, 3),
                             hue=a.hue * (2.0 * u[4] - 1.0), affine=affine, erase=erase)

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> augmented float32 in [0, 1] (before normalisation)."""
        a = self.augment
        x = images.float().div_(255)
        x = torch.where(params.flip.view(-1, 1, 1, 1), x.flip(3), x)
        if params.affine is not None:  # bilinear, black outside the image (torchvision RandomAffine's fill)
            grid = torch.nn.functional.affine_grid(params.affine, list(x.shape), align_corners=False)
            x = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if a.brightness:
            x = (x * params.brightness.view(-1, 1, 1, 1)).clamp_(0, 1)
        if a.contrast:
            x = _blend(x, _grey(x).mean(dim=(1, 2, 3), keepdim=True), params.contrast)
        if a.saturation:
            x = _blend(x, _grey(x), params.saturation)
        if a.hue:
            hsv = _rgb_to_hsv(x)
            hsv[:, 0] = (hsv[:, 0] + params.hue.view(-1, 1, 1)).remainder(1.0)
            x = _hsv_to_rgb(hsv)
        if params.erase is not None:
            mean = models.device_constant(models.IMAGENET_MEAN, x.device)
            x = torch.where(_box_mask(params.erase, *x.shape[2:]), mean, x)
        return x

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 [B, 3, H, W] on the generator's device -> augmented, normalised float32."""
        return models.normalize(self.apply(images, self.draw(images.shape[0], generator)).mul_(255))


def _box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, 1, H, W] True inside each image's box (on, top, left, height, width as fractions of the side)."""
    on, top, left, h, w = (v.view(-1, 1, 1, 1) for v in boxes.unbind(1))
    rows = (torch.arange(height, device=boxes.device).view(1, 1, -1, 1) + 0.5) / height
    cols = (torch.arange(width, device=boxes.device).view(1, 1, 1, -1) + 0.5) / width
    return (on > 0) & (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)


def make_loader(dataset: Dataset, batch_size: int, workers: int, shuffle: bool = False,
                sampler: Sampler | Sequence[int] | None = None, seed: int = 42, drop_last: bool = False
                ) -> DataLoader:
    """DataLoader with a seeded generator, persistent workers and pinned memory on CUDA (workers draw no random
    numbers: augmentation happens on the batch, see BatchAugment)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=workers,
                      generator=torch.Generator().manual_seed(seed), persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available(), drop_last=drop_last)


# ---------------------------------------------------------------------------------------------------------------------
# check and bench
# ---------------------------------------------------------------------------------------------------------------------

def _decode_problem(job: tuple[Sample, int]) -> str | None:
    """Pool worker: decode one sample the way training will; the problem line, or None when it is fine."""
    sample, img_size = job
    try:
        load_face(sample, img_size)
    except UserError as err:
        return str(err)
    return None


def focal_alpha(counts: Sequence[int], classes: Sequence[str], source: object) -> list[float]:
    """losses.class_alpha of a training set's class counts (the one copy of the formula); a class without images
    is a UserError naming it and the set (`source`), since its weight 1/sqrt(frequency) is undefined."""
    empty = [f"{i} {name}" for i, (name, n) in enumerate(zip(classes, counts)) if n <= 0]
    if empty:
        raise UserError(f"focal alpha: {source} has no images of class {', '.join(empty)}, so its weight "
                        f"1/sqrt(frequency) is undefined (train with --alpha as {len(classes)} numbers, or none)")
    return losses.class_alpha(counts)


def check_index(csv_path: str | os.PathLike, data_root: str | os.PathLike | None = None, files: bool = True,
                decode: bool = False, img_size: int = DEFAULT_IMG_SIZE) -> list[str]:
    """Validate an index CSV, print its class table with focal alpha, and return every problem found."""
    samples, problems = _scan_index(csv_path, data_root, check_files=files)
    if decode:
        present = [s for s in samples if os.path.isfile(s.file)]
        print(f"decoding {len(present)} images on {os.cpu_count()} cores ...", flush=True)
        progress = Progress(len(present), "decode")
        failures = []
        with process_pool(os.cpu_count() or 1) as pool:
            for problem in pool.imap(_decode_problem, ((s, img_size) for s in present), chunksize=32):
                progress.step()
                if problem:
                    failures.append(problem)
        print(f"decoded {len(present)} images: {len(failures)} failed")
        problems += failures
    classes = read_classes(csv_path)
    counts = class_counts(samples, len(classes))
    total = max(1, sum(counts))
    try:
        alpha = focal_alpha(counts, classes, csv_path)
    except UserError as err:
        alpha, problems = None, problems + [str(err)]
    declared = Path(csv_path).parent / CLASSES_FILE
    print(f"{len(classes)} classes ({'from ' + str(declared) if declared.is_file() else 'AffectNet-8, the default'})")
    width = max(9, *(len(name) for name in classes))
    print(f"{'index':>5}  {'class':<{width}} {'count':>9} {'share':>8} {'alpha':>9}")
    for i, name in enumerate(classes):
        a = f"{alpha[i]:9.6f}" if alpha else f"{'-':>9}"
        print(f"{i:>5}  {name:<{width}} {counts[i]:>9} {100 * counts[i] / total:>7.2f}% {a}")
    print(f"{'':>5}  {'total':<{width}} {sum(counts):>9} {100.0:>7.2f}%")
    if alpha:
        print("focal alpha (inverse sqrt class frequency, mean 1): " + ", ".join(f"{a:.6f}" for a in alpha))
    return problems


def _reference_image(sample: Sample) -> Image.Image:
    """The plain way to read a face: decode the whole image at full size, convert to RGB, crop the box."""
    try:
        with Image.open(sample.file) as im:
            im = im.convert("RGB")
    except Exception as err:  # as load_face: every Pillow failure means "unreadable"
        raise UserError(f"cannot decode image {_where(sample)}: {err or type(err).__name__}") from None
    if sample.box is None:
        return im
    x, y, w, h = sample.box
    return im.crop((max(0, x), max(0, y), min(im.width, x + w), min(im.height, y + h)))


def bench(csv_path: str | os.PathLike, data_root: str | os.PathLike | None = None,
          img_size: int = DEFAULT_IMG_SIZE, limit: int | None = 500, workers: int = 0, batch_size: int = 64,
          rounds: int = 3) -> dict[str, float]:
    """Training-input images/s on one core: the plain torchvision way (PIL decode, Resize, flip, ColorJitter,
    ToTensor, Normalize per image) against ours (loader side: reduced-scale decode, crop, resize to uint8),
    plus the batch augmentation's cost per image on this CPU. Best of interleaved rounds."""
    samples = read_index(csv_path, data_root)[:limit]
    for s in samples:  # warm the OS file cache so no configuration pays the disk reads alone
        Path(s.file).read_bytes()
    # The plain torchvision training pipeline, per image, with our augmentation strengths.
    a = Augment()
    reference = T.Compose([T.Resize((img_size, img_size)), T.RandomHorizontalFlip(a.hflip),
                           T.ColorJitter(a.brightness, a.contrast, a.saturation, a.hue), T.ToTensor(),
                           T.Normalize(models.IMAGENET_MEAN, models.IMAGENET_STD)])
    augment, generator = BatchAugment(a), torch.Generator().manual_seed(0)

    def reference_rate() -> float:
        start = time.perf_counter()
        for s in samples:
            reference(_reference_image(s))
        return len(samples) / (time.perf_counter() - start)

    def ours_rate() -> tuple[float, list[torch.Tensor]]:
        start = time.perf_counter()
        batches = [images for images, _ in make_loader(FaceDataset(samples, img_size), batch_size, workers)]
        return len(samples) / (time.perf_counter() - start), batches

    # One thread, the way a loader worker runs torch; rounds interleave the configurations and the best round
    # counts, so a burst of load elsewhere does not decide the comparison.
    result = {"reference_per_core": 0.0, "ours_per_core": 0.0, "batch_augment_ms_per_image": math.inf}
    progress = Progress(rounds * 3, "bench")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(rounds):
            rate, batches = ours_rate()
            result["ours_per_core"] = max(result["ours_per_core"], rate)
            progress.step()
            result["reference_per_core"] = max(result["reference_per_core"], reference_rate())
            progress.step()
            start = time.perf_counter()
            for images in batches:
                augment(images, generator)
            result["batch_augment_ms_per_image"] = min(result["batch_augment_ms_per_image"],
                                                       1000 * (time.perf_counter() - start) / len(samples))
            progress.step()
    finally:
        torch.set_num_threads(threads)
    result["speedup"] = result["ours_per_core"] / result["reference_per_core"]
    result["images"], result["img_size"] = len(samples), img_size
    return result


# ---------------------------------------------------------------------------------------------------------------------
# prepare: crop the faces once, ahead of training
# ---------------------------------------------------------------------------------------------------------------------

def _prepared_names(samples: Sequence[Sample], data_root: Path) -> list[str]:
    """Each sample's crop file under the prepare folder: its relative path as a .jpg (one file per row, so
    a photo listed with two face boxes gets two crops)."""
    def relative(sample: Sample) -> Path:
        path = Path(sample.path)
        if not path.is_absolute():
            return path
        try:
            return path.relative_to(data_root.resolve())
        except ValueError:
            return path.relative_to(path.anchor)
    names = [relative(s).with_suffix(".jpg") for s in samples]
    repeated = {n for n in names if names.count(n) > 1} if len(set(names)) < len(names) else set()
    return [(n.with_name(f"{n.stem}_line{s.line}.jpg") if n in repeated else n).as_posix()
            for n, s in zip(names, samples)]


def _prepare_one(job: tuple[Sample, Path, int]) -> str | None:
    """Pool worker: write one face crop (JPEG, quality 95) unless a complete one is there; the error, if any."""
    sample, target, size = job
    if target.is_file() and target.stat().st_size > 0:
        return "skipped"
    try:
        face = load_face(sample, size)
    except UserError as err:
        return str(err)
    # 4:4:4 chroma: the default 4:2:0 halves the colour resolution of a 224 px face. No fsync: hundreds of
    # thousands of small files, and a rerun redoes whatever is missing.
    save_image(face, target, durable=False, format="JPEG", quality=95, subsampling=0)
    return None


def prepare(csv_path: str | os.PathLike, out_dir: str | os.PathLike, data_root: str | os.PathLike | None = None,
            img_size: int = DEFAULT_IMG_SIZE, workers: int | None = None) -> tuple[int, int, list[str]]:
    """Decode each row's image once, crop its face box, resize to img_size x img_size and write it under out_dir (JPEG,
    quality 95, relative paths kept), then out_dir/index.csv (the same rows and columns, no box columns) and
    classes.txt. Resumable: finished crops are kept. Returns (written, skipped, problems)."""
    csv_path, out_dir = Path(csv_path), Path(out_dir)
    samples = read_index(csv_path, data_root)
    names = _prepared_names(samples, Path(data_root) if data_root is not None else csv_path.parent)
    jobs = [(s, out_dir / n, img_size) for s, n in zip(samples, names)]
    workers = workers or os.cpu_count() or 1
    print(f"prepare: {len(jobs)} faces from {csv_path} -> {out_dir} at {img_size} px on {workers} processes",
          flush=True)
    written, skipped, problems, failed = 0, 0, [], set()
    progress = Progress(len(jobs), "prepare", unit="images")
    with process_pool(workers) as pool:
        # imap (ordered) so every result is matched to its row; chunks keep the inter-process traffic small.
        for i, outcome in enumerate(pool.imap(_prepare_one, jobs, chunksize=64)):
            if outcome == "skipped":
                skipped += 1
            elif outcome is not None:
                problems.append(outcome)
                failed.add(i)
                print(f"error: {outcome}", file=sys.stderr, flush=True)
            else:
                written += 1
            progress.step()
    with open_csv(csv_path) as reader:
        columns = [c for c in reader.fieldnames if c not in BOX_COLUMNS]
        by_line = {reader.line_num: row for row in reader}
    rows = [[name if c == "path" else by_line[s.line].get(c, "") for c in columns]
            for i, (s, name) in enumerate(zip(samples, names)) if i not in failed]
    write_classes(out_dir, read_classes(csv_path))
    write_csv(out_dir / "index.csv", columns, rows)
    return written, skipped, problems


if __name__ == "__main__":  # the commands need the converters and demo, which sit above this library: datasets.py
    print("error: `python data.py` was renamed `python datasets.py` (same sub-commands and flags)", file=sys.stderr)
    sys.exit(2)
