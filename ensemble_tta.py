"""Inference-side rescue (thesis 3.5, Table 6): checkpoint ensembling and horizontal-flip TTA.

    python ensemble_tta.py --ckpt A.pt [B.pt ...] --val-csv val.csv [--tta hflip] --out DIR
    python ensemble_tta.py --ckpt A.pt B.pt --val-csv val.csv --table --out DIR

Averages the logits of the checkpoints (and, with hflip, of each image and its mirror) and writes the same
report as evaluate.py. --table runs every checkpoint once over both views, then scores the four Table 6
configurations from those cached logits: DIR/rescue_table.csv, DIR/rescue_table.md, and one full report
per configuration in DIR/<configuration folder>/ (--tta is not used then). --logit-adjust TAU adjusts the
ensemble's logits; with --table it leaves the four thesis rows as they are and adds a fifth: the single
checkpoint, no TTA, logit-adjusted.
"""
import argparse
import os

import evaluate
import metrics
import utils

# (configuration as in metrics.THESIS_RESCUE, report folder, checkpoints used (None = all), h-flip TTA)
CONFIGURATIONS = (
    ("single checkpoint, no TTA", "single_no_tta", 1, False),
    ("single checkpoint, h-flip TTA", "single_hflip", 1, True),
    ("checkpoint ensemble, no TTA", "ensemble_no_tta", None, False),
    ("checkpoint ensemble + h-flip TTA", "ensemble_hflip", None, True),
)
# The row --logit-adjust adds to the table (not in the thesis): the single checkpoint, no TTA, adjusted.
LOGIT_ADJUSTED = ("single checkpoint, logit adjustment", "single_logit_adjusted", 1, False)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", nargs="+", required=True,
                        help="checkpoints to ensemble (any architectures, same classes and image size); "
                             "with --table the first is the 'single checkpoint'")
    parser.add_argument("--table", action="store_true", help="score the four Table 6 configurations")
    evaluate.add_eval_args(parser, require_val=True)
    return parser


def main(args: argparse.Namespace) -> None:
    if args.table and len(args.ckpt) < 2:
        raise utils.UserError("--table compares a single checkpoint with an ensemble: give two or more --ckpt")
    hflip = args.table or args.tta == "hflip"
    tau = args.logit_adjust
    val = evaluate.infer_checkpoints(args.ckpt, args.val_csv, args.data_root, args.batch_size, args.workers,
                                     args.device, args.amp, hflip, priors=bool(tau))
    if not args.table:
        result = evaluate.report_logits(args.out, val, hflip=hflip, tau=tau)
        print(metrics.format_table(result))
        print(f"report written to {args.out}")
        return

    configurations = [(*c, 0.0) for c in CONFIGURATIONS]
    if tau:
        configurations.append((*LOGIT_ADJUSTED, tau))
    rows = []
    for name, folder, count, flip, adjust in configurations:
        result = evaluate.report_logits(os.path.join(args.out, folder), val, count, flip, adjust)
        name = f"{name} (tau {adjust:g})" if adjust else name
        thesis_acc, thesis_f1 = metrics.THESIS_RESCUE.get(name, (None, None))
        rows.append([name, result["accuracy"], result["macro_f1"], thesis_acc, thesis_f1, folder, result["ci95"]])
    utils.write_csv(os.path.join(args.out, "rescue_table.csv"),
                    ["configuration", "accuracy", "macro_f1", "thesis_accuracy", "thesis_macro_f1", "report",
                     "accuracy_ci95_lo", "accuracy_ci95_hi", "macro_f1_ci95_lo", "macro_f1_ci95_hi"],
                    ([name, *("" if v is None else f"{v:.6f}" for v in values), folder,
                      *(f"{v:.6f}" for v in ci["accuracy"] + ci["macro_f1"])] for name, *values, folder, ci in rows))
    lines = [f"Single checkpoint: {val.names[0]}. Ensemble: {' + '.join(val.names)} (mean of logits). "
             f"Validation set: {args.val_csv} ({len(val.samples)} images). Brackets: 95 % bootstrap intervals.", "",
             "| Configuration | Accuracy | Macro-F1 | Thesis accuracy | Thesis macro-F1 | Report |",
             "|---|---|---|---|---|---|"]
    for name, acc, f1, thesis_acc, thesis_f1, folder, ci in rows:
        thesis = " | ".join("-" if v is None else f"{v:.4f}" for v in (thesis_acc, thesis_f1))
        lines.append(f"| {name} | {acc:.4f} {metrics.fmt_interval(ci['accuracy'])} | "
                     f"{f1:.4f} {metrics.fmt_interval(ci['macro_f1'])} | {thesis} | [{folder}/]({folder}/) |")
    with utils.atomic_write(os.path.join(args.out, "rescue_table.md")) as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"table and per-configuration reports written to {args.out}")


if __name__ == "__main__":
    utils.run_cli(main, get_args_parser())
