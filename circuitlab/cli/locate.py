"""`circuitlab locate`: the circuit of a task (or of a samples file), written to a circuit JSON; resumable."""

from __future__ import annotations

from dataclasses import fields

from circuitlab.cli.options import (add_data_options, add_model_options, add_progress_option, add_settings, build,
                                    given, name_flags, note)
from circuitlab.core.errors import CircuitlabError
from circuitlab.core.processes import launched_main
from circuitlab.models.config import ModelConfig
from circuitlab.locate.config import LocateConfig
from circuitlab.locate.samples import SampleConfig

LOCATE_FIELDS = ["strategy", "n_per_layer", "seeds", "layers", "prescreen", "max_batch_tokens", "attention", "plain",
                 "protocol", "ablation", "ablation_docs"]


def add(sub) -> None:
    p = sub.add_parser("locate", help="locate a knowledge circuit: the heads whose masking hurts a task most")
    add_model_options(p, processes=True)
    add_data_options(p, task_required=False)
    add_settings(p, SampleConfig, flags={"n": "--samples"}, defaults={"n": None, "split": None})
    p.add_argument("--samples-file", help='JSON Lines of {"prompt", "target"}, used as they are, in order '
                                          "(then --task, optional, is only their name)")
    add_settings(p, LocateConfig, LOCATE_FIELDS, flags={"n_per_layer": "--heads-per-layer",
                                                        "attention": "--attn-implementation"}, defaults={"seeds": None})
    p.add_argument("--seed", type=int, help="random/redundant: one seed (the same as --seeds S)")
    p.add_argument("--circuit", help="redundant: the circuit JSON whose heads are excluded")
    name_flags(p, circuit="--circuit", samples_file="--samples-file")
    add_progress_option(p)
    p.add_argument("--out", help="circuit JSON to write (default: circuits/MODEL__TASK[__STRATEGY].json)")


def run(args) -> None:
    from circuitlab.circuits.circuit import Circuit
    from circuitlab.locate.job import locate_task

    if args.seed is not None and args.seeds is not None:
        raise CircuitlabError("--seed and --seeds both give the seeds: give one")
    if args.seed is not None:  # --seed S is --seeds S, and a refusal of it names the flag typed
        args.seeds, args._flags = (args.seed,), {**args._flags, "seeds": "--seed"}
    config = build(LocateConfig, args, circuit=Circuit.load(args.circuit) if args.circuit else None)
    sampling = build(SampleConfig, args) if given(args, *(f.name for f in fields(SampleConfig))) else None
    found = locate_task(build(ModelConfig, args), args.task, samples_file=args.samples_file, sampling=sampling,
                        config=config, data_dir=args.data_dir, out=args.out, progress=not args.no_progress, log=note)
    if launched_main():
        heads = " ".join(f"{layer}:{','.join(map(str, hs))}" for layer, hs in sorted(found.heads.items()))
        ablation = "" if found.ablation == "zero" else f", {found.ablation} ablation"
        print(f"{found.strategy} on {found.model.name}/{found.task.name}, {len(found.samples)} samples, "
              f"n={found.n_per_layer}, {found.protocol} protocol{ablation}: {heads}")
        print(f"loss: baseline {found.baseline_loss:.4f}, all selected heads masked {found.loss_curve[-1]:.4f} "
              f"({found.timings['locate_s']:.1f}s)")
        print(f"wrote {found.source}")
COMMANDS = {"locate": (add, run)}
