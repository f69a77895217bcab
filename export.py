"""Export a checkpoint to ONNX and check the export against eager PyTorch; or its backbone as a state dict.

    python export.py --ckpt results/EXP/best.pt --out model.onnx [--opset 18] [--img-size S] [--val-csv val.csv]
    python export.py --ckpt results/EXP/best.pt --backbone-out backbone.pt   # for train.py --weights PATH
    python export.py --ckpt results/EXP/best.pt --out model.onnx --int8 model_int8.onnx --calib-csv train.csv \
        --val-csv val.csv                                                      # also a static int8 model

The model is exported with torch.onnx's exporter (torch.export based) with a dynamic batch axis; its metadata
holds the classes, image size, normalisation, experiment id, architecture and metrics (see onnx_model.py).
Before the file is written, ONNX Runtime runs it on random batches of 1, 3 and 4 images and, with --val-csv,
on the first --limit validation images; the export fails, writing nothing, unless every check keeps
max |logit diff| <= 1e-3 x max(1, largest |eager logit|) against eager float32 PyTorch and the same argmax
(a flip within a near-tie of the top two logits excepted). Needs requirements-onnx.txt.

--int8 PATH also writes a static int8 model (onnx_model.INT8_SCHEME), its activation ranges calibrated on
--calib-images images spread evenly over --calib-csv (the training CSV: not the images it is graded on). It is
scored on every --val-csv image beside the float32 export and written only if its accuracy and macro-F1 are each
within 0.5 points of the float32 model's (argmax agreement reported); else it fails with one line, the float32
file already written. Its metadata is the float32 model's, plus precision int8, the scheme and the check's numbers.

--backbone-out writes the backbone alone (every tensor but the class head; for the hybrid, its ConvNeXt) as a
torchvision-format state dict, so another run can start from it with `train.py --weights PATH`, as it would
from ImageNet weights. Needs no extra package.
"""
import argparse
import json
import time

import torch

import data
import models
import onnx_model
import utils


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint written by train.py (best.pt)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="ONNX file to write, e.g. model.onnx")
    out.add_argument("--backbone-out", help="write the backbone as a torchvision state dict here instead (no ONNX)")
    p.add_argument("--opset", type=utils.int_at_least(18), default=onnx_model.OPSET,
                   help=f"ONNX opset (default: {onnx_model.OPSET}; the exporter supports 18 and later)")
    p.add_argument("--img-size", type=utils.int_at_least(32), default=None,
                   help="input side in px (default: the checkpoint's)")
    p.add_argument("--val-csv", default=None, help="also check on real images: a validation index CSV (with --int8, "
                   "every one of its images grades the int8 model)")
    p.add_argument("--data-root", help="folder relative image paths start from (default: each CSV's folder)")
    p.add_argument("--limit", type=utils.int_at_least(1), default=256,
                   help="--val-csv: check the float32 export on the first N images (default: 256)")
    p.add_argument("--batch-size", type=utils.int_at_least(1), default=32,
                   help="--val-csv / --calib-csv batch size (default: 32)")
    p.add_argument("--workers", type=utils.int_at_least(0), default=0,
                   help="--val-csv / --calib-csv loading processes (default: 0)")
    p.add_argument("--int8", metavar="PATH", help="also write a static int8 model here, kept only if it scores within "
                   "0.5 points of float32 on every --val-csv image (needs --calib-csv and --val-csv)")
    p.add_argument("--calib-csv", help="--int8: index CSV of the calibration images (the training CSV; not --val-csv, "
                   "whose images grade the int8 model)")
    p.add_argument("--calib-images", type=utils.int_at_least(1), default=512,
                   help="--int8: calibrate on N images spread evenly over --calib-csv (default: 512)")
    return p


def check_int8_args(args: argparse.Namespace) -> None:
    """A one-line UserError for an --int8 flag without its partners, before anything slow runs."""
    if args.int8 is None:
        if args.calib_csv is not None:
            raise utils.UserError("--calib-csv goes with --int8 PATH")
        return
    partners = {"--out": (args.out, "the float32 model"), "--calib-csv": (args.calib_csv, "the calibration images"),
                "--val-csv": (args.val_csv, "the images that grade it")}
    missing = [flag for flag, (value, _) in partners.items() if value is None]
    if missing:
        raise utils.UserError(f"--int8 needs {' and '.join(missing)} "
                              f"({', '.join(partners[flag][1] for flag in missing)})")
    if args.int8 == args.out:
        raise utils.UserError(f"--int8 {args.int8}: the same file as --out; give the int8 model its own name")


def spread(samples: list[data.Sample], count: int) -> list[data.Sample]:
    """`count` samples spread evenly over the list (all when it is shorter): a CSV sorted by class gives every
    class its share, where its first rows would be one class."""
    if count >= len(samples):
        return samples
    return [samples[i * len(samples) // count] for i in range(count)]


def check(name: str, result: dict, out: str) -> None:
    """Print one check's line; a UserError naming the file when ONNX Runtime and PyTorch disagree."""
    line = f"{name}: {onnx_model.describe(result)}"
    print(line, flush=True)
    if not result["ok"]:
        raise utils.UserError(f"{out}: not written, ONNX Runtime disagrees with eager PyTorch on {line}")


def export_backbone(ckpt: str, out: str) -> None:
    """Write a checkpoint's backbone as a torchvision-format state dict, atomically."""
    model, meta = onnx_model.load_any(ckpt, "cpu")
    state = models.backbone_state_dict(model, meta["arch"])
    with utils.atomic_write(out, "wb") as f:
        torch.save(state, f)
    print(f"wrote {out}: the {models.HYBRIDS.get(meta['arch']['name'], meta['arch']['name'])} backbone of "
          f"{meta['experiment']} ({len(state)} tensors; use it with train.py --weights {out})", flush=True)


def face_loader(samples: list[data.Sample], img_size: int, arch: dict, args: argparse.Namespace
                ) -> torch.utils.data.DataLoader:
    """Unshuffled uint8 face batches as the model reads them (its size and, if it has one, its grayscale)."""
    dataset = data.FaceDataset(samples, img_size, grayscale=models.arch_grayscale(arch))
    return data.make_loader(dataset, args.batch_size, args.workers)


def export_int8(args: argparse.Namespace, blob: bytes, exported: onnx_model.OnnxModel, arch: dict, img_size: int,
                calibration: list[data.Sample], val: list[data.Sample]) -> None:
    """Quantise the float32 export, score both on every --val-csv image, write the int8 model only if it agrees."""
    start = time.perf_counter()
    batches = (models.normalize(images) for images, _ in face_loader(calibration, img_size, arch, args))
    int8_blob = onnx_model.quantize_int8(blob, batches)
    print(f"int8: calibrated on {len(calibration)} images of {args.calib_csv}, quantised in "
          f"{time.perf_counter() - start:.1f} s ({len(int8_blob) / 1e6:.1f} MB)", flush=True)
    quantized = onnx_model.OnnxModel(int8_blob).eval()
    loader = face_loader(val, img_size, arch, args)
    reference, labels = models.predict_logits(exported, loader, "cpu", progress="float32")
    logits, _ = models.predict_logits(quantized, loader, "cpu", progress="int8")
    result = onnx_model.int8_agreement(labels, reference, logits, models.arch_classes(arch))
    line = f"int8 on {args.val_csv} ({len(val)} images): {onnx_model.describe_int8(result)}"
    print(line, flush=True)
    if not result["ok"]:
        raise utils.UserError(f"{args.int8}: not written, int8 accuracy or macro-F1 is more than "
                              f"{100 * result['tolerance']:g} points from float32's: {line} ({args.out}, the "
                              "float32 model, was written)")
    check_props = {"int8_check": json.dumps({**result, "val_csv": args.val_csv, "calib_csv": args.calib_csv,
                                             "calib_images": len(calibration)})}
    with utils.atomic_write(args.int8, "wb") as f:
        f.write(onnx_model.with_metadata(int8_blob, check_props))
    print(f"wrote {args.int8} ({quantized.runtime})", flush=True)


def main(args: argparse.Namespace) -> None:
    """Export, check against eager PyTorch, then write the file atomically (and the int8 model, if asked)."""
    check_int8_args(args)
    if args.backbone_out is not None:
        export_backbone(args.ckpt, args.backbone_out)
        return
    onnx_model.require("export.py", ("onnx", "onnxruntime", "onnxscript"))
    val = data.read_index(args.val_csv, args.data_root) if args.val_csv else None
    calibration = spread(data.read_index(args.calib_csv, args.data_root), args.calib_images) if args.int8 else None
    model, meta = onnx_model.load_any(args.ckpt, "cpu")
    arch = meta["arch"]
    if args.int8 and tuple(data.read_classes(args.val_csv)) != models.arch_classes(arch):
        raise utils.UserError(f"--val-csv {args.val_csv}: classes {', '.join(data.read_classes(args.val_csv))} are "
                              f"not the model's ({', '.join(models.arch_classes(arch))}); the int8 check scores the "
                              "model on its own classes")
    img_size = args.img_size or models.arch_img_size(arch)
    print(f"{args.ckpt}: {arch['name']} ({meta['experiment']}) at {img_size} px, opset {args.opset}", flush=True)
    start = time.perf_counter()
    blob = onnx_model.export_bytes(model, arch, meta["experiment"], meta["metrics"], img_size, args.opset)
    print(f"exported in {time.perf_counter() - start:.1f} s ({len(blob) / 1e6:.1f} MB)", flush=True)

    exported = onnx_model.OnnxModel(blob).eval()
    check("random inputs (batches of 1, 3, 4)", onnx_model.verify(model, exported, img_size), args.out)
    if val is not None:
        loader = face_loader(val[:args.limit], img_size, arch, args)
        reference, _ = models.predict_logits(model, loader, "cpu")
        logits, _ = models.predict_logits(exported, loader, "cpu")
        check(f"{args.val_csv} (first {len(loader.dataset)} images)", onnx_model.compare(reference, logits), args.out)
    with utils.atomic_write(args.out, "wb") as f:
        f.write(blob)
    print(f"wrote {args.out} ({exported.runtime})", flush=True)
    if args.int8:
        export_int8(args, blob, exported, arch, img_size, calibration, val)


if __name__ == "__main__":
    utils.run_cli(main, get_args_parser())
