"""train.py (issue 4): outputs, determinism, resume after SIGTERM, NaN stop, early stopping, DDP, bad input; real
SIGINT / SIGHUP, a full and a read-only disk, a hostile --weights file.

Every training run of this file starts at once in the `runs` fixture, single-threaded, so imports and
compute overlap on a 2-core machine; each test then waits for the run it checks. The runs use the
thesis's run3 recipe (focal + alpha, EMA, warmup, clipping) on ResNet50, the most state to resume. A test that
changes a run's folder works on its own copy (linked_copy), so no test depends on another or on their order.
"""
import argparse
import contextlib
import csv
import json
import os
import pickle
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data
import models
import plots
import train
import utils
from conftest import Payload, epoch_columns, plotted_line, vertical_line_columns

ROOT = Path(__file__).resolve().parent.parent
# Images kept per class from the demo set: 16 training images (2 steps of 8), 8 validation images.
TRAIN_PER_CLASS, VAL_PER_CLASS, STEPS, N_VAL = 2, 1, 2, 8
RECIPE = ("--model", "resnet50", "--weights", "none", "--img-size", "64", "--batch-size", "8", "--workers", "0",
          "--epochs", "2", "--loss", "focal", "--alpha", "auto", "--ema", "--warmup-epochs", "1",
          "--clip-grad", "1.0", "--log-interval-s", "0")
METRIC_COLUMNS = ["epoch", "lr", "train_loss", "val_loss", "val_accuracy", "val_macro_f1",
                  *(f"f1_{name}" for name in utils.AFFECTNET8)]
OUTPUTS = [".lock", "config.json", "history.csv", "curves.png", "train.log", "last.pt", "best.pt", "summary.json",
           "predictions.csv",
           "metrics.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix_normalized.csv",
           "confusion_matrix.png", "confusion_matrix_normalized.png"]


def subset(csv_path: Path, per_class: int, out: Path) -> Path:
    """The first per_class rows of each class of an index CSV (paths stay relative to the demo folder)."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    seen: Counter = Counter()
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label"], extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            seen[row["label"]] += 1
            if seen[row["label"]] <= per_class:
                writer.writerow(row)
    return out


@pytest.fixture(scope="module")
def small(demo_data, tmp_path_factory) -> dict:
    """A smaller cut of the demo set, so each epoch takes a few CPU seconds; --data-root is the demo folder."""
    train_csv, val_csv = demo_data
    folder = tmp_path_factory.mktemp("small")
    return {"train": str(subset(train_csv, TRAIN_PER_CLASS, folder / "train.csv")),
            "val": str(subset(val_csv, VAL_PER_CLASS, folder / "val.csv")), "root": str(train_csv.parent)}


def command(small: dict, out: Path, *flags: str) -> list[str]:
    """train.py with the test recipe; later flags override earlier ones."""
    return ["train.py", "--train-csv", small["train"], "--val-csv", small["val"], "--data-root", small["root"],
            *RECIPE, "--out", str(out), *flags]


class Runs:
    """Training subprocesses started together; result(name) waits for one: (exit code, stdout, stderr)."""

    def __init__(self, base: Path, procs: dict[str, subprocess.Popen]) -> None:
        self.base, self.procs, self.results = base, procs, {}

    def result(self, name: str) -> tuple[int, str, str]:
        if name not in self.results:
            stdout, stderr = self.procs[name].communicate(timeout=600)
            self.results[name] = (self.procs[name].returncode, stdout, stderr)
        return self.results[name]


def spawn(argv: list[str]) -> subprocess.Popen:
    # One thread each: the runs share the cores instead of fighting over them (and stay comparable).
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    # Own session, so teardown can end torchrun together with its workers.
    return subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def runs(small, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    procs = {
        "a": spawn(command(small, base / "a")),
        "b": spawn(command(small, base / "b")),
        "sigterm": spawn(command(small, base / "resumed", "--debug-signal", "2:1:SIGTERM")),
        # A mid-epoch checkpoint after every step, then kill -9 at the start of epoch 2's last step.
        "kill": spawn(command(small, base / "killed", "--checkpoint-every", "1e-9", "--debug-signal", "2:2:SIGKILL")),
        "workers": spawn(command(small, base / "workers", "--workers", "2")),
        "nan": spawn(command(small, base / "nan", "--debug-nan-at-step", str(STEPS + 2))),
        # Also the early-stopping run: lr 0 on ConvNeXt (no BatchNorm statistics to drift) cannot improve,
        # so with --patience 1 it must stop after epoch 2, and all ranks must agree to. --standalone: torchrun's
        # own rendezvous store binds a port the system picks (no port chosen here, then taken by another process).
        "ddp": spawn(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                      *command(small, base / "ddp", "--model", "convnext_tiny", "--lr", "0", "--patience", "1",
                               "--epochs", "4", "--sampler", "balanced")]),
    }
    yield Runs(base, procs)
    for proc in procs.values():  # a failed test may leave its run going
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for checkpoint in base.rglob("*.pt"):  # ~0.5 GB per run; pytest keeps the folders of a failed session
        checkpoint.unlink()


def linked_copy(run: Path, to: Path) -> Path:
    """A run folder for a test that may change it: checkpoints hard-linked (train.py only ever replaces them, never
    writes into them), every other file copied (train.log is appended to, .lock rewritten)."""
    to.mkdir()
    for file in run.iterdir():
        (os.link if file.suffix == ".pt" else shutil.copy2)(file, to / file.name)
    return to


def parse(argv: list[str]) -> argparse.Namespace:
    """train.py's arguments from a command() list."""
    return train.get_args_parser().parse_args(argv[1:])


def read_history(out: Path) -> list[dict]:
    with open(out / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def metric_columns(out: Path) -> list[list[str]]:
    return [[row[c] for c in METRIC_COLUMNS] for row in read_history(out)]


def assert_ok(result: tuple[int, str, str]) -> str:
    code, stdout, stderr = result
    assert code == 0, stderr[-3000:]
    return stdout


def assert_one_line_error(result: tuple[int, str, str], code: int = 1) -> str:
    assert result[0] == code, result
    lines = result[2].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result[2], result[2]
    return lines[0]


def resume(small: dict, out: Path, limit_kb: int | None = None) -> subprocess.CompletedProcess:
    """`train.py ... --resume` as a subprocess, optionally under a file-size limit (ulimit -f, in KiB)."""
    argv = [sys.executable, *command(small, out, "--resume")]
    if limit_kb is not None:  # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG
        argv = ["bash", "-c", f"ulimit -f {limit_kb}; exec {shlex.join(argv)}"]
    return subprocess.run(argv, cwd=ROOT, text=True, capture_output=True, env=os.environ | {"OMP_NUM_THREADS": "1"},
                          timeout=600)


# First in the file: the SIGTERM run ends early, so its resume overlaps the other runs instead of trailing them.
def test_sigterm_mid_epoch_then_a_full_disk_then_resume_ends_exactly_like_an_uninterrupted_run(runs, small):
    code, stdout, stderr = runs.result("sigterm")
    out = runs.base / "resumed"
    assert code == 143, stderr[-2000:]
    assert "stopped by SIGTERM during epoch 2 step 1/2" in stdout and "holds step 1 of epoch 2" in stdout
    assert "--resume" in stdout and "Traceback" not in stderr
    state = models.load_checkpoint(out / "last.pt")["train_state"]
    assert state["epoch"] == 1 and state["partial"]["step"] == 1  # saved at the step the signal came
    assert len(read_history(out)) == 1

    # Resumed on a "full disk": the first checkpoint write fails; one line names the file and the reason.
    best = (out / "best.pt").read_bytes()
    full = resume(small, out, limit_kb=20_000)  # below best.pt's ~94 MB
    assert_one_line_error((full.returncode, full.stdout, full.stderr))
    assert re.search(r"cannot write \S+/(best|last)\.pt: File too large", full.stderr), full.stderr
    assert "resume with: python" in full.stderr
    assert models.load_checkpoint(out / "last.pt")["train_state"]["partial"]["step"] == 1  # untouched
    assert (out / "best.pt").read_bytes() == best and not list(out.glob(".*.tmp"))  # so is best.pt; no temp left

    resumed = resume(small, out)
    assert_ok((resumed.returncode, resumed.stdout, resumed.stderr))
    assert_ok(runs.result("a"))
    reference = runs.base / "a"
    assert metric_columns(out) == metric_columns(reference)
    done, expected = (json.loads((d / "summary.json").read_text()) for d in (out, reference))
    assert {k: done[k] for k in ("best_epoch", "accuracy", "macro_f1", "per_class")} == \
        {k: expected[k] for k in ("best_epoch", "accuracy", "macro_f1", "per_class")}
    a, b = (models.load_checkpoint(d / "last.pt") for d in (out, reference))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (out / "predictions.csv").read_text() == (reference / "predictions.csv").read_text()
    log = (out / "train.log").read_text()
    assert log.index("stopped by SIGTERM") < log.index("resuming") < log.index("epoch 2/2 done")
    assert "from step 2" in log


def test_kill_9_after_a_mid_epoch_checkpoint_resumes_exactly(runs, small):
    code, _, stderr = runs.result("kill")
    out = runs.base / "killed"
    assert code == -signal.SIGKILL, stderr[-2000:]
    state = models.load_checkpoint(out / "last.pt")["train_state"]
    assert state["epoch"] == 1 and state["partial"]["step"] == 1
    resumed = resume(small, out)
    assert_ok((resumed.returncode, resumed.stdout, resumed.stderr))
    assert_ok(runs.result("a"))
    assert metric_columns(out) == metric_columns(runs.base / "a")


def test_the_number_of_loader_workers_does_not_change_the_numbers(runs):
    assert_ok(runs.result("workers"))
    assert_ok(runs.result("a"))
    assert metric_columns(runs.base / "workers") == metric_columns(runs.base / "a")


def test_a_truncated_last_pt_names_the_previous_checkpoint_which_resumes(runs, small, tmp_path):
    assert_ok(runs.result("a"))
    assert_one_line_error(runs.result("nan"))
    reference = runs.base / "a"
    assert not (reference / "last.prev.pt").exists()  # a finished run drops its fallback
    out = tmp_path / "run"
    out.mkdir()
    # Mid-run state: last.prev.pt from the save before (epoch 1: the NaN run stopped right after it, the same
    # epoch 1 as run a's), and a last.pt that a failing disk cut short.
    shutil.copy(runs.base / "nan" / "last.pt", out / "last.prev.pt")
    (out / "last.pt").write_bytes((reference / "last.pt").read_bytes()[:1_000_000])
    with pytest.raises(utils.UserError, match=r"last\.pt: truncated .*last\.prev\.pt \(epoch 1\) is intact: "
                                              r"resume from it with `mv "):
        train.main(train.get_args_parser().parse_args(command(small, out, "--resume")[1:]))
    (out / "last.prev.pt").replace(out / "last.pt")
    resumed = resume(small, out)
    assert_ok((resumed.returncode, resumed.stdout, resumed.stderr))
    assert metric_columns(out) == metric_columns(reference)  # epoch 2 redone exactly


def test_a_run_folder_in_use_is_refused_and_a_stale_lock_taken_over(small, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("pid 999999 on gone, started 2026-01-01 00:00:00\n")  # its process is dead
    with contextlib.ExitStack() as held:
        train.claim_run_folder(out, held)  # taken over without asking
        assert (out / ".lock").read_text().startswith(f"pid {os.getpid()} ")
        second = subprocess.run([sys.executable, *command(small, out)], cwd=ROOT, text=True, capture_output=True,
                                timeout=300)
        line = assert_one_line_error((second.returncode, second.stdout, second.stderr))
        assert f"is in use by another training run (pid {os.getpid()} on " in line
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # it wrote nothing
    with contextlib.ExitStack() as again:
        train.claim_run_folder(out, again)  # free again once the holder let go


def test_a_second_signal_gets_the_default_action():
    # docs/training.md: "SIGTERM, SIGINT (Ctrl-C) and SIGHUP save it at the current step before exiting".
    assert set(train.STOP_SIGNALS) == {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    previous = {s: signal.getsignal(s) for s in train.STOP_SIGNALS}
    try:
        flag = train.StopFlag()
        assert all(signal.getsignal(s) == flag._handle for s in train.STOP_SIGNALS)
        flag._handle(signal.SIGTERM, None)
        assert flag.signum == signal.SIGTERM  # the loop saves and stops at the next step
        assert all(signal.getsignal(s) == signal.SIG_DFL for s in train.STOP_SIGNALS)  # a second one kills at once
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def test_two_epoch_run_writes_every_output(runs, small):
    stdout = assert_ok(runs.result("a"))
    out = runs.base / "a"
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)  # no temp files left behind
    history = read_history(out)
    assert list(history[0]) == [*METRIC_COLUMNS, "seconds", "images_per_s"]
    assert [int(r["epoch"]) for r in history] == [1, 2]
    assert all(float(r["seconds"]) > 0 and float(r["images_per_s"]) > 0 for r in history)
    # Warmup (1 epoch) then cosine: the lr of epoch 2's last step is below the peak and above zero.
    assert 0 < float(history[1]["lr"]) < 1e-4

    summary = json.loads((out / "summary.json").read_text())
    assert {"experiment", "best_epoch", "accuracy", "macro_f1", "per_class", "params", "wall_time_s",
            "settings", "finished"} <= set(summary)
    assert summary["finished"] and summary["stop_reason"] == "max epochs" and summary["params"] == 23_524_424
    best_row = max(history, key=lambda r: (float(r["val_macro_f1"]), float(r["val_accuracy"])))
    assert summary["best_epoch"] == int(best_row["epoch"])
    assert summary["macro_f1"] == float(best_row["val_macro_f1"])
    assert sum(c["support"] for c in summary["per_class"].values()) == N_VAL
    config = json.loads((out / "config.json").read_text())
    assert config["torch"] == torch.__version__ and config["device"] == "cpu"
    assert config["args"]["alpha"] == "auto" and len(config["alpha"]) == 8  # resolved from the class counts

    with Image.open(out / "curves.png") as curves:  # redrawn after every epoch from history.csv
        assert curves.format == "PNG" and curves.size == (1100, 470)
        assert_curves_show(curves.convert("RGB"), history, summary["best_epoch"])

    log = (out / "train.log").read_text()
    assert "epoch 1/2 step 1/2 loss" in log and "img/s data-wait" in log and "eta" in log  # progress lines
    assert "epoch 2/2 done" in log and log.strip().splitlines()[-1] in stdout  # everything printed is logged

    last = models.load_checkpoint(out / "last.pt")["train_state"]
    assert last["epoch"] == 2 and last["finished"] and last["ema"] is not None and last["optimizer"]["state"]


def assert_curves_show(image: Image.Image, history: list[dict], best_epoch: int) -> None:
    """The curves picture shows this history: each series goes the way its numbers go, and the dashed best-epoch
    line stands at the best epoch in both panels."""
    epochs, checked = len(history), 0
    panels = ((0, ("train_loss", "val_loss")), (1, ("val_accuracy", "val_macro_f1")))
    for half, keys in panels:
        values = [float(r[k]) for k in keys for r in history]
        spread = max(values) - min(values)
        for key in keys:
            colour = plots.SERIES_COLOURS[2 * half + keys.index(key)]
            columns, rows = plotted_line(image, colour, half)
            x = epoch_columns(columns, epochs)
            at = [rows[np.abs(columns - c) <= 1].mean() for c in x]  # the row of each epoch's dot
            first, last = float(history[0][key]), float(history[-1][key])
            if abs(last - first) > 0.1 * spread:  # clearly apart on the picture's scale
                assert (at[-1] < at[0]) == (last > first), (key, first, last, at)
                checked += 1
            marker = vertical_line_columns(image, (110, 110, 110), half)
            assert len(marker) and np.abs(marker - x[best_epoch - 1]).max() <= 2, (key, marker, x)
    assert checked >= 2, history  # the run's numbers moved enough for at least two series to be read


def test_predictions_csv_comes_from_the_best_checkpoint(runs, small):
    assert_ok(runs.result("a"))
    out = runs.base / "a"
    model, meta = models.load_model(out / "best.pt")
    assert meta["arch"]["img_size"] == 64
    # The training class counts travel in the checkpoint (evaluate.py --logit-adjust reads them).
    assert meta["arch"]["class_counts"] == data.class_counts(data.read_index(small["train"], small["root"]), 8)
    assert meta["metrics"]["epoch"] == json.loads((out / "summary.json").read_text())["best_epoch"]
    samples = data.read_index(small["val"], small["root"])
    loader = data.make_loader(data.FaceDataset(samples, 64), batch_size=8, workers=0)
    logits, _ = models.predict_logits(model, loader, "cpu")
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [s.path for s in samples]
    assert [int(r["pred"]) for r in rows] == logits.argmax(1).tolist()
    probs = torch.tensor([[float(r[f"prob_{c}"]) for c in utils.AFFECTNET8] for r in rows])
    torch.testing.assert_close(probs, logits.softmax(1), atol=2e-6, rtol=0)


def test_two_runs_with_the_same_seed_are_identical(runs):
    assert_ok(runs.result("a"))
    assert_ok(runs.result("b"))
    assert metric_columns(runs.base / "a") == metric_columns(runs.base / "b")
    a, b = (models.load_checkpoint(runs.base / r / "last.pt")["model"] for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_of_a_finished_run_says_so(runs, small, capsys, tmp_path):
    assert_ok(runs.result("a"))
    out = linked_copy(runs.base / "a", tmp_path / "a")  # it appends to train.log
    train.main(parse(command(small, out, "--resume")))
    assert "already finished (max epochs after epoch 2" in capsys.readouterr().out
    assert "already finished" in (out / "train.log").read_text().strip().splitlines()[-1]


@pytest.mark.parametrize("flags, message", [
    (("--resume", "--model", "convnext_tiny"), "model 'resnet50' -> 'convnext_tiny'"),
    (("--resume", "--lr", "3e-4"), "lr 0.0001 -> 0.0003"),
    # The augmentation is part of the recipe (docs/thesis-choices.md: "checked on --resume").
    (("--resume", "--jitter", "0.1,0.2,0.2,0.02"), "jitter [0.2, 0.2, 0.2, 0.02] -> [0.1, 0.2, 0.2, 0.02]"),
    (("--resume", "--hflip", "0"), "hflip 0.5 -> 0.0"),
    ((), "already holds a run"),  # a second fresh run would overwrite the first
])
def test_resume_refuses_other_settings_and_overwriting(runs, small, flags, message, tmp_path):
    assert_ok(runs.result("a"))
    out = linked_copy(runs.base / "a", tmp_path / "a")
    log = (out / "train.log").read_text()
    with pytest.raises(utils.UserError, match=re.escape(message)):
        train.main(parse(command(small, out, *flags)))
    assert (out / "train.log").read_text() == log  # refused before a word is logged


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_epoch(runs):
    error = assert_one_line_error(runs.result("nan"))
    assert "epoch 2 step 2/2" in error
    out = runs.base / "nan"
    last, best = models.load_checkpoint(out / "last.pt"), models.load_checkpoint(out / "best.pt")
    assert last["train_state"]["epoch"] == 1 and best["metrics"]["epoch"] == 1
    # With --ema, best.pt holds the EMA weights (what was validated), not the raw weights of last.pt.
    ema = last["train_state"]["ema"]["module"]
    assert all(torch.equal(best["model"][k], ema[k]) for k in ema)
    assert not all(torch.equal(best["model"][k], last["model"][k]) for k in ema)
    assert "epoch 2 step 2/2" in (out / "train.log").read_text()
    assert_ok(runs.result("a"))  # and epoch 1 is the same epoch an unbroken run made
    assert metric_columns(out) == metric_columns(runs.base / "a")[:1]


def test_two_process_gloo_run_validates_every_image_once_and_writes_once(runs, small):
    stdout = assert_ok(runs.result("ddp"))
    out = runs.base / "ddp"
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["batch_per_process"] == 4
    log = (out / "train.log").read_text()
    assert log.count("epoch 1/4 done") == 1 and stdout.count("epoch 1/4 done") == 1  # rank 0 alone writes
    report = json.loads((out / "metrics.json").read_text())
    assert sum(c["support"] for c in report["per_class"].values()) == N_VAL
    with open(out / "predictions.csv", newline="") as f:
        paths = [r["path"] for r in csv.DictReader(f)]
    assert paths == [s.path for s in data.read_index(small["val"], small["root"])]  # each image once, in order


def test_early_stopping_after_patience_epochs_without_improvement(runs):
    stdout = assert_ok(runs.result("ddp"))
    out = runs.base / "ddp"
    history = read_history(out)
    assert len(history) == 2 and history[0]["val_macro_f1"] == history[1]["val_macro_f1"]  # lr 0: no change
    assert stdout.count("early stopping") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "early stopping" and summary["best_epoch"] == 1 and summary["epochs_run"] == 2
    assert models.load_checkpoint(out / "last.pt")["train_state"]["finished"]


def test_bad_input_stops_before_anything_is_built(small, tmp_path):
    # In-process (a subprocess costs seconds of imports); the NaN test covers the one-line CLI error path.
    out = tmp_path / "run"

    def main(*flags: str) -> None:
        train.main(train.get_args_parser().parse_args(command(small, out, *flags)[1:]))
    with pytest.raises(utils.UserError, match="nope.csv"):
        main("--train-csv", str(tmp_path / "nope.csv"))
    missing = tmp_path / "missing.csv"
    missing.write_text("path,label\nno/such/face.jpg,1\n")
    with pytest.raises(utils.UserError, match="face.jpg"):
        main("--val-csv", str(missing))
    no_contempt = tmp_path / "no_contempt.csv"
    with open(small["train"]) as f:
        no_contempt.write_text("".join(line for line in f if not line.rstrip().endswith(",7")))
    with pytest.raises(utils.UserError, match="contempt"):
        main("--train-csv", str(no_contempt))
    with pytest.raises(utils.UserError, match="--alpha weights the focal loss only"):
        main("--loss", "ce")
    assert not out.exists()  # all of it before the output folder is even made


def test_warmup_cosine_schedule():
    factor = train.warmup_cosine(total_steps=10, warmup_steps=2)
    assert [factor(s) for s in (0, 1)] == [0.5, 1.0]
    assert factor(2) == 1.0 and factor(6) == pytest.approx(0.5) and factor(10) == pytest.approx(0.0)
    assert all(factor(s) >= factor(s + 1) for s in range(1, 10))


# --- A live run stopped by a real signal; full, read-only and missing disks; a hostile --weights file -------------

# A small fast model (VGGFace48, 48 px) at batch 2: 115 steps an epoch on the demo's 230 training images, so a
# signal sent at its first step always finds it mid-epoch, and a stopped run has cost a few seconds.
LIVE = ("--model", "vgg_face48", "--weights", "none", "--img-size", "48", "--batch-size", "2", "--workers", "0",
        "--epochs", "3", "--log-interval-s", "0")


def live_command(demo_data, small: dict, out: Path, *flags: str) -> list[str]:
    """train.py on the whole demo training set with the LIVE recipe."""
    return ["train.py", "--train-csv", str(demo_data[0]), "--val-csv", small["val"], "--data-root", small["root"],
            *LIVE, "--out", str(out), *flags]


@pytest.fixture(scope="module")
def live(demo_data, small, tmp_path_factory):
    """Two runs started together, each for a real signal: SIGINT with a checkpoint after every step (so the save
    before the signal's is a real last.prev.pt), and SIGHUP with none before the signal's."""
    base = tmp_path_factory.mktemp("live")
    procs = {"SIGINT": spawn(live_command(demo_data, small, base / "SIGINT", "--checkpoint-every", "1e-9")),
             "SIGHUP": spawn(live_command(demo_data, small, base / "SIGHUP"))}
    yield base, procs
    for proc in procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def stop_at_first_step(proc: subprocess.Popen, signum: int) -> tuple[int, str, str]:
    """Send the signal once the run has printed its first training step; (exit code, stdout, stderr)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if re.match(r"epoch 1/\d+ step 1/", line):
            break
    else:
        pytest.fail(f"the run ended before its first step: {''.join(seen)}{proc.stderr.read()[-2000:]}")
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=600)
    return proc.returncode, "".join(seen) + stdout, stderr


@pytest.mark.parametrize("name, code", [("SIGINT", 130), ("SIGHUP", 129)])  # 128 + the signal's number
def test_a_real_sigint_or_sighup_saves_the_step_and_says_how_to_resume(live, name, code):
    base, procs = live
    returncode, stdout, stderr = stop_at_first_step(procs[name], getattr(signal, name))
    out = base / name
    assert returncode == code, stderr[-2000:]
    found = re.search(rf"stopped by {name} during epoch 1 step (\d+)/115; \S+/last\.pt holds step (\d+) of epoch 1\. "
                      r"Resume with: python train\.py .* --resume$", stdout, re.MULTILINE)
    assert found and found[1] == found[2], stdout[-2000:]
    assert "Traceback" not in stderr
    step = int(found[1])
    state = models.load_checkpoint(out / "last.pt")["train_state"]
    assert state["epoch"] == 0 and state["partial"]["step"] == step >= 2  # saved at the step the signal came
    if name == "SIGINT":  # every save keeps the one it replaces: the step before
        previous = models.load_checkpoint(out / "last.prev.pt")["train_state"]
        assert previous["epoch"] == 0 and previous["partial"]["step"] == step - 1
    else:  # the signal's save was the first: nothing to keep
        assert not (out / "last.prev.pt").exists()
    assert found[0] in (out / "train.log").read_text()


def test_an_output_folder_that_cannot_be_made_stops_in_one_line_naming_it(small, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a file where the run folder's parent should be
    with pytest.raises(utils.WriteError, match=re.escape(f"cannot write {blocker / 'run'}: Not a directory; nothing "
                                                         "already written was changed")):
        train.main(parse(command(small, blocker / "run")))
    if os.geteuid() != 0:  # root writes through any mode bits: the read-only mount below covers it there
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(utils.WriteError, match=re.escape(f"cannot write {locked / 'run'}: Permission denied")):
            train.main(parse(command(small, locked / "run")))


def mount_namespace_problem(folder: Path) -> str | None:
    """Why a tmpfs cannot be mounted in a private user and mount namespace (unshare -rm) here; None when it can."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "no unshare / mount command"
    probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                           capture_output=True, text=True, timeout=60)
    return None if probe.returncode == 0 else f"unshare -rm mount -t tmpfs: {probe.stderr.strip()}"


@pytest.fixture(scope="module")
def mounted(demo_data, small, tmp_path_factory) -> Path:
    """Two runs at once in a private mount namespace: one on a 10 MB tmpfs (room for best.pt, ~5 MB, but not then
    for last.pt, ~14 MB), one on a read-only tmpfs. Each leaves OUT/<name>.code, .out, .err; the full disk's
    run folder is copied out to OUT/full_kept before the namespace (and its tmpfs) goes."""
    base = tmp_path_factory.mktemp("mounted")
    full, read_only = base / "full", base / "read_only"
    full.mkdir()
    read_only.mkdir()
    problem = mount_namespace_problem(full)
    if problem:
        pytest.skip(f"a tmpfs cannot be mounted here ({problem}); the file-size limit test covers the same "
                    "write-error path")
    flags = ("--model", "vgg_face48", "--img-size", "48", "--epochs", "1")
    python = shlex.quote(sys.executable)
    script = [f"mount -t tmpfs -o size=10m tmpfs {full} && mount -t tmpfs -o ro,size=64k tmpfs {read_only} || exit 99"]
    for name, folder in (("full", full), ("read_only", read_only)):
        argv = shlex.join(command(small, folder / "run", *flags))
        script.append(f"{python} {argv} > {base / name}.out 2> {base / name}.err & {name}=$!")
    script += [f"wait $full; echo $? > {base / 'full'}.code", f"wait $read_only; echo $? > {base / 'read_only'}.code",
               f"cp -a {full / 'run'} {base / 'full_kept'}"]
    done = subprocess.run(["unshare", "-rm", "bash", "-c", "\n".join(script)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return base


def mounted_result(base: Path, name: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of one of the `mounted` runs."""
    return tuple([int((base / f"{name}.code").read_text())] +
                 [(base / f"{name}.{stream}").read_text() for stream in ("out", "err")])


def test_a_full_disk_stops_in_one_line_and_keeps_best_pt(mounted):
    error = assert_one_line_error(mounted_result(mounted, "full"))
    out = mounted / "full" / "run"
    assert error.startswith(f"error: cannot write {out / 'last.pt'}: No space left on device; nothing already "
                            "written was changed. Fix that (free space, ")
    assert "resume with: python train.py " in error
    kept = mounted / "full_kept"
    assert not (kept / "last.pt").exists() and not list(kept.glob(".*.tmp"))  # the half-written temp file is gone
    best = models.load_checkpoint(kept / "best.pt")  # written before the disk filled: whole
    assert best["metrics"]["epoch"] == 1 and best["arch"]["name"] == "vgg_face48"


def test_a_read_only_disk_stops_in_one_line_naming_the_folder(mounted):
    error = assert_one_line_error(mounted_result(mounted, "read_only"))
    assert error.startswith(f"error: cannot write {mounted / 'read_only' / 'run'}: Read-only file system;")


def test_a_hostile_weights_file_is_refused_and_its_code_never_runs(small, tmp_path):
    marker, evil = tmp_path / "payload_ran", tmp_path / "backbone.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": Payload(str(marker))}, evil)
    with pytest.raises(models.CheckpointError, match=re.escape(f"{evil}: refused, it holds pickled Python objects")):
        train.main(parse(command(small, tmp_path / "run", "--weights", str(evil))))
    assert not marker.exists()
    pickle.loads(pickle.dumps(Payload(str(marker))))  # the payload is live: unpickling it runs its code
    assert marker.exists()
