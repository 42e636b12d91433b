"""The paper's locating experiments end to end: every task's circuit, then Figures 1-9.

For each task: select the samples (the correctly predicted training docs with the lowest target
loss), locate the layer-conditioned, greedy (with the single-head table) and random selections,
and evaluate the layer-conditioned masks on the first `all_docs` documents of the same split too
(Figure 7). Each strategy's circuit is written as it finishes (`circuits/TASK.STRATEGY.json`, with
per-step checkpoints before that); the task's merged circuit `circuits/TASK.json` replaces them.
A rerun skips tasks whose circuit has the same settings and reuses finished strategies of a task
killed halfway. Figures, tables and a README are then made from every finished task.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from circuitlab.circuit import AllDocsCurve, Circuit, Sample, Selection
from circuitlab.errors import CircuitlabError
from circuitlab.heads import HeadMask
from circuitlab.locate import Engine, LocateConfig, locate_to, locating_samples
from circuitlab.locate.distributed import Shard
from circuitlab.locate.blocks import ATTENTION
from circuitlab.locate.engine import MAX_BATCH_TOKENS
from circuitlab.protocol import DEFAULT_PROTOCOL, PROTOCOL_NAMES
from circuitlab.scoring import N_SAMPLES
from circuitlab.report.figures import write_report_figures
from circuitlab.report.readme import write_readme
from circuitlab.settings import check_int_or_auto, check_settings, int_list, int_or_auto, setting
from circuitlab.tasks import TASK_NAMES, get_task, load_docs, resolve_data_dir

PAPER_TASKS = tuple(t for t in TASK_NAMES if t != "capitals")
STRATEGIES = ("layer-conditioned", "greedy", "random")


def parse_tasks(text: str) -> tuple[str, ...]:
    """`all` (the paper's 13 tasks) or a comma-separated list of task names."""
    names = list(PAPER_TASKS) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise CircuitlabError("no tasks given")
    for name in names:
        get_task(name)  # unknown names fail here, before any work
    return tuple(dict.fromkeys(names))


@dataclass
class ReproduceConfig:
    """Everything that decides a task's result; a finished task is reused only if it matches."""

    samples: int = setting(N_SAMPLES, "samples per task (the paper's 64)", minimum=1)
    heads_per_layer: int | None = setting(None, "default: 8 for 32-head models, else round(H/4)", minimum=1)
    max_docs: int | None = setting(None, "select samples among the first N docs of the split (default: all)",
                                   minimum=1)
    all_docs: int = setting(256, "Figure 7: docs for the all-documents curve", minimum=1)
    random_seeds: tuple[int, ...] = setting((0, 1, 2), "random selections' seeds", parse=int_list)
    max_batch_tokens: int | str = setting("auto", f"padded tokens per forward; auto: what half the free GPU memory "
                                                  f"holds on CUDA, {MAX_BATCH_TOKENS} elsewhere", parse=int_or_auto)

    attention: str = setting("eager", "how the engine computes attention (see locate)", choices=ATTENTION)
    protocol: str = setting(DEFAULT_PROTOCOL, "the paper's text or the official code's (see locate)",
                            choices=PROTOCOL_NAMES)

    def __post_init__(self) -> None:
        check_settings(self)
        check_int_or_auto(self, "max_batch_tokens")

    def key(self, model, task: str, split: str) -> dict:
        """The settings a finished task is reused for. Tokens per forward and the attention kernel change
        float rounding only: "auto" is recorded as MAX_BATCH_TOKENS, which the finished tasks of earlier
        runs recorded, and the attention kernel not at all. The protocol is recorded when it is not
        `paper`, so the tasks finished before it existed are still reused."""
        tokens = MAX_BATCH_TOKENS if self.max_batch_tokens == "auto" else self.max_batch_tokens
        settings = {k: v for k, v in asdict(self).items()
                    if k != "attention" and not (k == "protocol" and v == "paper")}
        return {"model": model.name, "fingerprint": model.fingerprint(), "task": task, "split": split,
                **settings, "random_seeds": list(self.random_seeds), "max_batch_tokens": tokens}


def locating_split(task: str, data_dir=None) -> str:
    """`train` when the task has one locally (or data come from the hub), else its evaluation split."""
    t = get_task(task)
    path = resolve_data_dir(data_dir) if t.source is None else None
    if path is None or any((path / t.name / f"train{ext}").is_file() for ext in (".jsonl", ".jsonl.gz")):
        return "train"
    return t.eval_split


def circuit_path(out_dir: str | Path, task: str, strategy: str | None = None) -> Path:
    return Path(out_dir) / "circuits" / (f"{task}.json" if strategy is None else f"{task}.{strategy}.json")


def finished(path: Path, key: dict) -> Circuit | None:
    """The task's circuit if it exists and was made with the same settings."""
    if not path.exists():
        return None
    try:
        c = Circuit.load(path)
    except CircuitlabError:
        return None
    return c if c.run is not None and c.run.reproduce == key else None


def all_docs_curve(model, circuit: Circuit, docs: list, max_batch_tokens: int | str, progress: bool = True,
                   attention: str = "eager", protocol: str = DEFAULT_PROTOCOL) -> AllDocsCurve:
    """The circuit's masks (layers 0..k) on many documents, whether the model gets them right or not."""
    ev = Engine(model, [Sample(d.prompt, d.target, d.index) for d in docs], max_batch_tokens, attention=attention,
                protocol=protocol)
    with tqdm(total=2, desc=f"all-docs curve ({len(docs)} docs)", unit="step", disable=not progress,
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
    key = config.key(model, task, split)
    path = circuit_path(out_dir, task)
    done = finished(path, key)
    if done is not None:
        log(f"{task}: done already ({path}), skipped")
        return done
    if path.exists():
        log(f"{task}: {path} was made with other settings; locating again")
    start = time.perf_counter()
    samples, info = locating_samples(model, task, data_dir, split, config.samples, config.max_docs, progress,
                                     protocol=config.protocol)
    log(f"{task}: {len(samples)} samples from {info.n_docs_scored} {split} docs")
    found = {}
    for strategy in STRATEGIES:
        part = circuit_path(out_dir, task, strategy)
        seeds = config.random_seeds if strategy == "random" else (0,)
        cfg = LocateConfig(strategy=strategy, n_per_layer=config.heads_per_layer, seeds=seeds,
                           max_batch_tokens=config.max_batch_tokens, attention=config.attention,
                           protocol=config.protocol)
        found[strategy] = locate_to(part, model, samples, cfg, info, progress=progress, reuse=True, log=log)
    circuit, greedy, rand = (found[s] for s in STRATEGIES)
    circuit.scores["single"] = greedy.scores["single"]
    circuit.selections = [Selection("greedy", greedy.heads, greedy.loss_curve),
                          Selection("random", rand.heads, rand.loss_curve, rand.seed), *rand.selections]
    docs = load_docs(get_task(task), split, data_dir, limit=config.all_docs)
    circuit.all_docs = all_docs_curve(model, circuit, docs, config.max_batch_tokens, progress, config.attention,
                                      config.protocol)
    circuit.run.reproduce = key
    circuit.timings = {f"{s.replace('-', '_')}_s": found[s].timings.get("locate_s") for s in STRATEGIES}
    circuit.timings["task_s"] = round(time.perf_counter() - start, 3)
    shard = Shard.current()  # under torchrun every process shares each step; the first one writes
    if shard.is_main:
        circuit.save(path)
        for strategy in STRATEGIES:
            circuit_path(out_dir, task, strategy).unlink(missing_ok=True)
        log(f"{task}: wrote {path} in {circuit.timings['task_s']:.0f}s")
    shard.barrier()
    return Circuit.load(path)  # exactly what a rerun will read


@dataclass
class Reproduction:
    circuits: dict[str, Circuit]
    figures: list[Path] = field(default_factory=list)
    readme: Path | None = None


def reproduce(model, tasks: list[str], data_dir, out_dir: str | Path, config: ReproduceConfig,
              command: str | None = None, png: bool = True, progress: bool = True, log=print,
              cdn: bool = False) -> Reproduction:
    """Every task's circuit (resumable task by task), then all figures, tables and the README."""
    out_dir = Path(out_dir)
    circuits = {}
    for i, task in enumerate(tasks, 1):
        log(f"[{i}/{len(tasks)}] {task}")
        circuits[task] = reproduce_task(model, task, data_dir, out_dir, config, progress, log)
    result = Reproduction(circuits)
    if Shard.current().is_main:
        result.figures = write_report_figures(list(circuits.values()), out_dir, png=png, cdn=cdn)
        rows = {t: len(load_docs(get_task(t), c.task.split, data_dir)) for t, c in circuits.items()}
        result.readme = write_readme(circuits, out_dir, config, command, cdn, PAPER_TASKS, rows)
    return result
