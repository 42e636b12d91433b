"""The studies as library calls, each checking everything it can before any model loads (this module imports
neither torch nor TransformerLens) and then running its heavy half:

- `reproduce`: the paper's locating experiments for many tasks (`circuitlab.studies.reproduce`);
- `track`: the edge circuit at every checkpoint of a fine-tuning run, and how it changes
  (`circuitlab.studies.track`);
- `held_out`: Finding 1 out of sample, a circuit's selections masked on documents they were not chosen on
  (`circuitlab.studies.held_out`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from circuitlab.core.errors import ConfigError
from circuitlab.core.io import check_writable
from circuitlab.edges.config import EdgesConfig
from circuitlab.edges.pairs import read_pairs, separated
from circuitlab.locate.config import LocateConfig
from circuitlab.models.config import ModelConfig
from circuitlab.models.dims import model_dims
from circuitlab.models.names import resolve
from circuitlab.studies.config import HeldOutConfig, ReproduceConfig, locating_split, parse_tasks
from circuitlab.studies.runs import read_run
from circuitlab.tasks import data_fingerprint, get_task, load_docs


def reproduce(model, tasks: str | list[str], data_dir, out_dir: str | Path, config: ReproduceConfig | None = None,
              *, command: str | None = None, png: bool = True, plotlyjs: str = "directory", progress: bool = True,
              log=print, redraw: bool = False):
    """Every task's circuit (resumable task by task), then all figures, tables and the README. `tasks`: names, or
    "all" / a comma-separated list; every task's split is read and `model` (a `ModelConfig` or a name, loaded
    after the checks) is checked against `config` before anything loads. `redraw`: only the figures, tables
    and README, again, from the circuits already in `out_dir` (no model is loaded)."""
    config = config or ReproduceConfig()
    tasks = parse_tasks(tasks) if isinstance(tasks, str) else tuple(tasks)
    out_dir = check_writable(out_dir, "dir")
    for task in tasks:  # every split exists and reads, before the model loads
        load_docs(task, locating_split(task, data_dir), data_dir, limit=config.max_docs)
    name = model.name if hasattr(model, "bridge") else (model.model if isinstance(model, ModelConfig) else model)
    if redraw:
        from circuitlab.studies.reproduce import redraw_reproduction

        hf_id = model.hf_id if hasattr(model, "bridge") else resolve(name).public_id
        return redraw_reproduction(tasks, data_dir, out_dir, config, command, png, plotlyjs, log, hf_id)
    LocateConfig(n_per_layer=config.heads_per_layer).plan(model_dims(name))
    from circuitlab.studies.reproduce import run_reproduction  # torch and TransformerLens: every check has passed

    return run_reproduction(model, tasks, data_dir, out_dir, config, command, png, plotlyjs, progress, log)


def track(run_dir: str | Path, out: str | Path, *, model: ModelConfig | None = None, pairs_file=None,
          split: str | None = None, max_pairs: int | None = None, config: EdgesConfig | None = None,
          heads: bool = False, data_dir=None, png: bool = True, plotlyjs: str = "directory", progress: bool = True,
          log=print):
    """How a fine-tuning run's circuit changes, one library call:

        read the run -> the pairs -> the edge circuit at every checkpoint -> their comparisons -> track.json ->
        figures

    `model`: where and in what precision to load the run's model (its name is the run's); `pairs_file`, else the
    run's task's own pairs of `split` (default: its evaluation split), joined to their answers as the run's texts
    were (`--separator`), so every checkpoint is read on the text it was tuned on; a pairs file is taken as it is.
    Everything is checked before any loads."""
    if config is not None and config.edges is not None:
        raise ConfigError("edges", "is for one `circuitlab edges` run; track scores every edge at every checkpoint")
    run = read_run(run_dir)
    where = ModelConfig(**{**asdict(model or ModelConfig()), "model": run.config["model"]})
    task = get_task(run.config["task"])
    own_split = None if pairs_file else task.eval_split  # a pairs file is taken as it is
    pairs, name, _ = read_pairs(None if pairs_file else task.name, pairs_file, split or own_split, max_pairs, data_dir)
    if pairs_file is None:
        pairs = separated(pairs, run.config.get("separator", "task"))
    out = check_writable(out, "dir")
    from circuitlab.studies.track import circuits_over_training  # torch, TransformerLens: every check has passed

    return circuits_over_training(run, out, pairs, config or EdgesConfig(), name, where.where, heads, png, plotlyjs,
                                  progress, log)


def held_out(circuits: list, out_dir: str | Path, *, model: ModelConfig | None = None,
             config: HeldOutConfig | None = None, data_dir=None, log=print) -> list:
    """Finding 1 out of sample, one library call:

        read the circuits -> each task's held-out docs -> every selection's per-document curve -> paired
        comparisons -> OUT_DIR/TASK.json

    `circuits`: `circuitlab reproduce` circuit files (layer-conditioned, with their greedy and random selections),
    all of one model; `model`: where to load it. Everything is checked before the model loads; a task whose file
    was made from the same inputs is reused."""
    from circuitlab.circuits.circuit import Circuit

    config = config or HeldOutConfig()
    loaded = [Circuit.load(p) for p in circuits]
    if not loaded:
        raise ConfigError("circuits", "give at least one circuit file")
    names = {c.model.name for c in loaded}
    if len(names) > 1:
        raise ConfigError("circuits", f"must all be of one model, got {', '.join(sorted(names))}")
    n_layers = loaded[0].model.n_layers
    points = sorted(set(config.points or (n_layers - 1,)))
    if not 0 <= points[0] <= points[-1] < n_layers:
        raise ConfigError("points", f"must lie in 0..{n_layers - 1}, got {list(config.points)}")
    tasks = [c.task.name for c in loaded]
    if len(set(tasks)) < len(tasks):
        raise ConfigError("circuits", "give one circuit per task (each writes OUT_DIR/TASK.json)")
    out_dir = check_writable(out_dir, "dir")
    from circuitlab.core.artefact import Artefact
    from circuitlab.studies.held_out import TaskHeldOut

    done, todo = [], []
    for c in loaded:
        if not any(s.strategy in ("greedy", "random") for s in c.selections):
            raise ConfigError("circuits", f"{c.source}: has no greedy or random selection to compare with "
                                          "(a `circuitlab reproduce` circuit has both)")
        if c.ablation != "zero":
            raise ConfigError("circuits", f"{c.source}: its heads were ablated to {c.ablation}; held-out masks zero")
        split = config.split or get_task(c.task.name).eval_split
        if split == c.task.split:
            raise ConfigError("split", f"{c.task.name}'s circuit was located on {split} docs: choose another split")
        docs = load_docs(c.task.name, split, data_dir, limit=config.docs)
        identity = {"circuit": c.model.fingerprint, "task": c.task.name, "heads": c.heads, "protocol": c.protocol,
                    "selections": [[s.label, s.heads] for s in c.selections], "split": split,
                    "docs": data_fingerprint(docs), "points": points}
        artefact = Artefact(out_dir / f"{c.task.name}.json", identity, f"{c.task.name} held-out losses")
        finished = artefact.finished(TaskHeldOut.load)  # another identity: refused here, before any work
        if finished is not None:
            log(f"{c.task.name}: reused {artefact.path}")
        (done if finished is not None else todo).append(finished or (c, docs, split, artefact))
    if not todo:
        return done
    where = ModelConfig(**{**asdict(model or ModelConfig()), "model": loaded[0].model.name})
    from circuitlab.models.loaded import as_bridged
    from circuitlab.studies.held_out import held_out_task  # torch: every check has passed

    m = as_bridged(where, "held-out")
    made = {c.task.name: held_out_task(m, c, docs, points, split, artefact, config.max_batch_tokens, log)
            for c, docs, split, artefact in todo}
    return [next(r for r in done if r.task == t) if t not in made else made[t] for t in tasks]
