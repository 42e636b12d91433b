"""`circuitlab stats`: two sets of fine-tuning runs compared document by document and seed by seed, one call:

    read the runs (checked: one task, the same documents, seeds that pair) -> each run's per-document measure
    -> `paired.compare_paired` (per-seed differences and McNemar, a clustered bootstrap interval, tests over
    documents and over seeds, the minimum detectable effect)

Runs pair by their `seed`; a single unseeded-or-seeded run on one side (e.g. the base model) pairs with every
seed of the other. With `pairing="none"` the runs of each side are independent draws (the circuit at several seeds
against random head sets, each with its own seed: the head set is the unit of replication) and are compared as two
groups on the same documents (`paired.compare_groups`).

The per-document measure is right/wrong (`acc`, or `exact_match` for generated answers) or, with
`measure="margin"`, the gold choice's log-likelihood minus the best other's, which runs record since `margins`
was added (older runs: rescore them with `circuitlab eval --adapter`). Runs that predate `golds` get their gold
answers from the task's documents (`data_dir`), chosen as the run chose them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import write_json_atomic
from circuitlab.core.settings import check_settings, setting
from circuitlab.finetune.config import TrainConfig
from circuitlab.finetune.results import RunResult
from circuitlab.finetune.splits import eval_docs
from circuitlab.tasks import get_task, load_docs

if TYPE_CHECKING:
    from circuitlab.report.paired import GroupComparison, PairedComparison

MEASURES = ("correct", "margin")
PAIRINGS = ("seed", "none")


@dataclass
class StatsConfig:
    measure: str = setting("correct", "correct (acc, or exact_match for generated answers: right = 1) or margin "
                                      "(gold log-likelihood minus the best other choice's)", choices=MEASURES)
    bootstrap: int = setting(10_000, "bootstrap resamples of documents and seeds", minimum=100)
    confidence: float = setting(0.95, "of the bootstrap interval", minimum=0.5)
    seed: int = setting(0, "of the bootstrap's random draws", minimum=0)
    pairing: str = setting("seed", "seed: A's run of a seed against B's of the same seed; none: each side's runs are "
                                   "independent draws (e.g. different head sets), compared as groups on the same "
                                   "documents", choices=PAIRINGS)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.confidence >= 1:
            raise CircuitlabError(f"--confidence must be below 1, got {self.confidence}")


def read_run(path: str | Path) -> RunResult:
    """A run directory or its result.json."""
    path = Path(path)
    return RunResult.load(path / "result.json" if path.is_dir() else path)


def measure_of(run: RunResult, measure: str, data_dir, source: str) -> tuple[str, np.ndarray]:
    """(the measure's name, its value per evaluation document)."""
    e = run.eval
    if measure == "margin":
        if len(e.margins) != e.n_docs:
            raise CircuitlabError(f"{source} records no per-document margins (a run from before they were "
                                  "recorded, or a generated-answer task): use --measure correct")
        margins = np.asarray([np.nan if m is None else m for m in e.margins], dtype=float)
        bad = np.flatnonzero(~np.isfinite(margins))
        if len(bad):
            raise CircuitlabError(f"{source}: {len(bad)} of its margins are not finite numbers (first: document "
                                  f"{bad[0]}): rescore the run, or use --measure correct")
        return "margin", margins
    if len(e.preds) != e.n_docs:
        raise CircuitlabError(f"{source} records {len(e.preds)} predictions for its {e.n_docs} documents: a damaged "
                              "or hand-edited result")
    golds = e.golds or gold_answers(run, data_dir, source)
    name = "exact_match" if "exact_match" in e.metrics else "acc"
    return name, (np.asarray(e.preds) == np.asarray(golds)).astype(float)


def gold_answers(run: RunResult, data_dir, source: str) -> list[int]:
    """The gold answers of a run that did not record them: its evaluation documents, chosen as it chose them."""
    cfg = TrainConfig.from_dict(run.config)
    task = get_task(cfg.task)
    train = load_docs(task, cfg.train_split, data_dir, limit=cfg.max_train) if cfg.spec.trains else []
    golds = [d.gold for d in eval_docs(task, run.eval.split, data_dir, cfg, train)]
    if len(golds) != len(run.eval.preds):
        raise CircuitlabError(f"{source}: {len(golds)} evaluation documents found, the run scored "
                              f"{len(run.eval.preds)}: give the data directory it was evaluated on (--data-dir)")
    return golds


def pair_by_seed(a: dict, b: dict) -> list[tuple]:
    """(seed, run of A, run of B) for every seed both have; one run on a side pairs with each of the other's. The
    runs of a seed the other side lacks are left out (`left_out` says which)."""
    if len(a) == 1 and len(b) > 1:
        only = next(iter(a.values()))
        return [(s, only, run) for s, run in sorted(b.items())]
    if len(b) == 1 and len(a) > 1:
        only = next(iter(b.values()))
        return [(s, run, only) for s, run in sorted(a.items())]
    common = sorted(set(a) & set(b))
    if not common:
        raise CircuitlabError(f"the two sets of runs share no seed (A: {sorted(a)}, B: {sorted(b)})")
    return [(s, a[s], b[s]) for s in common]


def by_seed(paths: list, side: str) -> dict:
    runs = {}
    for p in paths:
        run = read_run(p)
        seed = run.config.get("seed")
        if seed in runs:
            raise CircuitlabError(f"two runs of seed {seed} in {side}: {runs[seed][1]} and {p}")
        runs[seed] = (run, p)
    return runs


def left_out(a: dict, b: dict, pairs: list[tuple]) -> list[str]:
    """The runs of either side that no pair uses: their seed has no partner."""
    used = {id(run) for _, (run, _), _ in pairs} | {id(run) for _, _, (run, _) in pairs}
    return [str(path) for side in (a, b) for run, path in side.values() if id(run) not in used]


def stats(a: list, b: list, config: StatsConfig | None = None, data_dir=None,
          json: str | Path | None = None) -> PairedComparison | GroupComparison:
    """A's runs against B's (run directories or result.json files) on the same documents, paired by seed or (with
    `pairing="none"`) as two independent groups of runs; written to `json` when given; its `lines()` word it."""
    config = config or StatsConfig()
    if not a or not b:
        raise CircuitlabError("stats needs runs on both sides (--a RUN ... --b RUN ...)")
    if config.pairing == "none":
        side_a, side_b = [(read_run(p), p) for p in a], [(read_run(p), p) for p in b]
        seeds = None
    else:
        runs_a, runs_b = by_seed(a, "--a"), by_seed(b, "--b")
        pairs = pair_by_seed(runs_a, runs_b)
        dropped = left_out(runs_a, runs_b, pairs)
        side_a, side_b = [ra for _, ra, _ in pairs], [rb for _, _, rb in pairs]
        seeds = [s for s, _, _ in pairs]
    first, where = side_a[0]
    for run, path in side_a + side_b:
        same = (run.config["task"], run.eval.split, run.eval.data_fingerprint, run.eval.n_docs)
        if same != (first.config["task"], first.eval.split, first.eval.data_fingerprint, first.eval.n_docs):
            raise CircuitlabError(f"{path} was evaluated on other documents than {where} "
                                  "(task, split, data fingerprint or count differ): nothing to pair")
    from circuitlab.report.paired import compare_groups, compare_paired  # scipy: every check has passed

    measured = [[measure_of(run, config.measure, data_dir, str(path)) for run, path in side]
                for side in (side_a, side_b)]
    names = {name for side in measured for name, _ in side}
    rows_a, rows_b = (np.stack([values for _, values in side]) for side in measured)
    args = (config.bootstrap, config.confidence, config.seed)
    if seeds is None:
        seeds_a, seeds_b = ([run.config.get("seed") for run, _ in side] for side in (side_a, side_b))
        result = compare_groups(rows_a, rows_b, seeds_a, seeds_b, names.pop(), *args)
    else:
        result = compare_paired(rows_a, rows_b, seeds, names.pop(), *args)
        result.left_out = dropped
    if json is not None:
        write_stats(result, json)
    return result


def write_stats(result: "PairedComparison | GroupComparison", path: str | Path) -> Path:
    return write_json_atomic(path, asdict(result))
