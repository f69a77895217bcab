"""Export a checkpoint to ONNX and check the export against eager PyTorch; or its backbone as a state dict.

    python export.py --ckpt results/EXP/best.pt --out model.onnx [--opset 18] [--img-size S] [--val-csv val.csv]
    python export.py --ckpt results/EXP/best.pt --backbone-out backbone.pt   # for train.py --weights PATH

The model is exported with torch.onnx's exporter (torch.export based) with a dynamic batch axis; its metadata
holds the classes, image size, normalisation, experiment id, architecture and metrics (see onnx_model.py).
Before the file is written, ONNX Runtime runs it on random batches of 1, 3 and 4 images and, with --val-csv,
on the first --limit validation images; the export fails, writing nothing, unless every check keeps
max |logit diff| <= 1e-3 x max(1, largest |eager logit|) against eager float32 PyTorch and the same argmax
(a flip within a near-tie of the top two logits excepted). Needs requirements-onnx.txt.

--backbone-out writes the backbone alone (every tensor but the class head; for the hybrid, its ConvNeXt) as a
torchvision-format state dict, so another run can start from it with `train.py --weights PATH`, as it would
from ImageNet weights. Needs no extra package.
"""
import argparse
import sys
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
    p.add_argument("--val-csv", default=None, help="also check on real images: a validation index CSV")
    p.add_argument("--data-root", help="folder relative image paths start from (default: each CSV's folder)")
    p.add_argument("--limit", type=utils.int_at_least(1), default=256,
                   help="--val-csv: check on the first N images (default: 256)")
    p.add_argument("--batch-size", type=utils.int_at_least(1), default=32, help="--val-csv batch size (default: 32)")
    p.add_argument("--workers", type=utils.int_at_least(0), default=0, help="--val-csv loading processes (default: 0)")
    return p


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


def main(args: argparse.Namespace) -> None:
    """Export, check against eager PyTorch, then write the file atomically."""
    if args.backbone_out is not None:
        export_backbone(args.ckpt, args.backbone_out)
        return
    onnx_model.require("export.py", ("onnx", "onnxruntime", "onnxscript"))
    samples = data.read_index(args.val_csv, args.data_root)[:args.limit] if args.val_csv else None
    model, meta = onnx_model.load_any(args.ckpt, "cpu")
    arch = meta["arch"]
    img_size = args.img_size or models.arch_img_size(arch)
    print(f"{args.ckpt}: {arch['name']} ({meta['experiment']}) at {img_size} px, opset {args.opset}", flush=True)
    start = time.perf_counter()
    blob = onnx_model.export_bytes(model, arch, meta["experiment"], meta["metrics"], img_size, args.opset)
    print(f"exported in {time.perf_counter() - start:.1f} s ({len(blob) / 1e6:.1f} MB)", flush=True)

    exported = onnx_model.OnnxModel(blob).eval()
    check("random inputs (batches of 1, 3, 4)", onnx_model.verify(model, exported, img_size), args.out)
    if samples is not None:
        dataset = data.FaceDataset(samples, img_size, grayscale=models.arch_grayscale(arch))
        loader = data.make_loader(dataset, args.batch_size, args.workers)
        reference, _ = models.predict_logits(model, loader, "cpu")
        logits, _ = models.predict_logits(exported, loader, "cpu")
        check(f"{args.val_csv} (first {len(samples)} images)", onnx_model.compare(reference, logits), args.out)
    with utils.atomic_write(args.out, "wb") as f:
        f.write(blob)
    print(f"wrote {args.out} ({exported.runtime})", flush=True)


if __name__ == "__main__":
    args = get_args_parser().parse_args()
    try:
        main(args)
    except utils.UserError as err:
        sys.exit(f"error: {err}")
