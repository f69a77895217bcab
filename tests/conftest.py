"""Shared pytest fixtures and helpers: the repo root on sys.path, one tiny demo set per test session, a script
runner, a hostile pickle, and readers of what the pictures show."""
import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
# Flat layout: tests import the top-level modules (data, models, ...) directly.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (python -m pytest -m cuda); skipped without one")


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Tiny deterministic demo set (64 px, >= 3 train images per class, 4 val per class): (train_csv, val_csv)."""
    import demo

    out = tmp_path_factory.mktemp("demo")
    train_csv, val_csv = demo.make_demo(out, seed=0, min_train_per_class=3, val_per_class=4, img_size=64)
    return Path(train_csv), Path(val_csv)


def png_size(path: str | Path) -> tuple[int, int]:
    """The (width, height) of a whole, valid PNG file; fails the test for anything else."""
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:  # verify() leaves the file unusable: open it again to read it
        assert image.format == "PNG", path
        return image.size


def call(script, *args) -> str:
    """A script's main() in-process with parsed arguments (a subprocess costs seconds of imports); its stdout."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        script.main(script.get_args_parser().parse_args([str(a) for a in args]))
    return buffer.getvalue()


class Payload:
    """Unpickling this calls open(marker, "w"), i.e. creates the marker file: a stand-in for hostile code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --- Reading pictures: what a plot shows, found from its pixels ------------------------------------------------------

def colour_mask(image, colour: tuple[int, int, int]) -> np.ndarray:
    """[H, W] bool: the pixels of exactly this colour (lines, dots and fills are drawn without anti-aliasing)."""
    return np.all(np.asarray(image.convert("RGB")) == colour, axis=-1)


def plotted_line(image, colour: tuple[int, int, int], half: int, legend_px: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """One series of a two-panel curves picture (half 0: left panel, 1: right), the legend strip at the bottom left
    out: the pixel columns it covers and, for each, the mean pixel row of its colour there."""
    mask = colour_mask(image, colour)
    mask[image.height - legend_px:] = False
    middle = image.width // 2
    if half == 0:
        mask[:, middle:] = False
    else:
        mask[:, :middle] = False
    columns = np.flatnonzero(mask.any(axis=0))
    return columns, np.array([np.flatnonzero(mask[:, c]).mean() for c in columns])


def epoch_columns(columns: np.ndarray, epochs: int, dot_radius: int = 4) -> np.ndarray:
    """Pixel column of each epoch (1..epochs) of a series drawn with a dot on every epoch: the line runs from the
    first epoch's dot to the last's, epochs evenly spaced."""
    first, last = columns.min() + dot_radius, columns.max() - dot_radius
    return first + np.arange(epochs) * (last - first) / max(epochs - 1, 1)


def vertical_line_columns(image, colour: tuple[int, int, int], half: int, min_pixels: int = 50) -> np.ndarray:
    """Pixel columns in one half of the picture holding at least min_pixels of this colour: a vertical (dashed)
    line, not the odd pixel of anti-aliased text."""
    mask = colour_mask(image, colour)
    middle = image.width // 2
    counts = mask[:, :middle].sum(axis=0) if half == 0 else mask[:, middle:].sum(axis=0)
    return np.flatnonzero(counts >= min_pixels) + (0 if half == 0 else middle)


def _runs(profile: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of every run of True."""
    edges = np.diff(np.concatenate([[0], profile.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def heatmap_values(image, n: int) -> np.ndarray:
    """Each cell's value as a reader takes it off an n x n heatmap: the cell's fill colour looked up on the colour
    bar beside the grid, as a fraction of the bar (0 at its bottom, 1 at its top); rows top to bottom."""
    rgb = np.asarray(image.convert("RGB")).astype(int)
    coloured = rgb.max(axis=-1) - rgb.min(axis=-1) > 30  # the colour scale; text, frame and page are grey
    profile = coloured.sum(axis=0)
    columns = _runs(profile > profile.max() / 2)
    assert len(columns) == n + 1, columns  # n cell columns (white gutters between), then the colour bar
    grid = coloured[:, columns[0][0]:columns[-2][1]].sum(axis=1)
    rows = _runs(grid > grid.max() / 2)
    assert len(rows) == n, rows
    bar_column = rgb[:, (columns[-1][0] + columns[-1][1]) // 2]
    bar_rows = np.flatnonzero(coloured[:, (columns[-1][0] + columns[-1][1]) // 2])
    top, bottom = bar_rows.min(), bar_rows.max()
    bar = bar_column[top:bottom + 1]
    values = np.zeros((n, n))
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(columns[:-1]):
            cell = rgb[r0:r1, c0:c1].reshape(-1, 3)
            colours, counts = np.unique(cell, axis=0, return_counts=True)
            fill = colours[counts.argmax()]  # the cell's number covers a small part of it
            nearest = np.abs(bar - fill).sum(axis=1).argmin()
            values[i, j] = 1 - nearest / (bottom - top)
    return values
