"""plots.py: training curves and the accuracy-efficiency trade-off are valid PNGs drawn from the numbers given."""
import numpy as np
from PIL import Image

import plots
from conftest import png_size
from metrics import THESIS_RUNS


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
