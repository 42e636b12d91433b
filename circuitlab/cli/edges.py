"""`circuitlab edges`: score every edge on clean/corrupted pairs, keep a circuit, write it (resumable)."""

from __future__ import annotations

from circuitlab.cli.options import add_data_options, add_model_options, add_settings, build
from circuitlab.errors import CircuitlabError


def add(sub) -> None:
    from circuitlab.edges.run import EdgesConfig

    p = sub.add_parser("edges", help="an edge circuit by attribution patching (EAP, EAP-IG) or exact patching")
    add_model_options(p)
    add_data_options(p, task_required=False)
    p.add_argument("--pairs", help='JSON Lines of {"clean", "corrupted", "answer"[, "corrupted_answer"]} '
                                   "(default: the task's own pairs)")
    p.add_argument("--split", default="test", help="the task's split to take pairs from (default: test)")
    p.add_argument("--max-pairs", type=int, help="use only the first N pairs")
    add_settings(p, EdgesConfig)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="circuit JSON to write (the scores go beside it as .safetensors)")


def run(args) -> None:
    from circuitlab.arithmetic import GENERATORS
    from circuitlab.arithmetic import pairs as arithmetic_pairs
    from circuitlab.edges.pairs import load_pairs, pairs_from_docs, pairs_from_rows
    from circuitlab.edges.run import EdgesConfig, edges_to
    from circuitlab.io import check_writable
    from circuitlab.models.config import ModelConfig
    from circuitlab.tasks import data_fingerprint, get_task, load_docs

    # Everything that can be wrong is checked before the model loads.
    where, cfg = build(ModelConfig, args), build(EdgesConfig, args)
    if (args.task is None) == (args.pairs is None):
        raise CircuitlabError("give --task (its clean/corrupted pairs) or --pairs FILE.jsonl")
    if args.max_pairs is not None and args.max_pairs < 1:
        raise CircuitlabError(f"--max-pairs must be a positive integer, got {args.max_pairs}")
    if args.pairs:
        pairs, name, fingerprint = load_pairs(args.pairs)[: args.max_pairs], args.pairs, None
    else:
        task = get_task(args.task)
        docs = load_docs(task, args.split, args.data_dir, limit=args.max_pairs)
        pairs, name, fingerprint = pairs_from_docs(docs, task.name), task.name, data_fingerprint(docs)
        if task.name in GENERATORS:  # the generated tasks also know each corrupted prompt's answer
            pairs = pairs_from_rows([(f"{task.name} row {i}", row) for i, row in
                                     enumerate(arithmetic_pairs(task.name, args.split)[: len(pairs)])])
    out = check_writable(args.out)
    model = where.load()
    circuit = edges_to(out, model, pairs, cfg, name, progress=not args.no_progress, data_fingerprint=fingerprint)
    s = circuit.scores
    print(f"{s.method} on {model.name}/{name}, {s.n_pairs} pairs, metric {s.metric}: {circuit.n_edges} of "
          f"{circuit.graph.n_edges} edges, {len(circuit.nodes())} nodes ({s.seconds:.1f} s)")
    if circuit.curve:
        points = ", ".join(f"{p['n_edges']}: {p['faithfulness']:.3f}" for p in circuit.curve["points"])
        print(f"faithfulness ({circuit.curve['ablation']} ablation), edges: {points}")
    print(f"wrote {out} and {out.with_suffix('.safetensors').name}")


COMMANDS = {"edges": (add, run)}
