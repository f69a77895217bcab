"""Efficiency benchmark (thesis 2.9, 3.6, App. C.7, Table 7): parameters, latency and FPS at batch size 1.

    python benchmark.py --ckpt results/*/best.pt --out results/benchmark
    python benchmark.py --model convnext_tiny_transformer --blocks 2 --device cuda --out /tmp/bench

Four modes, measured the same way on the same random input:
- eager: the thesis protocol. Eval + inference mode, fp16 autocast on CUDA (--amp), 50 warm-up and
  200 timed forward passes; latency = synchronised wall-clock time of the timed passes / passes.
- fast: models.make_fast (channels_last + torch.compile with frozen weights; fp16 autocast and CUDA graphs
  on the GPU).
- onnx: ONNX Runtime (float32, as many intra-op threads as torch has) on the model exported as export.py
  exports it, in memory, or on the files given with --onnx (one per --ckpt). Needs requirements-onnx.txt.
- int8: ONNX Runtime on the files export.py --int8 wrote and checked (--int8, one per --ckpt), or on the float32
  model quantised in memory as export.py quantises it (onnx_model.quantize_int8) but calibrated on random
  inputs: the same operators, so the same speed, but its logits are not the checked model's. CPU only.
Each fast, onnx and int8 row carries the largest absolute logit difference to eager, whether the argmax agrees
and its speed-up over eager; an int8 row also its speed-up over onnx when both ran. When several modes run
(--mode both = eager,fast; all = eager,fast,onnx,int8; or a list such as onnx,int8) their timed passes
alternate in four chunks (each chunk in the reverse order of the one before), so all see the same machine.
Each row also has the forward pass's matmul + convolution GFLOPs per image and the GFLOP/s achieved, beside
the device's rate on one large matmul.
Writes benchmark.json (one row per experiment x mode x batch size), benchmark.csv, benchmark.md
(Table 7 layout, with the thesis's numbers beside ours for the seven thesis experiments) and, for
checkpoints, tradeoff.png (their validation macro-F1 against latency, beside the thesis's points).
"""
import argparse
import copy
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

import metrics
import models
import onnx_model
import plots
import utils

COLUMNS = ("experiment", "mode", "device", "device_name", "torch_version", "threads", "params", "params_m",
           "batch_size", "img_size", "amp", "warmup", "iters", "latency_ms", "p50_ms", "p90_ms", "p99_ms", "fps",
           "gflop_per_image", "gflop_per_s", "matmul_gflop_per_s", "matmul_dtype", "accuracy", "macro_f1",
           "fast_variant", "compile_s", "onnx_runtime", "export_s", "max_abs_diff", "argmax_match", "speedup",
           "speedup_vs_onnx")
# Several modes: their timed passes alternate in this many chunks. A shared machine's speed drifts within a
# minute; alternating lets every mode see the same drift, so their ratios are fair.
CHUNKS = 4
MODES = ("eager", "fast", "onnx", "int8")
MODE_SETS = {"both": ("eager", "fast"), "all": MODES}
RUNTIME_MODES = ("onnx", "int8")  # the modes ONNX Runtime runs: their files are --onnx and --int8
# Random normal batches the in-memory int8 model is calibrated on (onnx_model.random_inputs): enough draws that
# every activation's range is that of the timed input's distribution.
RANDOM_CALIBRATION = (8, 8, 8, 8)


def mode_list(text: str) -> tuple[str, ...]:
    """argparse type: eager, fast, onnx, int8, both (eager,fast), all, or a comma-separated list of modes."""
    if text in MODE_SETS:
        return MODE_SETS[text]
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    if not modes or any(m not in MODES for m in modes):
        raise argparse.ArgumentTypeError(f"expected {', '.join(MODES)}, both, all or a comma-separated list of "
                                         f"modes, got {text!r}")
    return tuple(m for m in MODES if m in modes)  # eager first: the others are checked against it


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers >= 1, e.g. 1,8,32,128."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Parameters, latency and FPS (thesis Table 7), eager and fast path.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", nargs="+", metavar="PT", help="checkpoints to rebuild (experiment id and metrics "
                        "come from each checkpoint)")
    source.add_argument("--model", choices=models.MODEL_NAMES, help="a model with random weights instead")
    parser.add_argument("--blocks", type=utils.int_at_least(1), default=None,
                        help="Transformer blocks of --model convnext_tiny_transformer (default: 1)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--batch-size", type=utils.int_at_least(1), default=1,
                        help="batch size of the main table (default: 1)")
    parser.add_argument("--batch-sizes", type=int_list, default=None, metavar="B1,B2,...",
                        help="also measure these batch sizes: a throughput sweep, e.g. 1,8,32,128")
    parser.add_argument("--img-size", type=utils.int_at_least(32), default=None,
                        help=f"input side in px (default: the checkpoint's, {utils.DEFAULT_IMG_SIZE} for --model)")
    parser.add_argument("--warmup", type=utils.int_at_least(0), default=50, help="untimed forward passes (default: 50)")
    parser.add_argument("--iters", type=utils.int_at_least(1), default=200, help="timed forward passes (default: 200)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="eager mode: fp16 autocast (default: on for CUDA, off on CPU; on CPU it means bfloat16)")
    parser.add_argument("--mode", type=mode_list, default=MODE_SETS["both"], metavar="MODES",
                        help="eager = the thesis protocol, fast = models.make_fast, onnx = ONNX Runtime, int8 = "
                             "ONNX Runtime on an int8 model (CPU); both = eager,fast; all = eager,fast,onnx,int8; "
                             "or a list such as eager,onnx (default: both)")
    parser.add_argument("--onnx", nargs="+", metavar="ONNX", default=None,
                        help="onnx mode: models exported by export.py, one per --ckpt in the same order (default: "
                             "each model is exported in memory)")
    parser.add_argument("--int8", nargs="+", metavar="ONNX", default=None,
                        help="int8 mode: int8 models written by export.py --int8, one per --ckpt in the same order "
                             "(default: each model is quantised in memory, calibrated on random inputs: right for "
                             "timing, not for accuracy)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the random input and of --model's weights")
    parser.add_argument("--out", required=True, help="output folder")
    return parser


def targets_from_args(args: argparse.Namespace) -> list[dict]:
    """What to benchmark: experiment id, how to build the model, img size and the checkpoint's metrics."""
    if args.model is not None:
        blocks = args.blocks or 1
        if args.blocks is not None and args.model not in models.HYBRIDS:
            raise utils.UserError(f"--blocks applies to {', '.join(models.HYBRIDS)} only, not {args.model}")
        name = args.model + (f"_{blocks}block" + "s" * (blocks > 1) if args.model in models.HYBRIDS else "")
        for mode in RUNTIME_MODES:
            if getattr(args, mode) is not None:
                raise utils.UserError(f"--{mode} goes with --ckpt (the checkpoints they were exported from)")
        return [{"experiment": name, "ckpt": None, "name": args.model, "blocks": blocks, "onnx": None, "int8": None,
                 "num_classes": len(utils.AFFECTNET8),
                 "img_size": args.img_size or utils.DEFAULT_IMG_SIZE, "accuracy": None, "macro_f1": None}]
    if args.blocks is not None:
        raise utils.UserError("--blocks applies to --model only; a checkpoint records its own blocks")
    for mode in RUNTIME_MODES:
        files = getattr(args, mode)
        if files is not None and len(files) != len(args.ckpt):
            raise utils.UserError(f"--{mode}: {len(files)} file(s) for {len(args.ckpt)} --ckpt file(s); give one each")
    targets = []
    # Every checkpoint is read once up front, so a bad seventh file fails before six models were timed.
    for i, path in enumerate(args.ckpt):
        checkpoint = models.load_checkpoint(path)
        arch, found = checkpoint["arch"], checkpoint.get("metrics") or {}
        targets.append({"experiment": checkpoint.get("experiment") or os.path.splitext(os.path.basename(path))[0],
                        "ckpt": path, "name": arch["name"], "blocks": int(arch.get("blocks", 1)),
                        "onnx": args.onnx[i] if args.onnx else None, "int8": args.int8[i] if args.int8 else None,
                        "num_classes": int(arch["num_classes"]),
                        "img_size": args.img_size or models.arch_img_size(arch),
                        "accuracy": found.get("accuracy"), "macro_f1": found.get("macro_f1")})
        del checkpoint
        for mode in RUNTIME_MODES:
            if targets[-1][mode] is not None:
                check_onnx_matches(targets[-1][mode], targets[-1], mode)
    return targets


def check_onnx_matches(path: str, target: dict, mode: str) -> None:
    """A one-line UserError unless an --onnx / --int8 file was exported from the target's architecture at its size,
    in the mode's precision (float32 for onnx, int8 for int8)."""
    meta = onnx_model.meta_of(onnx_model.OnnxModel(path), path)
    arch, precision = meta["arch"], "int8" if mode == "int8" else "float32"
    if (arch["name"], arch["blocks"], arch["img_size"]) != (target["name"], target["blocks"], target["img_size"]):
        raise utils.UserError(f"--{mode} {path}: a {arch['name']} ({arch['blocks']} block(s)) at {arch['img_size']} "
                              f"px, not the {target['name']} ({target['blocks']} block(s)) at {target['img_size']} px "
                              f"of {target['ckpt']}")
    if meta["precision"] != precision:
        raise utils.UserError(f"--{mode} {path}: precision {meta['precision']}, --{mode} takes {precision} models"
                              + (" (export.py --int8 writes them)" if mode == "int8" else ""))


def forward_gflop(model: torch.nn.Module, x: torch.Tensor) -> float:
    """GFLOPs of one forward pass per image: matmuls and convolutions, 2 per multiply-add (as FlopCounterMode)."""
    # nn.TransformerEncoderLayer's fused inference kernel is invisible to the counter; its plain path computes
    # the same layer with ordinary matmuls. (The few attention-score FLOPs still count on CUDA only: the fused
    # CPU attention kernel has no formula.)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops() / x.shape[0] / 1e9


def timed_passes(forward: Callable, x: torch.Tensor, passes: int, per_pass: list[float],
                 meter: utils.Progress) -> float:
    """Run forward(x) `passes` times; appends each pass's ms to per_pass, returns the synchronised wall ms."""
    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(x.device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(passes)]
    start = time.perf_counter()
    for i in range(passes):
        if cuda:
            events[i][0].record()
            forward(x)
            events[i][1].record()
        else:
            t0 = time.perf_counter()
            forward(x)
            per_pass.append((time.perf_counter() - t0) * 1000)
        meter.step()
    if cuda:
        torch.cuda.synchronize(x.device)  # the wall time covers finished GPU work, not queued launches
        per_pass += [begin.elapsed_time(end) for begin, end in events]
    return (time.perf_counter() - start) * 1000


def matmul_gflop_per_s(device: torch.device, dtype: torch.dtype) -> float:
    """The device's GFLOP/s on a large square matmul (fastest of 20): the ceiling for a model made of matmuls."""
    size = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    meter, per_pass_ms = utils.Progress(23, "matmul rate"), []
    timed_passes(lambda _: a @ b, a, 3, [], meter)  # warm-up
    timed_passes(lambda _: a @ b, a, 20, per_pass_ms, meter)
    return 2 * size ** 3 / min(per_pass_ms) / 1e6


@torch.inference_mode()
def time_forwards(forwards: dict[str, Callable], x: torch.Tensor, warmup: int, iters: int, label: str
                  ) -> dict[str, dict]:
    """Per forward: warm-up, then timed passes (in alternating chunks when several); latency and p50/p90/p99."""
    meter = utils.Progress(len(forwards) * (warmup + iters), label)
    for forward in forwards.values():
        for _ in range(warmup):
            forward(x)
            meter.step()
    chunks = 1 if len(forwards) == 1 else min(CHUNKS, iters)
    per_pass = {name: [] for name in forwards}
    total_ms = dict.fromkeys(forwards, 0.0)
    for chunk in range(chunks):
        passes = iters * (chunk + 1) // chunks - iters * chunk // chunks
        # Every other chunk in reverse order, so a steady drift favours neither mode.
        for name in reversed(forwards) if chunk % 2 else forwards:
            total_ms[name] += timed_passes(forwards[name], x, passes, per_pass[name], meter)
    stats = {}
    for name, times in per_pass.items():
        latency = total_ms[name] / iters
        p50, p90, p99 = np.percentile(times, (50, 90, 99)).tolist()
        stats[name] = {"latency_ms": latency, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
                       "fps": 1000 * x.shape[0] / latency}
    return stats


def float_blob(model: torch.nn.Module, target: dict, size: int, tag: str) -> bytes:
    """The target's float32 ONNX model: its --onnx file, or the model exported in memory as export.py exports it."""
    if target["onnx"] is not None:
        return Path(target["onnx"]).read_bytes()
    print(f"{tag}: exporting to ONNX", flush=True)
    arch = {"name": target["name"], "blocks": target["blocks"], "num_classes": target["num_classes"]}
    # The exporter traces a float32 CPU copy: the model itself may sit on a GPU.
    cpu_model = copy.deepcopy(models.unwrap(model)).to("cpu").float().eval()
    return onnx_model.export_bytes(cpu_model, arch, target["experiment"], None, size)


def runtime_forwards(model: torch.nn.Module, target: dict, modes: tuple[str, ...], size: int, device: torch.device,
                     seed: int, tag: str) -> dict[str, tuple[onnx_model.OnnxModel, float, str]]:
    """Per ONNX Runtime mode asked for (onnx, int8): the model, the seconds it took to be ready, and its variant
    text. From the --onnx / --int8 files, else exported in memory once for both, int8 calibrated on random inputs."""
    ready, start, blob = {}, time.perf_counter(), None
    if ("onnx" in modes and target["onnx"] is None) or ("int8" in modes and target["int8"] is None):
        blob = float_blob(model, target, size, tag)
    float_s = time.perf_counter() - start
    if "onnx" in modes:  # a file's metadata was checked at the start
        exported = onnx_model.OnnxModel(target["onnx"] or blob, device).eval()
        ready["onnx"] = (exported, time.perf_counter() - start, exported.runtime)
    if "int8" in modes:
        start = time.perf_counter()
        if target["int8"] is not None:
            quantized = onnx_model.OnnxModel(target["int8"], device).eval()
            ready["int8"] = (quantized, time.perf_counter() - start, f"{quantized.runtime}, {target['int8']}")
        else:
            print(f"{tag}: quantising to int8, calibrated on random inputs (right for timing, not for accuracy: "
                  "export.py --int8 calibrates on images and checks the result)", flush=True)
            calibration = onnx_model.random_inputs(size, seed, RANDOM_CALIBRATION)
            quantized = onnx_model.OnnxModel(onnx_model.quantize_int8(blob, calibration), device).eval()
            ready["int8"] = (quantized, float_s + time.perf_counter() - start,
                             f"{quantized.runtime}, calibrated on random inputs")
    return ready


def measure(model: torch.nn.Module, target: dict, x: torch.Tensor, args: argparse.Namespace, device: torch.device,
            amp: bool, tag: str) -> list[dict]:
    """Timings of one input batch, a row per mode: eager, and the fast path and ONNX Runtime checked against it."""
    def eager(inputs: torch.Tensor) -> torch.Tensor:
        with models.autocast(device, amp):
            return model(inputs)

    forwards, checks = ({"eager": eager} if "eager" in args.mode else {}), {}
    # Every path is built before any timing, so the compile minute does not sit between the modes' timings.
    if "fast" in args.mode:
        print(f"{tag}: building the fast path (torch.compile takes a while the first time)", flush=True)
        start = time.perf_counter()
        forwards["fast"] = models.make_fast(model, device, x)
        checks["fast"] = {"fast_variant": forwards["fast"].variant, "compile_s": round(time.perf_counter() - start, 1)}
    runtime = runtime_forwards(model, target, tuple(m for m in RUNTIME_MODES if m in args.mode), x.shape[-1],
                               device, args.seed, tag)
    for mode, (forward, ready_s, variant) in runtime.items():
        forwards[mode] = forward
        checks[mode] = {"onnx_runtime": variant, "export_s": round(ready_s, 1)}
    if "int8" in runtime:
        # Its own scores, from export.py's check; the checkpoint's are not an int8 model's (none when calibrated on
        # random inputs).
        found = onnx_model.meta_of(runtime["int8"][0], target["int8"] or "int8 model")["int8_check"]
        checks["int8"].update({key: found["int8"][key] if found else None for key in ("accuracy", "macro_f1")})
    with torch.inference_mode():
        reference = eager(x).float()
        for mode, check in checks.items():
            out = forwards[mode](x).float()
            check.update({"max_abs_diff": (out - reference).abs().max().item(),
                          "argmax_match": bool(torch.equal(out.argmax(1), reference.argmax(1)))})
            variant = check.get("fast_variant") or check.get("onnx_runtime")
            ready = check.get("compile_s", check.get("export_s"))
            print(f"{tag} {mode} [{variant}] ready in {ready:.1f} s; max |logit diff| vs eager "
                  f"{check['max_abs_diff']:.2e}, argmax {'agrees' if check['argmax_match'] else 'DIFFERS'}",
                  flush=True)
    stats = time_forwards(forwards, x, args.warmup, args.iters, f"{tag} {'+'.join(forwards)}")
    rows = []
    for mode, timing in stats.items():
        check = checks.get(mode, {})
        if "eager" in stats and mode != "eager":
            check["speedup"] = stats["eager"]["latency_ms"] / timing["latency_ms"]
        if mode == "int8" and "onnx" in stats:  # what int8 is for: beating float32 ONNX Runtime
            check["speedup_vs_onnx"] = stats["onnx"]["latency_ms"] / timing["latency_ms"]
        print(f"{tag} {mode}: {timing['latency_ms']:.3f} ms, {timing['fps']:.1f} images/s"
              + (f", {check['speedup']:.2f}x eager" if "speedup" in check else "")
              + (f", {check['speedup_vs_onnx']:.2f}x onnx" if "speedup_vs_onnx" in check else ""), flush=True)
        rows.append({"mode": mode, **timing, **check})
    return rows


def bench_target(target: dict, args: argparse.Namespace, device: torch.device, amp: bool,
                 common: dict) -> list[dict]:
    """All rows of one experiment: each batch size, eager and/or fast."""
    if target["ckpt"] is not None:
        model = models.load_model(target["ckpt"], device)[0]
    else:
        torch.manual_seed(args.seed)
        model = models.build_model(target["name"], num_classes=target["num_classes"], blocks=target["blocks"],
                                   weights="none").to(device).eval()
    params = models.count_params(model)
    size = target["img_size"]
    gflop = forward_gflop(model, torch.zeros(1, 3, size, size, device=device))
    base = {**common, "experiment": target["experiment"], "params": params, "params_m": round(params / 1e6, 3),
            "img_size": size, "gflop_per_image": round(gflop, 3), "accuracy": target["accuracy"],
            "macro_f1": target["macro_f1"]}
    rows = []
    for batch in [args.batch_size] + [b for b in (args.batch_sizes or []) if b != args.batch_size]:
        # The same input for every mode and model: the fast path is checked against eager on it.
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(args.seed)).to(device)
        tag = f"{target['experiment']} batch {batch}"
        try:
            for row in measure(model, target, x, args, device, amp, tag):
                rows.append({**base, "batch_size": batch, **row, "gflop_per_s": round(gflop * row["fps"], 3)})
        except torch.OutOfMemoryError:
            print(f"warning: {tag}: out of {device.type} memory, batch size skipped", file=sys.stderr, flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the fast path's copy and CUDA-graph pool go before the next batch size
    return rows


def fmt(value, digits: int) -> str:
    """A table cell: the number with `digits` decimals, '-' when missing."""
    return "-" if value is None else f"{value:.{digits}f}"


def beside(ours, thesis, digits: int) -> str:
    """'ours (thesis)' when the thesis has the number, else just ours."""
    return fmt(ours, digits) + (f" ({thesis:.{digits}f})" if thesis is not None else "")


def markdown(rows: list[dict], batch_size: int) -> str:
    """Table 7 layout for the main batch size, plus a throughput table when several batch sizes were run."""
    first = rows[0]
    lines = ["# Efficiency benchmark (thesis Table 7 layout)", "",
             f"Device: {first['device_name']}; torch {first['torch_version']}; batch {batch_size}; "
             f"{first['img_size']} px; {first['warmup']} warm-up + {first['iters']} timed passes; "
             f"eager autocast {'on' if first['amp'] else 'off'}.",
             "Values in brackets are the thesis's (NVIDIA H100 NVL, eager, fp16 autocast). eager = the thesis "
             "protocol; fast = models.make_fast (same function, compiled). GFLOPs: matmuls and convolutions of "
             "one forward pass per image, 2 per multiply-add; GFLOP/s: achieved at this latency (this device does "
             f"{first['matmul_gflop_per_s']} GFLOP/s on its fastest of 20 large {first['matmul_dtype']} matmuls).",
             "",
             "| Experiment | Mode | Accuracy | Macro-F1 | Params (M) | GFLOPs | Latency (ms) | FPS | GFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in [r for r in rows if r["batch_size"] == batch_size]:
        _, t_acc, t_f1, t_params, t_lat, t_fps = metrics.THESIS_RUNS.get(r["experiment"], (None,) * 6)
        lines.append(f"| {r['experiment']} | {r['mode']} | {beside(r['accuracy'], t_acc, 4)} | "
                     f"{beside(r['macro_f1'], t_f1, 4)} | {beside(r['params_m'], t_params, 3)} | "
                     f"{fmt(r['gflop_per_image'], 2)} | {beside(r['latency_ms'], t_lat, 4)} | "
                     f"{beside(r['fps'], t_fps, 2)} | {fmt(r['gflop_per_s'], 1)} |")
    checked = [r for r in rows if r["mode"] != "eager"]
    if checked:
        lines += ["", "Fast path and ONNX Runtime against eager on the same input (speed-up: eager latency / its "
                  "latency, timed in alternating chunks in this run, and for int8 also onnx latency / its latency; "
                  "ready in: compile, export or quantisation time):", "",
                  "| Experiment | Batch | Mode | Variant | Ready in (s) | Speed-up | Max abs logit diff | "
                  "Argmax agrees |", "|---|---|---|---|---|---|---|---|"]
        for r in checked:
            speedup = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
            if r.get("speedup_vs_onnx") is not None:
                speedup += f" ({r['speedup_vs_onnx']:.2f}x onnx)"
            variant, ready = (r["fast_variant"], r["compile_s"]) if r["mode"] == "fast" else (r["onnx_runtime"],
                                                                                                r["export_s"])
            lines.append(f"| {r['experiment']} | {r['batch_size']} | {r['mode']} | {variant} | {ready} | "
                         f"{speedup} | {r['max_abs_diff']:.2e} | {'yes' if r['argmax_match'] else 'NO'} |")
    sizes = sorted({r["batch_size"] for r in rows})
    if len(sizes) > 1:
        keys = list(dict.fromkeys((r["experiment"], r["mode"]) for r in rows))
        fps = {(r["experiment"], r["mode"], r["batch_size"]): r["fps"] for r in rows}
        lines += ["", "Throughput (images/s) by batch size:", "",
                  "| Experiment | Mode | " + " | ".join(f"batch {b}" for b in sizes) + " |",
                  "|---|---|" + "---|" * len(sizes)]
        lines += [f"| {e} | {m} | " + " | ".join(fmt(fps.get((e, m, b)), 1) for b in sizes) + " |" for e, m in keys]
    return "\n".join(lines) + "\n"


def write_outputs(out: str, rows: list[dict], batch_size: int) -> None:
    """benchmark.json, benchmark.csv and benchmark.md, each written atomically."""
    utils.write_json(os.path.join(out, "benchmark.json"), rows)
    utils.write_csv(os.path.join(out, "benchmark.csv"), COLUMNS, ([r.get(k, "") for k in COLUMNS] for r in rows))
    with utils.atomic_write(os.path.join(out, "benchmark.md")) as f:
        f.write(markdown(rows, batch_size))
    if any(r["macro_f1"] is not None for r in rows):  # checkpoints carry their validation metrics
        plots.save_png(os.path.join(out, "tradeoff.png"), tradeoff(rows, batch_size))


def tradeoff(rows: list[dict], batch_size: int) -> Image.Image:
    """Macro-F1 against latency at the main batch size: our rows (each mode) beside the thesis's Table 7."""
    ours = [{"name": r["experiment"], "latency_ms": r["latency_ms"], "macro_f1": r["macro_f1"], "mode": r["mode"]}
            for r in rows if r["batch_size"] == batch_size]
    thesis = [{"name": name, "latency_ms": t[4], "macro_f1": t[2], "mode": "eager"}
              for name, t in metrics.THESIS_RUNS.items()]
    names = list(dict.fromkeys([p["name"] for p in ours] + list(metrics.THESIS_RUNS)))
    return plots.draw_tradeoff([(f"Ours: {rows[0]['device_name']}, {rows[0]['img_size']} px", ours),
                                ("Thesis: NVIDIA H100 NVL, 224 px (eager)", thesis)], names,
                               f"Macro-F1 against latency, batch {batch_size}")


def main(args: argparse.Namespace) -> None:
    device = models.resolve_device(args.device)
    amp = device.type == "cuda" if args.amp is None else args.amp
    for mode in RUNTIME_MODES:
        if getattr(args, mode) is not None and mode not in args.mode:
            raise utils.UserError(f"--{mode}: add {mode} to --mode (got {','.join(args.mode)})")
    if "int8" in args.mode and device.type != "cpu":
        raise utils.UserError(f"--mode int8: ONNX Runtime's int8 kernels are the CPU's; use --device cpu, or leave "
                              f"int8 out of --mode on {device.type} (e.g. eager,fast,onnx)")
    runtime = [m for m in RUNTIME_MODES if m in args.mode]
    if runtime:  # checked before anything is timed
        # An in-memory export needs onnxscript; int8 without --int8 quantises the --onnx file when there is one.
        export = ("onnx" in runtime and args.onnx is None) or ("int8" in runtime and args.int8 is None
                                                                and args.onnx is None)
        onnx_model.require(f"--mode {','.join(runtime)}", ("onnx", "onnxruntime") + (("onnxscript",) * export))
    targets = targets_from_args(args)
    # The fast path's dtype: float16 autocast on CUDA (eager's too, unless --no-amp), float32 on the CPU.
    matmul_dtype = torch.float16 if device.type == "cuda" else torch.float32
    matmul_rate = round(matmul_gflop_per_s(device, matmul_dtype), 1)
    common = {"device": device.type, "device_name": models.device_name(device), "torch_version": torch.__version__,
              "matmul_gflop_per_s": matmul_rate, "matmul_dtype": str(matmul_dtype).removeprefix("torch."),
              "threads": torch.get_num_threads(), "amp": amp, "warmup": args.warmup, "iters": args.iters,
              "fast_variant": None, "compile_s": None, "onnx_runtime": None, "export_s": None,
              "max_abs_diff": None, "argmax_match": None, "speedup": None, "speedup_vs_onnx": None}
    print(f"benchmark: {len(targets)} model(s) on {common['device_name']}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, modes {','.join(args.mode)}, batch {args.batch_size}"
          + (f" (+ sweep {args.batch_sizes})" if args.batch_sizes else "")
          + f", {args.warmup} warm-up + {args.iters} timed passes, eager autocast {'on' if amp else 'off'}", flush=True)
    rows = []
    for i, target in enumerate(targets, 1):
        print(f"[{i}/{len(targets)}] {target['experiment']} ({target['name']}, {target['img_size']} px)", flush=True)
        rows += bench_target(target, args, device, amp, common)
        if rows:
            write_outputs(args.out, rows, args.batch_size)  # after each model, so a long run keeps what it measured
    if not rows:
        raise utils.UserError(f"nothing measured: every batch size ran out of {device.type} memory")
    print(markdown(rows, args.batch_size), flush=True)
    print(f"wrote {os.path.join(args.out, 'benchmark.json')}, benchmark.csv, benchmark.md", flush=True)


if __name__ == "__main__":
    utils.run_cli(main, get_args_parser())
