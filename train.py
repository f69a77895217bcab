"""Train one model on index CSVs with the thesis recipe: resumable, deterministic, distributed.

    python train.py --train-csv T --val-csv V --model convnext_tiny --loss focal --alpha auto [--out DIR]
    torchrun --nproc_per_node=N train.py ...      # DDP: --batch-size stays the global batch, N processes
                                                  # get batch-size / N each (it must divide evenly)

Each epoch trains, then validates (accuracy, macro-F1, per-class F1, loss); best.pt is kept by macro-F1
(ties: accuracy; with --ema the EMA weights are validated and kept), last.pt holds the full training
state, and the run stops early after --patience epochs without improvement. Files in --out:
config.json, history.csv (one row per epoch; lr = the last step's), curves.png (loss, accuracy and
macro-F1 per epoch, the best epoch marked), train.log, last.pt, best.pt, summary.json, and for the best
weights predictions.csv, metrics.json, per_class.csv and the confusion matrices (CSV + PNG, raw and
row-normalised).

Ctrl-C / SIGTERM / SIGHUP save last.pt at the current step and exit with 130 / 143 / 129; last.pt is
also saved mid-epoch every --checkpoint-every minutes. --resume continues from the saved step: every
epoch's shuffle, augmentation and sampling depend only on (seed, epoch, step, rank) and the RNG states
are in last.pt, so a resumed run ends where an uninterrupted one ends (bit for bit on CPU). A NaN/inf
loss stops the run naming the epoch and steps, before the bad steps reach a checkpoint. On CPU two runs
with the same seed give identical metrics; on CUDA cuDNN autotuning and TF32 are on, so GPU runs are
close but not bitwise equal.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import random
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterator, NoReturn

import numpy as np
import torch
import torch.distributed as dist
import torchvision
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

import data
import losses
import metrics
import models
import plots
import utils

try:
    import fcntl  # POSIX: the run-folder lock
except ImportError:  # Windows
    fcntl = None

# The settings that define a run. Resuming with any of them changed would not continue the same run
# (e.g. --epochs sets the cosine schedule's length), so --resume refuses instead of mixing recipes.
RECIPE_KEYS = ("model", "blocks", "img_size", "hflip", "jitter", "loss", "gamma", "alpha", "epochs", "batch_size",
               "lr", "weight_decay", "warmup_epochs", "ema", "ema_decay", "clip_grad", "patience", "seed", "sampler",
               "grayscale", "affine", "erase")
# Recipe keys added after the first checkpoints: a last.pt that lacks one was trained with this value.
RECIPE_ADDED = {"grayscale": False, "affine": [0.0, 0.0, 0.0], "erase": 0.0}


def get_args_parser() -> argparse.ArgumentParser:
    """The command-line flags; defaults are the thesis recipe where it gives one."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--train-csv", required=True, help="training index CSV (path,label[,face box])")
    g.add_argument("--val-csv", required=True, help="validation index CSV")
    g.add_argument("--data-root", help="folder relative image paths start from (default: each CSV's folder)")
    g.add_argument("--img-size", type=utils.int_at_least(1), default=utils.DEFAULT_IMG_SIZE,
                   help=f"input side in pixels (default: {utils.DEFAULT_IMG_SIZE})")
    g.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="data-loading processes per training process (default: min(8, CPUs))")
    g.add_argument("--hflip", type=probability, default=0.5,
                   help="training: probability of a horizontal flip (default: 0.5, as the thesis)")
    g.add_argument("--jitter", type=parse_jitter, default=parse_jitter("0.2,0.2,0.2,0.02"), metavar="B,C,S,H",
                   help="training colour jitter: brightness, contrast, saturation (factor in [1-x, 1+x]) and hue "
                        "(shift in [-x, x] turns), as torchvision's ColorJitter (default: 0.2,0.2,0.2,0.02; "
                        "0,0,0,0 = off)")
    g.add_argument("--affine", type=parse_affine, default=parse_affine("0,0,0"), metavar="DEG,SHIFT,SCALE",
                   help="random affine per training image: rotation in [-DEG, DEG], shift up to SHIFT of the side, "
                        "zoom in [1-SCALE, 1+SCALE] (default: 0,0,0 = off; not in the thesis)")
    g.add_argument("--erase", type=probability, default=0.0,
                   help="random-erasing probability per training image (default: 0 = off; not in the thesis)")
    g.add_argument("--grayscale", action="store_true",
                   help="train on grayscale faces; recorded in the checkpoint, so every script feeds the model "
                        "grayscale (for grayscale data such as FER2013)")
    g.add_argument("--sampler", choices=("shuffle", "balanced"), default="shuffle",
                   help="shuffle: every image once per epoch (thesis); balanced: inverse class frequency, "
                        "with replacement, same number of draws (beyond the thesis)")
    g = p.add_argument_group("model and loss")
    g.add_argument("--model", required=True, choices=models.MODEL_NAMES)
    g.add_argument("--blocks", type=utils.int_at_least(1), default=1,
                   help="Transformer blocks of the hybrid (default: 1)")
    g.add_argument("--weights", default="imagenet", help="imagenet | none (random init) | PATH (backbone state dict)")
    g.add_argument("--loss", choices=("ce", "focal"), default="ce", help="cross-entropy or focal loss (default: ce)")
    g.add_argument("--gamma", type=float, default=2.0, help="focal loss gamma (default: 2.0)")
    g.add_argument("--alpha", type=parse_alpha, default="none",
                   help="focal class weights: auto (1/sqrt(class frequency) of the training CSV, mean 1), "
                        "none, or one comma-separated number per class (default: none)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=utils.int_at_least(1), default=30,
                   help="maximum epochs; early stopping usually ends sooner (default: 30, the thesis gives none)")
    g.add_argument("--batch-size", type=utils.int_at_least(1), default=128,
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
    g.add_argument("--patience", type=utils.int_at_least(1), default=4,
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
    g.add_argument("--checkpoint-every", type=float, default=10.0, metavar="MIN",
                   help="also save last.pt within an epoch every MIN minutes of training, so a crash or preemption "
                        "loses at most that much; SIGTERM / SIGINT / SIGHUP save at the current step at any "
                        "setting (default: 10; 0 = at epoch ends only)")
    g.add_argument("--log-interval-s", type=float, default=5.0, help="seconds between progress lines (default: 5)")
    # Test hooks: make a NaN loss at this global step (1-based) / send ourselves a signal at the start of a step.
    g.add_argument("--debug-nan-at-step", type=int, default=None, help=argparse.SUPPRESS)
    g.add_argument("--debug-signal", type=debug_signal, default=None, help=argparse.SUPPRESS)
    return p


def debug_signal(text: str) -> tuple[int, int, int]:
    """argparse type of the test hook: EPOCH:STEP:SIGNAL, e.g. 2:1:SIGTERM."""
    epoch, step, name = text.split(":")
    return int(epoch), int(step), int(getattr(signal, name))


probability = utils.float_in(0.0, 1.0, "a probability in [0, 1]")


def float_list(expected: str, highs: tuple[float, ...]) -> Callable[[str], list[float]]:
    """argparse type: len(highs) comma-separated numbers, the i-th in [0, highs[i]]; `expected` names them."""
    def parse(text: str) -> list[float]:
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) != len(highs) or not all(0 <= v <= high for v, high in zip(values, highs)):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return values
    return parse


parse_jitter = float_list("B,C,S,H with B, C, S in [0, 1] and H in [0, 0.5]", (1, 1, 1, 0.5))
parse_affine = float_list("DEG,SHIFT,SCALE with DEG in [0, 180] and SHIFT, SCALE in [0, 0.5]", (180, 0.5, 0.5))


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
    """(device, rank, world size); under torchrun (even with one process) joins its process group (nccl on CUDA,
    gloo on CPU) for its lifetime and the model trains under DDP."""
    device = models.resolve_device(device_name)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "RANK" not in os.environ:  # a plain `python train.py`
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
        raise utils.UserError("--alpha weights the focal loss only; add --loss focal or drop --alpha")
    if args.alpha != "auto":
        if len(args.alpha) != len(classes):
            raise utils.UserError(f"--alpha: {len(args.alpha)} numbers for {len(classes)} classes "
                                  f"({', '.join(classes)})")
        return list(args.alpha)
    return data.focal_alpha(counts, classes, args.train_csv)


def run_classes(args: argparse.Namespace) -> tuple[str, ...]:
    """The run's classes: the training CSV's; the validation CSV must declare the same ones."""
    classes, val_classes = data.read_classes(args.train_csv), data.read_classes(args.val_csv)
    if val_classes != classes:
        raise utils.UserError(f"--val-csv {args.val_csv} has classes {', '.join(val_classes)} but --train-csv "
                              f"{args.train_csv} has {', '.join(classes)} (see their {data.CLASSES_FILE})")
    return classes


def default_experiment(args: argparse.Namespace) -> str:
    """A run id from the settings that tell runs apart, e.g. convnext_tiny_transformer2_focal_alpha_ema."""
    parts = [args.model + (str(args.blocks) if args.model in models.HYBRIDS else ""), args.loss]
    parts += ["alpha"] if args.alpha != "none" else []
    parts += ["ema"] if args.ema else []
    return "_".join(parts)


@dataclass(frozen=True)
class RunInputs:
    """What the flags and the index CSVs fix before anything is built: data, recipe, run id and folder."""

    experiment: str
    out: Path
    classes: tuple[str, ...]
    train_samples: list[data.Sample]
    val_samples: list[data.Sample]
    alpha: list[float] | None
    batch: int  # per process
    recipe: dict  # RECIPE_KEYS and the data they saw: --resume refuses another
    arch: dict  # the model's description, stored in every checkpoint


def read_inputs(args: argparse.Namespace, world: int) -> RunInputs:
    """Read and check the index CSVs and the flags that depend on them; any problem is a utils.UserError."""
    # Inputs first: a missing file stops the run in seconds, before any model is built.
    classes = run_classes(args)
    train_samples = data.read_index(args.train_csv, args.data_root, check_files=True)
    val_samples = data.read_index(args.val_csv, args.data_root, check_files=True)
    counts = data.class_counts(train_samples, len(classes))
    alpha = resolve_alpha(args, counts, classes)
    if args.batch_size % world:
        raise utils.UserError(f"--batch-size {args.batch_size} does not split evenly over {world} processes")
    experiment = args.experiment or default_experiment(args)
    recipe = {key: getattr(args, key) for key in RECIPE_KEYS} | {
        "alpha": alpha, "train_images": len(train_samples), "classes": list(classes)}
    arch = {"name": args.model, "blocks": args.blocks, "num_classes": len(classes), "img_size": args.img_size,
            "classes": list(classes), "class_counts": counts, "sampler": args.sampler,
            "grayscale": args.grayscale, "normalization": "imagenet"}
    return RunInputs(experiment, Path(args.out or Path("results") / experiment), classes, train_samples,
                     val_samples, alpha, args.batch_size // world, recipe, arch)


def claim_run_folder(out: Path, cleanup: contextlib.ExitStack) -> None:
    """Make the run folder, hold out/.lock until main ends (another live run on the folder is an error naming it)
    and drop the temp files of a run killed (-9) mid-write.

    flock, not a pid file: the kernel drops the lock when its process dies (kill -9, crash, reboot), so a lock
    left behind is taken over without asking. Where flock does not exist (Windows) nothing is locked.
    """
    path = out / ".lock"
    try:
        out.mkdir(parents=True, exist_ok=True)
        file = open(path, "a+", encoding="utf-8") if fcntl is not None else None
    except OSError as err:
        raise utils.write_error(path if out.is_dir() else out, err) from None
    if file is not None:
        cleanup.callback(file.close)  # released on every way out of main, errors included
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            raise utils.UserError(f"{out} is in use by another training run ({holder}); wait for it to end, or pick "
                                  "another --out") from None
        file.seek(0)
        file.truncate()
        file.write(f"pid {os.getpid()} on {platform.node()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        file.flush()
    for stale in out.glob(".*.tmp"):
        stale.unlink()


def check_resume(out: Path, resume: bool, recipe: dict) -> dict | None:
    """The last.pt checkpoint to continue (None for a fresh run); refuses to overwrite or to mix recipes.

    A last.pt that cannot be read (truncated by a failing disk) is reported with the previous checkpoint,
    last.prev.pt, which every save keeps, and the command that resumes from it.
    """
    path, previous = out / "last.pt", out / "last.prev.pt"
    if not resume:
        if path.exists() or previous.exists():
            raise utils.UserError(f"{out} already holds a run ({path}); add --resume to continue it, "
                                  "or pick another --out")
        return None
    try:
        if not path.exists():
            raise models.CheckpointError(f"--resume: {path} not found")
        checkpoint = models.load_checkpoint(path)
    except models.CheckpointError as err:
        try:
            earlier = models.load_checkpoint(previous) if previous.exists() else None
        except models.CheckpointError:
            earlier = None
        if earlier is None and not path.exists():
            raise utils.UserError(f"--resume: {path} not found (no checkpoint to resume; drop --resume to "
                                  "start)") from None
        if earlier is None:
            raise
        raise utils.UserError(f"{err}; the previous checkpoint {previous} ({position_text(earlier['train_state'])}) "
                              f"is intact: resume from it with `mv {previous} {path}` and the same command") from None
    state = checkpoint.get("train_state")
    if not isinstance(state, dict) or "recipe" not in state:
        raise models.CheckpointError(f"{path}: no training state to resume from (a best.pt-style checkpoint?)")
    trained = RECIPE_ADDED | state["recipe"]
    changed = [f"{key} {trained.get(key)!r} -> {value!r}" for key, value in recipe.items() if trained.get(key) != value]
    if changed:
        raise utils.UserError(f"--resume: {path} was trained with other settings ({'; '.join(changed)}); "
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


class Loaders:
    """The run's data: a fresh training loader per epoch and this process's validation loader."""

    def __init__(self, args: argparse.Namespace, inputs: RunInputs, rank: int, world: int) -> None:
        self.batch, self.workers, self.seed, self.rank = inputs.batch, args.workers, args.seed, rank
        self.train_set = data.FaceDataset(inputs.train_samples, args.img_size, grayscale=args.grayscale)
        # Also for one process: its per-epoch shuffle depends on (seed, epoch) only, so resume is exact.
        self.shuffle = DistributedSampler(self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
        self.balanced = None  # --sampler balanced: each image's draw weight, 1 / its class's count
        if args.sampler == "balanced":
            labels = np.array([s.label for s in inputs.train_samples])
            self.balanced = torch.from_numpy(1.0 / np.bincount(labels)[labels])
        self.steps = len(self.shuffle) // self.batch  # full batches only (balanced draws as many images)
        if self.steps == 0:
            raise utils.UserError(f"{args.train_csv}: {len(inputs.train_samples)} images give no full batch of "
                                  f"{args.batch_size}; lower --batch-size")
        val_set = data.FaceDataset(inputs.val_samples, args.img_size, grayscale=args.grayscale)
        self.val_size = len(val_set)  # evaluate gathers the shards back into the whole set
        # DDP validation shards: rank r predicts images r, r + world, ... (no padding, no duplicates).
        val_shard = Subset(val_set, range(rank, len(val_set), world)) if world > 1 else val_set
        self.val_loader = data.make_loader(val_shard, self.batch, args.workers, seed=args.seed)

    def epoch_loader(self, epoch: int, done: EpochProgress | None) -> DataLoader:
        """The epoch's batches after the `done` steps."""
        # What an epoch yields depends on (seed, epoch, rank) only, so a resumed epoch skips to where it stopped.
        seed = epoch_seed(self.seed, epoch, self.rank)
        if self.balanced is None:
            self.shuffle.set_epoch(epoch)
            order = list(self.shuffle)
        else:  # inverse class frequency, with replacement; DDP ranks draw from their own streams
            generator = torch.Generator().manual_seed(seed)
            order = torch.multinomial(self.balanced, len(self.shuffle), replacement=True, generator=generator).tolist()
        skip = done.step * self.batch if done else 0
        return data.make_loader(self.train_set, self.batch, self.workers, sampler=order[skip:], seed=seed,
                                drop_last=True)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LambdaLR factor per step: linear warmup to 1 over warmup_steps, then cosine to 0 at total_steps."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


@dataclass
class Training:
    """The live objects of a training step (last.pt holds their state)."""

    model: nn.Module  # the bare model: what checkpoints hold
    train_model: nn.Module  # what the steps call: the model under DDP and/or torch.compile (see wrap)
    augment: data.BatchAugment
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    ema: models.ModelEMA | None

    @property
    def eval_model(self) -> nn.Module:
        """The weights validated and kept as best.pt: the EMA's with --ema."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict:
        """The optimizer, schedule, loss-scale and EMA states (last.pt's training state besides the weights)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def wrap(self, compile_model: bool) -> None:
        """Set train_model: DDP when distributed, then torch.compile if asked (once the weights are restored)."""
        self.train_model = DistributedDataParallel(self.model) if dist.is_initialized() else self.model
        if compile_model:
            self.train_model = torch.compile(self.train_model)


def build_training(args: argparse.Namespace, inputs: RunInputs, cfg: StepConfig, resuming: bool) -> Training:
    """Model (on cfg.device), augmentation, loss, AdamW, warmup-cosine schedule, GradScaler and EMA per the flags."""
    # On resume the weights come from last.pt, so no ImageNet download is needed.
    model = models.build_model(args.model, num_classes=len(inputs.classes), blocks=args.blocks,
                               weights="none" if resuming else args.weights)
    model.to(cfg.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = models.ModelEMA(model, decay=args.ema_decay) if args.ema else None
    criterion = (nn.CrossEntropyLoss() if args.loss == "ce"
                 else losses.FocalLoss(args.gamma, inputs.alpha)).to(cfg.device)
    # fused: one kernel for the whole update instead of a handful per parameter tensor (on a 2-core
    # CPU the unfused update of ConvNeXt-Tiny takes ~110 ms a step, the fused one ~30 ms), and with a
    # GradScaler it checks for inf gradients on the device instead of waiting for a read.
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                  fused=cfg.device.type in ("cuda", "cpu"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(args.epochs * cfg.steps, round(args.warmup_epochs * cfg.steps)))
    scaler = torch.amp.GradScaler("cuda") if cfg.amp_on and cfg.amp_dtype == "float16" else None
    augment = data.BatchAugment(data.Augment(args.hflip, *args.jitter, *args.affine, args.erase))
    return Training(model, model, augment, criterion, optimizer, scheduler, scaler, ema)


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


def restore(training: Training, checkpoint: dict | None) -> tuple[dict, EpochProgress | None]:
    """The run's progress and the unfinished epoch's; resuming, training and the RNGs continue from last.pt."""
    run = {"epoch": 0, "best": None, "bad_epochs": 0, "history": [], "finished": False, "stop_reason": None}
    if checkpoint is None:
        return run, None
    state = checkpoint["train_state"]
    training.model.load_state_dict(checkpoint["model"])
    training.optimizer.load_state_dict(state["optimizer"])
    training.scheduler.load_state_dict(state["scheduler"])
    if training.scaler is not None and state["scaler"] is not None:
        training.scaler.load_state_dict(state["scaler"])
    if training.ema is not None:
        training.ema.load_state_dict(state["ema"])
    run |= {key: state[key] for key in ("epoch", "best", "bad_epochs", "history")}
    set_rng_state(state["rng"])
    return run, EpochProgress(**state["partial"]) if state.get("partial") else None


# --- Stopping and checkpoint positions ---

class NonFiniteLoss(utils.UserError):
    """The loss became NaN or infinite: the run stops before anything of it reaches a checkpoint."""


class Interrupted(Exception):
    """A SIGINT/SIGTERM/SIGHUP arrived during an epoch: args are (where it stopped, what last.pt holds)."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopFlag:
    """Records the first SIGINT/SIGTERM/SIGHUP; a second one gets the default action and ends the process at once
    (a checkpoint being saved then is a temp file, cleaned at the next start; the previous last.pt is intact)."""

    def __init__(self) -> None:
        self.signum = 0
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum
        for other in STOP_SIGNALS:
            signal.signal(other, signal.SIG_DFL)


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


def interrupted(log: Callable[[str], None], out: Path, where: str, kept: str, signum: int, world: int) -> NoReturn:
    """Say what was kept and how to go on, then exit 128 + signal (130 SIGINT, 143 SIGTERM, 129 SIGHUP)."""
    signum = signum or signal.SIGTERM  # a DDP rank that only heard of the signal through the all-reduce
    log(f"stopped by {signal.Signals(signum).name} {where}; {out / 'last.pt'} holds {kept}. "
        f"Resume with: {resume_command(world, True)}")
    raise SystemExit(128 + signum)


@dataclass
class EpochProgress:
    """How far an epoch got: steps done and the running sums its history row needs. A mid-epoch last.pt
    stores it, so a run resumed there finishes the epoch with the numbers an uninterrupted run has."""

    step: int = 0
    loss_sum: float = 0.0
    images: int = 0
    seconds: float = 0.0


def position_text(state: dict) -> str:
    """Where a last.pt stands: 'step 120 of epoch 4' (saved mid-epoch) or 'epoch 3' (at its end)."""
    partial = state.get("partial")
    if partial:
        return f"step {partial['step']} of epoch {state['epoch'] + 1}"
    return f"epoch {state['epoch']}"


# --- Training and validation ---

# How often the loop reads the GPU (loss, NaN, signals under DDP): a read waits for all queued work, so on CUDA
# it happens every SYNC_S seconds (one process) or every DDP_SYNC_STEPS steps (the same step on every rank, so all
# take the same decision), never per step. On a CPU nothing is queued: it reads every step.
SYNC_S = 2.0
DDP_SYNC_STEPS = 20


@dataclass(frozen=True)
class StepConfig:
    """The settings the training steps read: the flags that shape a step and where the run stands."""

    device: torch.device
    rank: int
    world: int
    epochs: int
    steps: int  # per epoch
    seed: int
    amp_on: bool
    amp_dtype: str  # "float16" | "bfloat16"
    channels_last: bool
    clip_grad: float | None
    checkpoint_every: float  # minutes; 0 = at epoch ends only
    log_interval_s: float
    debug_nan_at_step: int | None = None
    debug_signal: tuple[int, int, int] | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, device: torch.device, rank: int, world: int,
                  steps: int) -> StepConfig:
        """The flags' values; mixed precision only where the device offers it."""
        # On a CPU only bfloat16 autocast is offered (it runs on AVX-512 BF16 / AMX units; float16 would not).
        amp_on = args.amp and (device.type == "cuda" or args.amp_dtype == "bfloat16")
        return cls(device, rank, world, args.epochs, steps, args.seed, amp_on, args.amp_dtype, args.channels_last,
                   args.clip_grad, args.checkpoint_every, args.log_interval_s, args.debug_nan_at_step,
                   args.debug_signal)


def step_generator(seed: int, epoch: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """The augmentation draws of one step: seeded by (seed, epoch, step, rank) only, so they do not depend on the
    loader workers and a run resumed at a step draws what the uninterrupted run drew."""
    seed = int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(seed)


def train_step(training: Training, inputs: torch.Tensor, labels: torch.Tensor, cfg: StepConfig, epoch: int,
               step: int) -> tuple[torch.Tensor, float]:
    """One optimisation step on a loader batch: (its detached loss, the lr it used)."""
    generator = step_generator(cfg.seed, epoch, step, cfg.rank, cfg.device)
    inputs = training.augment(inputs.to(cfg.device, non_blocking=True), generator)
    if cfg.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    labels = labels.to(cfg.device, non_blocking=True)
    amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16
    with models.autocast(cfg.device, cfg.amp_on, amp_dtype):
        logits = training.train_model(inputs)
    loss = training.criterion(logits.float(), labels)
    if cfg.debug_nan_at_step == (epoch - 1) * cfg.steps + step:
        loss = loss * float("nan")
    optimizer, scaler = training.optimizer, training.scaler
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clipping must see the true gradients
    else:
        loss.backward()
    if cfg.clip_grad is not None:
        nn.utils.clip_grad_norm_(training.train_model.parameters(), cfg.clip_grad)
    if scaler is not None:
        scaler.step(optimizer)  # the fused AdamW takes the inf check on the device: no sync
        scaler.update()
    else:
        optimizer.step()
    lr = optimizer.param_groups[0]["lr"]
    training.scheduler.step()
    if training.ema is not None:
        training.ema.update(training.train_model)
    return loss.detach(), lr


def train_one_epoch(training: Training, loader: DataLoader, cfg: StepConfig, epoch: int, log: Callable[[str], None],
                    stop: StopFlag, done: EpochProgress | None = None,
                    checkpoint: Callable[[EpochProgress], None] | None = None) -> dict:
    """The epoch's remaining steps (after `done`): {"train_loss", "lr", "seconds", "images_per_s", "data_wait"}.

    checkpoint(progress) saves last.pt mid-epoch: every --checkpoint-every minutes and when a stop signal
    arrives (then Interrupted is raised). A non-finite loss raises NonFiniteLoss before any checkpoint is written,
    naming the first bad step.
    """
    training.train_model.train()
    done = done or EpochProgress()
    # Device-side running sums: adding to them queues work instead of waiting for it.
    loss_sum = torch.tensor(done.loss_sum, dtype=torch.float64, device=cfg.device)
    counter = torch.tensor(done.step, device=cfg.device)
    first_bad = torch.tensor(-1, device=cfg.device)
    bad_value = torch.tensor(0.0, device=cfg.device)
    images, waited, lr = done.images, 0.0, training.optimizer.param_groups[0]["lr"]
    start = last_sync = last_print = last_save = ready = time.perf_counter()
    synced_step, steps = done.step, cfg.steps
    for step, (inputs, labels) in enumerate(loader, done.step + 1):
        waited += time.perf_counter() - ready  # time spent blocked on the loader
        if cfg.debug_signal is not None and cfg.debug_signal[:2] == (epoch, step):
            os.kill(os.getpid(), cfg.debug_signal[2])
        loss, lr = train_step(training, inputs, labels, cfg, epoch, step)
        counter += 1
        newly_bad = ~torch.isfinite(loss) & (first_bad < 0)
        first_bad = torch.where(newly_bad, counter, first_bad)
        bad_value = torch.where(newly_bad, loss, bad_value)
        loss_sum += loss
        images += inputs.shape[0] * cfg.world
        ready = time.perf_counter()

        if cfg.device.type == "cuda" and step < steps and not (stop.signum and cfg.world == 1):
            if cfg.world == 1 and ready - last_sync < SYNC_S or cfg.world > 1 and step % DDP_SYNC_STEPS:
                continue
        # A sync point: one read of the device sums (under DDP one all-reduce, so every rank decides alike).
        save_due = cfg.checkpoint_every > 0 and ready - last_save >= 60 * cfg.checkpoint_every
        f64 = {"device": cfg.device, "dtype": torch.float64}
        status = torch.stack([loss_sum, (first_bad >= 0).double(), torch.tensor(float(stop.signum), **f64),
                              torch.tensor(float(save_due and cfg.rank == 0), **f64)])
        if cfg.world > 1:
            dist.all_reduce(status)
        total_loss, bad, stopping, save_due = status.tolist()
        last_sync = time.perf_counter()
        if bad:
            where = (f"at epoch {epoch} step {int(first_bad)}/{steps} (loss {bad_value.item()})" if first_bad >= 0
                     else f"in epoch {epoch} between steps {synced_step + 1} and {step} (on another process)")
            raise NonFiniteLoss(f"the loss became non-finite {where}; stopped before it reached a checkpoint. "
                                "Try a lower --lr, --clip-grad 1.0 or --amp-dtype bfloat16")
        synced_step = step
        progress = EpochProgress(step, total_loss / cfg.world, images, done.seconds + last_sync - start)
        if stopping and step < steps:
            if checkpoint is None:
                raise Interrupted(f"epoch {epoch} step {step}/{steps}", f"epoch {epoch - 1} (this one is lost)")
            checkpoint(progress)
            raise Interrupted(f"epoch {epoch} step {step}/{steps}", f"step {step} of epoch {epoch}")
        if save_due and step < steps and checkpoint is not None:
            checkpoint(progress)
            last_save = time.perf_counter()
        if last_sync - last_print >= cfg.log_interval_s and step < steps:
            last_print, elapsed = last_sync, last_sync - start
            eta = timedelta(seconds=round(elapsed / (step - done.step) * (steps - step)))
            log(f"epoch {epoch}/{cfg.epochs} step {step}/{steps} loss {progress.loss_sum / step:.4f} lr {lr:.3e} "
                f"{(images - done.images) / elapsed:.1f} img/s data-wait {waited / elapsed:.0%} eta {eta}")
    seconds = time.perf_counter() - start
    return {"train_loss": progress.loss_sum / steps, "lr": lr, "seconds": done.seconds + seconds,
            "images_per_s": (images - done.images) / seconds, "data_wait": waited / seconds}


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
    at most the line being written; a failed write (disk full) is a utils.WriteError.
    """
    if path is None:
        return lambda line, echo=True: None
    try:
        file = open(path, "a", encoding="utf-8")
    except OSError as err:
        raise utils.write_error(path, err) from None

    def log(line: str, echo: bool = True) -> None:
        if echo:
            print(line, flush=True)
        try:
            file.write(line + "\n")
            file.flush()
        except OSError as err:
            raise utils.write_error(path, err) from None
    return log


class RunOutputs:
    """The run folder's files, in the spirit of timm's CheckpointSaver: config.json, last.pt (the whole training
    state), best.pt and its predictions, history.csv, curves.png and summary.json. Rank 0 writes; on the other
    ranks every method does nothing."""

    def __init__(self, inputs: RunInputs, cfg: StepConfig, training: Training, run: dict) -> None:
        self.inputs, self.cfg, self.training, self.run = inputs, cfg, training, run
        self.out, self.experiment, self.writes = inputs.out, inputs.experiment, cfg.rank == 0
        self.params = models.count_params(training.model)

    def start(self, args: argparse.Namespace, state: dict | None) -> None:
        """config.json; on resume also history.csv cut back to last.pt's epochs."""
        if not self.writes:
            return
        cfg, device = self.cfg, self.cfg.device
        utils.write_json(self.out / "config.json", {
            # The resolved run id and amp setting, as config.json has always listed them among the arguments.
            "args": vars(args) | {"experiment": self.experiment, "amp_on": cfg.amp_on, "out": str(self.out)},
            "alpha": self.inputs.alpha, "experiment": self.experiment, "argv": sys.argv, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": platform.python_version(), "device": str(device),
            "device_name": models.device_name(device), "world_size": cfg.world,
            "backend": dist.get_backend() if dist.is_initialized() else None, "batch_per_process": self.inputs.batch,
            "steps_per_epoch": cfg.steps, "params": self.params, "resumed_at": state and position_text(state)})
        if self.run["history"]:  # drop a row written after the last checkpoint (crash between the two writes)
            self.write_history()

    def save_last(self, progress: EpochProgress | None = None, val: dict | None = None) -> None:
        """last.pt: the whole training state after run["epoch"] epochs (+ progress into the next one); the
        checkpoint it replaces becomes last.prev.pt."""
        if not self.writes:
            return
        run = self.run
        models.save_checkpoint(
            self.out / "last.pt", self.training.model, self.inputs.arch, self.experiment,
            metrics=val and val | {"epoch": run["epoch"]}, keep_previous=self.out / "last.prev.pt", train_state={
                **run, "partial": None if progress is None else vars(progress), **self.training.state_dict(),
                "rng": rng_state(), "recipe": self.inputs.recipe})

    def save_best(self, val: dict, logits: torch.Tensor) -> None:
        """best.pt (the validated weights) and their predictions.csv, metrics.json and confusion matrices."""
        epoch, samples = self.run["epoch"], self.inputs.val_samples
        models.save_checkpoint(self.out / "best.pt", self.training.eval_model, self.inputs.arch, self.experiment,
                               metrics=val | {"epoch": epoch})
        plots.write_report(self.out, val, list(self.inputs.classes), title=f"{self.experiment}, epoch {epoch}",
                           predictions=([s.path for s in samples], [s.label for s in samples],
                                          logits.argmax(dim=1).tolist(), torch.softmax(logits, dim=1).numpy()))

    def write_history(self) -> None:
        """history.csv, one row per epoch, rewritten whole (atomically)."""
        rows = self.run["history"]
        utils.write_csv(self.out / "history.csv", list(rows[0]), [row.values() for row in rows])

    def write_epoch(self, val: dict, logits: torch.Tensor, improved: bool) -> None:
        """An epoch's files; best.pt before last.pt, so a crash between the two leaves a resumable pair."""
        if not self.writes:
            return
        if improved:
            self.save_best(val, logits)
        self.write_history()
        plots.save_png(self.out / "curves.png", plots.draw_curves(self.run["history"], self.run["best"]["epoch"],
                                                                  f"{self.experiment}: training curves"))
        self.save_last(None, val)
        if self.run["finished"]:  # nothing resumes a finished run, so last.prev.pt only costs disk
            (self.out / "last.prev.pt").unlink(missing_ok=True)
        self.write_summary()

    def write_summary(self) -> None:
        """summary.json: the best epoch's metrics and how the run went."""
        run, best, cfg = self.run, self.run["best"], self.cfg
        utils.write_json(self.out / "summary.json", {
            "experiment": self.experiment, "model": self.inputs.arch["name"], "blocks": self.inputs.arch["blocks"],
            "best_epoch": best["epoch"], "accuracy": best["accuracy"], "macro_f1": best["macro_f1"],
            "val_loss": best["val_loss"], "per_class": best["per_class"], "params": self.params,
            "epochs_run": run["epoch"], "finished": run["finished"], "stop_reason": run["stop_reason"],
            "wall_time_s": sum(row["seconds"] for row in run["history"]), "device": str(cfg.device),
            "world_size": cfg.world, "settings": self.inputs.recipe | {
                "amp": cfg.amp_on, "amp_dtype": cfg.amp_dtype, "ema_weights_evaluated": self.training.ema is not None}})


# --- The run ---

def record_epoch(run: dict, epoch: int, train: dict, val: dict, val_loss: float, seconds: float,
                 classes: tuple[str, ...], patience: int, epochs: int) -> bool:
    """Add an epoch to the run's progress (best, epochs without improvement, stop reason, history); improved?"""
    best = run["best"]
    improved = best is None or (val["macro_f1"], val["accuracy"]) > (best["macro_f1"], best["accuracy"])
    if improved:
        run["best"] = val | {"epoch": epoch, "val_loss": val_loss}
    run["bad_epochs"] = 0 if improved else run["bad_epochs"] + 1
    early = run["bad_epochs"] >= patience
    run["stop_reason"] = "early stopping" if early else "max epochs" if epoch == epochs else None
    run["finished"], run["epoch"] = run["stop_reason"] is not None, epoch
    run["history"].append({
        "epoch": epoch, "lr": train["lr"], "train_loss": train["train_loss"], "val_loss": val_loss,
        "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"],
        **{f"f1_{name}": val["per_class"][name]["f1"] for name in classes},
        "seconds": seconds, "images_per_s": train["images_per_s"]})
    return improved


def train_epochs(training: Training, loaders: Loaders, cfg: StepConfig, outputs: RunOutputs, run: dict,
                 partial: EpochProgress | None, patience: int, log: Callable[..., None]) -> None:
    """Train, validate and save each epoch after run["epoch"] (the first from `partial` on) until the last or an
    early stop; a signal or a non-finite loss ends the run (see train_one_epoch)."""
    stop, out, classes = StopFlag(), outputs.out, outputs.inputs.classes
    for epoch in range(run["epoch"] + 1, cfg.epochs + 1):
        epoch_start = time.perf_counter()
        done, partial = partial, None
        loader = loaders.epoch_loader(epoch, done)
        try:
            train = train_one_epoch(training, loader, cfg, epoch, log, stop, done, checkpoint=outputs.save_last)
        except Interrupted as where:
            interrupted(log, out, f"during {where.args[0]}", where.args[1], stop.signum, cfg.world)
        except NonFiniteLoss as err:
            log(f"error: {err}", echo=False)
            raise
        del loader  # ends its workers before validation starts
        val, val_loss, logits = evaluate(training.eval_model, training.criterion, loaders.val_loader, cfg.device,
                                         cfg.amp_on, cfg.world, loaders.val_size, classes)
        seconds = (done.seconds if done else 0.0) + time.perf_counter() - epoch_start
        improved = record_epoch(run, epoch, train, val, val_loss, seconds, classes, patience, cfg.epochs)
        outputs.write_epoch(val, logits, improved)
        best = run["best"]
        verdict = "best" if improved else f"best {best['macro_f1']:.4f} at epoch {best['epoch']}"
        log(f"epoch {epoch}/{cfg.epochs} done in {seconds:.1f} s: train loss {train['train_loss']:.4f}, val loss "
            f"{val_loss:.4f}, accuracy {val['accuracy']:.4f}, macro-F1 {val['macro_f1']:.4f} ({verdict}), "
            f"{train['images_per_s']:.1f} img/s, data-wait {train['data_wait']:.0%}")
        if run["stop_reason"] == "early stopping":
            log(f"early stopping: no better macro-F1 in the {patience} epoch(s) after epoch {best['epoch']}")
            break
        if any_rank(stop.signum != 0, cfg.device, cfg.world):  # the signal came during validation: epoch is saved
            interrupted(log, out, f"after epoch {epoch}", f"epoch {epoch}", stop.signum, cfg.world)


def main(args: argparse.Namespace) -> None:
    """Run (or resume) one training run."""
    with distributed(args.device) as (device, rank, world), contextlib.ExitStack() as cleanup:
        inputs = read_inputs(args, world)
        if rank == 0:
            claim_run_folder(inputs.out, cleanup)
        checkpoint = check_resume(inputs.out, args.resume, inputs.recipe)
        log = make_log(inputs.out / "train.log" if rank == 0 else None)
        state = checkpoint["train_state"] if checkpoint is not None else None
        if state is not None and state["finished"]:
            log(f"{inputs.out}: this run already finished ({state['stop_reason']} after epoch {state['epoch']}, "
                f"best macro-F1 {state['best']['macro_f1']:.4f} at epoch {state['best']['epoch']}); nothing to do")
            return

        seed_everything(args.seed, device)
        loaders = Loaders(args, inputs, rank, world)
        cfg = StepConfig.from_args(args, device, rank, world, loaders.steps)
        training = build_training(args, inputs, cfg, resuming=checkpoint is not None)
        run, partial = restore(training, checkpoint)
        training.wrap(args.compile)
        outputs = RunOutputs(inputs, cfg, training, run)
        outputs.start(args, state)
        log(f"{'resuming' if state else 'starting'} {inputs.experiment}: {args.model} "
            f"({outputs.params / 1e6:.3f} M params) on {device} x {world}, {len(inputs.train_samples)} train / "
            f"{len(inputs.val_samples)} val images, {cfg.steps} steps of {args.batch_size} ({inputs.batch} per "
            f"process) per epoch, epochs {run['epoch'] + 1}..{args.epochs}"
            + (f" from step {partial.step + 1}" if partial else "") + f", out {inputs.out}")

        train_epochs(training, loaders, cfg, outputs, run, partial, args.patience, log)
        best = run["best"]
        log(f"done: best epoch {best['epoch']}, accuracy {best['accuracy']:.4f}, macro-F1 {best['macro_f1']:.4f}; "
            f"outputs in {inputs.out}")


if __name__ == "__main__":
    args = get_args_parser().parse_args()
    try:
        main(args)
    except utils.WriteError as err:
        sys.exit(f"error: {err}. Fix that (free space, lift a file-size limit, fix permissions), then resume with: "
                 f"{resume_command(int(os.environ.get('WORLD_SIZE', '1')), True)}")
    except utils.UserError as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:  # while setting up: once training starts, a Ctrl-C saves last.pt (StopFlag)
        print("interrupted (Ctrl-C) before training started; the same command starts it again", file=sys.stderr)
        sys.exit(130)
