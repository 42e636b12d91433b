"""Summarise a multi-seed fine-tuning study: mean ± std per task and method over seeds, paired tests between two
methods, and the training curves as figures.

Runs are `RUNS/[TASK/]NAME-sSEED/result.json` (`NAME` = method label, e.g. headmap-circuit, lora, circuit-lora);
`base` runs (no seed) are listed once. Paired tests compare A and B run on the same seed, document by document:
an exact McNemar test per seed, and one over all seeds' documents pooled; plus the sign of the per-seed accuracy
differences.

    python results/study_summary.py runs/study2 --data-dir ../shared/data --compare headmap-circuit:headmap-random \
        --compare headmap-circuit:headmap-redundant --md results/study2.md --figures results/study2_figures
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy.stats import binomtest

from circuitlab.finetune import TrainConfig
from circuitlab.finetune.splits import eval_docs
from circuitlab.core.io import write_text_atomic
from circuitlab.report.write import write_figures
from circuitlab.tasks import get_task, load_docs


def main_metric(metrics: dict) -> str:
    return "exact_match" if "exact_match" in metrics else "acc"


def load_runs(root: Path) -> list[dict]:
    runs = []
    for path in sorted(root.rglob("result.json")):
        r = json.loads(path.read_text())
        m = re.fullmatch(r"(.+)-s(\d+)", path.parent.name)
        label, seed = (m.group(1), int(m.group(2))) if m else (path.parent.name, None)
        cfg = r["config"]
        runs.append({"path": path, "task": cfg["task"], "label": label, "seed": seed, "result": r,
                     "metric": main_metric(r["eval"]["metrics"])})
    return runs


def correct(run: dict, data_dir: str | None) -> list[bool]:
    """Per evaluation document: right or wrong (gold reconstructed as the run chose its documents)."""
    r = run["result"]
    cfg = TrainConfig.from_dict(r["config"])
    task = get_task(cfg.task)
    train = load_docs(task, cfg.train_split, data_dir, limit=cfg.max_train) if cfg.method != "base" else []
    gold = [d.gold for d in eval_docs(task, r["eval"]["split"], data_dir, cfg, train)]
    return [p == g for p, g in zip(r["eval"]["preds"], gold)]


def paired_difference(only_a: int, only_b: int, n: int) -> tuple[float, float]:
    """Accuracy of A minus B in points over `n` paired documents, and the half-width of its 95 % interval (normal
    approximation for paired proportions: only the documents the two disagree on carry information)."""
    diff = (only_a - only_b) / n
    se = math.sqrt(max(only_a + only_b - n * diff * diff, 0.0)) / n
    return 100 * diff, 100 * 1.96 * se


def mcnemar(a: list[bool], b: list[bool]) -> tuple[int, int, float]:
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    return only_a, only_b, (binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0)


def table(runs: list[dict]) -> list[str]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["task"], run["label"])].append(run)
    lines = ["| task | method | seeds | metric | mean ± std (%) | per seed (%) | trainable |",
             "|---|---|---|---|---|---|---|"]
    for (task, label), rs in sorted(groups.items()):
        rs.sort(key=lambda r: -1 if r["seed"] is None else r["seed"])
        vals = [100 * r["result"]["eval"]["metrics"][r["metric"]] for r in rs]
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        seeds = ",".join("-" if r["seed"] is None else str(r["seed"]) for r in rs)
        lines.append(f"| {task} | {label} | {seeds} | {rs[0]['metric']} | {statistics.mean(vals):.2f} ± {std:.2f} | "
                     f"{', '.join(f'{v:.2f}' for v in vals)} | {rs[0]['result'].get('trainable_share_pct', 0):.3f} % |")
    return lines


def paired(runs: list[dict], a: str, b: str, data_dir: str | None) -> list[str]:
    by = {(r["task"], r["label"], r["seed"]): r for r in runs}
    lines = [f"| task | seed | {a} (%) | {b} (%) | right only in {a} | only in {b} | exact McNemar p |",
             "|---|---|---|---|---|---|---|"]
    for task in sorted({r["task"] for r in runs}):
        seeds = sorted(s for (t, lab, s) in by if t == task and lab == a and (t, b, s) in by)
        pooled_a, pooled_b, diffs = [], [], []
        for s in seeds:
            ca, cb = correct(by[(task, a, s)], data_dir), correct(by[(task, b, s)], data_dir)
            oa, ob, p = mcnemar(ca, cb)
            pooled_a += ca
            pooled_b += cb
            acc_a, acc_b = 100 * sum(ca) / len(ca), 100 * sum(cb) / len(cb)
            diffs.append(acc_a - acc_b)
            lines.append(f"| {task} | {s} | {acc_a:.2f} | {acc_b:.2f} | {oa} | {ob} | {p:.4f} |")
        if seeds:
            oa, ob, p = mcnemar(pooled_a, pooled_b)
            wins = sum(d > 0 for d in diffs)
            lines.append(f"| {task} | pooled ({len(seeds)} seeds) | {100 * sum(pooled_a) / len(pooled_a):.2f} | "
                         f"{100 * sum(pooled_b) / len(pooled_b):.2f} | {oa} | {ob} | {p:.4f} |")
            d, half = paired_difference(oa, ob, len(pooled_a))
            lines.append(f"| {task} | {a} − {b}, pooled | {d:+.2f} points, 95 % CI ± {half:.2f} | | | | |")
            lines.append(f"| {task} | {a} better on | {wins} of {len(seeds)} seeds | | | | |")
    return lines


def curves(runs: list[dict], window: int = 10) -> dict[str, go.Figure]:
    """Training loss per optimizer step as a running mean over `window` steps (one step's loss is 16 documents,
    too noisy to tell methods apart by eye); one line per run, one colour per method."""
    trained = [r for r in runs if (r["result"].get("train") or {}).get("loss_curve")]
    tasks = sorted({r["task"] for r in trained})
    fig = make_subplots(rows=len(tasks), cols=1, subplot_titles=tasks, shared_xaxes=False)
    labels = sorted({r["label"] for r in trained})
    colors = dict(zip(labels, ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]))
    shown: set[str] = set()
    for row, task in enumerate(tasks, 1):
        for r in (r for r in trained if r["task"] == task):
            curve = pd.Series(r["result"]["train"]["loss_curve"]).rolling(window, min_periods=1).mean()
            fig.add_trace(go.Scatter(x=list(range(1, len(curve) + 1)), y=curve.tolist(), mode="lines", opacity=0.8,
                                     line={"color": colors[r["label"]], "width": 1.2},
                                     name=r["label"], legendgroup=r["label"], showlegend=r["label"] not in shown),
                          row=row, col=1)
            shown.add(r["label"])
        fig.update_yaxes(title_text="training loss", row=row, col=1)
        fig.update_xaxes(title_text="optimizer step", row=row, col=1)
    fig.update_layout(height=320 * len(tasks), width=900,
                      title=f"Training loss, running mean over {window} steps (one line per seed)")
    return {"training_curves": fig}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs")
    p.add_argument("--data-dir")
    p.add_argument("--compare", action="append", default=[], metavar="A:B")
    p.add_argument("--md", help="write the tables here (markdown)")
    p.add_argument("--figures", help="write the training-curve figures into this directory")
    args = p.parse_args()
    runs = load_runs(Path(args.runs))
    out = ["## Accuracy over seeds", "", *table(runs)]
    for pair in args.compare:
        a, b = pair.split(":")
        out += ["", f"## {a} vs {b}, paired by seed", "", *paired(runs, a, b, args.data_dir)]
    text = "\n".join(out) + "\n"
    print(text)
    if args.md:
        write_text_atomic(args.md, text)
    if args.figures:
        write_figures(curves(runs), args.figures)


if __name__ == "__main__":
    main()
