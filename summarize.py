"""Fill in the thesis's tables (3 to 8) with our numbers, with 95 % intervals and the thesis's comparisons
tested on our runs: writes summary.md and summary CSVs.

    python summarize.py --results results/

Reads what the other stages left in the results folder: <experiment>/summary.json and predictions.csv
(train.py), rescue/rescue_table.csv and rescue/<configuration>/predictions.csv (ensemble_tta.py) and
benchmark/benchmark.json (benchmark.py). With several seeds (experiments.sh --seeds) each seed is a
folder seed<N>/ holding those files, and the tables show the mean +- std over seeds. A stage that has
not run yet shows as "-", so the summary can be made at any time.
"""
import argparse
import csv
import json
import os
import re

import numpy as np

import metrics
import utils

RUN_IDS = tuple(metrics.THESIS_RUNS)
CNN_IDS = ("baseline_resnet50_ce_run1", "convnext_tiny_baseline_ce_run1", "convnext_tiny_baseline_focal_alpha_run1")
HYBRID_IDS = tuple(i for i in RUN_IDS if i not in CNN_IDS)
BEST_CNN, BEST_HYBRID = "best CNN-only", "best hybrid"  # stand-ins resolved to our best runs
# The comparisons the thesis draws conclusions from, as (comparison, A, B): differences are A - B.
RUN_COMPARISONS = (
    ("ConvNeXt-Tiny: focal + alpha vs cross-entropy", "convnext_tiny_baseline_focal_alpha_run1",
     "convnext_tiny_baseline_ce_run1"),
    ("Hybrid 1 block: focal + alpha vs cross-entropy", "convnext_tiny_transformer_focal_alpha_run1",
     "convnext_tiny_transformer_ce_run1"),
    ("Hybrid, focal + alpha: 2 blocks vs 1 block", "convnext_tiny_transformer_focal_alpha_run2",
     "convnext_tiny_transformer_focal_alpha_run1"),
    ("Hybrid 2 blocks: EMA run (run 3) vs run 2", "convnext_tiny_transformer_focal_alpha_ema_run3",
     "convnext_tiny_transformer_focal_alpha_run2"),
    ("Best CNN-only vs best hybrid", BEST_CNN, BEST_HYBRID),
)
RESCUE_BASE = "single checkpoint, no TTA"  # what each other rescue configuration is compared with
SEED_FOLDER = re.compile(r"seed(\d+)")
ALPHA = 0.05


def read_json(path: str):
    """A JSON file's content, or None when the file is absent."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise utils.UserError(f"{path}: cannot read JSON ({err})") from None


def num(value, digits: int = 4) -> str:
    """A number for a table cell; '-' when missing."""
    return "-" if value is None else f"{value:.{digits}f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def seed_trees(results: str) -> dict[str, str]:
    """Seed label -> results tree: the seed<N>/ folders of a several-seed run, else {"": results}."""
    found = sorted((int(m.group(1)), name) for name in os.listdir(results)
                   if (m := SEED_FOLDER.fullmatch(name)) and os.path.isdir(os.path.join(results, name)))
    return {str(seed): os.path.join(results, name) for seed, name in found} or {"": results}


def load_results(results: str, trees: dict[str, str]) -> tuple[dict, dict, dict, list]:
    """Per-run summaries per seed, benchmark rows keyed by (experiment, mode), rescue rows per seed, and the
    rescue configurations (name, report folder) in table order."""
    per_seed = {i: {seed: s for seed, tree in trees.items()
                    if (s := read_json(os.path.join(tree, i, "summary.json")))} for i in RUN_IDS}
    bench = {(row["experiment"], row["mode"]): row
             for row in read_json(os.path.join(results, "benchmark", "benchmark.json")) or []
             if row.get("batch_size", 1) == 1}
    rescue, configurations = {}, []
    for seed, tree in trees.items():
        rescue_csv = os.path.join(tree, "rescue", "rescue_table.csv")
        if os.path.exists(rescue_csv):
            with open(rescue_csv, newline="") as f:
                rescue[seed] = {row["configuration"]: row for row in csv.DictReader(f)}
            configurations += [(name, row["report"]) for name, row in rescue[seed].items()
                               if (name, row["report"]) not in configurations]
    return per_seed, bench, rescue, configurations


def mean_summary(summaries: dict[str, dict]) -> dict | None:
    """A run's summary.json with accuracy, macro-F1 and per-class F1 averaged over its seeds (None: not run)."""
    if not summaries:
        return None
    values = list(summaries.values())
    out = values[0] | {key: float(np.mean([s[key] for s in values])) for key in ("accuracy", "macro_f1")}
    out["per_class"] = {name: {"f1": float(np.mean([s["per_class"][name]["f1"] for s in values]))}
                        for name in values[0]["per_class"]}
    return out


def seed_stats(files: dict[str, str]) -> dict | None:
    """Mean, std over seeds, per-seed values and 95 % interval (of the mean) of accuracy, macro-F1 and each
    class's F1, from one configuration's predictions files (seed label -> path); None without files."""
    files = {seed: path for seed, path in files.items() if os.path.exists(path)}
    if not files:
        return None
    labels, preds, classes = metrics.align_predictions(list(files.values()))
    (result,) = metrics.bootstrap(labels, [preds], len(classes))

    def entry(key: str, k: int | None = None) -> dict:
        per_seed, replicates = result.per_seed[key], result.replicates[key]
        if k is not None:
            per_seed, replicates = per_seed[:, k], replicates[:, k]
        return {"mean": float(per_seed.mean()), "std": float(np.std(per_seed, ddof=1)) if len(files) > 1 else None,
                "ci95": metrics.interval(replicates), "per_seed": per_seed.tolist()}
    return {"seeds": list(files), "accuracy": entry("accuracy"), "macro_f1": entry("macro_f1"),
            "f1": {name: entry("f1", k) for k, name in enumerate(classes)}}


def paired(files_a: dict[str, str], files_b: dict[str, str]) -> dict | None:
    """metrics.compare of two configurations on the seeds both have (seed s of A with seed s of B); None if none."""
    seeds = [s for s in files_a if s in files_b and os.path.exists(files_a[s]) and os.path.exists(files_b[s])]
    if not seeds:
        return None
    labels, preds, classes = metrics.align_predictions([files_a[s] for s in seeds] + [files_b[s] for s in seeds])
    return metrics.compare(labels, preds[:len(seeds)], preds[len(seeds):], len(classes))


def stat_cell(stat: dict | None, digits: int = 4) -> str:
    """'value [lo, hi]' for one seed, 'mean ± std [lo, hi]' for several; '-' when missing."""
    if stat is None:
        return "-"
    spread = f" ± {stat['std']:.{digits}f}" if stat.get("std") is not None else ""
    return f"{stat['mean']:.{digits}f}{spread} {metrics.fmt_interval(stat['ci95'], digits)}"


def diff_cell(result: dict | None, key: str) -> str:
    """'+d [lo, hi]' of a paired comparison; '-' when missing."""
    if result is None:
        return "-"
    lo, hi = result[f"{key}_diff_ci95"]
    return f"{result[f'{key}_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def verdict(thesis_diff: float | None, diff: float, p: float) -> str:
    """Does the thesis's direction hold here, at ALPHA (two-sided)?"""
    if p >= ALPHA:
        if thesis_diff is None or diff == 0:
            return "not significant"
        return f"not significant ({'same' if diff * thesis_diff > 0 else 'opposite'} direction)"
    if thesis_diff is None:
        return "significant"
    return "holds" if diff * thesis_diff > 0 else "reversed"


def run_row(run_id: str, runs: dict, bench: dict, stats: dict | None = None, per_seed: dict | None = None) -> dict:
    """One experiment's numbers, ours and the thesis's, as plain values (None when missing).

    With stats (seed_stats of its predictions), accuracy and macro-F1 are the means over seeds with their std,
    95 % interval and per-seed values.
    """
    summary = runs.get(run_id) or {}
    eager, fast = bench.get((run_id, "eager"), {}), bench.get((run_id, "fast"), {})
    desc, t_acc, t_f1, t_params, t_lat, t_fps = metrics.THESIS_RUNS[run_id]
    params = summary.get("params") or eager.get("params")
    row = {
        "experiment": run_id, "model": desc,
        "accuracy": summary.get("accuracy"), "thesis_accuracy": t_acc,
        "macro_f1": summary.get("macro_f1"), "thesis_macro_f1": t_f1,
        "params_m": None if params is None else params / 1e6, "thesis_params_m": t_params,
        "latency_ms": eager.get("latency_ms"), "fps": eager.get("fps"),
        "fast_latency_ms": fast.get("latency_ms"), "fast_fps": fast.get("fps"),
        "thesis_latency_ms": t_lat, "thesis_fps": t_fps, "best_epoch": summary.get("best_epoch"),
    }
    if per_seed and len(per_seed) > 1:
        row["best_epoch"] = ";".join(str(s.get("best_epoch")) for s in per_seed.values())
    for key in ("accuracy", "macro_f1"):
        stat = (stats or {}).get(key)
        if stat is not None:
            row[key] = stat["mean"]
        row |= {f"{key}_std": stat and stat["std"], f"{key}_ci95_lo": stat and stat["ci95"][0],
                f"{key}_ci95_hi": stat and stat["ci95"][1],
                f"{key}_per_seed": stat and ";".join(f"{v:.6f}" for v in stat["per_seed"])}
    row["seeds"] = ";".join(stats["seeds"]) if stats else None
    return row


def metric_cell(r: dict, key: str) -> str:
    """A run's accuracy or macro-F1 with its spread and interval (stat_cell), or the bare value."""
    if r.get(f"{key}_ci95_lo") is None:
        return num(r[key])
    return stat_cell({"mean": r[key], "std": r[f"{key}_std"], "ci95": [r[f"{key}_ci95_lo"], r[f"{key}_ci95_hi"]]})


def results_table(rows: list[dict]) -> str:
    """Tables 3, 4 and 7: ours beside the thesis's for each experiment."""
    header = ["Experiment", "Model", "Accuracy (thesis)", "Macro-F1 (thesis)", "Params M (thesis)",
              "Latency ms (thesis)", "FPS (thesis)", "Fast-path ms", "Fast-path FPS"]
    body = [[r["experiment"], r["model"],
             f"{metric_cell(r, 'accuracy')} ({r['thesis_accuracy']:.4f})",
             f"{metric_cell(r, 'macro_f1')} ({r['thesis_macro_f1']:.4f})",
             f"{num(r['params_m'], 3)} ({r['thesis_params_m']:.3f})",
             f"{num(r['latency_ms'])} ({r['thesis_latency_ms']:.4f})", f"{num(r['fps'], 2)} ({r['thesis_fps']:.2f})",
             num(r["fast_latency_ms"]), num(r["fast_fps"], 2)] for r in rows]
    return md_table(header, body)


def gain_table(rows: dict, comparisons: dict) -> str:
    """Table 5: what focal loss with class-aware alpha adds over cross-entropy, ours (with the paired 95 %
    interval of the gain) and the thesis's."""
    pairs = [("ConvNeXt-Tiny baseline", "convnext_tiny_baseline_ce_run1", "convnext_tiny_baseline_focal_alpha_run1"),
             ("ConvNeXt-Tiny + Transformer (1 block)", "convnext_tiny_transformer_ce_run1",
              "convnext_tiny_transformer_focal_alpha_run1")]
    body = []
    for arch, ce, focal in pairs:
        for setting, run_id in (("Cross-entropy", ce), ("Focal + alpha", focal)):
            r = rows[run_id]
            gain_acc = gain_f1 = "-"
            if run_id == focal:
                c, test = rows[ce], comparisons.get((focal, ce))
                if test is not None:
                    gain_acc, gain_f1 = diff_cell(test, "accuracy"), diff_cell(test, "macro_f1")
                elif r["accuracy"] is not None and c["accuracy"] is not None:
                    gain_acc = f"{r['accuracy'] - c['accuracy']:+.4f}"
                    gain_f1 = f"{r['macro_f1'] - c['macro_f1']:+.4f}"
                gain_acc += f" ({r['thesis_accuracy'] - c['thesis_accuracy']:+.4f})"
                gain_f1 += f" ({r['thesis_macro_f1'] - c['thesis_macro_f1']:+.4f})"
            body.append([arch, setting, f"{metric_cell(r, 'accuracy')} ({r['thesis_accuracy']:.4f})",
                         f"{metric_cell(r, 'macro_f1')} ({r['thesis_macro_f1']:.4f})", gain_acc, gain_f1])
    return md_table(["Architecture", "Training", "Accuracy (thesis)", "Macro-F1 (thesis)",
                     "Accuracy gain (thesis)", "Macro-F1 gain (thesis)"], body)


def rescue_table(configurations: list, rescue: dict, rescue_stats: dict) -> str:
    """Table 6 from ensemble_tta.py's reports (its rescue_table.csv where a report lacks predictions), with the
    thesis's numbers beside ours."""
    if not configurations:
        return "_Not run yet (ensemble_tta.py --table)._"
    body = []
    for name, _ in configurations:
        thesis, stats = metrics.THESIS_RESCUE.get(name, (None, None)), rescue_stats.get(name)
        cells = []
        for key in ("accuracy", "macro_f1"):
            values = [float(rows[name][key]) for rows in rescue.values() if name in rows]
            cells.append(stat_cell(stats[key]) if stats else num(float(np.mean(values))))
        body.append([name, f"{cells[0]} ({num(thesis[0])})", f"{cells[1]} ({num(thesis[1])})"])
    return md_table(["Configuration", "Accuracy (thesis)", "Macro-F1 (thesis)"], body)


def best_of(ids: tuple, runs: dict) -> str | None:
    """The experiment with the highest macro-F1 (ties: accuracy) among those that finished."""
    done = [i for i in ids if runs.get(i)]
    return max(done, key=lambda i: (runs[i]["macro_f1"], runs[i]["accuracy"])) if done else None


def per_class_table(runs: dict, stats: dict) -> tuple[str, list[list]]:
    """Table 8: per-class F1 of our best CNN-only and best hybrid (the runs' own classes, with 95 % intervals),
    beside the thesis's."""
    best_cnn, best_hybrid = best_of(CNN_IDS, runs), best_of(HYBRID_IDS, runs)
    best = [b for b in (best_cnn, best_hybrid) if b]
    classes = list(runs[best[0]]["per_class"]) if best else list(utils.AFFECTNET8)
    rows, body = [], []
    for name in classes:
        ours = [runs[b]["per_class"].get(name, {}).get("f1") if b else None for b in (best_cnn, best_hybrid)]
        k = utils.AFFECTNET8.index(name) if name in utils.AFFECTNET8 else None
        thesis = [None if k is None else metrics.THESIS_PER_CLASS_F1[kind][k] for kind in ("cnn", "hybrid")]
        rows.append([name, ours[0], thesis[0], ours[1], thesis[1]])
        cells = [stat_cell(stats[b]["f1"][name]) if b and stats.get(b) and name in stats[b]["f1"] else num(v)
                 for b, v in zip((best_cnn, best_hybrid), ours)]
        body.append([name, cells[0], num(thesis[0]), cells[1], num(thesis[1])])
    return md_table(["Class", f"Best CNN-only F1 ({best_cnn or '-'})", "Thesis CNN-only",
                     f"Best hybrid F1 ({best_hybrid or '-'})", "Thesis hybrid"], body), rows


def thesis_diff(a: str, b: str) -> tuple[float | None, float | None]:
    """The thesis's own A - B in accuracy and macro-F1 (runs or rescue configurations), None where it has none."""
    for table, acc, f1 in ((metrics.THESIS_RUNS, 1, 2), (metrics.THESIS_RESCUE, 0, 1)):  # the columns of each
        if a in table and b in table:
            return table[a][acc] - table[b][acc], table[a][f1] - table[b][f1]
    return None, None


def comparison_rows(runs: dict, run_files: dict, configurations: list, rescue_files: dict) -> list[dict]:
    """The paired tests of the thesis's comparisons (RUN_COMPARISONS, then each rescue configuration vs the single
    checkpoint), one dict per comparison with the thesis's differences, ours and the verdict."""
    best = {BEST_CNN: best_of(CNN_IDS, runs), BEST_HYBRID: best_of(HYBRID_IDS, runs)}
    thesis_best = {BEST_CNN: "convnext_tiny_baseline_focal_alpha_run1",
                   BEST_HYBRID: "convnext_tiny_transformer_focal_alpha_ema_run3"}
    # (comparison, A, B, the thesis's A, the thesis's B, files, whether A and B are ours to pick)
    pairs = [(name, best.get(a, a), best.get(b, b), thesis_best.get(a, a), thesis_best.get(b, b), run_files,
              a in best) for name, a, b in RUN_COMPARISONS]
    pairs += [(f"Rescue: {name} vs {RESCUE_BASE}", name, RESCUE_BASE, name, RESCUE_BASE, rescue_files, False)
              for name, _ in configurations if name != RESCUE_BASE]
    out = []
    for name, a, b, thesis_a, thesis_b, files, picked in pairs:
        test = paired(files.get(a, {}), files.get(b, {})) if a and b else None
        t_acc, t_f1 = thesis_diff(thesis_a, thesis_b)
        out.append({"comparison": f"{name} (ours: {a or '-'} vs {b or '-'})" if picked else name, "a": a, "b": b,
                    "thesis_accuracy_diff": t_acc, "thesis_macro_f1_diff": t_f1, "test": test,
                    "verdict": verdict(t_f1, test["macro_f1_diff"], test["macro_f1_p"]) if test else "not run yet"})
    return out


def comparison_table(rows: list[dict]) -> str:
    """'Do the thesis's comparisons hold here?': paired tests and verdicts."""
    body = []
    for r in rows:
        test = r["test"]
        mcnemar = "-" if test is None else " / ".join(f"{p:.3g}" for p in test["mcnemar_p_per_seed"])
        body.append([r["comparison"], num(r["thesis_macro_f1_diff"]) if r["thesis_macro_f1_diff"] is None
                     else f"{r['thesis_macro_f1_diff']:+.4f}", diff_cell(test, "macro_f1"),
                     "-" if test is None else f"{test['macro_f1_p']:.3g}", diff_cell(test, "accuracy"),
                     "-" if test is None else f"{test['accuracy_p']:.3g}", mcnemar, r["verdict"]])
    return md_table(["Comparison (A vs B)", "Thesis macro-F1 A - B", "Our macro-F1 A - B [95% CI]", "p",
                     "Our accuracy A - B [95% CI]", "p", "McNemar p", f"Verdict at {ALPHA:g} (macro-F1)"], body)


def seeds_table(rows: list[dict], seeds: list[str]) -> str:
    """Per-seed accuracy and macro-F1 of every run."""
    header = ["Experiment", *(f"Seed {s} accuracy / macro-F1" for s in seeds), "Mean ± std macro-F1"]
    body = []
    for r in rows:
        acc = dict(zip(r["seeds"].split(";"), r["accuracy_per_seed"].split(";"))) if r["seeds"] else {}
        f1 = dict(zip(r["seeds"].split(";"), r["macro_f1_per_seed"].split(";"))) if r["seeds"] else {}
        body.append([r["experiment"], *(f"{float(acc[s]):.4f} / {float(f1[s]):.4f}" if s in acc else "-"
                                        for s in seeds),
                     "-" if r["macro_f1_std"] is None else f"{r['macro_f1']:.4f} ± {r['macro_f1_std']:.4f}"])
    return md_table(header, body)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results", help="the folder experiments.sh wrote to")
    return parser


def main(args: argparse.Namespace) -> None:
    if not os.path.isdir(args.results):
        raise utils.UserError(f"--results {args.results}: no such folder")
    trees = seed_trees(args.results)
    seeds = [s for s in trees if s]
    per_seed, bench, rescue, configurations = load_results(args.results, trees)
    runs = {i: mean_summary(per_seed[i]) for i in RUN_IDS}
    run_files = {i: {s: os.path.join(trees[s], i, "predictions.csv") for s in per_seed[i]} for i in RUN_IDS}
    rescue_files = {name: {s: os.path.join(trees[s], "rescue", folder, "predictions.csv") for s in rescue
                           if name in rescue[s]} for name, folder in configurations}
    stats = {i: seed_stats(run_files[i]) for i in RUN_IDS}
    rescue_stats = {name: seed_stats(files) for name, files in rescue_files.items()}
    rows = {i: run_row(i, runs, bench, stats[i], per_seed[i]) for i in RUN_IDS}
    comparisons = comparison_rows(runs, run_files, configurations, rescue_files)
    tests = {(c["a"], c["b"]): c["test"] for c in comparisons if c["test"]}
    device = next((r.get("device_name") or r.get("device") for r in bench.values()), None)
    finished = sum(1 for i in RUN_IDS if runs[i] and len(per_seed[i]) == len(trees))

    per_class_md, per_class_rows = per_class_table(runs, stats)
    pngs = pictures(args.results, trees, [(i, f"confusion_matrix{kind}.png") for i in RUN_IDS
                                          for kind in ("", "_normalized")])
    best_matrices = pictures(args.results, trees, [(b, "confusion_matrix_normalized.png")
                                                   for b in (best_of(CNN_IDS, runs), best_of(HYBRID_IDS, runs)) if b])
    curves = pictures(args.results, trees, [(i, "curves.png") for i in RUN_IDS])
    tradeoff = pictures(args.results, {"": args.results}, [("benchmark", "tradeoff.png")])
    cells = (f"Seeds {', '.join(seeds)}: each cell is the mean ± std over the seeds, and in square brackets the 95 % "
             "interval of the mean (bootstrap over images and seeds, see below)." if seeds
             else "In square brackets: 95 % bootstrap intervals over the validation images.")
    sections = [
        "# Results: our runs beside the thesis's",
        f"{finished} of 7 experiments finished{f' on each of the {len(seeds)} seeds' if seeds else ''}. "
        f"Values in round brackets are the thesis's (H100 NVL). {cells} "
        f"Latency and FPS: benchmark.py, batch 1, measured on {device or '-'}; "
        "the thesis protocol is 'Latency', the fast path is 'Fast-path'.",
        "## Table 3. Baseline CNN comparison", results_table([rows[i] for i in RUN_IDS[:2]]),
        "## Table 4. Hybrid model progression",
        results_table([rows[i] for i in HYBRID_IDS]),
        "## Table 5. Effect of imbalance-aware training", gain_table(rows, tests),
        "## Table 6. Inference-side rescue (ensemble and flip TTA)", rescue_table(configurations, rescue, rescue_stats),
        "## Table 7. Parameters, latency and FPS", results_table([rows[i] for i in RUN_IDS]),
        inline(tradeoff, "Macro-F1 against latency, ours beside the thesis's"),
        "## Table 8. Per-class F1, best CNN-only and best hybrid single model", per_class_md,
        inline(best_matrices, "Row-normalised confusion matrices of the best CNN-only and the best hybrid"),
        "## Do the thesis's comparisons hold here?",
        comparison_intro(len(seeds)), comparison_table(comparisons),
    ]
    if seeds:
        sections += ["## Per-seed results", seeds_table([rows[i] for i in RUN_IDS], seeds)]
    sections += ["## Training curves", inline(curves, "Loss, validation accuracy and macro-F1 per epoch; the "
                                                     "dashed line marks the epoch kept as best.pt"),
                 "## Confusion matrices", "\n".join(f"- [{p}]({p})" for p in pngs) or "_None yet._"]
    with utils.atomic_write(os.path.join(args.results, "summary.md")) as f:
        f.write("\n\n".join(sections) + "\n")
    fields = list(rows[RUN_IDS[0]])
    utils.write_csv(os.path.join(args.results, "summary_runs.csv"), fields,
                    [[rows[i][k] for k in fields] for i in RUN_IDS])
    utils.write_csv(os.path.join(args.results, "summary_per_class_f1.csv"),
                    ["class", "best_cnn_f1", "thesis_cnn_f1", "best_hybrid_f1", "thesis_hybrid_f1"], per_class_rows)
    keys = ("n", "seeds", "macro_f1_diff", "macro_f1_diff_ci95", "macro_f1_p", "accuracy_diff", "accuracy_diff_ci95",
            "accuracy_p", "mcnemar_p_per_seed")
    utils.write_csv(os.path.join(args.results, "summary_comparisons.csv"),
                    ["comparison", "a", "b", "thesis_macro_f1_diff", "thesis_accuracy_diff", *keys, "verdict"],
                    [[c["comparison"], c["a"], c["b"], c["thesis_macro_f1_diff"], c["thesis_accuracy_diff"],
                      *(_csv_value((c["test"] or {}).get(k)) for k in keys), c["verdict"]] for c in comparisons])
    print(f"wrote {os.path.join(args.results, 'summary.md')} ({finished} of 7 experiments finished"
          f"{f' on each of the {len(seeds)} seeds' if seeds else ''})")


def pictures(results: str, trees: dict[str, str], files: list[tuple[str, str]]) -> list[str]:
    """Paths (relative to the results folder) of the pictures that exist: (folder, file) in each seed's tree."""
    paths = [os.path.join(tree, folder, name) for tree in trees.values() for folder, name in files]
    return [os.path.relpath(p, results) for p in paths if os.path.exists(p)]


def inline(paths: list[str], caption: str) -> str:
    """Markdown that shows each picture in the page, under a one-line caption; a note when there is none yet."""
    if not paths:
        return f"_{caption}: not drawn yet._"
    return f"{caption}:\n\n" + "\n\n".join(f"![{os.path.dirname(p) or p}]({p})" for p in paths)


def comparison_intro(seeds: int) -> str:
    """How the comparison table was computed and how to read it."""
    how = ("Each row is a paired test on the same validation images (matched by path): A - B in macro-F1 and "
           f"accuracy with the 95 % percentile interval of {metrics.BOOTSTRAP_RESAMPLES:,} paired bootstrap "
           "resamples, a two-sided p-value from the centred bootstrap (the share of resampled differences at "
           "least as far from the observed one as it is from 0), and McNemar's exact test on accuracy.")
    if seeds:
        how += (f" With {seeds} seeds, A - B is the mean over seeds of the per-seed differences (seed s of A "
                "against seed s of B), and each resample draws the seeds as well as the images (two-level "
                "bootstrap), so seed-to-seed spread counts as uncertainty; McNemar is per seed.")
    return how + (f" Verdict (macro-F1, the thesis's primary metric): **holds** = the thesis's direction and p < "
                  f"{ALPHA:g}; **reversed** = the other direction and p < {ALPHA:g}; otherwise not significant. "
                  "The best CNN-only vs best hybrid row picks both runs on this same validation set, and none of "
                  "the p-values is corrected for the number of comparisons.")


def _csv_value(value) -> str:
    """A CSV cell: lists joined by ';', None empty."""
    if value is None:
        return ""
    return ";".join(f"{v:.6g}" for v in value) if isinstance(value, list) else str(value)


if __name__ == "__main__":
    utils.run_cli(main, get_args_parser())
