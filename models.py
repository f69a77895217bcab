"""Models (ResNet50, ConvNeXt-Tiny, ConvNeXt-Tiny + Transformer), weight EMA and the checkpoint format.

Every script builds and reloads models through this file, so a checkpoint written by train.py can be
rebuilt from the checkpoint alone by evaluate.py, ensemble_tta.py and benchmark.py.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import os
import pickle
import platform
import re
import socket
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager

import torch
import torchvision
from torch import nn

import utils

CHECKPOINT_FORMAT = "fer-checkpoint"
CHECKPOINT_VERSION = 1
# What every backbone's input is normalised with (ImageNet's statistics; recorded as arch["normalization"]).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Backbone:
    """A torchvision ImageNet classifier used as a backbone: its builder, its ImageNet weights, where its
    1000-class Linear head sits (replaced by a num_classes one; never loaded from ImageNet weights) and the width
    of the features that head reads."""

    build: Callable[..., nn.Module]
    weights: torchvision.models.WeightsEnum | None  # None: no ImageNet release, random init only
    head: str
    features: int
    scratch: dict = field(default_factory=dict)  # builder options for a random init (--weights none) only


class VGGFace48(nn.Module):
    """A small VGG-style CNN for 48 px faces, trained from random init: four stages of two 3x3 conv-BN-ReLU
    layers (widths 32-64-128-256) each halved by max-pooling (48 -> 3 px), global average pooling, dropout and a
    linear head. VGG-style nets are what trains well from scratch on FER2013 at its native 48 px; this one is
    sized for an hour of 2-core CPU training (1.2 M parameters, ~0.12 GMACs at 48 px)."""

    def __init__(self, num_classes: int = 1000, widths: tuple[int, ...] = (32, 64, 128, 256),
                 dropout: float = 0.3, weights: None = None) -> None:
        super().__init__()
        layers, channels = [], 3
        for width in widths:
            for _ in range(2):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes] for images [B, 3, H, W] (any size >= 16 px)."""
        return self.head(self.dropout(self.features(x).mean(dim=(2, 3))))


# Every backbone is one entry here; everything else (CLI choices, weights, heads, checkpoints) derives from it.
# ResNet50: V2 is torchvision's DEFAULT (80.9 % vs 76.1 % ImageNet top-1); MobileNetV3-Large likewise V2;
# ConvNeXt-Tiny and EfficientNet-B0 have one release each. EfficientNet-B0 and MobileNetV3-Large are light
# backbones for real time on a CPU (beyond the thesis).
BACKBONES: dict[str, Backbone] = {
    # From random init, each residual block's last BatchNorm starts at zero, so every block starts as the identity
    # (Goyal et al. 2017; timm's default): at 32 px on the demo it reached macro-F1 0.64 in 3 epochs, 0.33 without.
    "resnet50": Backbone(torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
                         "fc", 2048, scratch={"zero_init_residual": True}),
    "convnext_tiny": Backbone(torchvision.models.convnext_tiny,
                              torchvision.models.ConvNeXt_Tiny_Weights.IMAGENET1K_V1, "classifier.2", 768),
    "efficientnet_b0": Backbone(torchvision.models.efficientnet_b0,
                                torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1, "classifier.1", 1280),
    "mobilenet_v3_large": Backbone(torchvision.models.mobilenet_v3_large,
                                   torchvision.models.MobileNet_V3_Large_Weights.IMAGENET1K_V2, "classifier.3", 1280),
    # Not from the thesis: the released FER2013 model (pretrained/), 48 px, random init only.
    "vgg_face48": Backbone(VGGFace48, None, "head", 256),
}
# Models that put a Transformer on a backbone's feature map instead of its head: name -> backbone.
HYBRIDS: dict[str, str] = {"convnext_tiny_transformer": "convnext_tiny"}
MODEL_NAMES: tuple[str, ...] = (*BACKBONES, *HYBRIDS)

# Hybrid hyper-parameters. The thesis fixes d_model 256 and a 512-wide feed-forward layer (Table 7's
# +0.527 M per block); heads and dropout are ours: 8 heads (d_head 32, the usual 32-64 per head; the
# parameter count does not depend on it) and dropout 0.1 (PyTorch's default, light regularisation).
D_MODEL, N_HEADS, D_FF, DROPOUT = 256, 8, 512, 0.1


class CheckpointError(utils.UserError):
    """A checkpoint or weights file that cannot be used; the message is one line naming the file."""


class ConvNeXtTransformer(nn.Module):
    """ConvNeXt-Tiny features -> tokens -> Linear(768, 256) -> Transformer blocks -> mean pool -> head."""

    def __init__(self, convnext: nn.Module, num_classes: int = 8, blocks: int = 1) -> None:
        super().__init__()
        self.features = convnext.features
        # ConvNeXt's own pre-head LayerNorm (classifier[0]) normalises the tokens, so ImageNet weights
        # initialise it too; it is an nn.LayerNorm subclass, so its state dict loads into a plain one.
        self.norm = nn.LayerNorm(768, eps=1e-6)
        self.norm.load_state_dict(convnext.classifier[0].state_dict())
        self.proj = nn.Linear(768, D_MODEL)
        # Post-norm (norm_first=False, the PyTorch default): the last block ends in a LayerNorm, which
        # plays the part of a final norm before pooling; pre-norm would need an extra LayerNorm that
        # Table 7's parameter count has no room for. With 1-2 blocks post-norm trains stably.
        # A ModuleList, not nn.TransformerEncoder, so no nested-tensor conversion happens in eval.
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(D_MODEL, N_HEADS, dim_feedforward=D_FF, dropout=DROPOUT,
                                       activation="gelu", batch_first=True, norm_first=False)
            for _ in range(blocks))
        self.head = nn.Linear(D_MODEL, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes] for images [B, 3, H, W] (H, W multiples of 32)."""
        x = self.features(x)                       # [B, 768, H/32, W/32]
        # permute+flatten is a free view for channels_last maps; tokens are in row-major order.
        x = x.permute(0, 2, 3, 1).flatten(1, 2)    # [B, HW, 768]
        x = self.proj(self.norm(x))
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=1))


def build_model(name: str, num_classes: int = 8, blocks: int = 1,
                weights: str | os.PathLike = "imagenet") -> nn.Module:
    """Build a model; weights is "imagenet", "none" (random init) or a path to a torchvision backbone state dict."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    if name in HYBRIDS:
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        return ConvNeXtTransformer(_load_backbone(HYBRIDS[name], weights), num_classes=num_classes, blocks=blocks)
    model, spec = _load_backbone(name, weights), BACKBONES[name]
    parent, _, leaf = spec.head.rpartition(".")
    setattr(model.get_submodule(parent), leaf, nn.Linear(spec.features, num_classes))
    return model


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _load_backbone(backbone_name: str, weights: str | os.PathLike) -> nn.Module:
    """The torchvision model with its 1000-class head, initialised as `weights` says."""
    # Weights are read before the model is built, so a missing file fails at once (ConvNeXt's random
    # init alone takes seconds on a CPU).
    state = None if weights == "none" else (
        _imagenet_state_dict(backbone_name) if weights == "imagenet" else _read_state_dict(weights))
    spec = BACKBONES[backbone_name]
    model = spec.build(weights=None, **(spec.scratch if weights == "none" else {}))
    if state is None:
        return model
    if weights == "imagenet":
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise CheckpointError(f"ImageNet weights for {backbone_name} do not fit ({_one_line(err)})") from None
        return model
    head_keys = (f"{spec.head}.weight", f"{spec.head}.bias")
    state = {k: v for k, v in state.items() if k not in head_keys}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatch: a different architecture's weights
        raise CheckpointError(f"{weights}: does not fit {backbone_name}: {_one_line(err)}") from None
    loaded = len(state) - len(result.unexpected_keys)
    if loaded == 0:
        raise CheckpointError(f"{weights}: no tensor matches a {backbone_name} state dict")
    missing = [k for k in result.missing_keys if k not in head_keys]
    print(f"backbone weights {weights}: {loaded} tensors loaded (head ignored); "
          f"missing {len(missing)}{_preview(missing)}; "
          f"unexpected {len(result.unexpected_keys)}{_preview(result.unexpected_keys)}", flush=True)
    return model


def backbone_state_dict(model: nn.Module, arch: dict) -> dict[str, torch.Tensor]:
    """The model's backbone as a torchvision state dict (what `--weights PATH` loads): every tensor but the
    class head; for a hybrid, ConvNeXt's features and its pre-head LayerNorm under torchvision's names."""
    if arch["name"] in HYBRIDS:
        state = {f"features.{k}": v for k, v in model.features.state_dict().items()}
        return state | {f"classifier.0.{k}": v for k, v in model.norm.state_dict().items()}
    head = BACKBONES[arch["name"]].head
    return {k: v for k, v in model.state_dict().items() if not k.startswith(f"{head}.")}


def _preview(keys: list[str], limit: int = 5) -> str:
    """' (a, b, c, ...)' for a report line, '' for no keys."""
    if not keys:
        return ""
    more = ", ..." if len(keys) > limit else ""
    return " (" + ", ".join(keys[:limit]) + more + ")"


def _imagenet_state_dict(backbone_name: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights from the torch hub cache, downloading them if they are not there."""
    weights = BACKBONES[backbone_name].weights
    if weights is None:
        raise CheckpointError(f"{backbone_name} has no ImageNet weights: pass --weights none (random init) "
                              "or --weights PATH (a state dict of the same model)")
    file_name = os.path.basename(weights.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    alternatives = "or pass --weights none (random init) or --weights PATH (a torchvision state dict)"
    if cached.exists():
        try:
            return _read_state_dict(cached)
        except CheckpointError as err:
            raise CheckpointError(f"ImageNet weights for {backbone_name}: {err}; delete the file to download "
                                  f"it again, {alternatives}") from None
    # torch.hub's urlopen has no timeout: a network that drops packets would hang a run for minutes.
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        return weights.get_state_dict(progress=True, map_location="cpu", weights_only=True)
    except Exception as err:  # no network, proxy, HTTP error, SSL...: all end the same way
        raise CheckpointError(
            f"ImageNet weights for {backbone_name}: {file_name} is not in the torch hub cache and downloading "
            f"{weights.url} failed ({_one_line(err)}); put {file_name} at {cached} (the folder follows "
            f"$TORCH_HOME), {alternatives}") from None
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _one_line(err: BaseException, limit: int = 200) -> str:
    """An exception as one short line."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _torch_load(path: str | os.PathLike) -> Any:
    """torch.load(weights_only=True) that turns every failure into a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            # A foreign pickle (protocol > 2) makes torch warn on stderr before failing; the error says it all.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = re.search(r"GLOBAL ([\w.]+)", str(err))
        if refused:
            raise CheckpointError(f"{path}: refused, it holds pickled Python objects ({refused.group(1)}), "
                                  "which torch.load(weights_only=True) will not run") from None
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        reason = reason.group(1).strip() if reason else _one_line(err, 120)
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({reason})") from None
    except Exception as err:  # random bytes reach torch's reader in many ways (IndexError, KeyError, EOFError, ...)
        # torch's zip reader appends a paragraph of advice; its first sentence is the diagnosis.
        reason = _one_line(err).split(". ")[0] if isinstance(err, (RuntimeError, OSError)) else type(err).__name__
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({reason})") from None


def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a file: a plain one, or the model of one of our checkpoints."""
    obj = _torch_load(path)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        obj = obj.get("model")
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict (expected a dict of tensors)")
    return strip_prefixes(obj)


def strip_prefixes(state: dict[str, Any]) -> dict[str, Any]:
    """Drop the `_orig_mod.` (torch.compile) and `module.` (DDP / DataParallel) key prefixes."""
    def strip(key: str) -> str:
        while key.startswith(("_orig_mod.", "module.")):
            key = key.split(".", 1)[1]
        return key
    return {strip(k): v for k, v in state.items()}


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside torch.compile / DDP wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None:
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda if available else cpu; "cuda"/"cuda:N" is checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise utils.UserError(f"--device {name}: not a device name (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise utils.UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise utils.UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def device_name(device: torch.device) -> str:
    """A readable name of the device, e.g. 'NVIDIA H100 NVL' or 'AMD EPYC (2 threads)'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def autocast(device: torch.device | str, enabled: bool, dtype: torch.dtype = torch.float16) -> ContextManager:
    """Mixed precision on CUDA (dtype), bfloat16 on CPU; a no-op context when disabled."""
    device = torch.device(device)
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cpu":
        # CPU kernels are fast and numerically safe in bfloat16, not float16.
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast(device.type, dtype=dtype)


class ModelEMA:
    """Exponential moving average of a model's weights, updated after every optimizer step.

    Float parameters: ema = d * ema + (1 - d) * param. Buffers (BatchNorm running statistics and
    counters) are copied, so the EMA copy normalises with the live model's statistics.
    With warmup=True the decay ramps up as d = min(decay, (1 + n) / (10 + n)) after n updates, so
    early EMA weights are not dominated by the (random-head) initial weights on short runs.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        self.module = copy.deepcopy(unwrap(model)).eval()
        self.module.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next update() will use."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (call after optimizer.step())."""
        d = self.current_decay()
        model = unwrap(model)
        pairs = list(zip(self.module.parameters(), model.parameters(), strict=True))
        floats = [(e, p) for e, p in pairs if e.is_floating_point()]
        exact = [(e, p) for e, p in pairs if not e.is_floating_point()]
        exact += list(zip(self.module.buffers(), model.buffers(), strict=True))
        # One fused call per kind instead of one small kernel per tensor (~180 for ConvNeXt-Tiny): on a GPU the
        # per-tensor launches cost more than the arithmetic.
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [p.detach() for _, p in floats], 1.0 - d)  # d*ema + (1-d)*p
        if exact:
            torch._foreach_copy_([e for e, _ in exact], [p.detach() for _, p in exact])
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: the averaged weights, decay, warmup flag and update count."""
        return {"module": self.module.state_dict(), "decay": self.decay,
                "warmup": self.warmup, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from state_dict()."""
        self.module.load_state_dict(strip_prefixes(state["module"]))
        self.decay = float(state["decay"])
        self.warmup = bool(state.get("warmup", True))
        self.updates = int(state["updates"])


def save_checkpoint(path: str | os.PathLike, model: nn.Module, arch: dict, experiment: str,
                    metrics: dict | None = None, train_state: dict | None = None,
                    keep_previous: str | os.PathLike | None = None) -> None:
    """Write a checkpoint atomically: format tag, arch, experiment id, metrics, weights, training state
    (keep_previous: first rename the checkpoint it replaces to this name). A failed write is a utils.WriteError."""
    missing = {"name", "num_classes"} - set(arch)
    if missing:
        raise ValueError(f"arch lacks {sorted(missing)}")
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": dict(arch),
        "experiment": experiment,
        "metrics": metrics,
        "model": strip_prefixes(unwrap(model).state_dict()),
        "train_state": train_state,
    }
    with utils.atomic_write(path, "wb", keep_previous=keep_previous) as f:
        torch.save(checkpoint, f)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read one of our checkpoints (on CPU); any unusable file gives a one-line CheckpointError."""
    checkpoint = _torch_load(path)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a FER checkpoint (no 'format': '{CHECKPOINT_FORMAT}' entry; "
                              "a plain state dict can be used as --weights PATH)")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {checkpoint.get('version')!r}, "
                              f"this code reads version {CHECKPOINT_VERSION}")
    arch = checkpoint.get("arch")
    if (not isinstance(arch, dict) or arch.get("name") not in MODEL_NAMES
            or not isinstance(checkpoint.get("model"), dict)):
        raise CheckpointError(f"{path}: damaged checkpoint (bad 'arch' or 'model' entry)")
    return checkpoint


def arch_classes(arch: dict) -> tuple[str, ...]:
    """A checkpoint's class names (AffectNet-8 for checkpoints that predate the key)."""
    return tuple(arch.get("classes") or utils.AFFECTNET8)


def arch_img_size(arch: dict) -> int:
    """A checkpoint's input size (the thesis's, utils.DEFAULT_IMG_SIZE, for checkpoints that predate the key)."""
    return int(arch.get("img_size") or utils.DEFAULT_IMG_SIZE)


def arch_grayscale(arch: dict) -> bool:
    """Whether a checkpoint's model was trained on grayscale faces (False for checkpoints that predate the key)."""
    return bool(arch.get("grayscale", False))


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model from a checkpoint alone: (model in eval mode on device, {arch, experiment, metrics}).
    onnx_model.load_any reads either this or an exported `.onnx` with the same meta keys."""
    device = resolve_device(device) if isinstance(device, str) else device
    checkpoint = load_checkpoint(path)
    arch = checkpoint["arch"]
    # Built on the meta device: no time spent on random init the checkpoint overwrites anyway.
    with torch.device("meta"):
        model = build_model(arch["name"], num_classes=int(arch["num_classes"]),
                            blocks=int(arch.get("blocks", 1)), weights="none")
    try:
        model.load_state_dict(strip_prefixes(checkpoint["model"]), strict=True, assign=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit {arch['name']} ({_one_line(err, 160)})") from None
    meta = {"arch": arch, "experiment": checkpoint.get("experiment"), "metrics": checkpoint.get("metrics")}
    return model.to(device).eval(), meta


# --- Batched inference (used by train, evaluate, ensemble_tta) ---

def inference_autocast(device: torch.device | str, amp: bool) -> ContextManager:
    """Float16 autocast for inference when amp and on CUDA; nothing on CPU, where autocast would mean bfloat16,
    which changes the logits (evaluation, TTA and predict.py all score through this rule)."""
    return autocast(device, amp and torch.device(device).type == "cuda")


def forward_views(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, hflip: bool
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Float32 logits of the images and (hflip) of their mirrors, from one forward pass over both."""
    n = images.shape[0]
    if hflip:  # dims=[3] is the width axis of [B, C, H, W]
        images = torch.cat([images, torch.flip(images, dims=[3])])
    logits = forward(images).float()
    return (logits[:n], logits[n:]) if hflip else (logits, None)


@functools.lru_cache(maxsize=None)
def device_constant(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """A small constant [1, C, 1, 1] on a device, made once: building it per batch would copy it to the GPU
    each time, and that copy waits for all queued GPU work."""
    return torch.tensor(values, device=device).view(1, -1, 1, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Images [B, 3, H, W] in 0-255 (uint8, or float) -> float32 with ImageNet normalisation, on their device."""
    mean = device_constant(tuple(255 * m for m in IMAGENET_MEAN), images.device)
    std = device_constant(tuple(255 * s for s in IMAGENET_STD), images.device)
    return (images.float() - mean) / std


@torch.inference_mode()
def predict_views(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device | str,
                  amp: bool = False, hflip: bool = False, progress: str | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Float32 CPU logits [N, C] of a loader's uint8 images and (hflip) of their mirrors (else
    None), and int64 labels [N]; the images are normalised on the device."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    meter = utils.Progress(len(loader.dataset), progress) if progress is not None else None
    plain, mirrored, labels = [], [], []
    try:
        for images, targets in loader:
            images = normalize(images.to(device, non_blocking=True))  # the loader hands over uint8
            with inference_autocast(device, amp):
                logits, flipped = forward_views(model, images, hflip)
            plain.append(logits)
            if hflip:
                mirrored.append(flipped)
            labels.append(torch.as_tensor(targets))
            if meter is not None:
                meter.step(images.shape[0])
    finally:
        model.train(was_training)
    if not plain:
        raise ValueError("predict_views: the loader yielded no batches")
    return (torch.cat(plain).cpu(), torch.cat(mirrored).cpu() if hflip else None,
            torch.cat(labels).to(torch.int64).cpu())


@torch.inference_mode()
def predict_logits(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device | str,
                   amp: bool = False, hflip: bool = False, progress: str | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 CPU logits [N, C] and int64 labels [N]; hflip averages the logits of each image and its mirror."""
    logits, mirrored, labels = predict_views(model, loader, device, amp=amp, hflip=hflip, progress=progress)
    return (logits if mirrored is None else torch.stack([logits, mirrored]).mean(dim=0)), labels


# --- Fast inference path (used by benchmark and predict) ---

# torch.compile settings of the fast path, per device. `options` are inductor config keys (what its `mode`
# presets set). freezing: weights become constants, so BatchNorm folds into the convolutions and conv / linear
# weights are pre-packed once instead of on every call. CPU, dynamic=True: with a symbolic image size inductor
# sends fp32 Linear layers to oneDNN with pre-packed weights and GELU fused in (static shapes get MKL, which
# was about 1.2x slower end to end on the 2-core AMD EPYC this was tuned on). CUDA: at batch 1 a GPU mostly
# waits for Python to launch a few hundred small kernels; triton.cudagraphs replays them all as one CUDA
# graph, and static shapes let each kernel specialise. max_autotune is left off: minutes of compile per
# model, and on the CPU it was no faster.
FAST_COMPILE = {"cpu": {"dynamic": True, "options": {"freezing": True}},
                "cuda": {"dynamic": False, "options": {"freezing": True, "triton.cudagraphs": True}}}


class FastModel:
    """Compiled inference for images shaped like the example: fast(x) -> float32 logits. `variant` names the path."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor, variant: str) -> None:
        self.forward, self.variant, self.shape = forward, variant, tuple(example.shape)
        # One input buffer at a fixed address: the CUDA graph reads it in place, and the copy into it does the
        # channels_last conversion.
        self.static = torch.empty_like(example, memory_format=torch.channels_last)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits [B, C] for images [B, 3, H, W] shaped like the example (new tensor, safe to keep)."""
        if tuple(x.shape) != self.shape:
            raise ValueError(f"fast path built for input {list(self.shape)}, got {list(x.shape)}")
        with torch.inference_mode():
            self.static.copy_(x)
            # A copy, not a view: CUDA-graph outputs are overwritten by the next replay.
            return self.forward(self.static).to(torch.float32, copy=True)


class _Float16Autocast(nn.Module):
    """The model under float16 autocast, as the eager CUDA protocol runs it; compiled, the weight casts fold away."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model, self.device = model, device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, True, torch.float16):
            return self.model(x)


def make_fast(model: nn.Module, device: torch.device | str, example: torch.Tensor) -> FastModel:
    """The fastest inference path for inputs shaped like `example`, computing the same function as `model`.

    CPU: float32, channels_last, torch.compile with frozen weights (oneDNN convolutions and linears, weights
    pre-packed, GELU fused). CUDA: float16 autocast (the thesis's mixed precision), channels_last, torch.compile
    with frozen weights and CUDA graphs. The model itself is left untouched. If compilation fails, a warning
    is printed and the eager channels_last model is used (`variant` says which path it is).
    """
    device = torch.device(device)
    fast_model = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)
    fast_model = fast_model.to(device=device, memory_format=torch.channels_last)
    precision = "float32"
    if device.type == "cuda":
        fast_model, precision = _Float16Autocast(fast_model, device), "float16 autocast"
    example = example.to(device)
    settings = FAST_COMPILE["cuda" if device.type == "cuda" else "cpu"]
    options = settings["options"]
    compiled = torch.compile(fast_model, dynamic=settings["dynamic"], options=options)
    fast = FastModel(compiled, example, variant=f"{precision} channels_last compile("
                     + ", ".join(sorted(options) + ["dynamic"] * settings["dynamic"]) + ")")
    if device.type == "cuda":
        torch._dynamo.mark_static_address(fast.static)
    try:
        # torch.compile is lazy: compile (and record the CUDA graph) now, so failures surface here and
        # callers time steady state. Three calls: cudagraph trees warm up once, then record, then replay.
        # The config patch as well as `options`: inductor decides on freezing before it applies `options`
        # (with options alone the weights stay plain inputs and nothing is folded or pre-packed).
        with torch._inductor.config.patch(options):
            for _ in range(3 if device.type == "cuda" else 1):
                fast(example)
    except Exception as err:  # inductor / triton / C++ compiler failures come in many types
        print(f"warning: torch.compile failed ({_one_line(err)}); the fast path falls back to eager "
              "channels_last", file=sys.stderr, flush=True)
        fast = FastModel(fast_model, example, variant=f"{precision} channels_last eager (compile failed)")
    return fast
