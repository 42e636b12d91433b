"""`circuitlab track RUN_DIR`: the edge circuit at a fine-tuning run's start and every saved checkpoint,
how it changes, and figures (resumable)."""

from __future__ import annotations

from circuitlab.cli.options import add_data_dir_option, add_figure_options, add_settings, build, figure_options
from circuitlab.errors import CircuitlabError

MODEL_FIELDS = ["device", "dtype", "device_map", "max_memory"]  # the model itself is the run's


def add(sub) -> None:
    from circuitlab.edges.run import EdgesConfig
    from circuitlab.models.config import ModelConfig

    p = sub.add_parser("track", help="how a circuit changes over fine-tuning: the edge circuit at the start and at "
                                     "every checkpoint of a `finetune --save-every K` run (resumable)")
    p.add_argument("run", metavar="RUN_DIR", help="a `circuitlab finetune` run directory with checkpoints")
    add_settings(p, ModelConfig, MODEL_FIELDS)
    add_data_dir_option(p)
    p.add_argument("--pairs", help='JSON Lines of {"clean", "corrupted", "answer"[, "corrupted_answer"]} '
                                   "(default: the run's task's own pairs)")
    p.add_argument("--split", help="the task's split to take pairs from (default: its evaluation split)")
    p.add_argument("--max-pairs", type=int, help="use only the first N pairs")
    add_settings(p, EdgesConfig)
    p.add_argument("--heads", action="store_true", help="also locate the head circuit (layer-conditioned) at every "
                                                        "checkpoint, on the same pairs, and compare those")
    add_figure_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="directory for step-N.json files, track.json and the figures")


def run(args) -> None:
    from circuitlab.edges.circuit import EdgeCircuit
    from circuitlab.edges.pairs import load_pairs, pairs_from_docs
    from circuitlab.edges.run import EdgesConfig
    from circuitlab.edges.track import read_run, track
    from circuitlab.edges.track_figures import track_figures
    from circuitlab.io import check_writable
    from circuitlab.models.config import ModelConfig
    from circuitlab.report.write import write_figures
    from circuitlab.tasks import get_task, load_docs

    # Everything that can be wrong is checked before any model loads, and before anything is written.
    info = read_run(args.run)
    where, cfg = build(ModelConfig, args, model=info.config["model"]), build(EdgesConfig, args)
    if args.max_pairs is not None and args.max_pairs < 1:
        raise CircuitlabError(f"--max-pairs must be a positive integer, got {args.max_pairs}")
    if args.pairs:
        pairs, name = load_pairs(args.pairs)[: args.max_pairs], args.pairs
    else:
        task = get_task(info.config["task"])
        docs = load_docs(task, args.split or task.eval_split, args.data_dir, limit=args.max_pairs)
        pairs, name = pairs_from_docs(docs, task.name), task.name
    out = check_writable(args.out, "dir")
    result = track(info, out, pairs, cfg, name, where.where, heads=args.heads, progress=not args.no_progress)
    circuits = [EdgeCircuit.load(out / s.file) for s in result.steps]
    written = write_figures(track_figures(result, circuits), out, **figure_options(args))
    for c in result.vs_start:
        heads = "" if c.head_jaccard is None else f", heads {c.head_jaccard:.3f}"
        print(f"step {c.after} vs start: node Jaccard {c.node_jaccard:.3f}, edge Jaccard {c.edge_jaccard:.3f}{heads}; "
              f"edges +{c.edges_added} -{c.edges_removed}, nodes +{c.nodes_added} -{c.nodes_removed}")
    if result.headmap:
        print(f"HeadMap: {result.headmap}")
    print(f"wrote {out}/track.json, {len(result.steps)} step files and {len(written)} figure files")


COMMANDS = {"track": (add, run)}
