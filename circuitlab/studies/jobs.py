"""The studies as library calls, each checking everything it can before any model loads (this module imports
neither torch nor TransformerLens) and then running its heavy half:

- `reproduce`: the paper's locating experiments for many tasks (`circuitlab.studies.reproduce`);
- `track`: the edge circuit at every checkpoint of a fine-tuning run, and how it changes
  (`circuitlab.studies.track`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from circuitlab.core.errors import ConfigError
from circuitlab.core.io import check_writable
from circuitlab.edges.config import EdgesConfig
from circuitlab.edges.pairs import read_pairs
from circuitlab.locate.config import LocateConfig
from circuitlab.models.config import ModelConfig
from circuitlab.models.dims import model_dims
from circuitlab.studies.config import ReproduceConfig, locating_split, parse_tasks
from circuitlab.studies.runs import read_run
from circuitlab.tasks import get_task, load_docs


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
    if redraw:
        from circuitlab.studies.reproduce import redraw_reproduction

        return redraw_reproduction(tasks, data_dir, out_dir, config, command, png, plotlyjs, log)
    name = model.name if hasattr(model, "bridge") else (model.model if isinstance(model, ModelConfig) else model)
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
    run's task's own pairs of `split` (default: its evaluation split). Everything is checked before any loads."""
    if config is not None and config.edges is not None:
        raise ConfigError("edges", "is for one `circuitlab edges` run; track scores every edge at every checkpoint")
    run = read_run(run_dir)
    where = ModelConfig(**{**asdict(model or ModelConfig()), "model": run.config["model"]})
    task = get_task(run.config["task"])
    pairs, name, _ = read_pairs(None if pairs_file else task.name, pairs_file, split or task.eval_split, max_pairs,
                                data_dir)
    out = check_writable(out, "dir")
    from circuitlab.studies.track import circuits_over_training  # torch, TransformerLens: every check has passed

    return circuits_over_training(run, out, pairs, config or EdgesConfig(), name, where.where, heads, png, plotlyjs,
                                  progress, log)
