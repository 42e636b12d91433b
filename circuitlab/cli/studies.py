"""`circuitlab reproduce` (the paper's locating figures for many tasks), `track` (circuits over fine-tuning) and
`held-out` (Finding 1 out of sample)."""

from __future__ import annotations

import dataclasses
import shlex
from contextlib import nullcontext

from circuitlab.cli.options import (
    MODEL_FIELDS, add_data_dir_option, add_figure_options, add_model_options, add_progress_option, add_settings, build,
    figure_options, name_flags, note,
)
from circuitlab.core.io import check_writable, output_lock
from circuitlab.core.processes import launched_main
from circuitlab.edges.config import EdgesConfig
from circuitlab.models.config import ModelConfig
from circuitlab.studies.config import HeldOutConfig, ReproduceConfig


def add_reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="the paper's locating figures for many tasks (resumable task by task)")
    add_model_options(p, processes=True)
    p.add_argument("--tasks", default="all", help="'all' (the paper's 13 tasks) or a comma-separated list")
    add_data_dir_option(p)
    p.add_argument("--out", required=True, help="directory for circuits/, tables/, the figures and README.md")
    add_settings(p, ReproduceConfig, flags={"random_seeds": "--seeds", "attention": "--attn-implementation"})
    name_flags(p, n_per_layer="--heads-per-layer")  # checked by LocateConfig against the model
    add_figure_options(p)
    p.add_argument("--redraw", action="store_true", help="only draw the figures, tables and README again from the "
                                                          "circuits in --out (after an upgrade); no model is loaded")


def one_writer(out: str, writes: bool = True):
    """The lock on a study's --out directory, held for the whole command (its figures, tables, README and
    track.json are written by one process at a time; each circuit or step file also has a lock of its own). Taken
    after --out is checked, and leaving nothing when the command is refused (the directories it made go with it).
    `writes`: False in the processes of a torchrun run that do not write."""
    return output_lock(check_writable(out, "dir")) if writes else nullcontext()


def run_reproduce(args) -> None:
    from circuitlab.studies.jobs import reproduce

    log = print if launched_main() else (lambda line: None)
    with one_writer(args.out, launched_main()):
        result = reproduce(build(ModelConfig, args), args.tasks, args.data_dir, args.out, build(ReproduceConfig, args),
                           command=command_line(args), progress=launched_main(), log=log, redraw=args.redraw,
                           **figure_options(args))
    log(f"wrote {len(result.figures)} figure files and {result.readme}")


ALWAYS_SHOWN = ("model", "tasks", "data_dir", "out", "samples", "max_docs", "all_docs", "random_seeds")


def command_line(args) -> str:
    """The command that reproduces this run: the options that name what was run, and every other option that
    differs from its default (dtype, batch size, ...); not the device."""
    defaults = {f.name: f.default for cls in (ModelConfig, ReproduceConfig) for f in dataclasses.fields(cls)}
    flags = {"model": "--model", "tasks": "--tasks", "data_dir": "--data-dir", "out": "--out", **args._flags}
    argv = []
    for name, flag in flags.items():
        value = getattr(args, name, None)
        if name in ("device", "processes") or value is None or (name not in ALWAYS_SHOWN and value == defaults.get(name)):
            continue
        argv += [flag, ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)]
    return shlex.join(["circuitlab", "reproduce", *argv, *(["--plotlyjs", args.plotlyjs] if args.plotlyjs != "directory" else []),
                       *(["--no-png"] if args.no_png else []), *(["--redraw"] if getattr(args, "redraw", False) else [])])


def add_track(sub) -> None:
    p = sub.add_parser("track", help="how a circuit changes over fine-tuning: the edge circuit at the start and at "
                                     "every checkpoint of a `finetune --save-every K` run (resumable)")
    p.add_argument("run", metavar="RUN_DIR", help="a `circuitlab finetune` run directory with checkpoints")
    add_model_options(p, names=[f for f in MODEL_FIELDS if f != "model"])  # the model itself is the run's
    add_data_dir_option(p)
    p.add_argument("--pairs", help='JSON Lines of {"clean", "corrupted", "answer"[, "corrupted_answer"]} '
                                   "(default: the run's task's own pairs)")
    p.add_argument("--split", help="the task's split to take pairs from (default: its evaluation split)")
    p.add_argument("--max-pairs", type=int, help="use only the first N pairs")
    add_settings(p, EdgesConfig)
    p.add_argument("--heads", action="store_true", help="also locate the head circuit (layer-conditioned) at every "
                                                        "checkpoint, on the same pairs, and compare those")
    add_figure_options(p)
    add_progress_option(p)
    p.add_argument("--out", required=True, help="directory for step-N.json files, track.json and the figures")


def run_track(args) -> None:
    from circuitlab.studies.jobs import track

    with one_writer(args.out):
        result = track(args.run, args.out, model=build(ModelConfig, args), pairs_file=args.pairs, split=args.split,
                       max_pairs=args.max_pairs, config=build(EdgesConfig, args), heads=args.heads,
                       data_dir=args.data_dir, progress=not args.no_progress, log=note, **figure_options(args))
    for c in result.vs_start:
        heads = "" if c.head_jaccard is None else f", heads {c.head_jaccard:.3f}"
        print(f"step {c.after} vs start: node Jaccard {c.node_jaccard:.3f}, edge Jaccard {c.edge_jaccard:.3f}{heads}; "
              f"edges +{c.edges_added} -{c.edges_removed}, nodes +{c.nodes_added} -{c.nodes_removed}")
    if result.headmap:
        print(f"HeadMap: {result.headmap}")
    print(f"wrote {args.out}/track.json and {len(result.steps)} step files")


def add_held_out(sub) -> None:
    p = sub.add_parser("held-out", help="Finding 1 out of sample: each selection of `reproduce` circuits (layer-"
                                        "conditioned, greedy, random) masked on held-out docs, with intervals")
    p.add_argument("circuits", nargs="+", metavar="CIRCUIT", help="circuit files written by `circuitlab reproduce`")
    add_model_options(p, names=[f for f in MODEL_FIELDS if f not in ("model", "processes")])  # the circuits' model
    add_data_dir_option(p)
    add_settings(p, HeldOutConfig)
    p.add_argument("--out", required=True, help="directory for one TASK.json per circuit (reused when finished)")


def run_held_out(args) -> None:
    from circuitlab.studies.jobs import held_out

    for r in held_out(args.circuits, args.out, model=build(ModelConfig, args), config=build(HeldOutConfig, args),
                      data_dir=args.data_dir, log=note):
        for row in r.comparisons:
            parts = [f"{r.task} ({len(r.doc_indices)} {r.split} docs), layers 0..{row['point']} masked:"]
            for other in ("greedy", "random"):
                if other in row:
                    c = row[other]
                    parts.append(f"circuit - {other} {c['difference']:+.2f} nats [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}]")
            print(" ".join(parts))
    print(f"wrote {args.out}")


COMMANDS = {"reproduce": (add_reproduce, run_reproduce), "track": (add_track, run_track),
            "held-out": (add_held_out, run_held_out)}
