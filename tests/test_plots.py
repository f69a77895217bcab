"""plots.py: training curves, confusion-matrix heatmaps and the accuracy-efficiency trade-off are valid PNGs that
show the numbers given (read back from their pixels)."""
import numpy as np
import pytest
from PIL import Image

import plots
from conftest import epoch_columns, heatmap_values, plotted_line, png_size, vertical_line_columns
from metrics import THESIS_RUNS
from utils import AFFECTNET8

MARKER = (110, 110, 110)  # the dashed best-epoch line


def history(f1: list[float]) -> list[dict]:
    """history.csv rows as train.py writes them (strings, as csv.DictReader gives them back, work too)."""
    return [{"epoch": e, "train_loss": 2.0 / e, "val_loss": str(2.2 / e), "val_accuracy": f + 0.05,
             "val_macro_f1": f} for e, f in enumerate(f1, 1)]


def pixels(image: Image.Image, colour: tuple[int, int, int]) -> np.ndarray:
    """(row, column) of every pixel of exactly this colour."""
    return np.argwhere(np.all(np.asarray(image) == colour, axis=-1))


def test_curves_of_one_epoch_and_of_several_are_valid_pngs(tmp_path):
    for name, rows in (("one", history([0.3])), ("four", history([0.2, 0.4, 0.5, 0.45]))):
        plots.save_png(tmp_path / f"{name}.png", plots.draw_curves(rows, 1, f"{name}: training curves"))
        assert png_size(tmp_path / f"{name}.png") == (1100, 470)  # a whole, valid PNG
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_curves_follow_the_numbers_and_mark_the_best_epoch():
    rising = plots.draw_curves(history([0.1, 0.3, 0.5, 0.7]), 4, "run")
    macro_f1 = pixels(rising, plots.SERIES_COLOURS[3])
    assert len(macro_f1) > 50
    # A rising macro-F1 is drawn rising: its later (right-hand) points sit higher (smaller row) on the picture.
    left, right = macro_f1[macro_f1[:, 1] < np.median(macro_f1[:, 1])], macro_f1[macro_f1[:, 1] > np.median(
        macro_f1[:, 1])]
    assert right[:, 0].mean() < left[:, 0].mean() - 20
    falling = pixels(plots.draw_curves(history([0.7, 0.5, 0.3, 0.1]), 1, "run"), plots.SERIES_COLOURS[3])
    assert not np.array_equal(falling, macro_f1)
    # The best-epoch marker moves with the best epoch.
    assert not np.array_equal(np.asarray(plots.draw_curves(history([0.1, 0.3, 0.5, 0.7]), 2, "run")),
                              np.asarray(rising))


def test_a_falling_loss_is_drawn_falling_and_the_marker_sits_on_the_best_epoch():
    rows = history([0.2, 0.35, 0.5, 0.45, 0.4])  # losses 2.0 / e and 2.2 / e: falling every epoch
    for best in (1, 3, 5):
        image = plots.draw_curves(rows, best, "run")
        columns, line = plotted_line(image, plots.SERIES_COLOURS[0], half=0)  # train loss, left panel
        assert len(columns) > 100
        # Sampled along the line between the end dots, each column's pixels sit no higher than the last.
        inner = (columns > columns.min() + 6) & (columns < columns.max() - 6)
        assert np.all(np.diff(line[inner]) >= -1) and line[inner][-1] - line[inner][0] > 100
        for half, colour in ((0, plots.SERIES_COLOURS[0]), (1, plots.SERIES_COLOURS[3])):
            x = epoch_columns(plotted_line(image, colour, half)[0], epochs=5)
            marker = vertical_line_columns(image, MARKER, half)
            assert len(marker) and np.abs(marker - x[best - 1]).max() <= 2, (best, half, marker, x)


# Rows true, columns predicted; the largest entry off the diagonal and alone, so a transposed or mirrored
# picture would show it elsewhere.
HEATMAP = np.array([[5, 1, 0, 0], [0, 2, 11, 0], [1, 0, 7, 3], [0, 4, 0, 6]])


@pytest.mark.parametrize("normalized", [False, True])
def test_the_heatmap_shows_its_matrix(normalized):
    matrix = HEATMAP / HEATMAP.sum(axis=1, keepdims=True) if normalized else HEATMAP
    image = plots.draw_confusion_matrix(matrix, ["a", "b", "c", "d"], "title", "subtitle", normalized)
    shown = heatmap_values(image, 4)
    # Raw counts fill the colour bar up to the largest count; row-normalised values up to 1.
    expected = matrix if normalized else matrix / matrix.max()
    np.testing.assert_allclose(shown, expected, atol=0.02)
    assert np.unravel_index(shown.argmax(), shown.shape) == (1, 2)  # the most intense cell is the largest entry


def test_the_heatmap_of_eight_classes_shows_its_matrix():
    matrix = np.arange(64).reshape(8, 8) % 11  # many levels, the largest (10) at (1, 2) and (2, 5) ...
    matrix[6, 1] = 25  # ... until one cell alone tops the scale
    image = plots.draw_confusion_matrix(matrix, AFFECTNET8, "title", "subtitle", normalized=False)
    shown = heatmap_values(image, 8)
    np.testing.assert_allclose(shown, matrix / 25, atol=0.02)
    assert np.unravel_index(shown.argmax(), shown.shape) == (6, 1)


def test_tradeoff_places_each_point_by_its_latency_and_macro_f1():
    names = list(THESIS_RUNS)
    ours = [{"name": names[0], "latency_ms": 10.0, "macro_f1": 0.30, "mode": "eager"},
            {"name": names[1], "latency_ms": 40.0, "macro_f1": 0.60, "mode": "eager"}]
    thesis = [{"name": n, "latency_ms": t[4], "macro_f1": t[2], "mode": "eager"} for n, t in THESIS_RUNS.items()]
    image = plots.draw_tradeoff([("ours", ours), ("thesis", thesis)], names, "trade-off")
    assert image.mode == "RGB" and image.width > 1000
    first, second = pixels(image, plots.SERIES_COLOURS[0]), pixels(image, plots.SERIES_COLOURS[1])
    # In the left panel, point 2 (slower, better) is right of and above point 1; the legend dots sit below both.
    in_panel = lambda p: p[(p[:, 1] < image.width / 2) & (p[:, 0] < 520)]  # noqa: E731
    a, b = in_panel(first), in_panel(second)
    assert len(a) > 100 and len(b) > 100
    assert b[:, 1].mean() > a[:, 1].mean() + 100 and b[:, 0].mean() < a[:, 0].mean() - 100
    # A panel without usable points still draws (says so) instead of failing.
    empty = plots.draw_tradeoff([("ours", [{"name": names[0], "latency_ms": 5.0, "macro_f1": None}]),
                                 ("thesis", thesis)], names, "trade-off")
    assert empty.size == image.size
