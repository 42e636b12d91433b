"""`circuitlab plot`, `compare`, `reproduce` and `table`: figures, comparisons and tables."""

from __future__ import annotations

import dataclasses
import shlex

from circuitlab.cli.launch import add_process_options, processes
from circuitlab.cli.options import (
    add_data_dir_option, add_figure_options, add_model_options, add_settings, build, figure_options, name_flags,
)


def _add_figures_command(sub, name: str, help: str, out: str) -> None:
    p = sub.add_parser(name, help=help)
    p.add_argument("circuits", nargs="+", metavar="CIRCUIT.json")
    p.add_argument("--out", required=True, help=out)
    add_figure_options(p)


def add_plot(sub) -> None:
    _add_figures_command(sub, "plot", "figures of one or more circuits: masking heatmaps, loss curves, patterns",
                         "directory for the .html and .png files")


def run_plot(args) -> None:
    _write_figures(args, "circuits")


def add_compare(sub) -> None:
    _add_figures_command(sub, "compare", "overlap rate, Jaccard and head frequency of several tasks' circuits",
                         "directory for the figures and the CSV tables (under tables/)")


def run_compare(args) -> None:
    from circuitlab.errors import CircuitlabError

    if len(args.circuits) < 2:
        raise CircuitlabError("compare needs at least two circuit files")
    _write_figures(args, "comparison", print_tables=True)


def _write_figures(args, kind: str, print_tables: bool = False) -> None:
    from circuitlab.circuit import Circuit
    from circuitlab.io import check_writable
    from circuitlab.report.comparison import check_one_model, compare
    from circuitlab.report.figures import write_report_figures

    circuits = [Circuit.load(p) for p in args.circuits]
    check_one_model(circuits)
    check_writable(args.out, "dir")
    if print_tables:
        result = compare(circuits)
        print("overlap rate |row ∩ column| / |row|:")
        print(result.overlap.round(3).to_string())
        print("Jaccard |A ∩ B| / |A ∪ B|:")
        print(result.jaccard.round(3).to_string())
    for path in write_report_figures(circuits, args.out, (kind,), **figure_options(args)):
        print(f"wrote {path}")


def add_reproduce(sub) -> None:
    from circuitlab.reproduce import ReproduceConfig

    p = sub.add_parser("reproduce", help="the paper's locating figures for many tasks (resumable task by task)")
    add_model_options(p)
    p.add_argument("--tasks", default="all", help="'all' (the paper's 13 tasks) or a comma-separated list")
    add_data_dir_option(p)
    p.add_argument("--out", required=True, help="directory for circuits/, tables/, the figures and README.md")
    add_settings(p, ReproduceConfig, flags={"random_seeds": "--seeds", "attention": "--attn-implementation"})
    name_flags(p, n_per_layer="--heads-per-layer")  # checked by LocateConfig against the model
    add_figure_options(p)
    add_process_options(p)


def run_reproduce(args) -> None:
    from circuitlab.io import check_writable
    from circuitlab.locate import LocateConfig
    from circuitlab.models import ModelDims, model_config
    from circuitlab.models.config import ModelConfig
    from circuitlab.reproduce import ReproduceConfig, locating_split, parse_tasks, reproduce
    from circuitlab.tasks import load_docs

    where, config = build(ModelConfig, args), build(ReproduceConfig, args)
    tasks = parse_tasks(args.tasks)
    check_writable(args.out, "dir")
    LocateConfig(n_per_layer=config.heads_per_layer).plan(ModelDims.of_config(model_config(where.model)))
    for task in tasks:  # every split exists and reads, before the model loads
        load_docs(task, locating_split(task, args.data_dir), args.data_dir, limit=config.max_docs)
    defaults = {f.name: f.default for cls in (ModelConfig, ReproduceConfig) for f in dataclasses.fields(cls)}
    command = shlex.join(["circuitlab", "reproduce", *_argv(args, defaults)])
    shard, where = processes(args, where)
    log = print if shard.is_main else (lambda line: None)
    result = reproduce(where.load(), list(tasks), args.data_dir, args.out, config, command=command,
                       progress=shard.is_main, log=log, **figure_options(args))
    log(f"wrote {len(result.figures)} figure files and {result.readme}")


ALWAYS_SHOWN = ("model", "tasks", "data_dir", "out", "samples", "max_docs", "all_docs", "random_seeds")


def _argv(args, defaults: dict) -> list[str]:
    """The command line that reproduces this run: the options that name what was run, and every other
    option that differs from its default (dtype, batch size, ...); not the device."""
    flags = {"model": "--model", "tasks": "--tasks", "data_dir": "--data-dir", "out": "--out", **args._flags}
    out = []
    for name, flag in flags.items():
        value = getattr(args, name, None)
        if name == "device" or value is None or (name not in ALWAYS_SHOWN and value == defaults.get(name)):
            continue
        out += [flag, ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)]
    return out + (["--plotlyjs", "cdn"] if args.plotlyjs == "cdn" else [])


def add_table(sub) -> None:
    p = sub.add_parser("table", help="a Table-1-style table (markdown and CSV) of finetune result.json files")
    p.add_argument("results", nargs="+", metavar="RESULT.json")
    p.add_argument("--metric", default="acc")
    p.add_argument("--csv", help="also write the table as CSV")
    p.add_argument("--md", help="also write the markdown table to this file")


def run_table(args) -> None:
    from circuitlab.io import check_writable, write_text_atomic
    from circuitlab.report.table import results_table

    for path in (args.md, args.csv):
        if path:
            check_writable(path)
    table = results_table(args.results, args.metric)
    md = table.to_markdown()
    print(md)
    if args.md:
        print(f"wrote {write_text_atomic(args.md, md + chr(10))}")
    if args.csv:
        print(f"wrote {write_text_atomic(args.csv, table.to_csv())}")


COMMANDS = {
    "plot": (add_plot, run_plot),
    "compare": (add_compare, run_compare),
    "reproduce": (add_reproduce, run_reproduce),
    "table": (add_table, run_table),
}
