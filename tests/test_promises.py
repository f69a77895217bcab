"""The numbers README.md and docs/*.md promise (tolerances, counts, signal sets, defaults), each pinned as the literal
the page states: the page must still say it and the code must still do it, so neither changes without the other.

The behaviour behind each number is tested where it lives (tests/test_export.py with the 1e-3 bound, test_train.py
sending real signals, test_stats.py counting 2,000 resamples, test_predict.py measuring the 20 % margin, ...), with
the same literals; this file ties those literals to the words of the pages.
"""
import argparse
import inspect
import os
import signal
from pathlib import Path

import pytest
import torch

import benchmark
import detectors
import export
import metrics
import models
import onnx_model
import predict
import train

ROOT = Path(__file__).resolve().parent.parent


def page(name: str) -> str:
    """A documentation page with its line breaks and runs of spaces made single spaces."""
    return " ".join((ROOT / name).read_text(encoding="utf-8").split())


def train_defaults() -> argparse.Namespace:
    """train.py's flags with only the required ones given."""
    return train.get_args_parser().parse_args(["--train-csv", "t.csv", "--val-csv", "v.csv", "--model", "resnet50"])


def export_defaults() -> argparse.Namespace:
    """export.py's flags with only the required ones given."""
    return export.get_args_parser().parse_args(["--ckpt", "best.pt", "--out", "model.onnx"])


def hybrid_dropout() -> float:
    """The dropout of the hybrid's Transformer block."""
    with torch.device("meta"):
        return models.build_model("convnext_tiny_transformer", weights="none").blocks[0].dropout.p


# (page, what it says, what the code does, the literal both must be)
PROMISES = [
    # The export check.
    ("docs/export.md", "max |logit diff| <= 1e-3 x max(1, largest |eager logit|)", lambda: onnx_model.TOLERANCE, 1e-3),
    ("docs/export.md", "opset 18 by default", lambda: export_defaults().opset, 18),
    ("docs/export.md", "on the first `--limit` (256) validation images",
     lambda: export_defaults().limit, 256),
    ("docs/export.md", "runs the model on random batches of 1, 3 and 4 images",
     lambda: [len(x) for x in onnx_model.random_inputs(32)], [1, 3, 4]),
    # Statistics.
    ("docs/statistics.md", "from 2,000 resamples of the validation images with replacement (seed 0,",
     lambda: (metrics.BOOTSTRAP_RESAMPLES, metrics.BOOTSTRAP_SEED), (2000, 0)),
    # Training: signals, checkpoints, the sync points, the defaults.
    ("docs/training.md", "SIGTERM, SIGINT (Ctrl-C) and SIGHUP save it at the current step before exiting (128 + the "
                         "signal)", lambda: set(train.STOP_SIGNALS), {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}),
    ("docs/training.md", "every `--checkpoint-every` minutes (default 10; 0 = epoch ends only)",
     lambda: train_defaults().checkpoint_every, 10),
    ("docs/training.md", "are read every 2 s (one process) or every 20 steps (DDP",
     lambda: (train.SYNC_S, train.DDP_SYNC_STEPS), (2, 20)),
    ("README.md", "The defaults are the thesis's: 224 px (`--img-size`), batch 128 (`--batch-size`), at most 30 "
                  "epochs (`--epochs`;", lambda: (train_defaults().img_size, train_defaults().batch_size,
                                                  train_defaults().epochs), (224, 128, 30)),
    ("README.md", "ImageNet weights (`--weights imagenet`;", lambda: train_defaults().weights, "imagenet"),
    ("README.md", "mixed precision on CUDA, seed 42.", lambda: (train_defaults().amp, train_defaults().seed),
     (True, 42)),
    ("README.md", "`--workers N` sets the loader processes (default: the cores, at most 8)",
     lambda: train_defaults().workers, min(8, os.cpu_count() or 1)),
    ("docs/thesis-choices.md", "early stopping (patience 4, as the thesis)", lambda: train_defaults().patience, 4),
    ("docs/thesis-choices.md", "| warmup length | 1 epoch (`--warmup-epochs`",
     lambda: train.get_args_parser().parse_args(["--train-csv", "t", "--val-csv", "v", "--model", "resnet50",
                                                 "--warmup-epochs"]).warmup_epochs, 1.0),
    ("docs/thesis-choices.md", "| EMA decay | 0.9998 per step (`--ema-decay`)", lambda: train_defaults().ema_decay,
     0.9998),
    ("docs/thesis-choices.md", "brightness 0.2, contrast 0.2, saturation 0.2, hue 0.02 (`--jitter B,C,S,H`; flip "
                               "probability `--hflip 0.5`",
     lambda: (train_defaults().jitter, train_defaults().hflip), ([0.2, 0.2, 0.2, 0.02], 0.5)),
    ("docs/thesis-choices.md", "| hybrid dropout | 0.1 |", hybrid_dropout, 0.1),
    # Face detection and predict.py.
    ("docs/face-detection.md", "Faces are cropped with a 20 % margin",
     lambda: predict.get_args_parser().parse_args([]).margin, 0.2),
    ("docs/face-detection.md", "(IoU matching, `--smooth 0.6`)",
     lambda: predict.get_args_parser().parse_args([]).smooth, 0.6),
    ("docs/troubleshooting.md", "`--min-face` (default 40 px) sets the smallest face searched",
     lambda: predict.get_args_parser().parse_args([]).min_face, 40),
    ("docs/face-detection.md", "Minimum face 40 px, photos searched at <= 640 px.",
     lambda: [inspect.signature(detectors.build).parameters[k].default for k in ("min_face", "max_side")], [40, 640]),
    ("docs/face-detection.md", "run by OpenCV's dnn module; faces scoring >= 0.9",
     lambda: detectors.MtcnnDetector.MIN_SCORE, 0.9),
    ("docs/face-detection.md", "| `mtcnn` (default) |", lambda: detectors.DEFAULT, "mtcnn"),
    # The latency protocol.
    ("docs/benchmark.md", "batch 1, 224 px, fp16 autocast on CUDA (off on CPU unless `--amp`), 50 warm-up and 200 "
                          "timed forward passes",
     lambda: [getattr(benchmark.get_args_parser().parse_args(["--model", "resnet50", "--out", "o"]), k)
              for k in ("batch_size", "warmup", "iters")], [1, 50, 200]),
]


@pytest.mark.parametrize("where, words, value, literal", PROMISES, ids=[f"{p[0]}: {p[1][:40]}" for p in PROMISES])
def test_the_page_says_it_and_the_code_does_it(where, words, value, literal):
    assert words in page(where), f"{where} no longer says: {words}"
    assert value() == literal
