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


def add_figure_options(p) -> None:
    p.add_argument("--no-png", action="store_true", help="write only the HTML files")
    p.add_argument("--plotlyjs", choices=("inline", "cdn"), default="inline",
                   help="inline: self-contained HTML (~5 MB each); cdn: small HTML that loads plotly.js from its CDN")


def figure_options(args) -> dict:
    return {"png": not args.no_png, "cdn": args.plotlyjs == "cdn"}


def add_plot(sub) -> None:
    p = sub.add_parser("plot", help="figures of one or more circuits: masking heatmaps, loss curves, patterns")
    p.add_argument("circuits", nargs="+", metavar="CIRCUIT.json")
    p.add_argument("--out", required=True, help="directory for the .html and .png files")
    add_figure_options(p)


def run_plot(args) -> None:
    from circuitlab.circuit import Circuit
    from circuitlab.plots import circuit_figures, write_figures

    circuits = [Circuit.load(p) for p in args.circuits]
    if len(circuits) > 1:
        from circuitlab.compare import check_same_model

        check_same_model(circuits)
    for path in write_figures(circuit_figures(circuits), args.out, **figure_options(args)):
        print(f"wrote {path}")


def add_compare(sub) -> None:
    p = sub.add_parser("compare", help="overlap rate, Jaccard and head frequency of several tasks' circuits")
    p.add_argument("circuits", nargs="+", metavar="CIRCUIT.json")
    p.add_argument("--out", required=True, help="directory for the CSV tables and the figures")
    add_figure_options(p)


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
    for path in result.save_csv(args.out) + write_figures(comparison_figures(result), args.out, **figure_options(args)):
        print(f"wrote {path}")


# --- finetune, table, export, merge ------------------------------------------------------------

METHOD_NAMES = ("base, headmap-mha, headmap-hs, lora, dora, headmap-mha+lora, headmap-hs+lora, "
                "headmap-mha+dora, headmap-hs+dora")


def add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune with HeadMap, LoRA/DoRA or both, then evaluate (resumable)")
    add_model_options(p)
    add_data_options(p)
    p.add_argument("--method", required=True, help=f"one of: {METHOD_NAMES} (base = zero-shot, no training)")
    p.add_argument("--circuit", help="circuit JSON for HeadMap's heads (may come from another task); "
                   "default: locate one on the training docs")
    p.add_argument("--heads", default="circuit", choices=["circuit", "random", "redundant"],
                   help="the circuit's heads, random heads, or random heads outside the circuit")
    p.add_argument("--heads-per-layer", type=int, help="heads per layer for random/redundant (default: the circuit's)")
    p.add_argument("--rank", type=int, default=32, help="HeadMap and LoRA/DoRA rank r (default: 32)")
    p.add_argument("--scaling", type=float, default=1.0, help="HeadMap output scale s (default: 1, as the paper's equations)")
    p.add_argument("--lora-alpha", type=float, default=64.0, help="LoRA/DoRA alpha (default: 64)")
    p.add_argument("--lr", type=float, help="learning rate (default: 1e-3 HeadMap, 2e-4 LoRA/DoRA)")
    p.add_argument("--lr-peft", type=float, help="learning rate of the LoRA/DoRA part of a combination (default: 2e-4)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--micro-batch-size", type=int, help="gradient accumulation: forward this many docs at a time")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--max-len", type=int, default=512, help="cut training texts at this many tokens")
    p.add_argument("--max-train", type=int, help="train on the first N documents of the train split")
    p.add_argument("--train-split", default="train")
    p.add_argument("--eval-split", help="default: the task's evaluation split; when it is the train split, "
                   "the documents after the training ones are evaluated")
    p.add_argument("--limit", type=int, help="evaluate only the first N evaluation documents")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run directory, e.g. runs/NAME (rerun to resume)")


def run_finetune(args) -> None:
    from circuitlab.train import TrainConfig, train_and_eval

    cfg = TrainConfig(
        model=args.model, task=args.task, method=args.method, heads=args.heads, heads_per_layer=args.heads_per_layer,
        circuit=args.circuit, rank=args.rank, scaling=args.scaling, lora_alpha=args.lora_alpha, lr=args.lr,
        lr_peft=args.lr_peft, weight_decay=args.weight_decay, batch_size=args.batch_size,
        micro_batch_size=args.micro_batch_size, epochs=args.epochs, warmup_steps=args.warmup_steps,
        max_len=args.max_len, max_train=args.max_train, train_split=args.train_split, eval_split=args.eval_split,
        eval_limit=args.limit, seed=args.seed, dtype=args.dtype,
    )
    result = train_and_eval(load(args), cfg, args.out, args.data_dir)
    metrics = "  ".join(f"{k}={v:.4f}" for k, v in result["eval"]["metrics"].items())
    print(f"{result['method']} on {args.task}: trainable {result['trainable_params']:,} "
          f"({result['trainable_share_pct']:.3f}%), train {result['train']['seconds']:.0f}s, "
          f"{result['eval']['split']} ({result['eval']['n_docs']} docs): {metrics}")
    print(f"wrote {args.out}/result.json")


def add_table(sub) -> None:
    p = sub.add_parser("table", help="a Table-1-style table (markdown and CSV) of finetune result.json files")
    p.add_argument("results", nargs="+", metavar="RESULT.json")
    p.add_argument("--metric", default="acc")
    p.add_argument("--csv", help="also write the table as CSV")
    p.add_argument("--md", help="also write the markdown table to this file")


def run_table(args) -> None:
    from circuitlab.io import write_text_atomic
    from circuitlab.train import results_table

    table = results_table(args.results, args.metric)
    md = table.to_markdown()
    print(md)
    if args.md:
        print(f"wrote {write_text_atomic(args.md, md + chr(10))}")
    if args.csv:
        print(f"wrote {write_text_atomic(args.csv, table.to_csv())}")


def add_export(sub) -> None:
    p = sub.add_parser("export", help="a run's HeadMap adapter: circuit JSON, safetensors weights, config JSON")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--peft", action="store_true", help="also write it as a PEFT LoRA adapter on o_proj (MHA variant)")
    p.add_argument("--model", help="base model (default: the one the adapter was trained on)")


def run_export(args) -> None:
    from circuitlab.export import export

    for path in export(args.run, args.out, peft=args.peft, model_name=args.model):
        print(f"wrote {path}")


def add_merge(sub) -> None:
    p = sub.add_parser("merge", help="fold an MHA-variant adapter into o_proj and save a stock HF model")
    p.add_argument("adapter", metavar="RUN_OR_ADAPTER_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--model", help="base model (default: the one the adapter was trained on)")


def run_merge(args) -> None:
    from circuitlab.export import merge

    print(f"wrote {merge(args.adapter, args.out, model_name=args.model)}")


# --- locate -----------------------------------------------------------------------------------


def add_locate(sub) -> None:
    p = sub.add_parser("locate", help="locate a knowledge circuit: the heads whose masking hurts a task most")
    add_model_options(p)
    add_data_options(p)
    p.add_argument("--strategy", default="layer-conditioned",
                   help="single | greedy | random | layer-conditioned (default) | redundant")
    p.add_argument("--heads-per-layer", type=int, help="n heads per layer (default: 8 for 32-head models, else round(H/4))")
    p.add_argument("--samples", type=int, default=64, help="samples to locate on (default: 64)")
    p.add_argument("--max-docs", type=int, help="score only the first N docs of --split when selecting samples")
    p.add_argument("--split", default="train", help="split that sample selection reads (default: train)")
    p.add_argument("--samples-file", help='JSON Lines of {"prompt", "target"}, used as they are, in order')
    p.add_argument("--seed", type=int, default=0, help="random/redundant: the seed (default: 0)")
    p.add_argument("--seeds", help="random/redundant: several seeds, e.g. 0,1,2 (the first one's heads are the circuit)")
    p.add_argument("--layers", help="locate only in layers A-B (inclusive; default: all)")
    p.add_argument("--circuit", help="redundant: the circuit JSON whose heads are excluded")
    p.add_argument("--prescreen", type=int, metavar="K", help="rank heads by attribution patching, evaluate the top K exactly")
    p.add_argument("--max-batch-tokens", type=int, default=4096, help="padded tokens per forward (default: 4096)")
    p.add_argument("--plain", action="store_true", help="use the paper's plain algorithm (slow; for checking)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--out", help="circuit JSON to write (default: circuits/MODEL__TASK[__STRATEGY].json)")


def run_locate(args) -> None:
    import time
    from pathlib import Path

    from circuitlab.circuit import Circuit, TaskInfo
    from circuitlab.locate import (LocateConfig, checkpoint_path, locate, locating_samples, parse_layers,
                                   read_samples_file, resolve_config, samples_fingerprint)
    from circuitlab.tasks import get_task

    task = get_task(args.task)
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else (args.seed,)
    except ValueError:
        raise CircuitlabError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    samples_from_file = read_samples_file(args.samples_file) if args.samples_file else None
    circuit = Circuit.load(args.circuit) if args.circuit else None
    if args.samples < 1:
        raise CircuitlabError(f"--samples must be positive, got {args.samples}")
    model = load(args)
    config = LocateConfig(
        strategy=args.strategy, n_per_layer=args.heads_per_layer, seeds=seeds,
        layers=parse_layers(args.layers, model.n_layers) if args.layers else None, prescreen=args.prescreen,
        max_batch_tokens=args.max_batch_tokens, plain=args.plain, circuit=circuit,
    )
    resolve_config(model, config)  # bad settings fail before the samples are scored
    suffix = "" if args.strategy == "layer-conditioned" else f"__{args.strategy}"
    out = Path(args.out or f"circuits/{model.name.replace('/', '_')}__{task.name}{suffix}.json")
    start = time.perf_counter()
    if samples_from_file is not None:
        samples = samples_from_file
        info = TaskInfo(task.name, f"samples-file:{Path(args.samples_file).name}", samples_fingerprint(samples), None)
    else:
        samples, info = locating_samples(model, task, args.data_dir, args.split, args.samples, args.max_docs,
                                         progress=not args.no_progress)
        if len(samples) < args.samples:
            print(f"note: the model gets only {len(samples)} of the {info.n_docs_scored} docs scored right; "
                  f"locating on those (raise --max-docs for more)", file=sys.stderr)
    selected_s = time.perf_counter() - start
    found = locate(model, samples, config, info, checkpoint=checkpoint_path(out), progress=not args.no_progress)
    found.timings["select_samples_s"] = round(selected_s, 3)
    found.save(out)
    checkpoint_path(out).unlink(missing_ok=True)
    heads = " ".join(f"{layer}:{','.join(map(str, hs))}" for layer, hs in sorted(found.heads.items()))
    print(f"{found.strategy} on {model.name}/{task.name}, {len(samples)} samples, n={found.n_per_layer}: {heads}")
    print(f"loss: baseline {found.baseline_loss:.4f}, all selected heads masked {found.loss_curve[-1]:.4f} "
          f"({found.timings['locate_s']:.1f}s)")
    print(f"wrote {out}")


def add_reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="the paper's locating figures for many tasks (resumable task by task)")
    add_model_options(p)
    p.add_argument("--tasks", default="all", help="'all' (the paper's 13 tasks) or a comma-separated list")
    p.add_argument("--data-dir", help="local data laid out like ../shared/data (default: $CIRCUITLAB_DATA, else the hub)")
    p.add_argument("--out", required=True, help="directory for circuits/, tables/, the figures and README.md")
    p.add_argument("--samples", type=int, default=64, help="samples per task (default: 64, as the paper)")
    p.add_argument("--heads-per-layer", type=int, help="default: 8 for 32-head models, else round(H/4)")
    p.add_argument("--max-docs", type=int, help="select samples among the first N docs of the split (default: all)")
    p.add_argument("--all-docs", type=int, default=256, help="Figure 7: docs for the all-documents curve (default: 256)")
    p.add_argument("--seeds", default="0,1,2", help="random selections' seeds (default: 0,1,2)")
    p.add_argument("--max-batch-tokens", type=int, default=4096)
    add_figure_options(p)


def run_reproduce(args) -> None:
    import shlex

    from circuitlab.errors import CircuitlabError
    from circuitlab.reproduce import ReproduceConfig, parse_tasks, reproduce

    tasks = parse_tasks(args.tasks)
    for name in ("samples", "all_docs", "max_docs", "heads_per_layer"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CircuitlabError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    try:
        seeds = tuple(int(s) for s in args.seeds.split(","))
    except ValueError:
        raise CircuitlabError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    config = ReproduceConfig(samples=args.samples, heads_per_layer=args.heads_per_layer, max_docs=args.max_docs,
                             all_docs=args.all_docs, random_seeds=seeds, max_batch_tokens=args.max_batch_tokens)
    opts = [("--model", args.model), ("--tasks", args.tasks), ("--data-dir", args.data_dir), ("--out", args.out),
            ("--samples", args.samples), ("--heads-per-layer", args.heads_per_layer), ("--max-docs", args.max_docs),
            ("--all-docs", args.all_docs), ("--seeds", args.seeds),
            ("--plotlyjs", "cdn" if args.plotlyjs == "cdn" else None)]
    command = shlex.join(["circuitlab", "reproduce", *[str(x) for o, v in opts if v is not None for x in (o, v)]])
    result = reproduce(load(args), tasks, args.data_dir, args.out, config, command=command,
                       **figure_options(args))
    print(f"wrote {len(result.figures)} figure files and {result.readme}")


COMMANDS = {
    "locate": (add_locate, run_locate),
    "eval": (add_eval, run_eval),
    "tasks": (add_tasks, run_tasks),
    "plot": (add_plot, run_plot),
    "compare": (add_compare, run_compare),
    "reproduce": (add_reproduce, run_reproduce),
    "finetune": (add_finetune, run_finetune),
    "table": (add_table, run_table),
    "export": (add_export, run_export),
    "merge": (add_merge, run_merge),
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
