"""experiments.sh: the whole pipeline on a tiny demo set, and its argument errors."""
import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path


import demo
from conftest import ROOT, png_size

RUN_IDS = ("baseline_resnet50_ce_run1", "convnext_tiny_baseline_ce_run1", "convnext_tiny_transformer_ce_run1",
           "convnext_tiny_transformer_focal_alpha_run1", "convnext_tiny_baseline_focal_alpha_run1",
           "convnext_tiny_transformer_focal_alpha_run2", "convnext_tiny_transformer_focal_alpha_ema_run3")


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run experiments.sh with one compute thread (the suite may run scripts side by side)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(["bash", str(ROOT / "experiments.sh"), *args], capture_output=True, text=True,
                           env=full_env, timeout=900)


# The thesis's learning rates, unscaled, and its warmup / EMA / clipping, as the demo must run them.
THESIS_RECIPE = {run_id: {"lr": 1e-4, "warmup_epochs": 0.0, "ema": False, "clip_grad": None} for run_id in RUN_IDS}
THESIS_RECIPE["convnext_tiny_transformer_focal_alpha_ema_run3"] = {"lr": 5e-5, "warmup_epochs": 1.0, "ema": True,
                                                                  "clip_grad": 1.0}
# A tiny pretraining stage: 8 images per class, one epoch of one batch of 64.
TINY = {"EPOCHS": "1", "PRETRAIN_PER_CLASS": "8", "PRETRAIN_EPOCHS": "1"}


def assert_png(path: Path) -> None:
    """A whole, valid PNG of a readable size."""
    width, height = png_size(path)
    assert width >= 600 and height >= 300, path


def test_demo_pipeline_writes_every_table(tmp_path: Path) -> None:
    # 78 training images (Table 2 proportions, one each of disgust and contempt), 1 epoch, 32 px.
    demo_dir = tmp_path / "demo_data"
    demo.make_demo(demo_dir, seed=0, min_train_per_class=1, val_per_class=2, img_size=32)
    results = tmp_path / "results"
    proc = run_script("--demo", env={"DEMO_DIR": str(demo_dir), "RESULTS": str(results), **TINY})
    assert proc.returncode == 0, proc.stderr[-2000:]

    # First the backbones are pretrained on their own, balanced set; the seven runs start from them.
    backbones = demo_dir / "pretrain" / "backbones"
    assert sorted(p.name for p in backbones.iterdir()) == ["convnext_tiny.pt", "resnet50.pt"]
    with open(demo_dir / "pretrain" / "train.csv") as f:
        assert sum(1 for _ in f) == 1 + 8 * 8
    # Once a backbone is written its pretraining checkpoints are gone (disk), its record stays.
    for backbone in ("resnet50", "convnext_tiny"):
        pretrain_run = demo_dir / "pretrain" / "runs" / backbone
        assert not list(pretrain_run.glob("*.pt")) and (pretrain_run / "history.csv").is_file()
    summary = (results / "summary.md").read_text()
    assert "7 of 7 experiments finished" in summary
    for run_id in RUN_IDS:
        assert (results / run_id / "best.pt").is_file()
        assert (results / run_id / "confusion_matrix.png").is_file()
        args = json.loads((results / run_id / "config.json").read_text())["args"]
        assert {key: args[key] for key in THESIS_RECIPE[run_id]} == THESIS_RECIPE[run_id], run_id
        assert args["weights"] == str(backbones / ("resnet50.pt" if "resnet50" in run_id else "convnext_tiny.pt"))
        assert_png(results / run_id / "curves.png")  # a run of one epoch still draws
        # Table 7 lists every run; the confusion-matrix links point at files that exist; the curves are inline.
        assert f"| {run_id} |" in summary.split("## Table 7")[1]
        assert f"({run_id}/confusion_matrix.png)" in summary
        assert f"]({run_id}/curves.png)" in summary.split("## Training curves")[1]
    assert_png(results / "benchmark" / "tradeoff.png")
    assert "![benchmark](benchmark/tradeoff.png)" in summary
    # The best models' confusion matrices are shown in the page, not only linked.
    assert summary.split("## Table 8")[1].split("##")[0].count("/confusion_matrix_normalized.png)") == 2
    assert "## Table 6" in summary and "checkpoint ensemble + h-flip TTA" in summary
    assert "| single checkpoint, logit adjustment (tau 1) |" in summary.split("## Table 6")[1]
    assert (results / "rescue").is_dir() and (results / "benchmark" / "benchmark.json").is_file()
    # Intervals in the tables, and the thesis's comparisons tested: 5 run comparisons, 4 rescue ones.
    assert " (0.5326) |" in summary and "] (0.5326)" in summary
    comparisons = summary.split("## Do the thesis's comparisons hold here?")[1].split("##")[0]
    assert len([line for line in comparisons.splitlines() if line.startswith("| ")]) == 1 + 5 + 4
    assert "## Per-seed results" not in summary

    # Two seeds, seed 42 already done (moved from above: a copy would cost GBs of checkpoints): the second
    # invocation trains only seed 43.
    seeds = tmp_path / "seeds"
    (seeds / "seed42").mkdir(parents=True)
    for run_id in RUN_IDS:
        shutil.move(results / run_id, seeds / "seed42" / run_id)
    again = run_script("--demo", "--seeds", "42,43", env={"DEMO_DIR": str(demo_dir), "RESULTS": str(seeds), **TINY})
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("this run already finished") == len(RUN_IDS)
    assert "pretrained resnet50:" in again.stdout and "[pretrain" not in again.stdout  # nothing pretrained again
    for run_id in RUN_IDS:
        config = json.loads((seeds / "seed43" / run_id / "config.json").read_text())
        assert config["args"]["seed"] == 43
    assert (seeds / "seed42" / "rescue" / "rescue_table.csv").is_file()
    assert (seeds / "seed43" / "rescue" / "rescue_table.csv").is_file()
    summary = (seeds / "summary.md").read_text()
    assert "7 of 7 experiments finished on each of the 2 seeds" in summary
    assert " ± " in summary.split("## Table 7")[1].split("##")[0]
    per_seed = summary.split("## Per-seed results")[1].split("##")[0]
    assert "Seed 42" in per_seed and "Seed 43" in per_seed and all(f"| {r} |" in per_seed for r in RUN_IDS)
    assert "With 2 seeds, A - B is the mean over seeds" in summary


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
