"""Shared pytest fixtures: the repo root on sys.path, one tiny demo set per test session, a script runner."""
import contextlib
import io
import sys
from pathlib import Path

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
