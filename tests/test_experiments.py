"""experiments.sh: the whole pipeline on a tiny demo set, and its argument errors."""
import fcntl
import os
import subprocess
from pathlib import Path

import demo
from conftest import ROOT

RUN_IDS = ("baseline_resnet50_ce_run1", "convnext_tiny_baseline_ce_run1", "convnext_tiny_transformer_ce_run1",
           "convnext_tiny_transformer_focal_alpha_run1", "convnext_tiny_baseline_focal_alpha_run1",
           "convnext_tiny_transformer_focal_alpha_run2", "convnext_tiny_transformer_focal_alpha_ema_run3")


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run experiments.sh with one compute thread (the suite may run scripts side by side)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(["bash", str(ROOT / "experiments.sh"), *args], capture_output=True, text=True,
                           env=full_env, timeout=900)


def test_demo_pipeline_writes_every_table(tmp_path: Path) -> None:
    # 78 training images (Table 2 proportions, one each of disgust and contempt), 1 epoch, 32 px.
    demo_dir = tmp_path / "demo_data"
    demo.make_demo(demo_dir, seed=0, min_train_per_class=1, val_per_class=2, image_size=32)
    results = tmp_path / "results"
    proc = run_script("--demo", env={"DEMO_DIR": str(demo_dir), "RESULTS": str(results), "EPOCHS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]

    summary = (results / "summary.md").read_text()
    assert "7 of 7 experiments finished" in summary
    for run_id in RUN_IDS:
        assert (results / run_id / "best.pt").is_file()
        assert (results / run_id / "confusion_matrix.png").is_file()
        # Table 7 lists every run; the confusion-matrix links point at files that exist.
        assert f"| {run_id} |" in summary.split("## Table 7")[1]
        assert f"({run_id}/confusion_matrix.png)" in summary
    assert "## Table 6" in summary and "checkpoint ensemble + h-flip TTA" in summary
    assert (results / "rescue").is_dir() and (results / "benchmark" / "benchmark.json").is_file()

    # A second invocation finds every run finished and trains nothing.
    again = run_script("--demo", env={"DEMO_DIR": str(demo_dir), "RESULTS": str(results), "EPOCHS": "1"})
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("this run already finished") == len(RUN_IDS)


def test_bad_arguments_fail_with_one_line(tmp_path: Path) -> None:
    proc = run_script("--no-such-flag")
    assert proc.returncode == 2 and "unknown flag '--no-such-flag'" in proc.stderr

    proc = run_script("--train-csv", str(tmp_path / "missing.csv"), "--val-csv", str(tmp_path / "missing.csv"))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"experiments.sh: error: training CSV not found: {tmp_path / 'missing.csv'}"

    proc = run_script(env={"TRAIN_CSV": "", "VAL_CSV": ""})
    assert proc.returncode == 1 and "no training CSV" in proc.stderr


def test_a_second_experiments_sh_on_the_same_results_refuses(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    with open(results / ".experiments.lock", "a+") as held:  # what a running experiments.sh holds
        held.write("pid 4242 on host, started today\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = run_script("--demo", env={"DEMO_DIR": str(tmp_path / "demo_data"), "RESULTS": str(results)})
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith(f"experiments.sh: error: another experiments.sh is running on {results} "
                                          "(pid 4242 on host")
    assert not (tmp_path / "demo_data").exists()  # refused before building or training anything
