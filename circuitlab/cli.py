"""The `circuitlab` command: a thin layer over the Python API.

Each command has an `add_<name>(subparsers)` that declares its options and a `run_<name>(args)`
that calls the API. Bad input raises `CircuitlabError`, printed as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from circuitlab.errors import CircuitlabError


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="alias, hub id or local directory (default: smollm2-135m)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="task name (see `circuitlab tasks`) or a custom .jsonl file")
    p.add_argument("--data-dir", help="local data laid out like ../shared/data (default: $CIRCUITLAB_DATA, else the hub)")


def load(args):
    from circuitlab.models import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype)


# --- eval -------------------------------------------------------------------------------------


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="zero-shot evaluation on a task's evaluation split")
    add_model_options(p)
    add_data_options(p)
    p.add_argument("--split", help="split to evaluate (default: the task's evaluation split)")
    p.add_argument("--limit", type=int, help="evaluate only the first N documents")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", help="write metrics and per-document predictions as JSON")


def run_eval(args) -> None:
    from circuitlab.evaluate import evaluate
    from circuitlab.tasks import get_task

    task = get_task(args.task)
    model = load(args)
    result = evaluate(model, task, args.data_dir, args.split, args.limit, args.batch_size)
    metrics = "  ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
    print(f"{result.task} ({result.split}, {result.n_docs} docs, {result.seconds:.1f}s): {metrics}")
    if args.out:
        result.save(args.out)
        print(f"wrote {args.out}")


# --- tasks ------------------------------------------------------------------------------------


def add_tasks(sub) -> None:
    sub.add_parser("tasks", help="list the built-in tasks")


def run_tasks(args) -> None:
    from circuitlab.tasks import TASK_NAMES, get_task

    for name in TASK_NAMES:
        t = get_task(name)
        print(f"{name:15s} eval split: {t.eval_split:10s} metrics: {', '.join(t.metrics)}")


# --- plot, compare ----------------------------------------------------------------------------


def add_plot(sub) -> None:
    p = sub.add_parser("plot", help="figures of one or more circuits: masking heatmaps, loss curves, patterns")
    p.add_argument("circuits", nargs="+", metavar="CIRCUIT.json")
    p.add_argument("--out", required=True, help="directory for the .html and .png files")
    p.add_argument("--no-png", action="store_true", help="write only the HTML files")


def run_plot(args) -> None:
    from circuitlab.circuit import Circuit
    from circuitlab.plots import circuit_figures, write_figures

    circuits = [Circuit.load(p) for p in args.circuits]
    if len(circuits) > 1:
        from circuitlab.compare import check_same_model

        check_same_model(circuits)
    for path in write_figures(circuit_figures(circuits), args.out, png=not args.no_png):
        print(f"wrote {path}")


def add_compare(sub) -> None:
    p = sub.add_parser("compare", help="overlap rate, Jaccard and head frequency of several tasks' circuits")
    p.add_argument("circuits", nargs="+", metavar="CIRCUIT.json")
    p.add_argument("--out", required=True, help="directory for the CSV tables and the figures")
    p.add_argument("--no-png", action="store_true", help="write only the HTML files")


def run_compare(args) -> None:
    from circuitlab.circuit import Circuit
    from circuitlab.compare import compare
    from circuitlab.errors import CircuitlabError
    from circuitlab.plots import comparison_figures, write_figures

    if len(args.circuits) < 2:
        raise CircuitlabError("compare needs at least two circuit files")
    result = compare([Circuit.load(p) for p in args.circuits])
    print("overlap rate |row ∩ column| / |row|:")
    print(result.overlap.round(3).to_string())
    print("Jaccard |A ∩ B| / |A ∪ B|:")
    print(result.jaccard.round(3).to_string())
    for path in result.save_csv(args.out) + write_figures(comparison_figures(result), args.out, png=not args.no_png):
        print(f"wrote {path}")


COMMANDS = {
    "eval": (add_eval, run_eval),
    "tasks": (add_tasks, run_tasks),
    "plot": (add_plot, run_plot),
    "compare": (add_compare, run_compare),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circuitlab", description="Locate knowledge circuits in language models and enhance them with HeadMap."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command][1](args)
    except CircuitlabError as e:
        print(f"circuitlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("circuitlab: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
