"""`circuitlab locate`: select the samples, locate the circuit, write it (resumable)."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from circuitlab.cli.launch import add_process_options, processes
from circuitlab.cli.options import add_data_options, add_model_options, add_settings, build, name_flags
from circuitlab.errors import CircuitlabError

LOCATE_FIELDS = ["strategy", "n_per_layer", "seeds", "layers", "prescreen", "max_batch_tokens", "attention", "plain",
                 "protocol", "ablation", "ablation_docs"]


def add(sub) -> None:
    from circuitlab.locate import LocateConfig, SampleConfig

    p = sub.add_parser("locate", help="locate a knowledge circuit: the heads whose masking hurts a task most")
    add_model_options(p)
    add_data_options(p, task_required=False)
    add_settings(p, SampleConfig, flags={"n": "--samples"}, defaults={"n": None, "split": None})
    p.add_argument("--samples-file", help='JSON Lines of {"prompt", "target"}, used as they are, in order '
                                          "(then --task, optional, is only their name)")
    add_settings(p, LocateConfig, LOCATE_FIELDS, flags={"n_per_layer": "--heads-per-layer",
                                                        "attention": "--attn-implementation"}, defaults={"seeds": None})
    p.add_argument("--seed", type=int, help="random/redundant: one seed (the same as --seeds S)")
    p.add_argument("--circuit", help="redundant: the circuit JSON whose heads are excluded")
    name_flags(p, circuit="--circuit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--out", help="circuit JSON to write (default: circuits/MODEL__TASK[__STRATEGY].json)")
    add_process_options(p)


def run(args) -> None:
    from circuitlab.circuit import Circuit
    from circuitlab.io import check_writable
    from circuitlab.locate import LocateConfig, SampleConfig, locate_to, locating_samples, read_samples_file
    from circuitlab.locate.ablation import check_ablation_input, reference_samples
    from circuitlab.locate.samples import samples_task
    from circuitlab.models import ModelDims, ModelIdentity, model_config
    from circuitlab.models.config import ModelConfig
    from circuitlab.protocol import get_protocol
    from circuitlab.tasks import get_task, load_docs

    # Everything that can be wrong is checked before the model loads.
    where, sampling = build(ModelConfig, args), build(SampleConfig, args)
    if args.task is None and args.samples_file is None:
        raise CircuitlabError("--task is needed to select samples (or give --samples-file)")
    seeds = {"seeds": (args.seed,)} if args.seed is not None and args.seeds is None else {}
    circuit = Circuit.load(args.circuit) if args.circuit else None
    config = build(LocateConfig, args, circuit=circuit, **seeds)
    if args.samples_file:  # the options that select samples from a task's docs would do nothing
        unused = [args._flags.get(k, "--data-dir") for k in ("n", "max_docs", "split", "data_dir")
                  if getattr(args, k) is not None]
        if unused:
            raise CircuitlabError(f"{', '.join(unused)} select samples from a task's docs; with --samples-file "
                                  "they do nothing: leave them out")
    task = get_task(args.task) if args.task and not args.samples_file else None
    dims = ModelDims.of_config(model_config(where.model))  # the model's config, not its weights
    config.plan(dims, ModelIdentity(where.model, dims))
    if args.samples_file:
        samples = read_samples_file(args.samples_file)
        info = samples_task(args.samples_file, samples, args.task)
    else:
        docs = load_docs(task, sampling.split, args.data_dir, limit=sampling.max_docs)
    pool = check_ablation_input(config, samples if args.samples_file else docs, task, sampling, args.data_dir)
    suffix = "" if config.strategy == "layer-conditioned" else f"__{config.strategy}"
    out = check_writable(args.out or f"circuits/{Path(where.model).name}__{info.name if task is None else task.name}"
                                     f"{suffix}.json")

    shard, where = processes(args, where)
    model = where.load()
    start = time.perf_counter()
    if not args.samples_file:  # the first process selects, every process locates on the same samples
        picked = locating_samples(model, task, args.data_dir, sampling.split, sampling.n, sampling.max_docs,
                                  progress=not args.no_progress, docs=docs, protocol=config.protocol) \
            if shard.is_main else None
        samples, info = shard.broadcast(picked)
        if len(samples) < sampling.n and shard.is_main and get_protocol(config.protocol).correctness_filter:
            print(f"note: the model gets only {len(samples)} of the {info.n_docs_scored} docs scored right; "
                  "locating on those (raise --max-docs for more)", file=sys.stderr)
    if pool is not None:  # mean: the first --ablation-docs docs of the split that are not samples
        config = replace(config, reference=reference_samples(pool, samples, config.ablation_docs))
    selected_s = round(time.perf_counter() - start, 3)
    found = locate_to(out, model, samples, config, info, progress=not args.no_progress,
                      finish=lambda c: c.timings.update(select_samples_s=selected_s))
    if not shard.is_main:
        return
    heads = " ".join(f"{layer}:{','.join(map(str, hs))}" for layer, hs in sorted(found.heads.items()))
    print(f"{found.strategy} on {model.name}/{info.name}, {len(samples)} samples, n={found.n_per_layer}, "
          f"{found.protocol} protocol{'' if found.ablation == 'zero' else f', {found.ablation} ablation'}: {heads}")
    print(f"loss: baseline {found.baseline_loss:.4f}, all selected heads masked {found.loss_curve[-1]:.4f} "
          f"({found.timings['locate_s']:.1f}s)")
    print(f"wrote {out}")


COMMANDS = {"locate": (add, run)}
