"""`circuitlab eval` and `circuitlab tasks`."""

from __future__ import annotations

from circuitlab.cli.options import add_data_options, add_model_options, add_settings, build, note
from circuitlab.evaluate.config import EvalConfig
from circuitlab.models.config import ModelConfig


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluation on a task's evaluation split, zero-shot or with an adapter")
    add_model_options(p)
    add_data_options(p)
    add_settings(p, EvalConfig)
    p.add_argument("--out", help="write metrics and per-document predictions as JSON (reused when made with the same "
                                  "settings, refused when made with others)")


def run_eval(args) -> None:
    from circuitlab.evaluate.job import evaluate_task

    result = evaluate_task(build(ModelConfig, args), args.task, build(EvalConfig, args), args.data_dir, args.out,
                           log=note)
    metrics = "  ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
    a = result.adapter
    adapter = f", {a['kind']} adapter {a['name']} ({a['fingerprint']})" if a else ""
    print(f"{result.task} ({result.split}, {result.n_docs} docs, {result.protocol} protocol{adapter}, "
          f"{result.seconds:.1f}s): {metrics}")
    if args.out:
        print(f"wrote {args.out}")


def add_tasks(sub) -> None:
    sub.add_parser("tasks", help="list the built-in tasks, by family")


def run_tasks(args) -> None:
    from circuitlab.tasks import FAMILIES

    for family, tasks in FAMILIES.items():
        for t in tasks:
            print(f"{t.name:15s} {family:11s} eval split: {t.eval_split:10s} metrics: {', '.join(t.metrics)}")


COMMANDS = {"eval": (add_eval, run_eval), "tasks": (add_tasks, run_tasks)}
