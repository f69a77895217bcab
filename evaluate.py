"""Evaluate a checkpoint on the validation set, or re-score a saved predictions file.

    python evaluate.py --ckpt results/EXP/best.pt --val-csv val.csv [--tta hflip] --out results/EXP/eval
    python evaluate.py --predictions results/EXP/predictions.csv --out rescored/

Writes metrics.json, per_class.csv, confusion_matrix[_normalized].csv/.png (and predictions.csv with --ckpt),
and prints the per-class table of thesis Tables 9/10 with accuracy and macro-F1.
"""
import argparse
import sys

import data
import metrics


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="checkpoint written by train.py (image size and classes come from it)")
    source.add_argument("--predictions", help="predictions.csv (path,label,pred[,prob_<class>...]) to re-score")
    metrics.add_eval_args(parser, require_val=False)
    return parser


def main(args: argparse.Namespace) -> None:
    if args.predictions:
        _, labels, preds, classes = metrics.read_predictions(args.predictions)
        result = metrics.compute_metrics(labels, preds, classes)
        metrics.write_report(args.out, result, classes, title=f"re-scored {args.predictions}")
    else:
        if not args.val_csv:
            raise data.DataError("--val-csv is required with --ckpt")
        hflip = args.tta == "hflip"
        val = metrics.infer_checkpoints([args.ckpt], args.val_csv, args.data_root, args.batch_size, args.workers,
                                        args.device, args.amp, hflip)
        result = metrics.report_logits(args.out, val.average(hflip=hflip), val, val.title(hflip=hflip))
    print(metrics.format_table(result))
    print(f"report written to {args.out}")


if __name__ == "__main__":
    args = get_args_parser().parse_args()
    try:
        main(args)
    except data.DataError as err:
        sys.exit(f"error: {err}")
