"""The CUDA paths, for a machine with a GPU: `python -m pytest -m cuda` (a few minutes on an H100).

AMP training steps (float16 with a GradScaler, and bfloat16) for every model in channels_last, the batch
augmentation on the GPU against the CPU, the compiled fast path against eager, benchmark rows on CUDA, and a
one-process nccl run under torchrun. Without CUDA the whole module is skipped with one line.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("CUDA is not available on this machine: the GPU tests need one (python -m pytest -m cuda)",
                allow_module_level=True)

import benchmark
import data
import models
import train
from conftest import ROOT, call

pytestmark = pytest.mark.cuda
IMG = 64


@pytest.fixture(scope="module")
def small(demo_data, tmp_path_factory) -> dict[str, str]:
    """16 training and 8 validation demo images (absolute paths): two steps of 8 per epoch."""
    folder = tmp_path_factory.mktemp("cuda_small")
    train_csv, val_csv = demo_data
    picks = {"train": data.read_index(train_csv)[::4][:16], "val": data.read_index(val_csv)[::4][:8]}
    for name, samples in picks.items():
        (folder / f"{name}.csv").write_text("path,label\n" + "".join(f"{s.file},{s.label}\n" for s in samples))
    return {"train": str(folder / "train.csv"), "val": str(folder / "val.csv")}


@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_amp_training_steps_in_channels_last(small, tmp_path, name, amp_dtype):
    out = tmp_path / "run"
    call(train, "--train-csv", small["train"], "--val-csv", small["val"], "--model", name, "--weights", "none",
         "--img-size", IMG, "--batch-size", 8, "--epochs", 1, "--workers", 2, "--device", "cuda", "--amp",
         "--amp-dtype", amp_dtype, "--channels-last", "--loss", "focal", "--alpha", "auto", "--ema",
         "--clip-grad", "1.0", "--out", out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["settings"]["amp"] and summary["settings"]["amp_dtype"] == amp_dtype
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 2 and "nan" not in history[1] and "inf" not in history[1]
    state = models.load_checkpoint(out / "last.pt")["train_state"]
    assert (state["scaler"] is not None) == (amp_dtype == "float16")  # a GradScaler only for float16


def test_batch_augmentation_on_cuda_equals_the_cpu():
    augment = data.BatchAugment(data.Augment())
    images = torch.randint(0, 256, (32, 3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    params = augment.draw(32, torch.Generator().manual_seed(1))
    cpu = models.normalize(augment.apply(images, params).mul_(255))
    gpu = models.normalize(augment.apply(images.cuda(), params.to("cuda")).mul_(255))
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
    # And drawing on the GPU works from a CUDA generator, per step, without a host copy.
    generator = train.step_generator(42, 1, 1, 0, torch.device("cuda"))
    assert augment(images.cuda(), generator).device.type == "cuda"


def test_fast_path_on_cuda_agrees_with_eager():
    torch.manual_seed(0)
    model = models.build_model("convnext_tiny_transformer", blocks=2, weights="none").cuda().eval()
    x = torch.randn(1, 3, 224, 224, device="cuda")
    fast = models.make_fast(model, "cuda", x)
    with torch.inference_mode(), models.autocast("cuda", True):
        eager = model(x).float()
    got = fast(x)
    print(f"fast path [{fast.variant}]: max |logit diff| vs eager float16 autocast "
          f"{(got - eager).abs().max().item():.2e}")
    assert "compile failed" not in fast.variant
    assert torch.equal(got.argmax(1), eager.argmax(1)) and (got - eager).abs().max().item() < 5e-2


def test_benchmark_rows_on_cuda(tmp_path):
    call(benchmark, "--model", "resnet50", "--device", "cuda", "--mode", "eager", "--warmup", 5, "--iters", 20,
         "--out", tmp_path)
    rows = json.loads((tmp_path / "benchmark.json").read_text())
    assert len(rows) == 1 and rows[0]["device"] == "cuda" and rows[0]["amp"] is True
    assert rows[0]["latency_ms"] > 0 and rows[0]["device_name"] == torch.cuda.get_device_name()


def test_one_process_nccl_run_under_torchrun(small, tmp_path):
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "train.py",
         "--train-csv", small["train"], "--val-csv", small["val"], "--model", "resnet50", "--weights", "none",
         "--img-size", str(IMG), "--batch-size", "8", "--epochs", "1", "--workers", "0", "--device", "cuda",
         "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["backend"] == "nccl" and config["world_size"] == 1
    assert json.loads((out / "summary.json").read_text())["finished"]
