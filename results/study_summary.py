"""Summarise a multi-seed fine-tuning study: mean ± std per task and method over seeds, paired tests between two
methods, and the training curves as figures.

Runs are `RUNS/[TASK/]NAME-sSEED/result.json` (`NAME` = method label, e.g. headmap-circuit, lora, circuit-lora);
`base` runs (no seed) are listed once. Paired comparisons of A and B are `circuitlab stats` (circuitlab.report.stats):
an exact McNemar test per seed, then the mean difference with a bootstrap interval over documents and seeds, tests
over documents and over seeds, and the smallest detectable difference. `--groups A:B` compares runs that do not pair
by seed (the circuit at several seeds against random head draws: `circuitlab stats --pairing none`): the documents
pair, each side's runs are an independent group.

    python results/study_summary.py runs/study2 --data-dir ../shared/data --compare headmap-circuit:headmap-random \
        --compare headmap-circuit:headmap-redundant --md results/study2.md --figures results/study2_figures
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuitlab.core.io import write_text_atomic
from circuitlab.report.comparison_figures import paired_differences
from circuitlab.report.stats import StatsConfig, stats
from circuitlab.report.write import write_figures


def main_metric(metrics: dict) -> str:
    return "exact_match" if "exact_match" in metrics else "acc"


def load_runs(root: Path, exclude: tuple[str, ...] = ()) -> list[dict]:
    runs = []
    for path in sorted(root.rglob("result.json")):
        if set(path.relative_to(root).parts) & set(exclude):
            continue
        r = json.loads(path.read_text())
        m = re.fullmatch(r"(.+)-s(\d+)", path.parent.name)
        label, seed = (m.group(1), int(m.group(2))) if m else (path.parent.name, None)
        cfg = r["config"]
        runs.append({"path": path, "task": cfg["task"], "label": label, "seed": seed, "result": r,
                     "metric": main_metric(r["eval"]["metrics"])})
    return runs


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


def paired(runs: list[dict], a: str, b: str, data_dir: str | None, found: list | None = None) -> list[str]:
    """Per seed: accuracies and the exact McNemar test; then `circuitlab stats` over documents and seeds (each
    comparison also appended to `found` as (task, "a − b", its dict), for the figure)."""
    lines = [f"| task | seed | {a} (%) | {b} (%) | right only in {a} | only in {b} | exact McNemar p |",
             "|---|---|---|---|---|---|---|"]
    for task in sorted({r["task"] for r in runs}):
        mine = [r for r in runs if r["task"] == task and r["seed"] is not None]
        common = {r["seed"] for r in mine if r["label"] == a} & {r["seed"] for r in mine if r["label"] == b}
        # only the seeds both arms have (`stats` would pair a lone run with every seed, as it does for a base model)
        side = {lab: [r["path"].parent for r in mine if r["label"] == lab and r["seed"] in common] for lab in (a, b)}
        if not common:
            continue
        r = stats(side[a], side[b], StatsConfig(), data_dir)
        if found is not None:
            found.append((task, f"{a} − {b}", asdict(r)))
        for s in r.per_seed:
            lines.append(f"| {task} | {s.seed} | {100 * s.a:.2f} | {100 * s.b:.2f} | {s.only_a} | {s.only_b} | "
                         f"{s.mcnemar_p:.4f} |")
        lo, hi = r.ci
        p_seeds = "–" if r.p_seeds is None else f"{r.p_seeds:.4f}"
        lines.append(f"| {task} | {a} − {b}, {len(r.seeds)} seeds × {r.n_docs} documents | "
                     f"{100 * r.difference:+.2f} points, 95 % CI [{100 * lo:+.2f}, {100 * hi:+.2f}] | | "
                     f"p over documents {r.p_documents:.4f} | p over seeds {p_seeds} | "
                     f"detectable {100 * r.min_detectable:.2f} |")
    return lines


def groups(runs: list[dict], a: str, b: str, data_dir: str | None, found: list | None = None) -> list[str]:
    """A's runs against B's as two independent groups on the same documents (`circuitlab stats --pairing none`)."""
    lines = [f"| task | runs | {a} (%) | {b} (%) | {a} − {b} (points), 95 % CI | p over documents | "
             f"p over runs (Welch) | {b} runs below {a}'s mean | detectable |", "|---|---|---|---|---|---|---|---|---|"]
    for task in sorted({r["task"] for r in runs}):
        side = {lab: [r["path"].parent for r in runs if r["task"] == task and r["label"] == lab and r["seed"] is not None]
                for lab in (a, b)}
        if not side[a] or not side[b]:
            continue
        r = stats(side[a], side[b], StatsConfig(pairing="none"), data_dir)
        if found is not None:
            found.append((task, f"{a} − {b}, runs as groups", asdict(r)))
        lo, hi = r.ci
        p_runs = "–" if r.p_runs is None else f"{r.p_runs:.4f}"
        lines.append(f"| {task} | {len(r.runs_a)} : {len(r.runs_b)} | {100 * r.a:.2f} | {100 * r.b:.2f} | "
                     f"{100 * r.difference:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] | {r.p_documents:.4f} | {p_runs} | "
                     f"{r.b_below_a} of {len(r.runs_b)} | {100 * r.min_detectable:.2f} |")
    return lines


def method_colors(labels: list[str]) -> dict[str, str]:
    """One colour per method, the same in every figure (plotly's default cycle would restart in each panel)."""
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]
    return {label: palette[i % len(palette)] for i, label in enumerate(labels)}


def curves(runs: list[dict], window: int = 10) -> dict[str, go.Figure]:
    """Training loss per optimizer step as a running mean over `window` steps (one step's loss is 16 documents,
    too noisy to tell methods apart by eye); one line per run, one colour per method."""
    trained = [r for r in runs if (r["result"].get("train") or {}).get("loss_curve")]
    tasks = sorted({r["task"] for r in trained})
    fig = make_subplots(rows=len(tasks), cols=1, subplot_titles=tasks, shared_xaxes=False)
    labels = sorted({r["label"] for r in trained})
    colors = method_colors(labels)
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


def per_run(runs: list[dict]) -> go.Figure:
    """Each run's score as a dot, one row per method and one panel per task with its own scale (the tasks' scores
    lie far apart, and on one axis a task's arms would crowd into a few points): with head sets as the unit of
    replication, how the circuit's seeds sit among the draws of the other arms."""
    scored = [r for r in runs if r["seed"] is not None]
    tasks = sorted({r["task"] for r in scored})
    fig = make_subplots(rows=len(tasks), cols=1, subplot_titles=tasks, shared_xaxes=False, vertical_spacing=0.16)
    labels = sorted({r["label"] for r in scored})
    colors = method_colors(labels)
    for row, task in enumerate(tasks, 1):
        for label in sorted({r["label"] for r in scored if r["task"] == task}):
            mine = [r for r in scored if r["task"] == task and r["label"] == label]
            fig.add_trace(go.Scatter(x=[100 * r["result"]["eval"]["metrics"][r["metric"]] for r in mine],
                                     y=[label] * len(mine), mode="markers", name=label,
                                     text=[f"seed {r['seed']}" for r in mine],
                                     marker={"size": 10, "opacity": 0.7, "color": colors[label]}, showlegend=False),
                          row=row, col=1)
        fig.update_yaxes(autorange="reversed", row=row, col=1)
        fig.update_xaxes(title_text="accuracy or exact match (%)", row=row, col=1)
    fig.update_layout(title="Each run's score (one dot per run: a seed, or a head draw with its own seed)",
                      height=150 + 260 * len(tasks), width=1000, margin={"l": 160})
    return fig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs")
    p.add_argument("--data-dir")
    p.add_argument("--exclude", action="append", default=[], metavar="DIR", help="skip runs under folders of this name")
    p.add_argument("--compare", action="append", default=[], metavar="A:B")
    p.add_argument("--groups", action="append", default=[], metavar="A:B", help="unpaired runs, compared as groups")
    p.add_argument("--md", help="write the tables here (markdown)")
    p.add_argument("--figures", help="write the training-curve figures into this directory")
    args = p.parse_args()
    runs = load_runs(Path(args.runs), tuple(args.exclude))
    out = ["## Accuracy over seeds", "", *table(runs)]
    found: list = []
    for pair in args.compare:
        a, b = pair.split(":")
        out += ["", f"## {a} vs {b}, paired by seed", "", *paired(runs, a, b, args.data_dir, found)]
    for pair in args.groups:
        a, b = pair.split(":")
        out += ["", f"## {a} vs {b}, the runs as two groups on the same documents", "",
                *groups(runs, a, b, args.data_dir, found)]
    text = "\n".join(out) + "\n"
    print(text)
    if args.md:
        write_text_atomic(args.md, text)
    if args.figures:
        figs = curves(runs)
        if args.groups:
            figs["per_run"] = per_run(runs)
        if found:
            figs["paired_differences"] = paired_differences(
                found, "Differences (mean over runs and documents; bars: bootstrap 95 % interval over both)",
                "difference (points)", scale=100)
        write_figures(figs, args.figures)


if __name__ == "__main__":
    main()
