"""Train one model on index CSVs with the thesis recipe: resumable, deterministic, distributed.

    python train.py --train-csv T --val-csv V --model convnext_tiny --loss focal --alpha auto [--out DIR]
    torchrun --nproc_per_node=N train.py ...      # DDP: --batch-size stays the global batch, N processes
                                                  # get batch-size / N each (it must divide evenly)

Each epoch trains, then validates (accuracy, macro-F1, per-class F1, loss); best.pt is kept by macro-F1
(ties: accuracy; with --ema the EMA weights are validated and kept), last.pt holds the full training
state, and the run stops early after --patience epochs without improvement. Files in --out:
config.json, history.csv (one row per epoch; lr = the last step's), train.log, last.pt, best.pt,
summary.json, and for the best weights predictions.csv, metrics.json, per_class.csv and the confusion
matrices (CSV + PNG, raw and row-normalised).

Ctrl-C / SIGTERM stop the run after the current step with exit code 130 / 143. The interrupted epoch
is dropped (last.pt still holds the one before; nothing half-done is saved) and --resume redoes it
from its start: every epoch's shuffle, augmentation and sampling depend only on (seed, epoch, rank)
and the RNG states are in last.pt, so a resumed run ends where an uninterrupted one ends (bit for bit
on CPU). A NaN/inf loss stops the run naming the epoch and step, before the bad step touches the
weights. On CPU two runs with the same seed give identical metrics; on CUDA cuDNN autotuning and TF32
are on, so GPU runs are close but not bitwise equal.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import random
import shlex
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterator, NoReturn

import numpy as np
import torch
import torch.distributed as dist
import torchvision
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset

import data
import losses
import metrics
import models

# The settings that define a run. Resuming with any of them changed would not continue the same run
# (e.g. --epochs sets the cosine schedule's length), so --resume refuses instead of mixing recipes.
RECIPE_KEYS = ("model", "blocks", "img_size", "hflip", "jitter", "loss", "gamma", "alpha", "epochs", "batch_size",
               "lr", "weight_decay", "warmup_epochs", "ema", "ema_decay", "clip_grad", "patience", "seed", "sampler")


def get_args_parser() -> argparse.ArgumentParser:
    """The command-line flags; defaults are the thesis recipe where it gives one."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--train-csv", required=True, help="training index CSV (path,label[,face box])")
    g.add_argument("--val-csv", required=True, help="validation index CSV")
    g.add_argument("--data-root", default=None, help="folder relative image paths start from (default: each CSV's)")
    g.add_argument("--img-size", type=data.int_at_least(1), default=224, help="input side in pixels (default: 224)")
    g.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="data-loading processes per training process (default: min(8, CPUs))")
    g.add_argument("--hflip", type=probability, default=0.5,
                   help="training: probability of a horizontal flip (default: 0.5, as the thesis)")
    g.add_argument("--jitter", type=parse_jitter, default=parse_jitter("0.2,0.2,0.2,0.02"), metavar="B,C,S,H",
                   help="training colour jitter: brightness, contrast, saturation (factor in [1-x, 1+x]) and hue "
                        "(shift in [-x, x] turns), as torchvision's ColorJitter (default: 0.2,0.2,0.2,0.02; "
                        "0,0,0,0 = off)")
    g.add_argument("--sampler", choices=("shuffle", "balanced"), default="shuffle",
                   help="shuffle: every image once per epoch (thesis); balanced: inverse class frequency, "
                        "with replacement, same number of draws (beyond the thesis)")
    g = p.add_argument_group("model and loss")
    g.add_argument("--model", required=True, choices=models.MODEL_NAMES)
    g.add_argument("--blocks", type=data.int_at_least(1), default=1,
                   help="Transformer blocks of the hybrid (default: 1)")
    g.add_argument("--weights", default="imagenet", help="imagenet | none (random init) | PATH (backbone state dict)")
    g.add_argument("--loss", choices=("ce", "focal"), default="ce", help="cross-entropy or focal loss (default: ce)")
    g.add_argument("--gamma", type=float, default=2.0, help="focal loss gamma (default: 2.0)")
    g.add_argument("--alpha", type=parse_alpha, default="none",
                   help="focal class weights: auto (1/sqrt(class frequency) of the training CSV, mean 1), "
                        "none, or one comma-separated number per class (default: none)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=data.int_at_least(1), default=30,
                   help="maximum epochs; early stopping usually ends sooner (default: 30, the thesis gives none)")
    g.add_argument("--batch-size", type=data.int_at_least(1), default=128,
                   help="global batch: under torchrun each of N processes gets batch-size / N (default: 128)")
    g.add_argument("--lr", type=float, default=1e-4, help="AdamW peak learning rate (default: 1e-4)")
    g.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default: 1e-4)")
    g.add_argument("--warmup-epochs", type=float, nargs="?", const=1.0, default=0.0,
                   help="linear warmup length in epochs, then cosine to zero, stepped per iteration "
                        "(default: 0 = cosine only; the flag alone means 1)")
    g.add_argument("--clip-grad", type=float, default=None, help="clip the gradient norm to this (default: off)")
    g.add_argument("--ema", action="store_true", help="validate and keep as best an EMA of the weights")
    g.add_argument("--ema-decay", type=float, default=0.9998,
                   help="EMA decay per step (default: 0.9998, an averaging horizon of ~5k steps ~ 2 AffectNet "
                        "epochs at batch 128)")
    g.add_argument("--patience", type=data.int_at_least(1), default=4,
                   help="stop after this many epochs without a better macro-F1 (default: 4)")
    g.add_argument("--seed", type=int, default=42)
    g = p.add_argument_group("speed")
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision on CUDA (default: on; always off on CPU)")
    g.add_argument("--amp-dtype", choices=("float16", "bfloat16"), default="float16",
                   help="float16 with a GradScaler (thesis) or bfloat16 without one")
    g.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster convolutions on GPUs)")
    g.add_argument("--compile", action="store_true", help="torch.compile the training model")
    g = p.add_argument_group("run")
    g.add_argument("--experiment", default=None, help="run id (default: from model, loss, alpha and EMA)")
    g.add_argument("--out", default=None, help="output folder (default: results/<experiment>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    g.add_argument("--log-interval-s", type=float, default=5.0, help="seconds between progress lines (default: 5)")
    # Test hooks: make a NaN loss at this global step (1-based) / SIGTERM ourselves at step 1 of this epoch.
    g.add_argument("--debug-nan-at-step", type=int, default=None, help=argparse.SUPPRESS)
    g.add_argument("--debug-sigterm-at-epoch", type=int, default=None, help=argparse.SUPPRESS)
    return p


def probability(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}")
    return value


def parse_jitter(text: str) -> list[float]:
    """argparse type: brightness, contrast, saturation in [0, 1] and hue in [0, 0.5], comma-separated."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not all(0 <= v <= 1 for v in values[:3]) or not 0 <= values[3] <= 0.5:
        raise argparse.ArgumentTypeError(f"expected B,C,S,H with B, C, S in [0, 1] and H in [0, 0.5], got {text!r}")
    return values


def augment_from(args: argparse.Namespace) -> data.Augment:
    """The training augmentation the flags ask for."""
    return data.Augment(args.hflip, *args.jitter)


def parse_alpha(text: str) -> str | list[float]:
    """argparse type: "auto", "none" or comma-separated numbers (one per class, checked once the classes are known)."""
    if text in ("auto", "none"):
        return text
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, none or comma-separated numbers, got {text!r}") from None


# --- Run setup ---

@contextlib.contextmanager
def distributed(device_name: str) -> Iterator[tuple[torch.device, int, int]]:
    """(device, rank, world size); joins torchrun's process group (nccl on CUDA, gloo on CPU) for its lifetime."""
    device = models.resolve_device(device_name)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield device, 0, 1
        return
    rank = int(os.environ["RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device, rank, world
    finally:
        dist.destroy_process_group()


def resolve_alpha(args: argparse.Namespace, counts: list[int], classes: tuple[str, ...]) -> list[float] | None:
    """The focal-loss class weights the flags ask for (auto: from the training CSV's class counts)."""
    if args.alpha == "none":
        return None
    if args.loss != "focal":
        raise data.UserError("--alpha weights the focal loss only; add --loss focal or drop --alpha")
    if args.alpha != "auto":
        if len(args.alpha) != len(classes):
            raise data.UserError(f"--alpha: {len(args.alpha)} numbers for {len(classes)} classes "
                                 f"({', '.join(classes)})")
        return list(args.alpha)
    missing = [name for name, count in zip(classes, counts) if count == 0]
    if missing:
        raise data.UserError(f"--alpha auto: {args.train_csv} has no '{missing[0]}' images, so its weight "
                             f"1/sqrt(frequency) is undefined (give --alpha as {len(classes)} numbers)")
    return losses.class_alpha(counts)


def read_classes(args: argparse.Namespace) -> tuple[str, ...]:
    """The run's classes: the training CSV's; the validation CSV must declare the same ones."""
    classes, val_classes = data.read_classes(args.train_csv), data.read_classes(args.val_csv)
    if val_classes != classes:
        raise data.UserError(f"--val-csv {args.val_csv} has classes {', '.join(val_classes)} but --train-csv "
                             f"{args.train_csv} has {', '.join(classes)} (see their {data.CLASSES_FILE})")
    return classes


def default_experiment(args: argparse.Namespace) -> str:
    """A run id from the settings that tell runs apart, e.g. convnext_tiny_transformer2_focal_alpha_ema."""
    parts = [args.model + (str(args.blocks) if args.model in models.HYBRIDS else ""), args.loss]
    parts += ["alpha"] if args.alpha != "none" else []
    parts += ["ema"] if args.ema else []
    return "_".join(parts)


def check_resume(out: Path, resume: bool, recipe: dict) -> dict | None:
    """The last.pt checkpoint to continue (None for a fresh run); refuses to overwrite or to mix recipes."""
    path = out / "last.pt"
    if not resume:
        if path.exists():
            raise data.UserError(f"{out} already holds a run ({path}); add --resume to continue it, "
                                 "or pick another --out")
        return None
    if not path.exists():
        raise data.UserError(f"--resume: {path} not found (no finished epoch to resume; drop --resume to start)")
    checkpoint = models.load_checkpoint(path)
    state = checkpoint.get("train_state")
    if not isinstance(state, dict) or "recipe" not in state:
        raise models.CheckpointError(f"{path}: no training state to resume from (a best.pt-style checkpoint?)")
    changed = [f"{key} {state['recipe'].get(key)!r} -> {value!r}"
               for key, value in recipe.items() if state["recipe"].get(key) != value]
    if changed:
        raise data.UserError(f"--resume: {path} was trained with other settings ({'; '.join(changed)}); "
                             "pass its original flags, or pick another --out for a new run")
    return checkpoint


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed Python, NumPy and PyTorch; deterministic kernels on CPU, fast (autotuned, TF32) ones on CUDA."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cuda":
        # GPU runs trade bitwise reproducibility for speed: cuDNN autotuning and TF32 matmuls.
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed that depends on (seed, epoch, rank) only, so a resumed epoch draws what the uninterrupted one drew."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


class BalancedSampler(Sampler[int]):
    """Inverse-class-frequency sampling with replacement, len(dataset) / world draws per process and epoch.

    Each process draws from its own (seed, epoch, rank) stream: DDP ranks see different samples,
    and a resumed epoch redraws exactly what the uninterrupted run drew.
    """

    def __init__(self, labels: list[int], seed: int, rank: int = 0, world: int = 1) -> None:
        counts = np.bincount(labels)
        self.weights = torch.tensor([1.0 / counts[label] for label in labels], dtype=torch.float64)
        self.num_samples = math.ceil(len(labels) / world)
        self.seed, self.rank, self.epoch = seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's stream (as DistributedSampler.set_epoch)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, self.rank))
        return iter(torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LambdaLR factor per step: linear warmup to 1 over warmup_steps, then cosine to 0 at total_steps."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def rng_state() -> dict:
    """Python, NumPy, torch and CUDA generator states as checkpoint-safe values (lists and tensors)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss], "numpy": [name, keys.tolist(), pos, has_gauss, cached],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    """Restore rng_state()."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- Stopping ---

class NonFiniteLoss(data.UserError):
    """The loss became NaN or infinite: the run stops, the checkpoints of the last good epoch stay."""


class Interrupted(Exception):
    """A SIGINT/SIGTERM arrived during an epoch; the epoch is abandoned unsaved."""


class StopFlag:
    """Records the first SIGINT/SIGTERM; a second one gets the default handling and ends the process at once."""

    def __init__(self) -> None:
        self.signum = 0
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)


def any_rank(flag: bool, device: torch.device, world: int) -> bool:
    """True on every rank when the flag is true on one, so all ranks take the same branch."""
    if world == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value)
    return bool(value.item())


def resume_command(world: int, resume: bool) -> str:
    """This run's command line, with --resume when there is a checkpoint to continue."""
    argv = sys.argv + (["--resume"] if resume and "--resume" not in sys.argv else [])
    launcher = ["python"] if world == 1 else ["torchrun", f"--nproc_per_node={world}"]
    return shlex.join(launcher + argv)


# --- Training and validation ---

def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, loader: DataLoader, device: torch.device,
                    epoch: int, args: argparse.Namespace, log: Callable[[str], None], stop: StopFlag,
                    world: int, scaler: torch.amp.GradScaler | None = None,
                    ema: models.ModelEMA | None = None) -> dict:
    """One pass over the loader: {"train_loss", "lr", "seconds", "images_per_s"}; raises Interrupted / NonFiniteLoss."""
    model.train()
    steps = len(loader)
    amp_dtype = torch.bfloat16 if args.amp_dtype == "bfloat16" else torch.float16
    memory_format = torch.channels_last if args.channels_last else torch.preserve_format
    loss_sum, images, waited = 0.0, 0, 0.0
    start = last_print = ready = time.perf_counter()
    for step, (inputs, labels) in enumerate(loader, 1):
        waited += time.perf_counter() - ready  # time spent blocked on the loader
        global_step = (epoch - 1) * steps + step
        if args.debug_sigterm_at_epoch == epoch and step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        inputs = inputs.to(device, non_blocking=True, memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        with models.autocast(device, args.amp_on, amp_dtype):
            logits = model(inputs)
        loss = criterion(logits.float(), labels)
        if args.debug_nan_at_step == global_step:
            loss = loss * float("nan")
        # One sync per step, before backward: a NaN never reaches the weights, and under DDP one
        # all-reduce gives every rank the global mean loss and the same stop decision.
        status = torch.stack([loss.detach(), torch.tensor(float(stop.signum), device=device)])
        if world > 1:
            dist.all_reduce(status)
        step_loss, stopping = status.tolist()
        step_loss /= world
        if stopping:
            raise Interrupted(f"epoch {epoch} step {step}/{steps}")
        if not math.isfinite(step_loss):
            raise NonFiniteLoss(f"loss is {step_loss} at epoch {epoch} step {step}/{steps} (global step "
                                f"{global_step}); stopped, the checkpoints of epoch {epoch - 1} are kept. "
                                "Try a lower --lr, --clip-grad 1.0 or --amp-dtype bfloat16")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clipping must see the true gradients
        else:
            loss.backward()
        if args.clip_grad is not None:
            nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        if ema is not None:
            ema.update(model)
        loss_sum += step_loss
        images += inputs.shape[0] * world
        ready = time.perf_counter()
        if ready - last_print >= args.log_interval_s and step < steps:
            last_print, elapsed = ready, ready - start
            eta = timedelta(seconds=round(elapsed / step * (steps - step)))
            log(f"epoch {epoch}/{args.epochs} step {step}/{steps} loss {loss_sum / step:.4f} lr {lr:.3e} "
                f"{images / elapsed:.1f} img/s data-wait {waited / elapsed:.0%} eta {eta}")
    seconds = time.perf_counter() - start
    return {"train_loss": loss_sum / steps, "lr": lr, "seconds": seconds, "images_per_s": images / seconds,
            "data_wait": waited / seconds}


def evaluate(model: nn.Module, criterion: nn.Module, loader: DataLoader, device: torch.device, amp: bool,
             world: int, size: int, classes: tuple[str, ...]) -> tuple[dict, float, torch.Tensor]:
    """Validation (metrics, loss, logits [N, C] in CSV order) over the whole set, each image exactly once.

    Under DDP each rank predicts its shard (images rank, rank + world, ...) and all ranks gather the
    shards back into the CSV's order, so every rank computes the same metrics and stop decision.
    """
    if world > 1:
        # BatchNorm statistics (and so EMA buffers) drift apart per rank after the last step; use rank 0's.
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)
    logits, labels = models.predict_logits(model, loader, device, amp=amp)
    if world > 1:
        shards = [None] * world
        dist.all_gather_object(shards, (logits, labels))
        logits = torch.empty(size, logits.shape[1], dtype=logits.dtype)
        labels = torch.empty(size, dtype=labels.dtype)
        for rank, (shard_logits, shard_labels) in enumerate(shards):
            logits[rank::world], labels[rank::world] = shard_logits, shard_labels
    loss = criterion(logits.to(device), labels.to(device)).item()
    result = metrics.compute_metrics(labels.tolist(), logits.argmax(dim=1).tolist(), classes)
    return result, loss, logits


# --- Output files ---

def make_log(path: Path | None) -> Callable[..., None]:
    """log(line): print it and append it to train.log (append: a resumed run continues the log).

    log(line, echo=False) writes the file only (for errors, which also go to stderr). No path: a no-op,
    so only rank 0 speaks. The log is appended line by line, not written atomically: a crash costs
    at most the line being written.
    """
    if path is None:
        return lambda line, echo=True: None
    file = open(path, "a", encoding="utf-8")

    def log(line: str, echo: bool = True) -> None:
        if echo:
            print(line, flush=True)
        file.write(line + "\n")
        file.flush()
    return log


def write_json(path: Path, obj: dict) -> None:
    """Atomic, indented JSON."""
    with data.atomic_write(path) as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_predictions(out: Path, val: dict, samples: list[data.Sample], logits: torch.Tensor, title: str,
                      classes: tuple[str, ...]) -> None:
    """predictions.csv, metrics.json and the confusion matrices of the best weights (evaluate.py's writer)."""
    preds = logits.argmax(dim=1).tolist()
    metrics.write_report(out, val, list(classes), title=title,
                         predictions=([s.path for s in samples], [s.label for s in samples], preds,
                                      torch.softmax(logits, dim=1).numpy()))


def write_history(path: Path, rows: list[dict]) -> None:
    """history.csv, one row per epoch, rewritten whole (atomically) each epoch."""
    with data.atomic_write(path) as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main(args: argparse.Namespace) -> None:
    """Run (or resume) one training run."""
    with distributed(args.device) as (device, rank, world):
        args.amp_on = args.amp and device.type == "cuda"
        # Inputs first: a missing file stops the run in seconds, before any model is built.
        classes = read_classes(args)
        train_samples = data.read_index(args.train_csv, args.data_root, check_files=True)
        val_samples = data.read_index(args.val_csv, args.data_root, check_files=True)
        counts = data.class_counts(train_samples, len(classes))
        alpha = resolve_alpha(args, counts, classes)
        if args.batch_size % world:
            raise data.UserError(f"--batch-size {args.batch_size} does not split evenly over {world} processes")
        batch = args.batch_size // world
        args.experiment = args.experiment or default_experiment(args)
        out = Path(args.out or Path("results") / args.experiment)
        recipe = {key: getattr(args, key) for key in RECIPE_KEYS} | {
            "alpha": alpha, "train_images": len(train_samples), "classes": list(classes)}
        checkpoint = check_resume(out, args.resume, recipe)
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            for stale in out.glob(".*.tmp"):  # half-written files of a run killed (-9) mid-write
                stale.unlink()
        log = make_log(out / "train.log" if rank == 0 else None)
        state = checkpoint["train_state"] if checkpoint is not None else None
        if state is not None and state["finished"]:
            log(f"{out}: this run already finished ({state['stop_reason']} after epoch {state['epoch']}, best "
                f"macro-F1 {state['best']['macro_f1']:.4f} at epoch {state['best']['epoch']}); nothing to do")
            return

        seed_everything(args.seed, device)
        # On resume the weights come from last.pt, so no ImageNet download is needed.
        model = models.build_model(args.model, num_classes=len(classes), blocks=args.blocks,
                                   weights="none" if checkpoint is not None else args.weights)
        model.to(device)
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
        ema = models.ModelEMA(model, decay=args.ema_decay) if args.ema else None
        criterion = (nn.CrossEntropyLoss() if args.loss == "ce" else losses.FocalLoss(args.gamma, alpha)).to(device)
        # fused: one kernel for the whole update instead of a handful per parameter tensor (on a 2-core
        # CPU the unfused update of ConvNeXt-Tiny takes ~110 ms a step, the fused one ~30 ms).
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                      fused=device.type in ("cuda", "cpu"))

        train_set = data.FaceDataset(train_samples, args.img_size, train=True, augment=augment_from(args))
        if args.sampler == "balanced":
            sampler = BalancedSampler([s.label for s in train_samples], args.seed, rank, world)
        else:
            # Also for one process: its per-epoch shuffle depends on (seed, epoch) only, so resume is exact.
            sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
        steps = len(sampler) // batch
        if steps == 0:
            raise data.UserError(f"{args.train_csv}: {len(train_samples)} images give no full batch of "
                                 f"{args.batch_size}; lower --batch-size")
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(args.epochs * steps, round(args.warmup_epochs * steps)))
        scaler = torch.amp.GradScaler("cuda") if args.amp_on and args.amp_dtype == "float16" else None
        val_set = data.FaceDataset(val_samples, args.img_size, train=False)
        # DDP validation shards: rank r predicts images r, r + world, ... (no padding, no duplicates).
        val_shard = Subset(val_set, range(rank, len(val_set), world)) if world > 1 else val_set
        val_loader = data.make_loader(val_shard, batch, args.workers, seed=args.seed)

        start_epoch, best, bad_epochs, history = 1, None, 0, []
        if state is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state["scaler"] is not None:
                scaler.load_state_dict(state["scaler"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            start_epoch, best, bad_epochs, history = state["epoch"] + 1, state["best"], state["bad_epochs"], \
                state["history"]
            set_rng_state(state["rng"])
        train_model = DistributedDataParallel(model) if world > 1 else model
        if args.compile:
            train_model = torch.compile(train_model)

        arch = {"name": args.model, "blocks": args.blocks, "num_classes": len(classes), "img_size": args.img_size,
                "classes": list(classes), "class_counts": counts}
        params = models.count_params(model)
        if rank == 0:
            write_json(out / "config.json", {
                "args": vars(args) | {"out": str(out)}, "alpha": alpha, "experiment": args.experiment,
                "argv": sys.argv, "torch": torch.__version__, "torchvision": torchvision.__version__,
                "python": platform.python_version(), "device": str(device),
                "device_name": models.device_name(device), "world_size": world, "batch_per_process": batch,
                "steps_per_epoch": steps, "params": params,
                "resumed_after_epoch": start_epoch - 1})
            if history:  # drop a row written after the last checkpoint (crash between the two writes)
                write_history(out / "history.csv", history)
        log(f"{'resuming' if state else 'starting'} {args.experiment}: {args.model} ({params / 1e6:.3f} M params) "
            f"on {device} x {world}, {len(train_samples)} train / {len(val_samples)} val images, {steps} steps "
            f"of {args.batch_size} ({batch} per process) per epoch, epochs {start_epoch}..{args.epochs}, "
            f"out {out}")

        stop = StopFlag()
        for epoch in range(start_epoch, args.epochs + 1):
            epoch_start = time.perf_counter()
            sampler.set_epoch(epoch)
            # A fresh loader per epoch, seeded by (seed, epoch, rank): its workers' augmentation streams
            # then do not depend on earlier epochs, which is what makes --resume exact.
            loader = data.make_loader(train_set, batch, args.workers, sampler=sampler,
                                      seed=epoch_seed(args.seed, epoch, rank), drop_last=True)
            try:
                train = train_one_epoch(train_model, criterion, optimizer, scheduler, loader, device, epoch, args,
                                        log, stop, world, scaler=scaler, ema=ema)
            except Interrupted as where:
                interrupted(log, out, epoch - 1, f"during {where}", stop.signum, world)
            except NonFiniteLoss as err:
                log(f"error: {err}", echo=False)
                raise
            del loader  # ends its workers before validation starts
            eval_model = ema.module if ema is not None else model
            val, val_loss, logits = evaluate(eval_model, criterion, val_loader, device, args.amp_on, world,
                                             len(val_set), classes)
            improved = best is None or (val["macro_f1"], val["accuracy"]) > (best["macro_f1"], best["accuracy"])
            if improved:
                best = val | {"epoch": epoch, "val_loss": val_loss}
            bad_epochs = 0 if improved else bad_epochs + 1
            early = bad_epochs >= args.patience
            stop_reason = "early stopping" if early else "max epochs" if epoch == args.epochs else None
            history.append({"epoch": epoch, "lr": train["lr"], "train_loss": train["train_loss"],
                            "val_loss": val_loss, "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"],
                            **{f"f1_{name}": val["per_class"][name]["f1"] for name in classes},
                            "seconds": time.perf_counter() - epoch_start, "images_per_s": train["images_per_s"]})
            if rank == 0:
                if improved:  # best.pt before last.pt: a crash between the two leaves a resumable pair
                    models.save_checkpoint(out / "best.pt", eval_model, arch, args.experiment,
                                           metrics=val | {"epoch": epoch})
                    write_predictions(out, val, val_samples, logits, f"{args.experiment}, epoch {epoch}", classes)
                write_history(out / "history.csv", history)
                models.save_checkpoint(out / "last.pt", model, arch, args.experiment, metrics=val | {"epoch": epoch},
                                       train_state={
                                           "epoch": epoch, "finished": stop_reason is not None,
                                           "stop_reason": stop_reason, "best": best, "bad_epochs": bad_epochs,
                                           "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                           "scaler": scaler.state_dict() if scaler is not None else None,
                                           "ema": ema.state_dict() if ema is not None else None,
                                           "rng": rng_state(), "history": history, "recipe": recipe})
                write_json(out / "summary.json", {
                    "experiment": args.experiment, "model": args.model, "blocks": args.blocks,
                    "best_epoch": best["epoch"], "accuracy": best["accuracy"], "macro_f1": best["macro_f1"],
                    "val_loss": best["val_loss"], "per_class": best["per_class"], "params": params,
                    "epochs_run": epoch, "finished": stop_reason is not None, "stop_reason": stop_reason,
                    "wall_time_s": sum(row["seconds"] for row in history), "device": str(device),
                    "world_size": world, "settings": recipe | {"amp": args.amp_on, "amp_dtype": args.amp_dtype,
                                                               "ema_weights_evaluated": args.ema}})
            verdict = "best" if improved else f"best {best['macro_f1']:.4f} at epoch {best['epoch']}"
            log(f"epoch {epoch}/{args.epochs} done in {history[-1]['seconds']:.1f} s: train loss "
                f"{train['train_loss']:.4f}, val loss {val_loss:.4f}, accuracy {val['accuracy']:.4f}, macro-F1 "
                f"{val['macro_f1']:.4f} ({verdict}), {train['images_per_s']:.1f} img/s, "
                f"data-wait {train['data_wait']:.0%}")
            if early:
                log(f"early stopping: no better macro-F1 in the {args.patience} epoch(s) after epoch {best['epoch']}")
                break
            if any_rank(stop.signum != 0, device, world):  # the signal came during validation: epoch is saved
                interrupted(log, out, epoch, f"after epoch {epoch}", stop.signum, world)
        log(f"done: best epoch {best['epoch']}, accuracy {best['accuracy']:.4f}, macro-F1 {best['macro_f1']:.4f}; "
            f"outputs in {out}")


def interrupted(log: Callable[[str], None], out: Path, kept_epoch: int, where: str, signum: int,
                world: int) -> NoReturn:
    """Say what was kept and how to go on, then exit 128 + signal (130 for SIGINT, 143 for SIGTERM)."""
    signum = signum or signal.SIGTERM  # a DDP rank that only heard of the signal through the all-reduce
    if kept_epoch:
        kept = f"{out / 'last.pt'} holds epoch {kept_epoch}. Resume with: {resume_command(world, True)}"
    else:
        kept = f"no epoch had finished, nothing was saved. Start again with: {resume_command(world, False)}"
    log(f"stopped by {signal.Signals(signum).name} {where}; {kept}")
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    args = get_args_parser().parse_args()
    try:
        main(args)
    except data.UserError as err:
        sys.exit(f"error: {err}")
