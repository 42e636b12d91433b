"""A study declared in one TOML file, read into validated config dataclasses (no torch: `plan` checks a spec before
any model loads).

A study asks whether one arm's head sets fine-tune better than another's. What it declares:

- `tasks` (each may override training settings), the `model`, where its runs live (`runs`) and its page (`page`);
- `[training]`: the `TrainConfig` fields every fine-tuning job shares;
- `[circuits.NAME]`: a set of circuits per task, either given as files or located here, K per task, each on its own
  disjoint chunk of a locating pool of rows (the pool's rows are checked to be disjoint from the training rows,
  the learning-rate rows and the evaluation split), so the circuits replicate the locating procedure;
- `[[arms]]`: what is trained: the circuits' heads, M random head sets drawn per task, redundant or anti-circuit
  head sets, LoRA ...; each head set with its training seed(s) (`seeds`: "set", "balanced" or a list);
- `[lr]`: the learning-rate rule: a fixed rate, or a grid run on an arm of its own (not a compared one), chosen by
  held-out accuracy on the rows after the training rows;
- `[analysis]`: the registered analysis: comparisons (the primary family), the test, the correction, alpha, the
  smallest effect of interest. `circuitlab.studies.analysis` carries it out with the head set as the unit.

Relative paths are relative to the directory the study runs in (like every `--out`), so a run records the same
circuit path on every machine.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from circuitlab.core.errors import CircuitlabError, ConfigError
from circuitlab.core.settings import check_settings, setting
from circuitlab.finetune.config import HEAD_MODES, METHODS

SEED_SCHEMES = ("set", "balanced")  # seed = the head set's index; seed = index mod K (the task's circuit count)
DRAW_SEEDS = ("per-task", "training")  # a random draw's heads seeded per task and arm, or by its training seed
CORRECTIONS = ("holm", "bonferroni", "none")
TESTS = ("welch",)


def per_task(value, task: str, what: str):
    """A number given once for every task, or as a table {task = number}."""
    if isinstance(value, dict):
        if task not in value:
            raise ConfigError(what, f"gives no value for task {task}")
        return value[task]
    return value


@dataclass
class CircuitSet:
    """The circuits of each task: given files (`files`), or `count` located here on disjoint chunks of a pool."""

    name: str
    files: dict | None = setting(None, "task -> circuit file, or task -> [files]")
    count: int | dict | None = setting(None, "K circuits located per task (a number, or {task = K})")
    samples: int = setting(64, "locating samples per circuit", minimum=1)
    heads_per_layer: int = setting(2, "heads per layer of each circuit", minimum=1)
    pool_split: str = setting("train", "split of the locating pool")
    pool_start: int = setting(0, "first row of the pool", minimum=0)
    pool_stop: int | None = setting(None, "row after the pool's last (default: the split's end)", minimum=1)
    docs_per_circuit: int | None = setting(None, "pool rows per circuit (default: the pool divided by K)", minimum=1)
    seed: int = setting(0, "shuffles the pool before it is cut into K disjoint chunks", minimum=0)
    path: str = setting("{runs}/circuits/{task}-c{set:02d}.json", "where a located circuit is written")

    def __post_init__(self) -> None:
        check_settings(self)
        if (self.files is None) == (self.count is None):
            raise ConfigError(f"circuits.{self.name}", "give either files or count")

    def n(self, task: str) -> int:
        if self.files is not None:
            return len(self.given(task))
        return int(per_task(self.count, task, f"circuits.{self.name}.count"))

    def given(self, task: str) -> list[str]:
        f = per_task(self.files, task, f"circuits.{self.name}.files")
        return [f] if isinstance(f, str) else list(f)


@dataclass
class Arm:
    """One arm: its head sets (or runs, for LoRA) and the training seed(s) of each."""

    name: str
    method: str = setting("headmap-mha", "fine-tuning method", choices=tuple(METHODS))
    heads: str | None = setting("circuit", "which heads (HeadMap methods)", choices=HEAD_MODES)
    circuits: str | None = setting("main", "the circuit set: the head sets (circuit, anti) or the circuits drawn "
                                           "around (redundant; random with with_circuit)")
    sets: int | dict | None = setting(None, "head sets per task (random/redundant: M draws; circuit/anti: default "
                                            "every circuit of the set; LoRA: 1)")
    seeds: str | list = setting("set", "training seeds: set (the head set's index), balanced (index mod K), "
                                        "or a list (each head set at each seed)")
    draw_seed: str = setting("per-task", "random/redundant heads drawn per task and arm, or by the training seed",
                             choices=DRAW_SEEDS)
    draws_of: str | None = setting(None, "random/redundant: the same head draws as this arm (e.g. a longer-training "
                                         "check of the same head sets)")
    with_circuit: bool = setting(False, "random heads: record the set's circuit in the run (study 3's runs did)")
    tasks: list | None = setting(None, "only these tasks (default: all)")
    lr: str | float = setting("tuned", "tuned (the rate [lr] chooses), default (the method's own) or a rate")
    settings: dict = setting(None, "TrainConfig fields of this arm only", default_factory=dict)
    options: dict = setting(None, "RunOptions of this arm's runs (how they train, e.g. save_every), not part of "
                                  "their result", default_factory=dict)
    needs: list = setting(None, "tracks ([[tracks]] names) that must be done before this arm trains (CircuitLoRA's "
                                "edge circuits)", default_factory=list)
    dir: str = setting("{task}/{arm}-h{set:02d}-s{seed}", "a run's directory under runs")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.method in ("lora", "dora", "base") or not METHODS[self.method].uses_heads:
            self.heads, self.circuits = None, None
        if isinstance(self.lr, str) and self.lr not in ("tuned", "default"):
            raise ConfigError(f"arms.{self.name}.lr", f"must be tuned, default or a number; got {self.lr!r}")
        if isinstance(self.seeds, str) and self.seeds not in SEED_SCHEMES:
            raise ConfigError(f"arms.{self.name}.seeds", f"must be set, balanced or a list; got {self.seeds!r}")
        if isinstance(self.seeds, list) and not all(isinstance(s, int) and s >= 0 for s in self.seeds):
            raise ConfigError(f"arms.{self.name}.seeds", "must list non-negative integers")

    @property
    def draws(self) -> bool:
        return self.heads in ("random", "redundant")


@dataclass
class Track:
    """`circuitlab track` of one arm's run: the edge circuit at the start and at every checkpoint of it."""

    name: str
    arm: str = setting(None, "the arm whose run is tracked")
    set: int = setting(0, "which of its runs (head set / replicate index)", minimum=0)
    out: str = setting("{run}/track", "the track's directory ({run}: the run's directory)")
    max_pairs: int | None = setting(None, "use only the first N pairs", minimum=1)
    split: str | None = setting(None, "the task's split to take pairs from (default: its evaluation split)")
    pairs: str | None = setting(None, "a pairs file instead of the task's own pairs")
    settings: dict = setting(None, "EdgesConfig fields (method, steps, ig_points, batch_size, ...)",
                             default_factory=dict)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.arm is None:
            raise ConfigError(f"tracks.{self.name}", "needs the arm whose run it tracks")
        if self.pairs is not None and self.split is not None:
            raise ConfigError(f"tracks.{self.name}", "split chooses the task's own pairs: a pairs file is taken as it is")


@dataclass
class LearningRate:
    """A fixed rate, or the best of `grid` on an arm that is not compared."""

    fixed: float | dict | None = setting(None, "one rate (or {task = rate}): no tuning")
    grid: list | None = setting(None, "rates tried on the tuning arm")
    arm: Arm | None = None
    held_out: int = setting(500, "held-out rows of the training split after the training rows", minimum=1)
    dir: str = setting("{task}/lr/{arm}-lr{lr}-s{seed}", "a tuning run's directory under runs")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.fixed is not None and self.grid is not None:
            raise ConfigError("lr", "give either fixed or grid")
        if self.grid is not None and (self.arm is None or not self.grid):
            raise ConfigError("lr", "a grid needs rates and an arm to tune on ([lr.arm])")


@dataclass
class Comparison:
    a: str
    b: str
    family: bool = True  # in the corrected family (else reported, uncorrected, as secondary)


@dataclass
class Analysis:
    """The registered analysis: what is estimated, how it is tested and what decides."""

    comparisons: list = field(default_factory=list)
    test: str = setting("welch", "Welch's t over head sets (one head set: the single-case t)", choices=TESTS)
    correction: str = setting("holm", "over the family of comparisons (every task)", choices=CORRECTIONS)
    alpha: float = setting(0.05, "two-sided", minimum=0.0001)
    sesoi: float = setting(1.0, "smallest effect of interest, in points", minimum=0)
    power: float = setting(0.8, "for the smallest detectable difference", minimum=0.5)
    mixed_model: bool = setting(True, "sensitivity: acc ~ arm + (1|seed), run level (statsmodels)")

    def __post_init__(self) -> None:
        check_settings(self)
        if not self.comparisons:
            raise ConfigError("analysis.comparisons", "declare at least one comparison {a = ARM, b = ARM}")


@dataclass
class Study:
    name: str
    model: str
    tasks: dict  # task -> its TrainConfig overrides
    runs: str  # where the jobs write (checkpoints, adapters: a scratch directory)
    page: str
    arms: list
    analysis: Analysis
    lr: LearningRate
    training: dict = field(default_factory=dict)
    circuits: dict = field(default_factory=dict)
    base: dict | None = None  # {split = ..., path = ...}: the untrained model scored on each task's evaluation split
    title: str = ""
    question: str = ""
    figures: str | None = None
    keep: str | None = None  # where each finished job's result file is kept (committed): the same path under it
    admit: dict = field(default_factory=dict)  # task -> points its tuning runs must beat the base model by
    tracks: list = field(default_factory=list)
    costs: dict = field(default_factory=dict)  # minutes per job kind (locate, headmap, lora, base), measured
    retrospective: str | None = None  # why a study is registered after its runs (its inference is exploratory)
    notes: str | None = None  # a hand-written discussion, included in the page as it is
    source: Path | None = None
    text: str = ""

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise ConfigError("arms", f"no arm named {name!r} (arms: {', '.join(a.name for a in self.arms)})")

    def registration_path(self) -> Path:
        return self.source.with_suffix(".registration.json")

    def looks_path(self) -> Path:
        return self.source.with_suffix(".looks.json")


def _build(cls, table: dict, where: str, **extra):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(where, f"has no setting {unknown[0]!r} (known: {', '.join(sorted(known - set(extra)))})")
    return cls(**{**table, **extra})


def _arm(table: dict, where: str) -> Arm:
    table = dict(table)
    if "name" not in table:
        raise ConfigError(where, "needs a name")
    return _build(Arm, table, f"{where} {table['name']}")


def read_spec(path: str | Path) -> Study:
    """The study in a TOML file, every part checked; one line naming the part on a bad spec."""
    path = Path(path)
    if not path.is_file():
        raise CircuitlabError(f"study spec not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CircuitlabError(f"malformed study spec {path}: {e}") from None
    doc = dict(doc)
    for key in ("name", "model", "tasks", "runs", "page", "arms", "analysis"):
        if key not in doc:
            raise ConfigError(key, f"is required in a study spec ({path})")
    tasks = doc.pop("tasks")
    if isinstance(tasks, list):
        tasks = {t: {} for t in tasks}
    if not isinstance(tasks, dict) or not tasks:
        raise ConfigError("tasks", "must list at least one task")
    tasks = {t: dict(o or {}) for t, o in tasks.items()}
    admit = {t: float(o.pop("admit_above_base")) for t, o in tasks.items() if "admit_above_base" in o}
    circuits = {n: _build(CircuitSet, t, f"circuits.{n}", name=n) for n, t in doc.pop("circuits", {}).items()}
    arms = [_arm(a, "arms") for a in doc.pop("arms")]
    names = [a.name for a in arms]
    if len(set(names)) < len(names):
        raise ConfigError("arms", "two arms share a name")
    tracks = []
    for t in doc.pop("tracks", []):
        if "name" not in t:
            raise ConfigError("tracks", "a track needs a name")
        tracks.append(_build(Track, dict(t), f"tracks {t['name']}"))
    lr_doc = dict(doc.pop("lr", {}))
    lr_arm = _arm(lr_doc.pop("arm"), "lr.arm") if "arm" in lr_doc else None
    lr = _build(LearningRate, lr_doc, "lr", arm=lr_arm)
    an = dict(doc.pop("analysis"))
    comparisons = [_build(Comparison, c, "analysis.comparisons") for c in an.pop("comparisons", [])]
    analysis = _build(Analysis, an, "analysis", comparisons=comparisons)
    study = _build(Study, doc, "study", tasks=tasks, circuits=circuits, arms=arms, lr=lr, analysis=analysis,
                   source=path, text=text, admit=admit, tracks=tracks)
    names = {t.name for t in tracks}
    for t in tracks:
        study.arm(t.arm)
    for a in arms:
        missing = [n for n in a.needs if n not in names]
        if missing:
            raise ConfigError(f"arms.{a.name}.needs", f"names no track: {missing[0]} (tracks: {', '.join(names) or 'none'})")
    if admit and (lr.grid is None or study.base is None):
        raise ConfigError("tasks", "admit_above_base compares the tuning runs at the chosen rate with the base model: "
                                   "it needs an [lr] grid and [base]")
    for c in analysis.comparisons:
        study.arm(c.a), study.arm(c.b)
    if lr.fixed is None and lr.grid is None:
        tuned = [a.name for a in arms if a.lr == "tuned"]
        if tuned:
            raise ConfigError(f"arms.{tuned[0]}.lr", "is tuned, but the spec has no [lr] rule (fixed or grid): give "
                                                     "one, or the arm's lr (default, or a rate)")
    for a in [*arms, *([lr.arm] if lr.arm else [])]:
        if a.circuits is not None and (a.heads != "random" or a.with_circuit) and a.circuits not in circuits:
            raise ConfigError(f"arms.{a.name}.circuits", f"names no circuit set (sets: {', '.join(circuits) or 'none'})")
    return study
