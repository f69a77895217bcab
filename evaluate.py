"""Evaluate a checkpoint on the validation set, re-score a saved predictions file, or compare two of either.

    python evaluate.py --ckpt results/EXP/best.pt --val-csv val.csv [--tta hflip] --out results/EXP/eval
    python evaluate.py --predictions results/EXP/predictions.csv --out rescored/
    python evaluate.py --predictions A.csv --compare B.csv [--out DIR]
    python evaluate.py --ckpt A.pt --compare B.pt --val-csv val.csv [--out DIR]

Writes metrics.json (with 95 % bootstrap intervals), per_class.csv, confusion_matrix[_normalized].csv/.png (and
predictions.csv with --ckpt), and prints the per-class table of thesis Tables 9/10 with accuracy and macro-F1.
--compare is a paired test on the same images (matched by path): A - B in accuracy and macro-F1 with 95 %
paired-bootstrap intervals and p-values, and McNemar's exact test; printed, and written to DIR/comparison.json.
--logit-adjust TAU subtracts TAU x log(training class frequency) from the logits (the counts come from the
checkpoint): the post-hoc correction for scoring a model trained on imbalanced data on a balanced set.
"""
import argparse
import math
import os
from dataclasses import dataclass
from typing import Sequence

import torch

import data
import metrics
import models
import onnx_model
import plots
import utils


# --- The evaluation pipeline (ensemble_tta.py uses it too) ---

def add_eval_args(parser: argparse.ArgumentParser, require_val: bool, require_out: bool = True) -> None:
    """The validation-set and inference flags common to evaluate.py and ensemble_tta.py."""
    parser.add_argument("--val-csv", required=require_val, help="validation index CSV (path,label[,face box])")
    parser.add_argument("--data-root", help="folder relative image paths start from (default: each CSV's folder)")
    parser.add_argument("--tta", choices=("none", "hflip"), default="none",
                        help="hflip: average the logits of each image and its mirror")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="data-loading processes")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                        help="float16 autocast on CUDA (default: on)")
    parser.add_argument("--logit-adjust", type=utils.float_in(0.0, math.inf, "a number >= 0"), default=0.0,
                        metavar="TAU",
                        help="subtract TAU x log(training class frequency) from the logits (default: 0 = off; "
                             "1 is the textbook value); needs a checkpoint that records its training class counts")
    parser.add_argument("--out", required=require_out, help="folder for the report files")


def log_prior(arch: dict, path: str, classes: Sequence[str] | None = None) -> torch.Tensor:
    """log of the training class frequencies a checkpoint records (arch["class_counts"], in arch["classes"]
    order), in `classes` order when given: 0 for a class the model lacks (its logit is -inf anyway)."""
    counts, model_classes = arch.get("class_counts"), models.arch_classes(arch)
    if not isinstance(counts, (list, tuple)) or len(counts) != len(model_classes):
        raise utils.UserError(f"{path}: the checkpoint records no training class counts, which --logit-adjust needs "
                              "(checkpoints of an older train.py lack them: retrain, or leave --logit-adjust off)")
    if arch.get("sampler") == "balanced":
        raise utils.UserError(f"{path}: trained with --sampler balanced, which draws every class equally often: its "
                              "training prior is uniform, so --logit-adjust has nothing to correct")
    empty = [name for name, n in zip(model_classes, counts) if n <= 0]
    if empty:
        raise utils.UserError(f"{path}: no training images of class {', '.join(empty)}: log prior undefined, "
                              "--logit-adjust cannot be used")
    counts = torch.tensor(counts, dtype=torch.float64)
    logs = (counts / counts.sum()).log().float()
    if classes is None:
        return logs
    return torch.stack([logs[model_classes.index(c)] if c in model_classes else logs.new_zeros(()) for c in classes])


@dataclass
class ValLogits:
    """Validation logits of one or more checkpoints on one validation set, one tensor [N, C] per checkpoint."""
    plain: list[torch.Tensor]
    flipped: list[torch.Tensor] | None  # mirrored view, only when computed
    labels: torch.Tensor
    samples: list[data.Sample]
    classes: list[str]
    names: list[str]  # experiment name of each checkpoint
    log_priors: torch.Tensor | None = None  # [K, C] log training-class frequencies, when asked for

    def average(self, count: int | None = None, hflip: bool = False, tau: float = 0.0) -> torch.Tensor:
        """Mean logits of the first `count` checkpoints (all when None), over both views when hflip, minus
        tau x log prior (each checkpoint's own prior, averaged like the logits)."""
        views = self.plain[:count]  # count None: all
        if hflip:
            if self.flipped is None:
                raise ValueError("mirrored logits were not computed (pass hflip=True to infer_checkpoints)")
            # Views first, then checkpoints: a checkpoint ensembled with itself then gives exactly its own logits.
            views = [torch.stack([p, f]).mean(dim=0) for p, f in zip(views, self.flipped[:count])]
        mean = torch.stack(views).mean(dim=0)
        if not tau:
            return mean
        if self.log_priors is None:
            raise ValueError("training priors were not loaded (pass priors=True to infer_checkpoints)")
        return mean - tau * self.log_priors[:count].mean(dim=0)

    def title(self, count: int | None = None, hflip: bool = False, tau: float = 0.0) -> str:
        """Report title naming the checkpoints, the TTA and the logit adjustment."""
        names = self.names[:count]
        prefix = f"ensemble of {len(names)}: " if len(names) > 1 else ""
        adjusted = f", logit adjustment tau {tau:g}" if tau else ""
        return f"{prefix}{' + '.join(names)}, {'h-flip' if hflip else 'no'} TTA{adjusted}"


def align_classes(logits: torch.Tensor, model_classes: Sequence[str], data_classes: Sequence[str],
                  source: str) -> torch.Tensor:
    """Logits [N, C_model] -> [N, C_data] in the data's class order, matched by name: a class the model lacks
    gets -inf (never predicted, probability 0); a model class the data lacks is left out of the argmax."""
    if list(model_classes) == list(data_classes):
        return logits
    shared = [c for c in data_classes if c in model_classes]
    if not shared:
        raise utils.UserError(f"{source}: no class in common between the model ({', '.join(model_classes)}) and "
                              f"the data ({', '.join(data_classes)})")
    dropped = [c for c in model_classes if c not in data_classes]
    absent = [c for c in data_classes if c not in model_classes]
    print(f"{source}: scoring on the data's {len(data_classes)} classes by name"
          + (f"; the data lacks {', '.join(dropped)} (those logits are left out)" if dropped else "")
          + (f"; the model lacks {', '.join(absent)} (never predicted)" if absent else ""), flush=True)
    aligned = logits.new_full((logits.shape[0], len(data_classes)), float("-inf"))
    aligned[:, [data_classes.index(c) for c in shared]] = logits[:, [model_classes.index(c) for c in shared]]
    return aligned


def infer_checkpoints(ckpts: Sequence[str], val_csv: str, data_root: str | None = None, batch_size: int = 128,
                      workers: int = 0, device: str = "auto", amp: bool = True, hflip: bool = False,
                      priors: bool = False) -> ValLogits:
    """Validation logits of checkpoints that share classes and image size (one pass per checkpoint, both views),
    in the validation CSV's class order; with priors, also their log training-class frequencies (for logit
    adjustment)."""
    classes = data.read_classes(val_csv)
    samples = data.read_index(val_csv, data_root)
    dev = models.resolve_device(device)
    loaded = [(path, *onnx_model.load_any(path, dev)) for path in ckpts]  # all first: a mismatch fails before inference
    first = loaded[0][2]["arch"]
    model_classes, size = models.arch_classes(first), models.arch_img_size(first)
    grayscale = models.arch_grayscale(first)
    mode = lambda grey: "grayscale" if grey else "colour"
    for path, _, meta in loaded[1:]:
        other_classes, other_size = models.arch_classes(meta["arch"]), models.arch_img_size(meta["arch"])
        if other_classes != model_classes:
            raise utils.UserError(f"{path}: classes {','.join(other_classes)} differ from {ckpts[0]}'s "
                                  f"{','.join(model_classes)}; ensembled checkpoints need the same class list")
        if other_size != size:
            raise utils.UserError(f"{path}: image size {other_size} px differs from {ckpts[0]}'s {size} px; "
                                  "ensembled checkpoints need the same image size")
        if models.arch_grayscale(meta["arch"]) != grayscale:
            raise utils.UserError(f"{path}: trained on {mode(not grayscale)} faces, {ckpts[0]} on {mode(grayscale)}; "
                                  "ensembled checkpoints need the same input")
    # Before inference, so a checkpoint without counts fails in seconds.
    log_priors = torch.stack([log_prior(meta["arch"], path, classes) for path, _, meta in loaded]) if priors else None
    loader = data.make_loader(data.FaceDataset(samples, img_size=size, grayscale=grayscale), batch_size=batch_size,
                              workers=workers)
    plain, flipped, labels = [], [], None
    for path, model, _ in loaded:
        logits, mirrored, labels = models.predict_views(model, loader, dev, amp=amp, hflip=hflip,
                                                        progress=os.path.basename(path))
        plain.append(align_classes(logits, model_classes, classes, path))
        flipped.append(None if mirrored is None else align_classes(mirrored, model_classes, classes, path))
    names = [meta.get("experiment") or os.path.splitext(os.path.basename(path))[0] for path, _, meta in loaded]
    return ValLogits(plain, flipped if hflip else None, labels, samples, list(classes), names, log_priors)


def report_logits(out_dir: str, val: ValLogits, count: int | None = None, hflip: bool = False,
                  tau: float = 0.0) -> dict:
    """Score val.average(count, hflip, tau), write the full report with predictions.csv, return the metrics."""
    logits = val.average(count, hflip, tau)
    preds = logits.argmax(dim=1)
    probs = torch.softmax(logits.float(), dim=1).numpy()
    result = metrics.compute_metrics(val.labels.tolist(), preds.tolist(), val.classes)
    plots.write_report(out_dir, result, val.classes, title=val.title(count, hflip, tau),
                       predictions=([s.path for s in val.samples], val.labels.tolist(), preds.tolist(), probs))
    return result


# --- CLI ---

def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="checkpoint written by train.py (image size and classes come from it)")
    source.add_argument("--predictions", help="predictions.csv (path,label,pred[,prob_<class>...]) to re-score")
    parser.add_argument("--compare", metavar="B", help="paired comparison of --ckpt / --predictions (A) with this "
                                                       "second checkpoint / predictions file (B) on the same images")
    add_eval_args(parser, require_val=False, require_out=False)
    return parser


def compare_sides(args: argparse.Namespace) -> tuple[dict, str, str]:
    """metrics.compare of A's and B's predictions on the same images, and the two sides' names (--compare)."""
    if args.predictions:
        labels, preds, classes = metrics.align_predictions([args.predictions, args.compare])
        return metrics.compare(labels, preds[0], preds[1], len(classes)), args.predictions, args.compare
    hflip, tau, paths = args.tta == "hflip", args.logit_adjust, (args.ckpt, args.compare)
    if tau:  # both checked before either runs inference
        for path in paths:
            log_prior(onnx_model.load_any(path)[1]["arch"], path)  # also an exported .onnx
    # One at a time: compared checkpoints may differ in image size, unlike an ensemble's.
    vals = [infer_checkpoints([path], args.val_csv, args.data_root, args.batch_size, args.workers, args.device,
                              args.amp, hflip, priors=bool(tau)) for path in paths]
    preds = [val.average(hflip=hflip, tau=tau).argmax(dim=1).numpy() for val in vals]  # both in the CSV's classes
    name_a, name_b = (f"{path} ({val.title(hflip=hflip, tau=tau)})" for path, val in zip(paths, vals))
    return metrics.compare(vals[0].labels.numpy(), preds[0], preds[1], len(vals[0].classes)), name_a, name_b


def main(args: argparse.Namespace) -> None:
    """Evaluate one checkpoint or predictions file, or compare two (--compare)."""
    if args.predictions and args.logit_adjust:
        raise utils.UserError("--logit-adjust needs the training class counts a checkpoint records; a predictions "
                              "file has none: use --ckpt")
    if args.ckpt and not args.val_csv:
        raise utils.UserError("--val-csv is required with --ckpt")
    if args.compare:
        result, name_a, name_b = compare_sides(args)
        print(metrics.format_comparison(result, name_a, name_b))
        if args.out:
            utils.write_json(os.path.join(args.out, "comparison.json"), result | {"a": name_a, "b": name_b})
            print(f"comparison written to {os.path.join(args.out, 'comparison.json')}")
        return
    if not args.out:
        raise utils.UserError("--out is required (it is optional only with --compare)")
    if args.predictions:
        _, labels, preds, classes = metrics.read_predictions(args.predictions)
        result = metrics.compute_metrics(labels, preds, classes)
        plots.write_report(args.out, result, classes, title=f"re-scored {args.predictions}")
    else:
        hflip = args.tta == "hflip"
        val = infer_checkpoints([args.ckpt], args.val_csv, args.data_root, args.batch_size, args.workers,
                                args.device, args.amp, hflip, priors=bool(args.logit_adjust))
        result = report_logits(args.out, val, hflip=hflip, tau=args.logit_adjust)
    print(metrics.format_table(result))
    print(f"report written to {args.out}")


if __name__ == "__main__":
    utils.run_cli(main, get_args_parser())
