"""`circuitlab plot`, `compare` and `table`: figures of circuits, how circuits relate, and fine-tuning tables."""

from __future__ import annotations

from circuitlab.cli.options import add_data_dir_option, add_figure_options, add_settings, build, figure_options
from circuitlab.report.stats import StatsConfig


def _add_figures_command(sub, name: str, help: str, out: str) -> None:
    p = sub.add_parser(name, help=help)
    p.add_argument("circuits", nargs="+", metavar="CIRCUIT.json")
    p.add_argument("--out", required=True, help=out)
    add_figure_options(p)


def add_plot(sub) -> None:
    _add_figures_command(sub, "plot", "figures of one or more circuits: masking heatmaps, loss curves, patterns; "
                         "an edge circuit as a graph",
                         "directory for the .html and .png files")


def run_plot(args) -> None:
    from circuitlab.report.figures import circuit_files_figures

    for path in circuit_files_figures(args.circuits, args.out, ("circuits",), **figure_options(args))[1]:
        print(f"wrote {path}")


def add_compare(sub) -> None:
    _add_figures_command(sub, "compare", "overlap rate, Jaccard and head frequency of several tasks' circuits",
                         "directory for the figures and the CSV tables (under tables/)")


def run_compare(args) -> None:
    from circuitlab.report.figures import compare_files

    result, written = compare_files(args.circuits, args.out, **figure_options(args))
    print(f"overlap rate |row ∩ column| / |row|:\n{result.overlap.round(3).to_string()}")
    print(f"Jaccard |A ∩ B| / |A ∪ B|:\n{result.jaccard.round(3).to_string()}")
    for path in written:
        print(f"wrote {path}")


def add_table(sub) -> None:
    p = sub.add_parser("table", help="a Table-1-style table (markdown and CSV) of finetune result.json files")
    p.add_argument("results", nargs="+", metavar="RESULT.json")
    p.add_argument("--metric", default="acc")
    p.add_argument("--csv", default="table.csv", help="the CSV file to write (default: table.csv; '' for none)")
    p.add_argument("--md", help="also write the markdown table to this file")


def run_table(args) -> None:
    from circuitlab.report.table import write_table

    table, written = write_table(args.results, args.metric, md=args.md, csv=args.csv)
    print(table.to_markdown())
    for path in written:
        print(f"wrote {path}")


def add_stats(sub) -> None:
    p = sub.add_parser("stats", help="two sets of fine-tuning runs compared paired by document and seed: per-seed "
                                     "differences and McNemar, a bootstrap interval over documents and seeds")
    p.add_argument("--a", nargs="+", required=True, metavar="RUN", help="runs of A (directories or result.json)")
    p.add_argument("--b", nargs="+", required=True, metavar="RUN",
                   help="runs of B, paired with A's by seed (or, with --pairing none, an independent group)")
    add_settings(p, StatsConfig)
    add_data_dir_option(p)
    p.add_argument("--json", help="also write the comparison to this JSON file")


def run_stats(args) -> None:
    from circuitlab.report.stats import stats, write_stats

    r = stats(args.a, args.b, build(StatsConfig, args), args.data_dir)
    points = 100 if r.measure != "margin" else 1  # right/wrong measures in percentage points
    unit = " points" if points == 100 else " nats"
    lo, hi = r.ci
    if hasattr(r, "per_seed"):
        for s in r.per_seed:
            test = f"; right only in A {s.only_a}, only in B {s.only_b}, exact McNemar p = {s.mcnemar_p:.4f}" \
                if s.mcnemar_p is not None else ""
            print(f"seed {s.seed}: A {points * s.a:.2f}, B {points * s.b:.2f}, "
                  f"A - B {points * s.difference:+.2f}{test}")
        runs, resampled = f"{len(r.seeds)} seed(s)", "documents and seeds"
        p_runs = "over seeds " + ("n/a (one seed)" if r.p_seeds is None else f"{r.p_seeds:.4f}")
    else:
        for side, seeds, means in (("A", r.seeds_a, r.runs_a), ("B", r.seeds_b, r.runs_b)):
            print(f"{side}: " + ", ".join(f"seed {s} {points * m:.2f}" for s, m in zip(seeds, means)))
        print(f"{r.b_below_a} of B's {len(r.runs_b)} runs are below A's mean")
        runs, resampled = f"{len(r.runs_a)} and {len(r.runs_b)} unpaired runs", "documents and each side's runs"
        p_runs = "over runs (Welch) " + ("n/a (one run)" if r.p_runs is None else f"{r.p_runs:.4f}")
    print(f"{r.measure}, {runs} x {r.n_docs} documents: A - B = {points * r.difference:+.2f}{unit}, "
          f"{100 * r.confidence:.0f} % interval [{points * lo:+.2f}, {points * hi:+.2f}] ({resampled} "
          f"resampled, {r.n_bootstrap} draws); p over documents {r.p_documents:.4f}, {p_runs}; "
          f"smallest effect the document test detects (power 0.8): {points * r.min_detectable:.2f}{unit}")
    if args.json:
        print(f"wrote {write_stats(r, args.json)}")


COMMANDS = {"plot": (add_plot, run_plot), "compare": (add_compare, run_compare), "table": (add_table, run_table),
            "stats": (add_stats, run_stats)}
