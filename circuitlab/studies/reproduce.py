"""The paper's locating experiments end to end, one library call: `reproduce(model, tasks, ...)`.

    for each task: locate the layer-conditioned, greedy and random selections (`locate_task`, the samples
    selected once and cached) -> Figure 7's curve on the first `all_docs` documents -> merge into one circuit;
    then Figures 1-9, the comparison tables and a README from every finished task.

Each task's merged circuit `circuits/TASK.json` is an `Artefact` identified by `ReproduceConfig.key`: a rerun
skips finished tasks and refuses one made with other settings. Until it is written, the task's partial state
(`circuits/TASK.json.partial/`) holds each strategy's circuit as it finishes (each resumable on its own), so a
task killed halfway reuses its finished strategies.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from circuitlab.core.progress import progress_bar

from circuitlab.circuits.circuit import AllDocsCurve, Circuit, Sample, Selection
from circuitlab.circuits.heads import HeadMask
from circuitlab.core.artefact import Artefact
from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import read_json_object
from circuitlab.core.processes import Shard
from circuitlab.core.protocol import DEFAULT_PROTOCOL
from circuitlab.locate.config import LocateConfig
from circuitlab.locate.engine import Engine
from circuitlab.locate.job import locate_task
from circuitlab.locate.samples import SampleConfig
from circuitlab.models.loaded import as_bridged
from circuitlab.report.figures import write_report_figures
from circuitlab.report.readme import write_readme
from circuitlab.studies.config import PAPER_TASKS, ReproduceConfig
from circuitlab.studies.config import locating_split
from circuitlab.tasks import get_task, load_docs

STRATEGIES = ("layer-conditioned", "greedy", "random")


def circuit_path(out_dir: str | Path, task: str) -> Path:
    return Path(out_dir) / "circuits" / f"{task}.json"


def reproduced_with(doc: dict) -> dict | None:
    """A task's circuit records the settings it was reproduced with in `run.reproduce`."""
    return (doc.get("run") or {}).get("reproduce") if isinstance(doc, dict) else None


def all_docs_curve(model, circuit: Circuit, docs: list, max_batch_tokens: int | str, progress: bool = True,
                   attention: str = "eager", protocol: str = DEFAULT_PROTOCOL) -> AllDocsCurve:
    """The circuit's masks (layers 0..k) on many documents, whether the model gets them right or not."""
    ev = Engine(model, [Sample(d.prompt, d.target, d.index) for d in docs], max_batch_tokens, attention=attention,
                protocol=protocol)
    with progress_bar(progress, total=2, desc=f"all-docs curve ({len(docs)} docs)", unit="step",
              leave=False) as bar:
        baseline = ev.losses(0, HeadMask(), [None])[0]
        bar.update(1)
        curve = ev.curve(circuit.mask, list(range(model.n_layers)))
        bar.update(1)
    return AllDocsCurve(len(docs), circuit.task.split, baseline, curve)


def reproduce_task(model, task: str, data_dir, out_dir: str | Path, config: ReproduceConfig, progress: bool = True,
                   log=print) -> Circuit:
    """One task's circuit with every number the figures need; reused when already finished."""
    split = locating_split(task, data_dir)
    shard = Shard.current()  # under torchrun every process shares each step; the first one writes
    artefact = Artefact(circuit_path(out_dir, task), config.key(model, task, split), f"{task} circuit",
                        identity_of=reproduced_with, writes=shard.is_main)
    done = shard.broadcast(artefact.finished(Circuit.load) if shard.is_main else None)
    if done is not None:
        log(f"{task}: done already ({artefact.path}), skipped")
        return done
    artefact.resume()  # a task half done with other settings is refused
    artefact.save_state({})
    start = time.perf_counter()
    sampling = SampleConfig(config.samples, config.max_docs, split)
    found = {}
    for strategy in STRATEGIES:
        cfg = LocateConfig(strategy=strategy, n_per_layer=config.heads_per_layer,
                           seeds=config.random_seeds if strategy == "random" else (0,),
                           max_batch_tokens=config.max_batch_tokens, attention=config.attention, protocol=config.protocol)
        found[strategy] = locate_task(model, task, sampling=sampling, config=cfg, data_dir=data_dir,
                                      out=artefact.partial / f"{strategy}.json", progress=progress, log=log)
    circuit, greedy, rand = (found[s] for s in STRATEGIES)
    log(f"{task}: {len(circuit.samples)} samples from {circuit.task.n_docs_scored} {split} docs")
    circuit.scores["single"] = greedy.scores["single"]
    circuit.selections = [Selection("greedy", greedy.heads, greedy.loss_curve),
                          Selection("random", rand.heads, rand.loss_curve, rand.seed), *rand.selections]
    docs = load_docs(get_task(task), split, data_dir, limit=config.all_docs)
    circuit.all_docs = all_docs_curve(model, circuit, docs, config.max_batch_tokens, progress, config.attention,
                                      config.protocol)
    circuit.run.reproduce = artefact.identity
    circuit.timings = {f"{s.replace('-', '_')}_s": found[s].timings.get("locate_s") for s in STRATEGIES}
    circuit.timings["task_s"] = round(time.perf_counter() - start, 3)
    artefact.commit(lambda: circuit.save(artefact.path))
    log(f"{task}: wrote {artefact.path} in {circuit.timings['task_s']:.0f}s")
    shard.barrier()
    return Circuit.load(artefact.path)  # exactly what a rerun will read


@dataclass
class Reproduction:
    circuits: dict[str, Circuit]
    figures: list[Path] = field(default_factory=list)
    readme: Path | None = None


def redraw_reproduction(tasks: tuple[str, ...], data_dir, out_dir: Path, config: ReproduceConfig,
                        command: str | None, png: bool, plotlyjs: str, log, hf_id: str) -> Reproduction:
    """`reproduce --redraw`: the figures, tables and README again from the circuits already in `out_dir` (after
    an upgrade of circuitlab), with no model and no locating. A circuit located on another model than `hf_id`
    (the hub id `--model` names), or that records other settings than `config`, is refused (the README's command
    would name what did not make it); one from before circuits recorded their settings is used as it is, and the
    README names it."""
    circuits, unrecorded = {}, []
    for task in tasks:
        path = circuit_path(out_dir, task)
        if not path.is_file():
            raise CircuitlabError(f"--redraw: {path} is missing: run without --redraw to locate {task}")
        doc = read_json_object(path, "circuit")
        located_on = doc.get("model") or {}
        if located_on.get("hf_id") != hf_id:
            raise CircuitlabError(f"--redraw: {path} was located on {located_on.get('name')} "
                                  f"({located_on.get('hf_id')}), not on {hf_id}: name that model with --model")
        recorded = reproduced_with(doc)
        if recorded is None:
            unrecorded.append(task)
        else:
            wanted = {k: v for k, v in config.key_settings().items() if k in recorded}
            differs = sorted(k for k, v in wanted.items() if recorded[k] != v)
            if differs:
                raise CircuitlabError(f"--redraw: {path} was made with other settings (differs in: "
                                      f"{', '.join(differs)})")
        circuits[task] = Circuit.load(path)
        log(f"{task}: {path}")
    notes = () if not unrecorded else (
        f"Redrawn with `--redraw` from the circuits in `circuits/`; those of {', '.join(unrecorded)} were made by an "
        "earlier circuitlab that did not record its settings in them, and are used as they are.",)
    result = Reproduction(circuits)
    result.figures = write_report_figures(list(circuits.values()), out_dir, png=png, plotlyjs=plotlyjs)
    rows = {t: len(load_docs(get_task(t), c.task.split, data_dir)) for t, c in circuits.items()}
    result.readme = write_readme(circuits, out_dir, config, command, plotlyjs, PAPER_TASKS, rows, notes)
    return result


def run_reproduction(model, tasks: tuple[str, ...], data_dir, out_dir: Path, config: ReproduceConfig,
                     command: str | None, png: bool, plotlyjs: str, progress: bool, log) -> Reproduction:
    """Every task's circuit (resumable task by task), then all figures, tables and the README."""
    model = as_bridged(model, "reproduce")
    circuits = {}
    for i, task in enumerate(tasks, 1):
        log(f"[{i}/{len(tasks)}] {task}")
        circuits[task] = reproduce_task(model, task, data_dir, out_dir, config, progress, log)
    result = Reproduction(circuits)
    if Shard.current().is_main:
        result.figures = write_report_figures(list(circuits.values()), out_dir, png=png, plotlyjs=plotlyjs)
        rows = {t: len(load_docs(get_task(t), c.task.split, data_dir)) for t, c in circuits.items()}
        result.readme = write_readme(circuits, out_dir, config, command, plotlyjs, PAPER_TASKS, rows)
    return result
