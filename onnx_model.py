"""ONNX export and ONNX Runtime inference: the exported-model format.

export.py writes it; load_any() reads a model file, an exported `.onnx` or a checkpoint (models.load_model),
so predict.py, evaluate.py and ensemble_tta.py run an exported model through the same code as a checkpoint, and
benchmark.py times it beside eager and the fast path. An exported model takes float32 images [N, 3, S, S]
(RGB, scaled to 0-1, then normalised with the stored mean and std) and returns float32 logits [N, num_classes];
N is a dynamic axis. Its metadata holds what a deployment needs to preprocess and label: classes, image size,
mean, std, the experiment id, the architecture, the checkpoint's metrics and the precision (float32, or int8 for a
model quantize_int8 made from a float32 one: same input and output, int8 inside).

The extras (onnx, onnxruntime, onnxscript for torch.onnx's exporter) are in requirements-onnx.txt.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

import metrics
import models
import utils

FORMAT = "fer-onnx"
VERSION = 1
# Opset 18: what torch.onnx's exporter emits natively (no version conversion step) and what every ONNX Runtime
# release since 1.14 runs.
OPSET = 18
INSTALL_HINT = "pip install -r requirements-onnx.txt"
# Agreement with eager float32 PyTorch: max |logit diff| <= TOLERANCE * max(1, largest |eager logit|). The
# scaling keeps the bound relative for models with large logits (float32 rounding grows with magnitude). ONNX
# Runtime folds BatchNorm into the convolutions and runs other kernels, so deep BatchNorm nets differ by up to
# ~1e-4 of their largest logit (random ResNet50s with statistics from random images came within 2.5e-4); 1e-3
# leaves room for that and still catches a wrong export, whose logits are off by whole units, while moving
# no probability by more than ~0.1 %.
TOLERANCE = 1e-3
INPUT_NAME, OUTPUT_NAME = "images", "logits"
# An int8 model is kept only if its accuracy and its macro-F1 on labelled images are each within this of the float32
# model's on the same images (0.5 points): what a user of the model would notice, unlike a logit distance.
INT8_TOLERANCE = 0.005
# How quantize_int8 quantises, recorded in the int8 model's metadata. QDQ: the format ONNX Runtime's CPU kernels
# are tuned for since 1.11. int8 weights with a scale per output channel: a network's filters differ in range by
# orders of magnitude, one scale per tensor would flatten the small ones. uint8 activations: ONNX Runtime's advice
# for x86 (its u8 x s8 kernels use AVX-512 VNNI / AVX-VNNI where the CPU has them). MinMax ranges: the smallest and
# largest value each activation took on the calibration images, ONNX Runtime's default.
INT8_SCHEME = ("ONNX Runtime static quantisation: QDQ, int8 weights per output channel, uint8 activations, "
               "MinMax ranges from calibration images")


def require(feature: str, modules: Sequence[str] = ("onnx", "onnxruntime")) -> list[Any]:
    """The given packages, imported; a one-line UserError naming `feature` and the install command when one is
    missing."""
    found = []
    for name in modules:
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            raise utils.UserError(f"{feature} needs {name}: {INSTALL_HINT}") from None
    return found


def metadata(arch: dict, experiment: str | None, metrics: dict | None, img_size: int, opset: int) -> dict[str, str]:
    """The metadata_props of an exported model (ONNX stores strings, so lists and dicts are JSON)."""
    classes = list(models.arch_classes(arch))
    return {
        "format": FORMAT, "version": str(VERSION),
        "model": arch["name"], "blocks": str(int(arch.get("blocks", 1))), "num_classes": str(int(arch["num_classes"])),
        "classes": json.dumps(classes), "img_size": str(img_size), "grayscale": str(models.arch_grayscale(arch)),
        # For evaluate.py --logit-adjust: the training class counts and sampler, as the checkpoint has them.
        "class_counts": json.dumps(arch.get("class_counts")), "sampler": arch.get("sampler") or "",
        "mean": json.dumps(list(models.IMAGENET_MEAN)), "std": json.dumps(list(models.IMAGENET_STD)),
        "input": f"{INPUT_NAME}: float32 [N, 3, {img_size}, {img_size}], RGB scaled to 0-1, then (x - mean) / std"
                 + ("; grayscale model: the face's luma (Pillow convert('L')) in all three channels"
                    if models.arch_grayscale(arch) else ""),
        "output": f"{OUTPUT_NAME}: float32 [N, {len(classes)}], one logit per class in the order of 'classes'",
        "experiment": experiment or "", "metrics": json.dumps(metrics or {}),
        "opset": str(opset), "torch_version": torch.__version__, "precision": "float32",
    }


def export_bytes(model: nn.Module, arch: dict, experiment: str | None, metrics: dict | None, img_size: int,
                 opset: int = OPSET) -> bytes:
    """A float32 CPU model as a serialised ONNX model with a dynamic batch axis and our metadata."""
    onnx, _, _ = require("ONNX export", ("onnx", "onnxruntime", "onnxscript"))
    # Batch 2, not 1: torch.export specialises a dimension whose example size is 1.
    example = torch.zeros(2, 3, img_size, img_size)
    try:
        # torch.export's exporter (dynamo=True, the supported one; the TorchScript exporter is deprecated).
        # external_data=False: one self-contained file, since our models are far below protobuf's 2 GB limit.
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    opset_version=opset, external_data=False, optimize=True, verbose=False)
    except Exception as err:  # exporter failures come in many types; all mean "this model did not export"
        text = " ".join(str(err).split())[:300]
        raise utils.UserError(f"torch.onnx.export failed for {arch['name']} at opset {opset}: {text}") from None
    proto = program.model_proto
    onnx.helper.set_model_props(proto, metadata(arch, experiment, metrics, img_size, opset))
    return proto.SerializeToString()


class OnnxModel(nn.Module):
    """An exported model run by ONNX Runtime, callable like the PyTorch model: logits = model(images).

    A module without parameters, so code written for checkpoints (eval(), predict_logits, forward_views) runs
    it unchanged. Inputs are copied to the CPU as float32 NumPy and the logits come back on the input's device.
    """

    def __init__(self, source: str | os.PathLike | bytes, device: torch.device | str = "cpu") -> None:
        super().__init__()
        _, ort = require("an .onnx model")
        device = torch.device(device)
        options = ort.SessionOptions()
        # As many intra-op threads as torch uses, so eager, fast and ONNX Runtime rows share one budget.
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its warnings about unused initializers are noise
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise utils.UserError(f"--device {device}: this ONNX Runtime has no CUDA provider (available: "
                                      f"{', '.join(ort.get_available_providers())}); pip install onnxruntime-gpu, "
                                      "or use --device cpu")
            providers.insert(0, "CUDAExecutionProvider")
        name = "model bytes" if isinstance(source, bytes) else str(source)
        if not isinstance(source, bytes):
            if not Path(source).is_file():
                raise utils.UserError(f"{source}: file not found")
            source = str(source)
        try:
            self.session = ort.InferenceSession(source, sess_options=options, providers=providers)
        except Exception as err:  # ONNX Runtime raises its own exception types for unreadable models
            raise utils.UserError(f"{name}: not a readable ONNX model ({' '.join(str(err).split())[:200]})") from None
        self.props = dict(self.session.get_modelmeta().custom_metadata_map)
        self.input_name = self.session.get_inputs()[0].name
        self.runtime = (f"ONNX Runtime {ort.__version__} {self.session.get_providers()[0]}, "
                        f"{options.intra_op_num_threads} intra-op threads"
                        + (", int8" if self.props.get("precision") == "int8" else ""))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits [B, C] on x's device for images [B, 3, S, S]."""
        images = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run(None, {self.input_name: images})
        return torch.from_numpy(logits).to(x.device)


def meta_of(model: OnnxModel, path: str | os.PathLike) -> dict:
    """{arch, experiment, metrics} from an exported model's metadata, shaped like models.load_model's meta, and the
    exported model's own: mean, std, opset, runtime, precision and (int8, from export.py) the int8 check."""
    props = model.props
    if props.get("format") != FORMAT:
        raise utils.UserError(f"{path}: an ONNX model without our metadata (no 'format': '{FORMAT}' entry); "
                              "export it with export.py")
    if props.get("version") != str(VERSION):
        raise utils.UserError(f"{path}: exported-model version {props.get('version')!r}, this code reads {VERSION}")
    try:
        arch = {"name": props["model"], "blocks": int(props["blocks"]), "num_classes": int(props["num_classes"]),
                "img_size": int(props["img_size"]), "classes": json.loads(props["classes"]),
                "class_counts": json.loads(props.get("class_counts") or "null"),
                "sampler": props.get("sampler") or None, "grayscale": props.get("grayscale") == "True"}
        extra = {"mean": json.loads(props["mean"]), "std": json.loads(props["std"]),
                 "opset": int(props["opset"]), "metrics": json.loads(props.get("metrics") or "{}"),
                 "int8_check": json.loads(props.get("int8_check") or "null")}
    except (KeyError, ValueError) as err:
        raise utils.UserError(f"{path}: damaged metadata ({type(err).__name__}: {err})") from None
    # Files exported before the precision entry existed are float32.
    return {"arch": arch, "experiment": props.get("experiment") or None, "metrics": extra["metrics"] or None,
            "mean": extra["mean"], "std": extra["std"], "opset": extra["opset"], "runtime": model.runtime,
            "precision": props.get("precision") or "float32", "int8_check": extra["int8_check"]}


def load_any(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """A model file as every script reads it: an exported `.onnx` as an OnnxModel with its meta {arch, experiment,
    metrics, ...}, else a checkpoint (models.load_model, whose meta has the same keys)."""
    if Path(path).suffix.lower() != ".onnx":
        return models.load_model(path, device)
    model = OnnxModel(path, models.resolve_device(device) if isinstance(device, str) else device)
    return model.eval(), meta_of(model, path)


def compare(reference: torch.Tensor, other: torch.Tensor, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """How far two logit tensors [N, C] are apart: max |diff|, the bound it must stay under, argmax agreement.

    An argmax that differs counts as a disagreement only where the reference's top two logits are further apart
    than the bound: a near-tie may flip within float32 rounding, which says nothing about the export.
    """
    reference, other = reference.double(), other.double()
    bound = tolerance * max(1.0, reference.abs().max().item())
    diff = (reference - other).abs().max().item()
    differs = reference.argmax(1) != other.argmax(1)
    top2 = reference.topk(2, dim=1).values if reference.shape[1] > 1 else reference.repeat(1, 2)
    real = differs & ((top2[:, 0] - top2[:, 1]) > bound)
    return {"n": reference.shape[0], "max_abs_diff": diff, "bound": bound, "argmax_agree": int((~differs).sum()),
            "argmax_real_disagree": int(real.sum()), "ok": diff <= bound and not bool(real.any())}


def describe(check: dict[str, Any]) -> str:
    """'max |logit diff| 1.2e-06 (bound 1.0e-04), argmax agrees on 16/16' for a compare() result."""
    text = (f"max |logit diff| {check['max_abs_diff']:.1e} (bound {check['bound']:.1e}), "
            f"argmax agrees on {check['argmax_agree']}/{check['n']}")
    if check["argmax_real_disagree"]:
        text += f", {check['argmax_real_disagree']} beyond a near-tie"
    return text


def random_inputs(img_size: int, seed: int = 0, sizes: Sequence[int] = (1, 3, 4)) -> list[torch.Tensor]:
    """Normal random image batches (the scale of normalised images) of several batch sizes, to exercise the
    dynamic batch axis."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, img_size, img_size, generator=generator) for n in sizes]


def verify(model: nn.Module, exported: OnnxModel, img_size: int, seed: int = 0) -> dict[str, Any]:
    """compare() of eager PyTorch and ONNX Runtime on random batches of 1, 3 and 4 images."""
    batches = random_inputs(img_size, seed)
    with torch.inference_mode():
        reference = torch.cat([model(x).float() for x in batches])
        logits = torch.cat([exported(x).float() for x in batches])
    return compare(reference, logits)



# --- int8: ONNX Runtime's static quantisation of an exported model ---

class CalibrationBatches:
    """ONNX Runtime's CalibrationDataReader protocol (get_next: one input dict per call, None at the end) over
    normalised image batches [B, 3, S, S], drawn lazily so the calibration images are never all in memory."""

    def __init__(self, batches: Iterable[torch.Tensor]) -> None:
        self.batches = iter(batches)

    def get_next(self) -> dict[str, Any] | None:
        """The next batch as ONNX Runtime's input dict, or None when there is none left."""
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch.detach().to("cpu", torch.float32).contiguous().numpy()}


def with_metadata(blob: bytes, props: dict[str, str]) -> bytes:
    """A serialised model with `props` added to (or replacing entries of) its metadata."""
    (onnx,) = require("ONNX metadata", ("onnx",))
    proto = onnx.load_model_from_string(blob)
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **props})
    return proto.SerializeToString()


def quantize_int8(blob: bytes, batches: Iterable[torch.Tensor]) -> bytes:
    """A float32 export quantised to int8 (INT8_SCHEME) with activation ranges from normalised calibration image
    batches [B, 3, S, S]; it keeps the float32 model's metadata, with precision int8 and the scheme."""
    _, _, quantization, preprocess = require("int8 quantisation", ("onnx", "onnxruntime", "onnxruntime.quantization",
                                                                   "onnxruntime.quantization.shape_inference"))
    with tempfile.TemporaryDirectory(prefix="fer-int8-") as folder:
        source, prepared, quantized = (Path(folder) / name for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(blob)
        # ONNX Runtime's quantiser warns through the root logger, e.g. for every 1-D LayerNorm weight that cannot
        # take a per-channel scale (it gets one scale instead): dozens of lines for a ConvNeXt that say nothing
        # about the result, which export.py's check judges.
        muted = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            # Shape inference and graph optimisation (BatchNorm folded into convolutions, ...) first, as ONNX
            # Runtime's quantisation guide asks: a BatchNorm left standing would get a range of its own.
            preprocess.quant_pre_process(str(source), str(prepared))
            quantization.quantize_static(str(prepared), str(quantized), CalibrationBatches(batches),
                                         quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                         activation_type=quantization.QuantType.QUInt8,
                                         weight_type=quantization.QuantType.QInt8,
                                         calibrate_method=quantization.CalibrationMethod.MinMax)
        except utils.UserError:
            raise
        except Exception as err:  # ONNX Runtime's quantiser raises many types; all mean "this model did not quantise"
            raise utils.UserError(f"int8 quantisation failed: {' '.join(str(err).split())[:300]}") from None
        finally:
            logging.disable(muted)
        return with_metadata(quantized.read_bytes(), {"precision": "int8", "quantization": INT8_SCHEME})


def int8_agreement(labels: torch.Tensor, float_logits: torch.Tensor, int8_logits: torch.Tensor,
                   classes: Sequence[str], tolerance: float = INT8_TOLERANCE) -> dict[str, Any]:
    """Accuracy and macro-F1 (metrics.compute_metrics) of a float32 and an int8 model on the same labelled images,
    and how often their argmax agrees; ok when the int8 model's accuracy and macro-F1 are each within `tolerance`
    of the float32 model's (either way: a gain this large would say the int8 model is another model)."""
    found = {name: metrics.compute_metrics(labels.tolist(), logits.argmax(1).tolist(), classes)
             for name, logits in (("float32", float_logits), ("int8", int8_logits))}
    scores = {name: {key: result[key] for key in ("accuracy", "macro_f1")} for name, result in found.items()}
    gaps = {key: scores["int8"][key] - scores["float32"][key] for key in ("accuracy", "macro_f1")}
    # 1e-9: a gap of exactly the tolerance (1 image in 200) passes despite float rounding.
    ok = all(abs(gap) <= tolerance + 1e-9 for gap in gaps.values())
    return {"images": int(labels.numel()), **scores, "gap": gaps, "tolerance": tolerance,
            "argmax_agree": int((float_logits.argmax(1) == int8_logits.argmax(1)).sum()), "ok": ok}


def describe_int8(check: dict[str, Any]) -> str:
    """'accuracy 0.6617 (float32 0.6626), macro-F1 0.6333 (float32 0.6334), argmax agrees on 3525/3589' for an
    int8_agreement() result."""
    f32, i8 = check["float32"], check["int8"]
    return (f"accuracy {i8['accuracy']:.4f} (float32 {f32['accuracy']:.4f}), macro-F1 {i8['macro_f1']:.4f} "
            f"(float32 {f32['macro_f1']:.4f}), argmax agrees on {check['argmax_agree']}/{check['images']}")
