"""Fill in the thesis's tables (3 to 8) with our numbers: writes summary.md and summary CSVs.

    python summarize.py --results results/

Reads what the other stages left in the results folder: <experiment>/summary.json (train.py),
rescue/rescue_table.csv (ensemble_tta.py) and benchmark/benchmark.json (benchmark.py). A stage that
has not run yet shows as "-", so the summary can be made at any time.
"""
import argparse
import csv
import io
import json
import os
import sys

import data
from metrics import THESIS_PER_CLASS_F1, THESIS_RESCUE, THESIS_RUNS

RUN_IDS = tuple(THESIS_RUNS)
CNN_IDS = ("baseline_resnet50_ce_run1", "convnext_tiny_baseline_ce_run1", "convnext_tiny_baseline_focal_alpha_run1")
HYBRID_IDS = tuple(i for i in RUN_IDS if i not in CNN_IDS)


def read_json(path: str):
    """A JSON file's content, or None when the file is absent."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise data.UserError(f"{path}: cannot read JSON ({err})") from None


def num(value, digits: int = 4) -> str:
    """A number for a table cell; '-' when missing."""
    return "-" if value is None else f"{value:.{digits}f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def load_results(results: str) -> tuple[dict, dict, list]:
    """Per-run summaries, benchmark rows keyed by (experiment, mode), and the rescue table rows."""
    runs = {i: read_json(os.path.join(results, i, "summary.json")) for i in RUN_IDS}
    bench = {}
    for row in read_json(os.path.join(results, "benchmark", "benchmark.json")) or []:
        if row.get("batch_size", 1) == 1:
            bench[(row["experiment"], row["mode"])] = row
    rescue = []
    rescue_csv = os.path.join(results, "rescue", "rescue_table.csv")
    if os.path.exists(rescue_csv):
        with open(rescue_csv, newline="") as f:
            rescue = list(csv.DictReader(f))
    return runs, bench, rescue


def run_row(run_id: str, runs: dict, bench: dict) -> dict:
    """One experiment's numbers, ours and the thesis's, as plain values (None when missing)."""
    summary = runs.get(run_id) or {}
    eager, fast = bench.get((run_id, "eager"), {}), bench.get((run_id, "fast"), {})
    desc, t_acc, t_f1, t_params, t_lat, t_fps = THESIS_RUNS[run_id]
    params = summary.get("params") or eager.get("params")
    return {
        "experiment": run_id, "model": desc,
        "accuracy": summary.get("accuracy"), "thesis_accuracy": t_acc,
        "macro_f1": summary.get("macro_f1"), "thesis_macro_f1": t_f1,
        "params_m": None if params is None else params / 1e6, "thesis_params_m": t_params,
        "latency_ms": eager.get("latency_ms"), "fps": eager.get("fps"),
        "fast_latency_ms": fast.get("latency_ms"), "fast_fps": fast.get("fps"),
        "thesis_latency_ms": t_lat, "thesis_fps": t_fps, "best_epoch": summary.get("best_epoch"),
    }


def results_table(rows: list[dict]) -> str:
    """Tables 3, 4 and 7: ours beside the thesis's for each experiment."""
    header = ["Experiment", "Model", "Accuracy (thesis)", "Macro-F1 (thesis)", "Params M (thesis)",
              "Latency ms (thesis)", "FPS (thesis)", "Fast-path ms", "Fast-path FPS"]
    body = [[r["experiment"], r["model"],
             f"{num(r['accuracy'])} ({r['thesis_accuracy']:.4f})", f"{num(r['macro_f1'])} ({r['thesis_macro_f1']:.4f})",
             f"{num(r['params_m'], 3)} ({r['thesis_params_m']:.3f})",
             f"{num(r['latency_ms'])} ({r['thesis_latency_ms']:.4f})", f"{num(r['fps'], 2)} ({r['thesis_fps']:.2f})",
             num(r["fast_latency_ms"]), num(r["fast_fps"], 2)] for r in rows]
    return md_table(header, body)


def gain_table(rows: dict) -> str:
    """Table 5: what focal loss with class-aware alpha adds over cross-entropy, ours and the thesis's."""
    pairs = [("ConvNeXt-Tiny baseline", "convnext_tiny_baseline_ce_run1", "convnext_tiny_baseline_focal_alpha_run1"),
             ("ConvNeXt-Tiny + Transformer (1 block)", "convnext_tiny_transformer_ce_run1",
              "convnext_tiny_transformer_focal_alpha_run1")]
    body = []
    for arch, ce, focal in pairs:
        for setting, run_id in (("Cross-entropy", ce), ("Focal + alpha", focal)):
            r = rows[run_id]
            gain_acc = gain_f1 = "-"
            if run_id == focal:
                c = rows[ce]
                if r["accuracy"] is not None and c["accuracy"] is not None:
                    gain_acc = f"{r['accuracy'] - c['accuracy']:+.4f}"
                    gain_f1 = f"{r['macro_f1'] - c['macro_f1']:+.4f}"
                gain_acc += f" ({r['thesis_accuracy'] - c['thesis_accuracy']:+.4f})"
                gain_f1 += f" ({r['thesis_macro_f1'] - c['thesis_macro_f1']:+.4f})"
            body.append([arch, setting, f"{num(r['accuracy'])} ({r['thesis_accuracy']:.4f})",
                         f"{num(r['macro_f1'])} ({r['thesis_macro_f1']:.4f})", gain_acc, gain_f1])
    return md_table(["Architecture", "Training", "Accuracy (thesis)", "Macro-F1 (thesis)",
                     "Accuracy gain (thesis)", "Macro-F1 gain (thesis)"], body)


def rescue_table(rescue: list[dict]) -> str:
    """Table 6 from ensemble_tta.py's rescue_table.csv, with the thesis's numbers beside ours."""
    if not rescue:
        return "_Not run yet (ensemble_tta.py --table)._"
    body = []
    for row in rescue:
        thesis = THESIS_RESCUE.get(row["configuration"], (None, None))
        body.append([row["configuration"], f"{num(float(row['accuracy']))} ({num(thesis[0])})",
                     f"{num(float(row['macro_f1']))} ({num(thesis[1])})"])
    return md_table(["Configuration", "Accuracy (thesis)", "Macro-F1 (thesis)"], body)


def best_of(ids: tuple, runs: dict) -> str | None:
    """The experiment with the highest macro-F1 (ties: accuracy) among those that finished."""
    done = [i for i in ids if runs.get(i)]
    return max(done, key=lambda i: (runs[i]["macro_f1"], runs[i]["accuracy"])) if done else None


def per_class_table(runs: dict) -> tuple[str, list[list]]:
    """Table 8: per-class F1 of our best CNN-only and best hybrid (the runs' own classes), beside the thesis's."""
    best_cnn, best_hybrid = best_of(CNN_IDS, runs), best_of(HYBRID_IDS, runs)
    best = [b for b in (best_cnn, best_hybrid) if b]
    classes = list(runs[best[0]]["per_class"]) if best else list(data.AFFECTNET8)
    rows = []
    for name in classes:
        ours = [runs[b]["per_class"].get(name, {}).get("f1") if b else None for b in (best_cnn, best_hybrid)]
        k = data.AFFECTNET8.index(name) if name in data.AFFECTNET8 else None
        thesis = [None if k is None else THESIS_PER_CLASS_F1[kind][k] for kind in ("cnn", "hybrid")]
        rows.append([name, ours[0], thesis[0], ours[1], thesis[1]])
    header = ["Class", f"Best CNN-only F1 ({best_cnn or '-'})", "Thesis CNN-only",
              f"Best hybrid F1 ({best_hybrid or '-'})", "Thesis hybrid"]
    body = [[r[0], num(r[1]), num(r[2]), num(r[3]), num(r[4])] for r in rows]
    return md_table(header, body), rows


def csv_text(header: list[str], rows: list[list]) -> str:
    """CSV content as a string."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results", help="the folder experiments.sh wrote to")
    return parser


def main(args: argparse.Namespace) -> None:
    if not os.path.isdir(args.results):
        raise data.UserError(f"--results {args.results}: no such folder")
    runs, bench, rescue = load_results(args.results)
    rows = {i: run_row(i, runs, bench) for i in RUN_IDS}
    device = next((r.get("device_name") or r.get("device") for r in bench.values()), None)
    finished = sum(1 for i in RUN_IDS if runs[i])

    per_class_md, per_class_rows = per_class_table(runs)
    pngs = [os.path.join(i, f"confusion_matrix{kind}.png") for i in RUN_IDS for kind in ("", "_normalized")
            if os.path.exists(os.path.join(args.results, i, f"confusion_matrix{kind}.png"))]
    sections = [
        "# Results: our runs beside the thesis's",
        f"{finished} of 7 experiments finished. Values in brackets are the thesis's (H100 NVL). "
        f"Latency and FPS: benchmark.py, batch 1, measured on {device or '-'}; "
        "the thesis protocol is 'Latency', the fast path is 'Fast-path'.",
        "## Table 3. Baseline CNN comparison", results_table([rows[i] for i in RUN_IDS[:2]]),
        "## Table 4. Hybrid model progression",
        results_table([rows[i] for i in HYBRID_IDS]),
        "## Table 5. Effect of imbalance-aware training", gain_table(rows),
        "## Table 6. Inference-side rescue (ensemble and flip TTA)", rescue_table(rescue),
        "## Table 7. Parameters, latency and FPS", results_table([rows[i] for i in RUN_IDS]),
        "## Table 8. Per-class F1, best CNN-only and best hybrid single model", per_class_md,
        "## Confusion matrices",
        "\n".join(f"- [{p}]({p})" for p in pngs) or "_None yet._",
    ]
    with data.atomic_write(os.path.join(args.results, "summary.md")) as f:
        f.write("\n\n".join(sections) + "\n")
    fields = list(rows[RUN_IDS[0]])
    with data.atomic_write(os.path.join(args.results, "summary_runs.csv")) as f:
        f.write(csv_text(fields, [[rows[i][k] for k in fields] for i in RUN_IDS]))
    with data.atomic_write(os.path.join(args.results, "summary_per_class_f1.csv")) as f:
        f.write(csv_text(["class", "best_cnn_f1", "thesis_cnn_f1", "best_hybrid_f1", "thesis_hybrid_f1"],
                         per_class_rows))
    print(f"wrote {os.path.join(args.results, 'summary.md')} ({finished} of 7 experiments finished)")


if __name__ == "__main__":
    args = get_args_parser().parse_args()
    try:
        main(args)
    except data.UserError as err:
        sys.exit(f"error: {err}")
