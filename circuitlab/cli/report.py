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
    from circuitlab.report.stats import stats

    r = stats(args.a, args.b, build(StatsConfig, args), args.data_dir, json=args.json)
    print("\n".join(r.lines()))
    if args.json:
        print(f"wrote {args.json}")


COMMANDS = {"plot": (add_plot, run_plot), "compare": (add_compare, run_compare), "table": (add_table, run_table),
            "stats": (add_stats, run_stats)}
