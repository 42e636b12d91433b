"""`circuitlab eval` and `circuitlab tasks`."""

from __future__ import annotations

from circuitlab.cli.options import add_data_options, add_model_options, add_settings, build


def add_eval(sub) -> None:
    from circuitlab.evaluate import EvalConfig

    p = sub.add_parser("eval", help="zero-shot evaluation on a task's evaluation split")
    add_model_options(p)
    add_data_options(p)
    add_settings(p, EvalConfig)
    p.add_argument("--out", help="write metrics and per-document predictions as JSON")


def run_eval(args) -> None:
    from circuitlab.evaluate import EvalConfig, evaluate
    from circuitlab.io import check_writable
    from circuitlab.models import model_config
    from circuitlab.models.config import ModelConfig
    from circuitlab.tasks import get_task, load_docs

    where, cfg = build(ModelConfig, args), build(EvalConfig, args)
    task = get_task(args.task)
    model_config(where.model)  # the model exists (or the hub answers) before anything is read or loaded
    split = cfg.split or task.eval_split
    docs = load_docs(task, split, args.data_dir, limit=cfg.limit)
    if args.out:
        check_writable(args.out)
    model = where.load()
    result = evaluate(model, task, split=split, batch_size=cfg.batch_size, docs=docs, protocol=cfg.protocol)
    metrics = "  ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
    print(f"{result.task} ({result.split}, {result.n_docs} docs, {result.protocol} protocol, "
          f"{result.seconds:.1f}s): {metrics}")
    if args.out:
        print(f"wrote {result.save(args.out)}")


def add_tasks(sub) -> None:
    sub.add_parser("tasks", help="list the built-in tasks")


def run_tasks(args) -> None:
    from circuitlab.arithmetic import NAMES as GENERATED
    from circuitlab.tasks import TASK_NAMES, get_task

    for name in (*TASK_NAMES, *GENERATED):  # the paper's tasks and capitals, then the generated arithmetic ones
        t = get_task(name)
        print(f"{name:15s} eval split: {t.eval_split:10s} metrics: {', '.join(t.metrics)}")


COMMANDS = {"eval": (add_eval, run_eval), "tasks": (add_tasks, run_tasks)}
