"""benchmark.py and models.make_fast: row contents, Table 7 parameter counts, checkpoint metadata, errors."""
import csv
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import benchmark
import models
import onnx_model
import utils

ROOT = Path(__file__).resolve().parent.parent

KEYS = {"experiment", "mode", "device", "params", "params_m", "latency_ms", "p50_ms", "p90_ms", "p99_ms", "fps",
        "batch_size", "img_size", "accuracy", "macro_f1", "torch_version", "device_name", "gflop_per_image",
        "gflop_per_s", "speedup"}
FAST = ["--warmup", "1", "--iters", "3"]


def run_main(tmp_path, *argv: str) -> list[dict]:
    """benchmark.main in this process (no interpreter start-up per model); returns benchmark.json's rows."""
    benchmark.main(benchmark.get_args_parser().parse_args([*argv, "--device", "cpu", "--out", str(tmp_path)]))
    return json.loads((tmp_path / "benchmark.json").read_text())


@pytest.mark.parametrize("name, blocks, params_m", [
    ("resnet50", None, 23.524), ("convnext_tiny", None, 27.826),
    ("convnext_tiny_transformer", "1", 28.546), ("convnext_tiny_transformer", "2", 29.073)])
def test_rows_have_the_keys_fps_and_table7_params(tmp_path, name, blocks, params_m):
    argv = ["--model", name, "--img-size", "32", "--mode", "eager", *FAST] + (["--blocks", blocks] if blocks else [])
    (row,) = run_main(tmp_path, *argv)
    assert KEYS <= set(row)
    assert row["mode"] == "eager" and row["device"] == "cpu" and row["batch_size"] == 1 and row["img_size"] == 32
    assert row["params_m"] == params_m and round(row["params"] / 1e6, 3) == params_m
    assert row["fps"] == pytest.approx(1000 / row["latency_ms"])
    assert row["gflop_per_s"] == pytest.approx(row["gflop_per_image"] * row["fps"], rel=1e-2)
    assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    assert row["accuracy"] is None and row["macro_f1"] is None and row["speedup"] is None
    assert row["experiment"] == name + {None: "", "1": "_1block", "2": "_2blocks"}[blocks]


def test_batch_size_sweep_rows_csv_and_throughput_table(tmp_path):
    rows = run_main(tmp_path, "--model", "resnet50", "--img-size", "32", "--mode", "eager", "--batch-sizes", "1,3",
                    *FAST)
    assert [r["batch_size"] for r in rows] == [1, 3]
    for r in rows:
        assert r["fps"] == pytest.approx(1000 * r["batch_size"] / r["latency_ms"])
    with open(tmp_path / "benchmark.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["batch_size"]) for r in table] == [1, 3] and KEYS <= set(table[0])
    md = (tmp_path / "benchmark.md").read_text()
    assert "Throughput (images/s) by batch size" in md and "batch 3" in md


def test_fast_mode_falls_back_to_eager_when_compile_fails(tmp_path, monkeypatch, capsys):
    def broken_compile(model, **kwargs):
        def fails(*args):
            raise RuntimeError("inductor exploded\nsecond line")
        return fails
    monkeypatch.setattr(torch, "compile", broken_compile)
    (row,) = run_main(tmp_path, "--model", "resnet50", "--img-size", "32", "--mode", "fast", *FAST)
    assert row["mode"] == "fast" and "eager" in row["fast_variant"]
    assert row["argmax_match"] is True and row["max_abs_diff"] < 1e-3
    assert "warning: torch.compile failed (inductor exploded second line)" in capsys.readouterr().err


@pytest.mark.parametrize("name, weights", [("resnet50", torchvision.models.ResNet50_Weights.IMAGENET1K_V2),
                                           ("convnext_tiny", torchvision.models.ConvNeXt_Tiny_Weights.IMAGENET1K_V1)])
def test_forward_gflop_matches_torchvisions_published_cost(name, weights):
    # torchvision's "_ops" is GFLOPs counted as multiply-adds at 224 px with the 1000-class head; ours counts 2
    # per multiply-add and has an 8-class head (2 MFLOPs less).
    model = models.build_model(name, weights="none").eval()
    gflop = benchmark.forward_gflop(model, torch.zeros(2, 3, 224, 224))
    assert gflop == pytest.approx(2 * weights.meta["_ops"], abs=0.01)


def test_forward_gflop_counts_the_transformer_blocks():
    x = torch.zeros(1, 3, 64, 64)  # 2 x 2 = 4 tokens
    convnext, hybrid = (benchmark.forward_gflop(models.build_model(name, blocks=2, weights="none").eval(), x)
                        for name in ("convnext_tiny", "convnext_tiny_transformer"))
    tokens, d, d_ff = 4, models.D_MODEL, models.D_FF
    # The hybrid swaps ConvNeXt's 768 -> 8 classifier for a 768 -> d projection per token, two blocks (q, k, v
    # and output projections, the feed-forward pair; the 4 x 4 attention products are negligible) and a d -> 8 head.
    extra_macs = tokens * 768 * d + 2 * tokens * (4 * d * d + 2 * d * d_ff) + d * 8 - 768 * 8
    assert (hybrid - convnext) * 1e9 == pytest.approx(2 * extra_macs, rel=0.01)
    assert torch.backends.mha.get_fastpath_enabled()  # the counter's switch is put back


E, F, O = "eager", "fast", "onnx"


@pytest.mark.parametrize("modes, iters, timed", [
    ((E, F), 8, [E, E, F, F] + [F, F, E, E] + [E, E, F, F] + [F, F, E, E]),  # 4 chunks of 2 passes
    ((E, F), 3, [E, F] + [F, E] + [E, F]),                                   # fewer passes than chunks: 3 of 1
    ((E, F, O), 4, [E, F, O] + [O, F, E] + [E, F, O] + [O, F, E]),           # three modes in one run
])
def test_timed_passes_of_several_modes_alternate_in_chunks(modes, iters, timed):
    calls = []
    forwards = {name: (lambda x, name=name: calls.append(name)) for name in modes}
    stats = benchmark.time_forwards(forwards, torch.zeros(2, 3, 4, 4), warmup=2, iters=iters, label="t")
    # Warm-up of each, then alternating chunks, every other one in reverse order: all modes see the same
    # machine drift and none always goes first.
    assert calls == [m for m in modes for _ in range(2)] + timed
    for timing in stats.values():
        assert timing["fps"] == pytest.approx(2000 / timing["latency_ms"])
        assert 0 < timing["p50_ms"] <= timing["p99_ms"]


def test_both_modes_give_the_fast_rows_speedup(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: model)  # no compile minute in a unit test
    eager, fast = run_main(tmp_path, "--model", "resnet50", "--img-size", "32", "--mode", "both", *FAST)
    assert (eager["mode"], fast["mode"]) == ("eager", "fast") and eager["speedup"] is None
    assert fast["speedup"] == pytest.approx(eager["latency_ms"] / fast["latency_ms"])
    assert fast["argmax_match"] is True and fast["gflop_per_image"] == eager["gflop_per_image"] > 0
    assert f"| {fast['speedup']:.2f}x |" in (tmp_path / "benchmark.md").read_text()


class Tiny(nn.Module):
    """Conv + BatchNorm + LayerNorm + Linear: the op kinds of the real models, small enough to compile fast."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.norm, self.head = nn.LayerNorm(8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.head(self.norm(x.mean(dim=(2, 3))))


def test_make_fast_compiles_the_same_function_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = Tiny().eval()
    nn.init.uniform_(model.bn.running_var, 0.5, 2.0)  # non-trivial statistics, so BatchNorm folding is exercised
    weight = model.conv.weight
    x = torch.randn(2, 3, 16, 16)
    fast = models.make_fast(model, "cpu", x)
    assert "compile" in fast.variant and "eager" not in fast.variant
    y = torch.randn(2, 3, 16, 16)
    out = fast(y)
    with torch.inference_mode():
        expected = model(y)
    assert out.dtype == torch.float32 and torch.allclose(out, expected, atol=1e-5)
    assert model.conv.weight is weight and weight.is_contiguous() and model.conv.weight.requires_grad
    with pytest.raises(ValueError, match="built for input"):
        fast(torch.randn(1, 3, 16, 16))


@pytest.fixture(scope="module")
def thesis_ckpt(tmp_path_factory) -> str:
    """A ResNet50 checkpoint (random weights) saved as the thesis's ResNet50 experiment, 32 px."""
    path = tmp_path_factory.mktemp("bench") / "best.pt"
    torch.manual_seed(0)
    model = models.build_model("resnet50", weights="none")
    arch = {"name": "resnet50", "blocks": 1, "num_classes": 8, "img_size": 32, "classes": list(utils.AFFECTNET8)}
    models.save_checkpoint(path, model, arch, "baseline_resnet50_ce_run1",
                           metrics={"accuracy": 0.6125, "macro_f1": 0.5875, "epoch": 3})
    return str(path)


def test_ckpt_run_takes_experiment_metrics_and_size_from_the_checkpoint(tmp_path, thesis_ckpt):
    (row,) = run_main(tmp_path, "--ckpt", thesis_ckpt, "--mode", "eager", *FAST)
    assert row["experiment"] == "baseline_resnet50_ce_run1"
    assert (row["accuracy"], row["macro_f1"], row["img_size"], row["params_m"]) == (0.6125, 0.5875, 32, 23.524)
    md = (tmp_path / "benchmark.md").read_text()
    # ours, then the thesis's in brackets: accuracy, macro-F1, params, latency, FPS of Table 7's ResNet50 row
    for cell in ("0.6125 (0.5326)", "0.5875 (0.5026)", "23.524 (23.524)", "(3.4479)", "(290.03)"):
        assert cell in md


def test_bad_ckpt_gives_one_error_line_before_any_timing(tmp_path, thesis_ckpt):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    # The good checkpoint comes first: every file is checked before the first model is timed.
    proc = subprocess.run([sys.executable, "benchmark.py", "--ckpt", thesis_ckpt, str(bad), "--device", "cpu",
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_mode_lists():
    assert benchmark.mode_list("both") == ("eager", "fast")
    assert benchmark.mode_list("all") == ("eager", "fast", "onnx", "int8")
    assert benchmark.mode_list("onnx,eager") == ("eager", "onnx")  # eager first: the others are checked against it
    with pytest.raises(Exception, match="expected eager, fast, onnx, int8, both, all"):
        benchmark.mode_list("eager,tensorrt")


def test_onnx_rows_come_from_the_same_run_as_eager(tmp_path, thesis_ckpt):
    pytest.importorskip("onnxruntime", reason="ONNX tests need: pip install -r requirements-onnx.txt")
    eager, onnx = run_main(tmp_path, "--ckpt", thesis_ckpt, "--mode", "eager,onnx", *FAST)
    assert (eager["mode"], onnx["mode"]) == ("eager", "onnx") and eager["speedup"] is None
    assert onnx["speedup"] == pytest.approx(eager["latency_ms"] / onnx["latency_ms"])
    assert onnx["argmax_match"] is True and onnx["max_abs_diff"] < 1e-3 and onnx["export_s"] > 0
    assert f"{torch.get_num_threads()} intra-op threads" in onnx["onnx_runtime"]
    assert (onnx["experiment"], onnx["params_m"], onnx["img_size"]) == ("baseline_resnet50_ce_run1", 23.524, 32)
    md = (tmp_path / "benchmark.md").read_text()
    assert "| baseline_resnet50_ce_run1 | onnx |" in md and f"| {onnx['speedup']:.2f}x |" in md


def test_onnx_flags_are_checked_before_any_timing(tmp_path, thesis_ckpt):
    cases = [(["--ckpt", thesis_ckpt, "--mode", "eager", "--onnx", "m.onnx"], "--onnx: add onnx to --mode"),
             (["--ckpt", thesis_ckpt, thesis_ckpt, "--mode", "onnx", "--onnx", "m.onnx"],
              "--onnx: 1 file(s) for 2 --ckpt file(s)"),
             (["--model", "resnet50", "--mode", "onnx", "--onnx", "m.onnx"], "--onnx goes with --ckpt")]
    if importlib.util.find_spec("onnxruntime") is not None:  # a file exported from another architecture
        from onnx import TensorProto, helper
        graph = helper.make_graph([helper.make_node("Identity", ["images"], ["logits"])], "g",
                                  [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph)
        arch = {"name": "convnext_tiny", "blocks": 1, "num_classes": 8}
        helper.set_model_props(model, onnx_model.metadata(arch, "x", None, 32, 18))
        other = tmp_path / "other.onnx"
        other.write_bytes(model.SerializeToString())
        cases.append((["--ckpt", thesis_ckpt, "--mode", "onnx", "--onnx", str(other)],
                      f"--onnx {other}: a convnext_tiny (1 block(s)) at 32 px, not the resnet50 (1 block(s)) at 32 px"))
    for argv, message in cases:
        with pytest.raises(utils.UserError, match=re.escape(message)):
            run_main(tmp_path, *argv)
    assert not (tmp_path / "benchmark.json").exists()
