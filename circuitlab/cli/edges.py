"""`circuitlab edges` (an edge circuit by attribution), `edges-convert` (to and from EAP-IG / MIB files, or a head
circuit) and `pairs` (a task's clean/corrupted pairs as JSON Lines)."""

from __future__ import annotations

from circuitlab.cli.options import (add_data_dir_option, add_data_options, add_model_options, add_progress_option,
                                    add_settings, build)
from circuitlab.edges.config import EdgesConfig
from circuitlab.models.config import ModelConfig

PAIRS_HELP = 'JSON Lines of {"clean", "corrupted", "answer"[, "corrupted_answer"]} (default: the task\'s own pairs)'


def add_edges(sub) -> None:
    p = sub.add_parser("edges", help="an edge circuit by attribution patching (EAP, EAP-IG) or exact patching")
    add_model_options(p)
    add_data_options(p, task_required=False)
    p.add_argument("--pairs", help=PAIRS_HELP)
    p.add_argument("--split", help="the task's split to take pairs from (default: test)")
    p.add_argument("--max-pairs", type=int, help="use only the first N pairs")
    add_settings(p, EdgesConfig)
    add_progress_option(p)
    p.add_argument("--out", required=True, help="circuit JSON to write (the scores go beside it as .safetensors)")


def run_edges(args) -> None:
    from circuitlab.edges.job import edges_task

    circuit = edges_task(build(ModelConfig, args), args.task, pairs_file=args.pairs, split=args.split,
                         max_pairs=args.max_pairs, config=build(EdgesConfig, args), data_dir=args.data_dir,
                         out=args.out, progress=not args.no_progress)
    s = circuit.scores
    print(f"{s.method} on {s.model.name}/{s.task}, {s.n_pairs} pairs, metric {s.metric}: {circuit.n_edges} of "
          f"{circuit.graph.n_edges} edges, {len(circuit.nodes())} nodes ({s.seconds:.1f} s)")
    if circuit.curve:
        points = ", ".join(f"{p['n_edges']}: {p['faithfulness']:.3f}" for p in circuit.curve["points"])
        print(f"faithfulness ({circuit.curve['ablation']} ablation), edges: {points}")
    print(f"wrote {args.out} and its .safetensors")


def add_convert(sub) -> None:
    p = sub.add_parser("edges-convert", help="an edge circuit to MIB graph JSON or a head circuit for HeadMap; "
                                             "a MIB graph JSON to a circuitlab edge circuit")
    p.add_argument("input", metavar="IN.json", help="a circuitlab edge circuit or an EAP-IG / MIB graph JSON")
    p.add_argument("--to", required=True, choices=("mib", "edges", "heads"),
                   help="mib: EAP-IG / MIB graph JSON; edges: circuitlab edge circuit (+ .safetensors beside); "
                        "heads: head circuit JSON for finetune --circuit")
    p.add_argument("--model-of", metavar="FILE", help="a MIB file not written by circuitlab names no model: take it "
                                                      "from this circuit file (an edge or head circuit of that model)")
    p.add_argument("--out", required=True, help="the JSON file to write")


def run_convert(args) -> None:
    from circuitlab.edges.mib import convert

    circuit = convert(args.input, args.to, args.out, args.model_of)
    what = {"mib": "MIB graph JSON", "edges": "edge circuit", "heads": "head circuit"}[args.to]
    print(f"wrote {args.out} ({what}: {circuit.n_edges} edges kept, {len(circuit.nodes())} nodes)")


def add_pairs(sub) -> None:
    p = sub.add_parser("pairs", help='write a task\'s clean/corrupted prompt pairs as JSON Lines ({"clean", '
                                     '"corrupted", "answer"} rows)')
    p.add_argument("--task", required=True, help="a task with corrupted prompts (the arithmetic tasks, e.g. add_sub)")
    p.add_argument("--split", default="test", help="split to write (default: test, the circuit rows)")
    p.add_argument("--seed", type=int, help="arithmetic tasks: draw the rows with this seed instead of the default")
    add_data_dir_option(p)
    p.add_argument("--out", required=True, help="the .jsonl file to write")


def run_pairs(args) -> None:
    from circuitlab.tasks.registry import write_pairs

    rows = write_pairs(args.task, args.split, args.out, seed=args.seed, data_dir=args.data_dir)
    print(f"wrote {len(rows)} {args.task} {args.split} pairs to {args.out}")


COMMANDS = {"edges": (add_edges, run_edges), "edges-convert": (add_convert, run_convert), "pairs": (add_pairs, run_pairs)}
