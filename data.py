"""The data layer: index CSVs, face-crop decoding, transforms, loaders, converters, checks; the demo set's CLI.

CLI: python data.py {check,affectnet,affectnet-npy,folder,demo,bench} --help
"""
from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import random
import re
import secrets
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T

# AffectNet-8's classes in its label order: the class set of any index CSV that does not declare its own.
AFFECTNET8: tuple[str, ...] = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
# An index CSV declares its class names in this file beside it, one per line in label order (label 0 first);
# every converter writes it. Names are compared across datasets (an AffectNet-8 model scored on RAF-DB), so each
# is stored in the canonical spelling below.
CLASSES_FILE = "classes.txt"
# Class names as datasets and community copies spell them -> the canonical name. Labels are always mapped by
# name, never by sort order, which would put anger first.
CLASS_ALIASES: dict[str, str] = {
    **{name: name for name in AFFECTNET8}, "neutrality": "neutral", "happiness": "happy", "sadness": "sad",
    "surprised": "surprise", "fearful": "fear", "afraid": "fear", "scared": "fear", "disgusted": "disgust",
    "angry": "anger", "contemptuous": "contempt",
}
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# AffectNet-8 training split class counts (thesis Table 2); the demo set and the alpha test use them.
TABLE2_COUNTS: tuple[int, ...] = (74874, 134415, 25459, 14090, 6378, 3803, 24882, 3750)
BOX_COLUMNS: tuple[str, ...] = ("face_x", "face_y", "face_width", "face_height")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class UserError(Exception):
    """Anything the user can fix (bad data, a bad flag, an unusable checkpoint, a full disk): every script prints
    its one-line message, naming the file, CSV line or flag, and exits non-zero without a traceback."""

    def __init__(self, message: object = "") -> None:
        text = str(message)
        # DataLoader re-raises a worker's error as type(err)("Caught ... in DataLoader worker ...\n<traceback>");
        # the traceback's last line is "data.UserError: <msg>", so recover <msg> to keep the CLI at one line.
        if text.startswith("Caught ") and "\n" in text:
            last = [line for line in text.splitlines() if line.strip()][-1]
            text = re.sub(r"^[\w.]+: ", "", last, count=1)
        super().__init__(text)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", durable: bool = True) -> Iterator[IO]:
    """Write to a temp file beside `path` and move it into place only on success; `path` is untouched on error.

    durable: fsync before the rename, so even a power cut leaves the old file or the whole new one (bulk writers
    of many small regenerable files skip it: a process crash still leaves whole files only).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, so os.replace is an atomic rename; pid + random token keep parallel writers apart.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    try:
        with open(tmp, mode.replace("w", "x"), **text) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Progress:
    """Prints `label: done/total (pct) elapsed, eta` every few seconds, so long work is never silent."""

    def __init__(self, total: int, label: str, every_s: float = 5.0) -> None:
        self.total, self.label, self.every_s = total, label, every_s
        self.done, self.start = 0, time.perf_counter()
        self.last = self.start

    def step(self, n: int = 1) -> None:
        """Count n finished items and print a line if enough time has passed."""
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every_s and self.done < self.total:
            self.last = now
            elapsed = now - self.start
            eta = elapsed / self.done * (self.total - self.done)
            print(f"{self.label}: {self.done}/{self.total} ({100 * self.done / self.total:.0f}%) "
                  f"{elapsed:.0f}s elapsed, eta {eta:.0f}s", flush=True)


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


def canonical_class(name: str) -> str:
    """A class name in its canonical spelling (happiness -> happy, Angry -> anger); unknown names lower-cased."""
    name = name.strip().lower()
    return CLASS_ALIASES.get(name, name)


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
def open_csv(path: Path) -> Iterator[csv.DictReader]:
    """A DictReader with stripped column names; a missing header or undecodable text is a UserError."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's UTF-8 exports start with a BOM
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise UserError(f"{path}: empty CSV (no header line)")
            reader.fieldnames = [c.strip() for c in reader.fieldnames]
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
    with open_csv(csv_path) as reader:
        columns = reader.fieldnames
        missing = [c for c in ("path", "label") if c not in columns]
        if missing:
            raise UserError(f"{csv_path}: missing required column(s) {', '.join(missing)} "
                            f"(found: {', '.join(columns)})")
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
            if present_box:
                raw_box = [(row.get(c) or "").strip() for c in BOX_COLUMNS]
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
        more = f" (and {len(problems) - 1} more problems; see `python data.py check --csv {csv_path}`)" \
            if len(problems) > 1 else ""
        raise UserError(problems[0] + more)
    return samples


def class_counts(samples: Sequence[Sample], num_classes: int) -> list[int]:
    """Number of samples per class index."""
    counts = [0] * num_classes
    for s in samples:
        counts[s.label] += 1
    return counts


def write_index(out: str | os.PathLike, rows: Sequence[Sequence[object]], columns: Sequence[str]) -> None:
    """Write an index CSV atomically."""
    with atomic_write(out, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)


# ---------------------------------------------------------------------------------------------------------------------
# Decoding, transforms, dataset, loader
# ---------------------------------------------------------------------------------------------------------------------

def _draft_scale(box_w: int, box_h: int, min_side: int) -> int:
    """Largest JPEG DCT scale (1, 2, 4, 8) that keeps the face box >= min_side pixels on both sides."""
    for scale in (8, 4, 2):
        if box_w // scale >= min_side and box_h // scale >= min_side:
            return scale
    return 1


def load_face(sample: Sample, size: int | None = None, draft: bool = True) -> Image.Image:
    """Decode the sample's image as RGB and crop its face box (clamped); with size, resize it to (size, size),
    decoding JPEGs at reduced scale while the crop keeps >= size pixels."""
    where = sample.file + (f" (CSV line {sample.line})" if sample.line else "")
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
            if im.mode != "RGB":
                im = im.convert("RGB")
            if not size:
                return im.crop(box)
            # Crop + resize in one step with a sub-pixel box: rounding the crop to the reduced grid would shift the
            # face by up to half a decoded pixel (the decoded size is rounded up, so the ratio comes from draft).
            return im.resize((size, size), Image.Resampling.BILINEAR, box=tuple(v * ratio for v in box))
    except UserError:
        raise
    except Exception as err:  # Pillow reports damaged files with many exception types; all mean "unreadable"
        raise UserError(f"cannot decode image {where}: {err or type(err).__name__}") from None


@dataclass(frozen=True)
class Augment:
    """Training augmentation: horizontal flip probability and colour jitter strengths (torchvision's meaning:
    brightness, contrast and saturation factors in [1 - x, 1 + x], hue shift in [-x, x] of a full turn).
    The thesis says "light colour jitter" without strengths; these defaults are ours (train.py's flags)."""

    hflip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02


def build_transform(img_size: int, train: bool, augment: Augment = Augment()) -> Callable[[Image.Image], torch.Tensor]:
    """Thesis preprocessing: resize (S, S) [+ h-flip + light colour jitter] + to tensor + ImageNet norm."""
    steps: list[Callable] = [T.Resize((img_size, img_size))]
    if train:
        steps += [T.RandomHorizontalFlip(p=augment.hflip),
                  T.ColorJitter(augment.brightness, augment.contrast, augment.saturation, augment.hue)]
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


class FaceDataset(Dataset):
    """Face crops from index samples as (normalised tensor [3, S, S], label)."""

    def __init__(self, samples: list[Sample], img_size: int = 224, train: bool = False, draft: bool = True,
                 augment: Augment = Augment()) -> None:
        self.samples = samples
        self.img_size = img_size
        self.train = train
        self.draft = draft  # False only to measure / compare against plain full-size decoding
        self.transform = build_transform(img_size, train, augment)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[i]
        # load_face already resizes to (S, S) (needed for sub-pixel crops of reduced-scale decodes), so the
        # transform's own resize is a no-op copy here; it stays for callers that pass other images.
        image = load_face(sample, self.img_size, draft=self.draft)
        return self.transform(image), sample.label


def _seed_worker(worker_id: int) -> None:
    """Seed NumPy and random per worker from torch's per-worker seed (torch seeds itself)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: Dataset, batch_size: int, workers: int, shuffle: bool = False,
                sampler: Sampler | None = None, seed: int = 42, drop_last: bool = False) -> DataLoader:
    """DataLoader with a seeded generator and seeded workers, persistent workers and pinned memory on CUDA."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=workers,
                      worker_init_fn=_seed_worker, generator=generator, persistent_workers=workers > 0,
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


def _focal_alpha(counts: list[int], classes: Sequence[str]) -> list[float]:
    """Alpha from losses.class_alpha (the one copy of the formula); a zero-count class becomes a UserError."""
    import losses  # imported here: converters and demo must work without the training stack

    try:
        return losses.class_alpha(counts)
    except ValueError as err:
        empty = [f"{i} {name}" for i, (name, n) in enumerate(zip(classes, counts)) if n == 0]
        if empty:
            raise UserError(f"focal alpha needs images of every class; none of class {', '.join(empty)}") from None
        raise UserError(f"focal alpha: {err}") from None


def check_index(csv_path: str | os.PathLike, data_root: str | os.PathLike | None = None, files: bool = True,
                decode: bool = False, img_size: int = 224) -> list[str]:
    """Validate an index CSV, print its class table with focal alpha, and return every problem found."""
    samples, problems = _scan_index(csv_path, data_root, check_files=files)
    if decode:
        present = [s for s in samples if os.path.isfile(s.file)]
        print(f"decoding {len(present)} images on {os.cpu_count()} cores ...", flush=True)
        progress = Progress(len(present), "decode")
        failures = []
        with multiprocessing.Pool(os.cpu_count()) as pool:
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
        alpha = _focal_alpha(counts, classes)
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


def bench(csv_path: str | os.PathLike, data_root: str | os.PathLike | None = None, img_size: int = 224,
          limit: int | None = 500, workers: int = 0, batch_size: int = 32, rounds: int = 3) -> dict[str, float]:
    """Images/s of decode+crop and of the val/train pipelines, reduced-scale vs plain JPEG decoding (best of
    interleaved rounds), and the mean/max abs difference of the val tensors in 0-255 levels."""
    samples = read_index(csv_path, data_root)[:limit]
    for s in samples:  # warm the OS file cache so no configuration pays the disk reads alone
        Path(s.file).read_bytes()

    def rate(stage: str, draft: bool) -> tuple[float, torch.Tensor | None]:
        """Images/s of one configuration, and the tensors it produced (None for decode only)."""
        start, output = time.perf_counter(), None
        if stage == "decode":
            for s in samples:
                load_face(s, img_size, draft=draft)
        else:
            dataset = FaceDataset(samples, img_size, train=stage == "train", draft=draft)
            output = torch.cat([images for images, _ in make_loader(dataset, batch_size, workers)])
        return len(samples) / (time.perf_counter() - start), output

    # A loader worker runs torch single-threaded; on a busy machine two threads make each small tensor op wait on
    # the other, so the main process (workers=0) is measured the same way. Rounds interleave the configurations
    # and the best round counts, so a burst of load elsewhere does not decide the comparison.
    configs = [(stage, mode) for stage in ("decode", "val", "train") for mode in ("draft", "plain")]
    result, tensors = {f"{stage}_{mode}": 0.0 for stage, mode in configs}, {}
    progress = Progress(rounds * len(configs), "bench")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(rounds):
            for stage, mode in configs:
                images_per_s, tensors[(stage, mode)] = rate(stage, mode == "draft")
                result[f"{stage}_{mode}"] = max(result[f"{stage}_{mode}"], images_per_s)
                progress.step()
    finally:
        torch.set_num_threads(threads)
    # Back to 0-255 pixel levels so the difference reads as image intensity, not normalised units.
    levels = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    diff = (tensors[("val", "draft")] - tensors[("val", "plain")]).abs() * levels
    result["mean_abs_diff"], result["max_abs_diff"] = diff.mean().item(), diff.max().item()
    result["images"] = len(samples)
    for scale in (1, 2, 4, 8):  # how many crops each DCT scale serves (non-JPEGs count as full size)
        result[f"scale_{scale}"] = 0
    for s in samples:
        if s.box is None:
            with Image.open(s.file) as im:
                w, h = im.size
        else:
            w, h = s.box[2], s.box[3]
        result[f"scale_{_draft_scale(w, h, img_size)}"] += 1
    return result


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------

def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= minimum, so a bad flag gets argparse's own one-line error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return parse


def get_args_parser() -> argparse.ArgumentParser:
    """Sub-commands: check, one per dataset layout (converters.LAYOUTS), demo, bench."""
    parser = argparse.ArgumentParser(description="Index CSVs: convert a dataset, check, demo set, loader benchmark.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate an index CSV, print the class table and focal alpha")
    p.add_argument("--csv", required=True, help="index CSV (path,label[,face_x,face_y,face_width,face_height])")
    p.add_argument("--data-root", help="folder that relative paths join (default: the CSV's folder)")
    files = p.add_mutually_exclusive_group()
    files.add_argument("--decode", action="store_true", help="also decode every image on all cores")
    files.add_argument("--no-files", action="store_true", help="check the CSV and counts only, not the image files")
    p.add_argument("--img-size", type=int_at_least(1), default=224,
                   help="input size S, for --decode's reduced-scale decoding")

    import converters  # here, not at the top: converters.py imports this module

    for name, (summary, flags, convert) in converters.LAYOUTS.items():
        p = sub.add_parser(name, help=summary)
        for names, options in flags:
            p.add_argument(*names, **options)
        p.set_defaults(convert=convert)

    p = sub.add_parser("demo", help="write the synthetic demo set (train.csv, val.csv, images)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int_at_least(0), default=42)
    p.add_argument("--min-train-per-class", type=int_at_least(1), default=24,
                   help="size of the smallest training class")
    p.add_argument("--val-per-class", type=int_at_least(1), default=30)
    p.add_argument("--image-size", type=int_at_least(16), default=96)

    p = sub.add_parser("bench", help="images/s of the input pipelines, reduced-scale vs plain JPEG decoding")
    p.add_argument("--csv", required=True)
    p.add_argument("--data-root", help="folder that relative paths join (default: the CSV's folder)")
    p.add_argument("--img-size", type=int_at_least(1), default=224)
    p.add_argument("--limit", type=int_at_least(1), default=500, help="first N rows (default 500)")
    p.add_argument("--workers", type=int_at_least(0), default=0,
                   help="DataLoader workers (default 0: the per-core rate)")
    p.add_argument("--batch-size", type=int_at_least(1), default=32)
    p.add_argument("--rounds", type=int_at_least(1), default=3, help="interleaved rounds; the best of each is reported")
    return parser


def main(args: argparse.Namespace) -> None:
    """Run one sub-command; bad input raises UserError."""
    if args.command == "check":
        problems = check_index(args.csv, args.data_root, files=not args.no_files, decode=args.decode,
                               img_size=args.img_size)
        if problems:
            # Every problem is counted; the listing stops at 100 so a wholly wrong file stays readable.
            for problem in problems[:100]:
                print(f"problem: {problem}")
            if len(problems) > 100:
                print(f"... and {len(problems) - 100} more problems")
            raise UserError(f"{len(problems)} problem(s) in {args.csv}; first: {problems[0]}")
        print(f"ok: {args.csv}")
    elif hasattr(args, "convert"):
        import converters

        converters.report(args.convert(args))
    elif args.command == "demo":
        start = time.perf_counter()
        import demo  # the renderer; not needed by anything else in this file

        train_csv, val_csv = demo.make_demo(args.out, args.seed, args.min_train_per_class, args.val_per_class,
                                            args.image_size)
        counts = demo.demo_counts(args.min_train_per_class)
        print(f"wrote {train_csv} ({sum(counts)} images: " + ", ".join(f"{n} {c}" for n, c in zip(counts, AFFECTNET8))
              + f") and {val_csv} ({args.val_per_class * len(AFFECTNET8)} images) "
              f"in {time.perf_counter() - start:.1f}s")
    elif args.command == "bench":
        r = bench(args.csv, args.data_root, args.img_size, args.limit, args.workers, args.batch_size, args.rounds)
        print(f"{r['images']} images at {args.img_size} px, {args.workers} workers, best of {args.rounds} rounds; "
              f"crops decodable at 1/8: {r['scale_8']}, 1/4: {r['scale_4']}, 1/2: {r['scale_2']}, "
              f"full size only: {r['scale_1']}")
        print(f"{'images/s':<28} {'reduced-scale':>13} {'plain':>9} {'speed-up':>9}")
        titles = {"decode": "decode + crop + resize", "val": "val pipeline", "train": "train pipeline"}
        for stage, title in titles.items():
            draft, plain = r[f"{stage}_draft"], r[f"{stage}_plain"]
            print(f"{title:<28} {draft:>13.1f} {plain:>9.1f} {draft / plain:>8.2f}x")
        print(f"val tensors, reduced-scale vs plain: mean abs diff {r['mean_abs_diff']:.3f}, "
              f"max {r['max_abs_diff']:.1f} (0-255 pixel levels)")


if __name__ == "__main__":
    # Run as the module `data`, not `__main__`: demo.py imports `data`, and its errors must be the UserError
    # caught here.
    import data

    args = data.get_args_parser().parse_args()
    try:
        data.main(args)
    except data.UserError as err:
        sys.exit(f"error: {err}")
