"""The bottom layer, standard library only: user errors, atomic writes, progress lines, argparse types, the
class-name table and the default image size."""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import secrets
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

# The thesis's input side in pixels: every default image size in the project is this one.
DEFAULT_IMG_SIZE = 224
# AffectNet-8's classes in its label order: the class set of any index CSV that does not declare its own.
AFFECTNET8: tuple[str, ...] = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
# Class names as datasets and community copies spell them -> the canonical name. Labels are always mapped by
# name, never by sort order, which would put anger first.
CLASS_ALIASES: dict[str, str] = {
    **{name: name for name in AFFECTNET8}, "neutrality": "neutral", "happiness": "happy", "sadness": "sad",
    "surprised": "surprise", "fearful": "fear", "afraid": "fear", "scared": "fear", "disgusted": "disgust",
    "angry": "anger", "contemptuous": "contempt",
}


def canonical_class(name: str) -> str:
    """A class name in its canonical spelling (happiness -> happy, Angry -> anger); unknown names lower-cased."""
    name = name.strip().lower()
    return CLASS_ALIASES.get(name, name)


class UserError(Exception):
    """Anything the user can fix (bad data, a bad flag, an unusable checkpoint, a full disk): every script prints
    its one-line message, naming the file, CSV line or flag, and exits non-zero without a traceback."""

    def __init__(self, message: object = "") -> None:
        text = str(message)
        # DataLoader re-raises a worker's error as type(err)("Caught ... in DataLoader worker ...\n<traceback>");
        # the traceback's last line is "utils.UserError: <msg>", so recover <msg> to keep the CLI at one line.
        if text.startswith("Caught ") and "\n" in text:
            last = [line for line in text.splitlines() if line.strip()][-1]
            text = re.sub(r"^[\w.]+: ", "", last, count=1)
        super().__init__(text)


class WriteError(UserError):
    """A file could not be written (disk full, file too large, permission denied, read-only): one line naming the
    file and the reason; what was there before is unchanged."""


def write_error(path: str | os.PathLike, err: OSError) -> WriteError:
    """The one-line WriteError for an OSError met while writing `path`."""
    reason = err.strerror or str(err) or type(err).__name__
    return WriteError(f"cannot write {path}: {reason}; nothing already written was changed")


class _WriteRecorder:
    """The open temp file, remembering the OSError of a failed write: torch.save reports a failing write as a
    RuntimeError ("unexpected pos ...") that hides the reason (no space left, file too large, ...)."""

    def __init__(self, file: IO) -> None:
        self._file, self.error = file, None

    def write(self, chunk: bytes | str) -> int:
        try:
            return self._file.write(chunk)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name: str) -> object:
        return getattr(self._file, name)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", durable: bool = True,
                 keep_previous: str | os.PathLike | None = None) -> Iterator[IO]:
    """Write to a temp file beside `path` and move it into place only on success; `path` is untouched on error.

    durable: fsync before the rename, so even a power cut leaves the old file or the whole new one (bulk writers
    of many small regenerable files skip it: a process crash still leaves whole files only).
    keep_previous: rename the file being replaced to this name first, so the previous version survives too.
    Any OSError (disk full, EFBIG under a file-size limit, permissions, read-only) becomes a WriteError.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    # Same folder, so os.replace is an atomic rename; pid + random token keep parallel writers apart.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    recorder = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, mode.replace("w", "x"), **text) as f:
            recorder = _WriteRecorder(f)
            yield recorder
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):  # on a read-only or vanished folder there is nothing to clean
            tmp.unlink(missing_ok=True)
        cause = recorder.error if recorder is not None and recorder.error is not None else err
        if isinstance(cause, OSError) and not isinstance(err, UserError):
            raise write_error(path, cause) from None
        raise


def write_json(path: str | os.PathLike, obj: object) -> None:
    """`obj` as JSON indented by 2 with a final newline, written atomically (every JSON file the project writes)."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A CSV file: the header, then the rows, with "\\n" line ends, written atomically."""
    with atomic_write(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


class Progress:
    """Prints `label: done/total (pct), rate, elapsed, eta` every few seconds, so long work is never silent."""

    def __init__(self, total: int, label: str, every_s: float = 5.0, unit: str = "") -> None:
        self.total, self.label, self.every_s, self.unit = total, label, every_s, unit
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
            rate = f", {self.done / elapsed:.1f} {self.unit}/s" if self.unit else ""
            print(f"{self.label}: {self.done}/{self.total} ({100 * self.done / self.total:.0f}%){rate}, "
                  f"{elapsed:.0f}s elapsed, eta {eta:.0f}s", flush=True)


def float_in(low: float, high: float, expected: str) -> Callable[[str], float]:
    """argparse type: a finite number in [low, high]; `expected` describes it in the one-line error."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


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


def run_cli(main: Callable[[argparse.Namespace], Any], parser: argparse.ArgumentParser) -> None:
    """A script's entry point: main(parsed flags); a UserError ends the process with its one line and exit 1, a
    Ctrl-C with one line and exit 130 (files already written are whole: every write is atomic)."""
    args = parser.parse_args()
    try:
        main(args)
    except UserError as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
