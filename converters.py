"""Converters: the dataset layouts users hold -> index CSVs (path,label[,face box]) with classes.txt beside them.

    python datasets.py affectnet | affectnet-npy | folder | rafdb | fer2013 | ferplus --help

fer2013 takes either the original fer2013.csv (pixels in the CSV: written out as PNGs) or the folder of JPEGs most
copies come as, ROOT/train/<class>/Training_*.jpg beside ROOT/test/ (PublicTest_ and PrivateTest_ mixed) or
ROOT/publictest/ [+ ROOT/privatetest/] (referenced in place, not copied); both give the same splits and classes.

Every converter keeps the rows it can use, counts every row it drops by reason (datasets.py prints the report),
and writes classes.txt in the canonical class spelling, so a model trained on one dataset is scored on
another by class name. Each returns [(index CSV written, rows kept, {drop reason: rows})].
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from data import BOX_COLUMNS, IMAGE_EXTENSIONS, open_csv, parse_int, save_image, write_classes
from utils import AFFECTNET8, CLASS_ALIASES, Progress, UserError, canonical_class, write_csv

Report = list[tuple[Path, int, dict[str, int]]]

# The 7 basic expressions (AffectNet-8 without contempt), in AffectNet's order: RAF-DB, FER2013 and AffectNet-7
# share this list, so their models can be ensembled and compared class for class.
BASIC7: tuple[str, ...] = AFFECTNET8[:7]
_AFFECTNET_DROPPED_CODES = {8: "None", 9: "Uncertain", 10: "No-Face"}
# RAF-DB basic labels 1-7 and FER2013 labels 0-6, each in its dataset's own order.
RAFDB_LABELS: tuple[str, ...] = ("surprise", "fear", "disgust", "happy", "sad", "anger", "neutral")
FER2013_LABELS: tuple[str, ...] = ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# FER2013's Usage column -> the index CSV of that split (PublicTest is the usual validation set).
FER2013_SPLITS = {"Training": "train.csv", "PublicTest": "val.csv", "PrivateTest": "test.csv"}
# FER2013 as a folder of JPEGs: split folder (any case) -> the split its files count under when their name has no
# split prefix; a file's own Training_ / PublicTest_ / PrivateTest_ prefix decides its split (test/ mixes two).
FER2013_FOLDERS = {"train": "Training", "test": "PublicTest", "publictest": "PublicTest", "privatetest": "PrivateTest"}
# FERPlus vote columns (fer2013new.csv), in its own order; the last two are not expressions.
FERPLUS_VOTES: tuple[str, ...] = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                                  "contempt", "unknown", "NF")


def relative_to_csv(file: Path, out: Path) -> str:
    """Path of `file` as written in the index: relative to the output CSV's folder, so the default data root works."""
    return Path(os.path.relpath(file.resolve(), out.resolve().parent)).as_posix()


def _count(dropped: dict[str, int], reason: str) -> None:
    dropped[reason] = dropped.get(reason, 0) + 1


def _write(out: Path, rows: Sequence[Sequence[object]], columns: Sequence[str], classes: Sequence[str],
           dropped: dict[str, int], source: object) -> tuple[Path, int, dict[str, int]]:
    """Write one index CSV and its classes.txt (classes first: an index never appears without them)."""
    if not rows:
        raise UserError(f"{source}: no usable rows (dropped: {dropped})")
    write_classes(out.parent, classes)
    write_csv(out, columns, rows)
    return out, len(rows), dropped


def _affectnet_classes(count: int) -> tuple[str, ...]:
    """AffectNet-8, or AffectNet-7 (contempt dropped) with --classes 7."""
    if count not in (7, 8):
        raise UserError(f"--classes {count}: AffectNet has 8 expressions (or 7 without contempt)")
    return AFFECTNET8[:count]


def convert_affectnet(csv_path: str | os.PathLike, out: str | os.PathLike,
                      images_root: str | os.PathLike | None = None, num_classes: int = 8) -> Report:
    """Full release training.csv / validation.csv -> index CSV with face boxes."""
    csv_path, out = Path(csv_path), Path(out)
    classes = _affectnet_classes(num_classes)
    if not csv_path.is_file():
        raise UserError(f"AffectNet CSV not found: {csv_path}")
    rows, dropped = [], {}
    with open_csv(csv_path, ("subDirectory_filePath", *BOX_COLUMNS, "expression"), "AffectNet") as reader:
        for row in reader:
            try:
                code = int((row["expression"] or "").strip())
            except ValueError:
                _count(dropped, "expression is not an integer")
                continue
            try:
                box = [parse_int((row[c] or "").strip()) for c in BOX_COLUMNS]
            except ValueError:
                box = None
            path = (row["subDirectory_filePath"] or "").strip()
            if code in _AFFECTNET_DROPPED_CODES:
                _count(dropped, f"expression {code} ({_AFFECTNET_DROPPED_CODES[code]}) is not an expression class")
            elif not 0 <= code < len(AFFECTNET8):
                _count(dropped, "expression outside 0-10")
            elif code >= len(classes):
                _count(dropped, f"expression {code} ({AFFECTNET8[code]}) is not in AffectNet-{len(classes)}")
            elif box is None:
                _count(dropped, "face box is not 4 integers")
            elif box[2] <= 0 or box[3] <= 0:
                _count(dropped, "non-positive face box")
            elif not path:
                _count(dropped, "empty image path")
            else:
                if images_root is not None:
                    path = relative_to_csv(Path(images_root) / path, out)
                rows.append((path, code, *box))
    return [_write(out, rows, ("path", "label", *BOX_COLUMNS), classes, dropped, csv_path)]


def _npy_label(file: Path) -> int:
    """The label stored in a cropped-release <n>_exp.npy: a 0-d array of a string ('3') or an integer."""
    value = np.load(file, allow_pickle=False)
    if value.size != 1:
        raise ValueError(f"{value.size} values")
    value = value.reshape(()).item()
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(str(value).strip()) if isinstance(value, str) else int(value)


def convert_affectnet_npy(split_dir: str | os.PathLike, out: str | os.PathLike, num_classes: int = 8) -> Report:
    """Cropped release <split>/images/<n>.jpg + <split>/annotations/<n>_exp.npy -> index CSV."""
    split_dir, out = Path(split_dir), Path(out)
    classes = _affectnet_classes(num_classes)
    images_dir, annotations_dir = split_dir / "images", split_dir / "annotations"
    for folder in (images_dir, annotations_dir):
        if not folder.is_dir():
            raise UserError(f"not a cropped AffectNet split (missing folder): {folder}")
    # Numeric stems sort as numbers so the index follows the release's own numbering.
    key = lambda p: (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem)
    images = sorted((p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=key)
    rows, dropped, matched = [], {}, set()
    for image in images:
        annotation = annotations_dir / f"{image.stem}_exp.npy"
        try:
            label = _npy_label(annotation)
        except FileNotFoundError:
            _count(dropped, "image without <n>_exp.npy annotation")
            continue
        except (OSError, ValueError, TypeError, EOFError) as err:
            matched.add(annotation.name)
            _count(dropped, f"unreadable annotation ({type(err).__name__})")
            continue
        matched.add(annotation.name)
        if 0 <= label < len(classes):
            rows.append((relative_to_csv(image, out), label))
        elif label == 7:
            _count(dropped, f"annotation 7 (contempt) is not in AffectNet-{len(classes)}")
        else:
            _count(dropped, "annotation outside 0-7")
    orphans = sum(1 for p in annotations_dir.glob("*_exp.npy") if p.name not in matched)
    if orphans:
        dropped["annotation without an image (not a row)"] = orphans
    return [_write(out, rows, ("path", "label"), classes, dropped, split_dir)]


def convert_folder(root: str | os.PathLike, out: str | os.PathLike) -> Report:
    """One folder per class, named by AffectNet-8 index (0-7) or by class name (any case, common variants)."""
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise UserError(f"class folder root not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserError(f"{root}: no class folders (expected one folder per class, named 0-7 or by class name)")
    def class_of(folder: Path) -> str | None:
        key = folder.name.strip().lower()
        return AFFECTNET8[int(key)] if key.isdigit() and int(key) < len(AFFECTNET8) else CLASS_ALIASES.get(key)

    unknown = [p.name for p in folders if class_of(p) is None]
    if unknown:
        raise UserError(f"{root}: unknown class folder name(s) {', '.join(unknown)}; found "
                        f"{', '.join(p.name for p in folders)}; expected 0-7 or names like {', '.join(AFFECTNET8)}")
    names = {}
    for folder in folders:
        name = class_of(folder)
        if name in names.values():
            other = next(f.name for f, n in names.items() if n == name)
            raise UserError(f"{root}: folders {other!r} and {folder.name!r} are both class {name}")
        names[folder] = name
    # Numbered folders are AffectNet-8 indices, so all eight classes stay; named ones keep the classes present,
    # in AffectNet's order.
    numbered = all(f.name.strip().isdigit() for f in folders)
    classes = AFFECTNET8 if numbered else tuple(c for c in AFFECTNET8 if c in names.values())
    rows, dropped = [], {}
    for folder, name in names.items():
        print(f"  folder {folder.name!r} -> {classes.index(name)} {name}")
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            if file.suffix.lower() in IMAGE_EXTENSIONS:
                rows.append((relative_to_csv(file, out), classes.index(name)))
            else:
                _count(dropped, "not an image file extension")
    return [_write(out, rows, ("path", "label"), classes, dropped, root)]


def convert_rafdb(root: str | os.PathLike, split: str, out: str | os.PathLike, original: bool = False) -> Report:
    """RAF-DB basic: EmoLabel/list_patition_label.txt (`train_00001.jpg 5`, labels 1-7) + the aligned images
    Image/aligned/<name>_aligned.jpg (or Image/original/<name> with original=True) -> index CSV."""
    root, out = Path(root), Path(out)
    if split not in ("train", "test"):
        raise UserError(f"--split {split}: RAF-DB basic has the splits train and test")
    labels_file = root / "EmoLabel" / "list_patition_label.txt"  # sic: the release's spelling
    images_dir = root / "Image" / ("original" if original else "aligned")
    for needed in (labels_file, images_dir):
        if not needed.exists():
            raise UserError(f"not a RAF-DB basic folder (missing {needed})")
    rows, dropped = [], {}
    for line_no, line in enumerate(labels_file.read_text(encoding="utf-8-sig").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            _count(dropped, "line is not '<image> <label>'")
            continue
        name, label = parts[0], int(parts[1])
        if not name.startswith(f"{split}_"):
            continue  # the other split: not a drop
        if not 1 <= label <= len(RAFDB_LABELS):
            _count(dropped, "label outside 1-7")
            continue
        stem, suffix = os.path.splitext(name)
        image = images_dir / (name if original else f"{stem}_aligned{suffix}")
        if not image.is_file():
            _count(dropped, f"image missing from {images_dir.name}/")
            continue
        rows.append((relative_to_csv(image, out), BASIC7.index(RAFDB_LABELS[label - 1])))
    return [_write(out, rows, ("path", "label"), BASIC7, dropped, labels_file)]


def _fer_image(pixels: str) -> Image.Image | None:
    """A 48 x 48 grey face from FER2013's space-separated pixel string; None when it is not 2,304 values 0-255."""
    values = pixels.split()
    if len(values) != 48 * 48 or not all(v.isdigit() for v in values):
        return None
    array = np.array(values, dtype=np.int64)
    if array.max(initial=0) > 255:
        return None
    return Image.fromarray(array.astype(np.uint8).reshape(48, 48), mode="L")


def _read_fer2013(csv_path: Path) -> list[tuple[int, str, str, str]]:
    """(CSV line, emotion, pixels, Usage) of every fer2013.csv row."""
    if not csv_path.is_file():
        raise UserError(f"FER2013 CSV not found: {csv_path}")
    with open_csv(csv_path, ("emotion", "pixels", "Usage"), "FER2013") as reader:
        return [(reader.line_num, (r["emotion"] or "").strip(), r["pixels"] or "", (r["Usage"] or "").strip())
                for r in reader]


def _write_fer_splits(out_dir: Path, kept: dict[str, list[tuple[str, int, Image.Image]]],
                      dropped: dict[str, dict[str, int]], classes: Sequence[str], source: Path) -> Report:
    """PNGs under out_dir/images/<split>/ and one index CSV per split (train.csv, val.csv, test.csv)."""
    progress = Progress(sum(len(rows) for rows in kept.values()), "writing PNGs")
    report = []
    for usage, csv_name in FER2013_SPLITS.items():
        rows = []
        for name, label, image in kept[usage]:
            path = out_dir / "images" / usage / name
            # No fsync: tens of thousands of small files, and a rerun rewrites them all.
            save_image(image, path, durable=False, format="PNG")
            rows.append((relative_to_csv(path, out_dir / csv_name), label))
            progress.step()
        if rows:
            report.append(_write(out_dir / csv_name, rows, ("path", "label"), classes, dropped[usage], source))
    if not report:
        raise UserError(f"{source}: no usable rows (dropped: {dropped})")
    return report


def convert_fer2013(source: str | os.PathLike, out_dir: str | os.PathLike) -> Report:
    """FER2013 -> an index CSV per split (Training -> train.csv, PublicTest -> val.csv, PrivateTest -> test.csv),
    7 classes: from fer2013.csv when `source` is a file, from its JPEG class folders when it is a folder."""
    source = Path(source)
    if source.is_dir():
        return convert_fer2013_folder(source, out_dir)
    if not source.exists():
        raise UserError(f"FER2013 CSV or folder not found: {source}")
    return convert_fer2013_csv(source, out_dir)


def convert_fer2013_csv(csv_path: str | os.PathLike, out_dir: str | os.PathLike) -> Report:
    """The Kaggle/ICML fer2013.csv (emotion 0-6, 48x48 grey pixel strings, Usage) -> PNGs + an index CSV per
    split: Training -> train.csv, PublicTest -> val.csv, PrivateTest -> test.csv."""
    csv_path, out_dir = Path(csv_path), Path(out_dir)
    kept = {usage: [] for usage in FER2013_SPLITS}
    dropped = {usage: {} for usage in FER2013_SPLITS}
    unknown_usage = Counter()
    for line, emotion, pixels, usage in _read_fer2013(csv_path):
        if usage not in FER2013_SPLITS:
            unknown_usage[usage] += 1
            continue
        if not emotion.isdigit() or int(emotion) >= len(FER2013_LABELS):
            _count(dropped[usage], "emotion outside 0-6")
            continue
        image = _fer_image(pixels)
        if image is None:
            _count(dropped[usage], "pixels are not 2,304 values 0-255")
            continue
        kept[usage].append((f"{line - 1:05d}.png", BASIC7.index(FER2013_LABELS[int(emotion)]), image))
    if unknown_usage:
        first = ", ".join(f"{u!r} ({n})" for u, n in unknown_usage.most_common(3))
        print(f"  skipped rows of unknown Usage: {first} (known: {', '.join(FER2013_SPLITS)})")
    return _write_fer_splits(out_dir, kept, dropped, BASIC7, csv_path)


def convert_fer2013_folder(root: str | os.PathLike, out_dir: str | os.PathLike) -> Report:
    """FER2013 as JPEG class folders (angry, disgust, ...) under ROOT/train/ and ROOT/test/ (PublicTest_ and
    PrivateTest_ mixed) or ROOT/publictest/ [+ ROOT/privatetest/] -> train.csv (Training_ files), val.csv
    (PublicTest_), test.csv (PrivateTest_, when there are any), images referenced in place.

    A file's name prefix decides its split; one whose name and folder disagree (Training_ under test/, PublicTest_
    under train/) is dropped, as is one without a prefix, in an unknown class folder or not an image. A drop counts
    under the split its name claims, else under its folder's (test/ -> val.csv).
    """
    root, out_dir = Path(root), Path(out_dir)
    if not root.is_dir():
        raise UserError(f"FER2013 folder not found: {root}")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    splits = sorted((p for p in entries if p.is_dir() and p.name.lower() in FER2013_FOLDERS),
                    key=lambda p: (list(FER2013_FOLDERS).index(p.name.lower()), p.name))
    if not any(p.name.lower() == "train" for p in splits):
        found = ", ".join(p.name + ("/" if p.is_dir() else "") for p in entries[:8]) or "nothing"
        found += ", ..." if len(entries) > 8 else ""
        hint = ("; these look like class folders: give the folder above them" if
                any(p.is_dir() and canonical_class(p.name) in BASIC7 for p in entries) else "")
        raise UserError(f"{root}: no train/ folder (expected train/<class>/Training_*.jpg beside test/ or "
                        f"publictest/; found: {found}){hint}")
    skipped = [p.name + ("/" if p.is_dir() else "") for p in entries if p not in splits]
    if skipped:
        print(f"  skipped (not a FER2013 split folder): {', '.join(skipped[:5])}"
              + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
              + f" (known: {', '.join(f + '/' for f in FER2013_FOLDERS)})")
    print(f"  reading {', '.join(p.name + '/' for p in splits)} under {root} (images referenced in place)")
    kept = {usage: [] for usage in FER2013_SPLITS}
    dropped = {usage: {} for usage in FER2013_SPLITS}
    files = 0
    for split_dir in splits:
        folder_usage = FER2013_FOLDERS[split_dir.name.lower()]
        for file in sorted(p for p in split_dir.rglob("*") if p.is_file()):
            files += 1
            # The split the file's name prefix claims (Training_123.jpg -> Training; any case), or None.
            claimed = next((u for u in FER2013_SPLITS if file.name.lower().startswith(f"{u.lower()}_")), None)
            usage = claimed or folder_usage
            parts = file.relative_to(split_dir).parts
            label_name = canonical_class(parts[0]) if len(parts) > 1 else None
            if file.suffix.lower() not in IMAGE_EXTENSIONS:
                _count(dropped[usage], "not an image file extension")
            elif len(parts) == 1:
                _count(dropped[usage], f"not in a class folder (directly under {split_dir.name}/)")
            elif label_name not in BASIC7:
                _count(dropped[usage], f"unknown class folder {parts[0]!r} (FER2013's are angry, disgust, fear, "
                                       "happy, neutral, sad, surprise)")
            elif claimed is None:
                _count(dropped[usage], "file name has no Training_/PublicTest_/PrivateTest_ prefix")
            elif (claimed == "Training") != (folder_usage == "Training"):
                _count(dropped[usage], f"{claimed}_ file under {split_dir.name}/ (its name and folder disagree)")
            else:
                kept[usage].append((relative_to_csv(file, out_dir / FER2013_SPLITS[usage]), BASIC7.index(label_name)))
    if not files:
        raise UserError(f"{root}: no images under {', '.join(p.name + '/' for p in splits)}")
    if not kept["Training"]:
        why = f"dropped: {dropped['Training']}" if dropped["Training"] else "none found"
        raise UserError(f"{root}: no usable Training_ images in train/<class>/ ({why})")
    report = []
    for usage, csv_name in FER2013_SPLITS.items():
        if kept[usage]:
            report.append(_write(out_dir / csv_name, kept[usage], ("path", "label"), BASIC7, dropped[usage], root))
            continue
        why = "; ".join(f"dropped {n}: {reason}" for reason, n in dropped[usage].items())
        stale = " (the one already there is left as it was)" if (out_dir / csv_name).exists() else ""
        print(f"  no {usage}_ images{f' ({why})' if why else ''}: {csv_name} not written{stale}")
    return report


def ferplus_label(votes: Sequence[int]) -> int | str:
    """The FERPlus majority label over the 8 emotions (an index into FERPLUS_VOTES), or why the row is dropped.

    The emotion with the most votes wins. Dropped: no votes; 'not a face' (NF) or 'unknown' with at least as
    many votes as the best emotion; a tie for the most votes between two emotions (no majority to train on).
    """
    emotions, unknown, not_face = list(votes[:8]), votes[8], votes[9]
    best = max(emotions)
    if best == 0 and unknown == 0 and not_face == 0:
        return "no votes"
    if not_face >= best:
        return "not a face (NF votes >= the top emotion's)"
    if unknown >= best:
        return "unknown-majority (unknown votes >= the top emotion's)"
    if emotions.count(best) > 1:
        return "tied between emotions"
    return emotions.index(best)


def convert_ferplus(fer2013_csv: str | os.PathLike, ferplus_csv: str | os.PathLike,
                    out_dir: str | os.PathLike) -> Report:
    """FER2013's pixels + FERPlus's votes (fer2013new.csv, row for row) -> 8-class PNGs by majority vote, split
    as FER2013 (train.csv, val.csv, test.csv)."""
    fer2013_csv, ferplus_csv, out_dir = Path(fer2013_csv), Path(ferplus_csv), Path(out_dir)
    images = _read_fer2013(fer2013_csv)
    if not ferplus_csv.is_file():
        raise UserError(f"FERPlus CSV not found: {ferplus_csv}")
    with open_csv(ferplus_csv, ("Usage", "Image name", *FERPLUS_VOTES), "FERPlus") as reader:
        votes_rows = [(reader.line_num, row) for row in reader]
    if len(votes_rows) != len(images):
        raise UserError(f"{ferplus_csv} has {len(votes_rows)} rows but {fer2013_csv} has {len(images)}; FERPlus "
                        "labels FER2013 row for row, so both must be the complete files")
    classes = tuple(canonical_class(name) for name in FERPLUS_VOTES[:8])
    order = [AFFECTNET8.index(name) for name in classes]  # FERPlus vote column -> AffectNet-8 label
    kept = {usage: [] for usage in FER2013_SPLITS}
    dropped = {usage: {} for usage in FER2013_SPLITS}
    for (line, _, pixels, usage), (vote_line, row) in zip(images, votes_rows):
        plus_usage = (row["Usage"] or "").strip()
        if plus_usage != usage:
            raise UserError(f"{ferplus_csv} line {vote_line}: Usage {plus_usage!r} but {fer2013_csv} line {line} "
                            f"says {usage!r}; the two files are not aligned")
        if usage not in FER2013_SPLITS:
            continue
        name = (row["Image name"] or "").strip()
        if not name:
            _count(dropped[usage], "no image name (removed by FERPlus)")
            continue
        try:
            votes = [int((row[c] or "0").strip()) for c in FERPLUS_VOTES]
        except ValueError:
            _count(dropped[usage], "vote counts are not integers")
            continue
        label = ferplus_label(votes)
        if isinstance(label, str):
            _count(dropped[usage], label)
            continue
        image = _fer_image(pixels)
        if image is None:
            _count(dropped[usage], "pixels are not 2,304 values 0-255")
            continue
        kept[usage].append((name, order[label], image))
    return _write_fer_splits(out_dir, kept, dropped, AFFECTNET8, ferplus_csv)


# --- The CLI table: one entry per layout (datasets.py turns each into a sub-command) ---

def _flag(*names: str, **options: object) -> tuple[tuple[str, ...], dict]:
    return names, options


_OUT_CSV = _flag("--out", required=True, help="index CSV to write (classes.txt goes beside it)")
_OUT_DIR = _flag("--out", required=True, help="folder for the images, train.csv, val.csv, test.csv, classes.txt")
_CLASSES = _flag("--classes", type=int, choices=(7, 8), default=8,
                 help="8 = AffectNet-8; 7 = AffectNet-7 (contempt dropped)")
# sub-command -> (help, its flags, the call on the parsed arguments)
LAYOUTS = {
    "affectnet": ("AffectNet full release training.csv / validation.csv -> index CSV with face boxes", [
        _flag("--csv", required=True, help="AffectNet training.csv or validation.csv"),
        _flag("--images-root", help="folder holding subDirectory_filePath (default: paths kept as in the CSV)"),
        _OUT_CSV, _CLASSES], lambda a: convert_affectnet(a.csv, a.out, a.images_root, a.classes)),
    "affectnet-npy": ("AffectNet cropped release <split>/images + <split>/annotations -> index CSV", [
        _flag("--split-dir", required=True, help="e.g. train_set or val_set"), _OUT_CSV, _CLASSES],
        lambda a: convert_affectnet_npy(a.split_dir, a.out, a.classes)),
    "folder": ("one folder per class (AffectNet-8 index 0-7 or class name) -> index CSV", [
        _flag("--root", required=True, help="folder holding the class folders"), _OUT_CSV],
        lambda a: convert_folder(a.root, a.out)),
    "rafdb": ("RAF-DB basic (EmoLabel/list_patition_label.txt + Image/aligned) -> index CSV, 7 classes", [
        _flag("--root", required=True, help="the RAF-DB basic folder (holding EmoLabel/ and Image/)"),
        _flag("--split", required=True, choices=("train", "test")),
        _flag("--original", action="store_true", help="Image/original/<name> instead of the aligned crops"),
        _OUT_CSV], lambda a: convert_rafdb(a.root, a.split, a.out, a.original)),
    "fer2013": ("FER2013 fer2013.csv (-> PNGs) or its JPEG class folders (in place) -> train/val/test index "
                "CSVs, 7 classes", [
        _flag("--csv", "--root", dest="source", metavar="PATH", required=True,
              help="fer2013.csv (emotion,pixels,Usage), or the folder holding train/<class>/Training_*.jpg and "
                   "test/ (PublicTest_ + PrivateTest_) or publictest/ [+ privatetest/]; either flag takes either"),
        _flag("--out", required=True, help="folder for train.csv, val.csv, test.csv, classes.txt (and, from "
                                           "fer2013.csv, the PNGs)")],
        lambda a: convert_fer2013(a.source, a.out)),
    "ferplus": ("FERPlus votes + FER2013 pixels -> PNGs + train/val/test index CSVs, 8 classes by majority", [
        _flag("--fer2013", required=True, help="fer2013.csv (the pixels)"),
        _flag("--ferplus", required=True, help="fer2013new.csv (FERPlus's votes, row for row)"), _OUT_DIR],
        lambda a: convert_ferplus(a.fer2013, a.ferplus, a.out)),
}


def report(results: Report) -> None:
    """Print how many rows each index CSV kept and dropped, with the reason for each drop."""
    for out, kept, dropped in results:
        print(f"wrote {out}: kept {kept}, dropped {sum(dropped.values())}")
        for reason, n in sorted(dropped.items(), key=lambda item: -item[1]):
            print(f"  dropped {n}: {reason}")
    print("next: " + "; ".join(f"python datasets.py check --csv {out}" for out, _, _ in results))
