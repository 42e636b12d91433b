"""A study's grid: its spec expanded into the jobs circuitlab already has, each an `Artefact` of its own.

    the tasks x (base evaluation, the located circuits, the learning-rate runs)   -- phase "prepare"
    the tasks x arms x head sets x seeds, each a `finetune` run                   -- phase "arms"

A job is named by its output (a circuit file, a run directory, an evaluation JSON), which is where a finished job
is found again: `state` reads only that file, compares what it records with the job's settings, and never loads a
model. The arms' runs need the learning rate, which the "prepare" phase chooses (`choose_lr`); until then they are
planned with `lr=None` and wait.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from circuitlab.core.artefact import canonical
from circuitlab.core.errors import CircuitlabError, ConfigError
from circuitlab.core.io import read_json
from circuitlab.finetune.config import TrainConfig
from circuitlab.finetune.job import check_heads_per_layer
from circuitlab.finetune.results import made_from
from circuitlab.locate.config import LocateConfig
from circuitlab.models.dims import model_dims
from circuitlab.studies.spec import Arm, CircuitSet, Study
from circuitlab.tasks import data_fingerprint, get_task, load_docs

PHASES = ("prepare", "arms")


@dataclass
class Job:
    kind: str  # "locate", "finetune" or "evaluate": the library call that runs it
    out: str  # its artefact (relative to the study's directory): its name
    task: str
    phase: str
    settings: dict  # the call's settings: TrainConfig's fields, or locate's / evaluate's
    arm: str | None = None
    head_set: int | None = None
    seed: int | None = None
    lr_tuning: bool = False
    kept: str | None = None  # where the finished result is kept (the study's `keep`), found there on a fresh machine
    needs: tuple = ()  # the outputs of the jobs that must be done first
    options: dict = field(default_factory=dict)  # finetune's RunOptions: how it trains, not what

    @property
    def result(self) -> Path:
        if self.kind == "track":
            return Path(self.out) / "track.json"
        return Path(self.out) / "result.json" if self.kind == "finetune" else Path(self.out)

    @property
    def found(self) -> Path:
        """The result file to read: the run's own, else its kept copy."""
        return self.result if self.result.is_file() or self.kept is None else Path(self.kept)

    @property
    def cost_kind(self) -> str:
        if self.kind != "finetune":
            return self.kind
        spec = TrainConfig.from_dict(self.settings).spec
        return "headmap" if spec.uses_heads else ("lora" if spec.trains else "base")


@dataclass
class Grid:
    jobs: list[Job] = field(default_factory=list)
    lr: dict = field(default_factory=dict)  # task -> the rate its arms train at (missing: not chosen yet)

    def phase(self, name: str) -> list[Job]:
        return [j for j in self.jobs if j.phase == name]


def short(x: float) -> str:
    """1e-4, 8e-4, 1e-3: the rate as a run directory names it."""
    return np.format_float_scientific(x, trim="-", exp_digits=1)


def draw_seed(study: Study, task: str, arm: str, index: int) -> int:
    """A head draw's seed, different per task and arm (a study's random sets are not the same sets on every task)."""
    return int(hashlib.sha256(f"{study.name}/{task}/{arm}/{index}".encode()).hexdigest()[:8], 16) % 2**31


def pool_chunks(cs: CircuitSet, task: str, n_rows: int, taken: list[tuple[str, int, int, str]]) -> list[list[int]]:
    """K disjoint chunks of the pool's rows, one per circuit, after a shuffle seeded by the set's `seed`; the pool is
    checked against `taken` (split, start, stop, what): rows used for training, tuning or testing."""
    stop = n_rows if cs.pool_stop is None else cs.pool_stop
    where = f"circuits.{cs.name}"
    if stop > n_rows or cs.pool_start >= stop:
        raise ConfigError(where, f"pool rows {cs.pool_start}..{stop} do not lie in {task}'s {cs.pool_split} split "
                                 f"({n_rows} rows)")
    for split, a, b, what in taken:
        if split == cs.pool_split and max(a, cs.pool_start) < min(b, stop):
            raise ConfigError(where, f"{task}'s locating pool (rows {cs.pool_start}..{stop} of {split}) overlaps the "
                                     f"{what} (rows {a}..{b})")
    k = cs.n(task)
    per = cs.docs_per_circuit or (stop - cs.pool_start) // k
    if per < cs.samples or k * per > stop - cs.pool_start:
        raise ConfigError(where, f"{k} circuits x {per} rows (at least {cs.samples} samples each) do not fit in "
                                 f"{task}'s pool of {stop - cs.pool_start} rows")
    rows = random.Random(f"{cs.seed}/{task}").sample(range(cs.pool_start, stop), k * per)
    return [sorted(rows[i * per:(i + 1) * per]) for i in range(k)]


def circuit_files(study: Study, cs: CircuitSet, task: str) -> list[str]:
    if cs.files is not None:
        return cs.given(task)
    return [cs.path.format(runs=study.runs, task=task, set=i) for i in range(cs.n(task))]


def seeds_of(arm: Arm, index: int, k: int) -> list[int]:
    if isinstance(arm.seeds, list):
        return list(arm.seeds)
    return [index if arm.seeds == "set" else index % k]


def arm_jobs(study: Study, arm: Arm, task: str, lr: float | None, phase: str = "arms", dir: str | None = None,
             extra: dict | None = None, dims=None) -> list[Job]:
    """Every run of one arm on one task: its head sets, each at its seed(s)."""
    cs = study.circuits.get(arm.circuits) if arm.circuits else None
    files = circuit_files(study, cs, task) if cs is not None else []
    k = len(files) or 1
    n_sets = arm.sets if arm.sets is not None else (len(files) if arm.heads in ("circuit", "anti") else 1)
    n_sets = int(n_sets[task] if isinstance(n_sets, dict) else n_sets)
    if phase == "arms" and arm.lr != "tuned":
        lr = None if arm.lr == "default" else float(arm.lr)
    jobs = []
    for i in range(n_sets):
        head = {}
        if arm.heads in ("circuit", "anti", "redundant") or (arm.heads == "random" and arm.with_circuit):
            if not files:
                raise ConfigError(f"arms.{arm.name}", f"needs circuits for {task}")
            head["circuit"] = files[i % len(files)]
        if arm.heads is not None:
            head["heads"] = arm.heads
        if arm.heads == "random" and not arm.with_circuit:
            head["heads_per_layer"] = arm.settings.get("heads_per_layer") or (cs.heads_per_layer if cs else None)
        for seed in seeds_of(arm, i, k):
            if arm.draws and arm.draw_seed == "per-task":
                head["heads_seed"] = draw_seed(study, task, arm.draws_of or arm.name, i)
            fields = {"model": study.model, **study.training, **(study.tasks[task] or {}), **arm.settings, **head,
                      "task": task, "method": arm.method, "seed": seed, "lr": lr, **(extra or {})}
            try:
                cfg = TrainConfig(**fields)
            except TypeError as e:
                raise ConfigError(f"arms.{arm.name}", f"has a setting TrainConfig does not know: {e}") from None
            if cfg.spec.uses_heads and dims is not None:
                check_heads_per_layer(cfg, dims)
            name = (dir or arm.dir).format(task=task, arm=arm.name, set=i, seed=seed, lr=short(lr) if lr else "")
            jobs.append(Job("finetune", f"{study.runs}/{name}", task, phase, cfg.to_dict(), arm.name, i, seed,
                            lr_tuning=phase == "prepare", options=dict(arm.options)))
    return jobs


def track_jobs(study: Study, task: str, jobs: list[Job]) -> list[Job]:
    """Each [[tracks]] entry on `task`: `circuitlab track` of its arm's run, after that run; and the arms that need
    a track made to wait for it."""
    tracks = {}
    for t in study.tracks:
        run = next((j for j in jobs if j.arm == t.arm and j.head_set == t.set and j.task == task), None)
        if run is None:
            continue
        out = t.out.format(run=run.out, task=task)
        tracks[t.name] = Job("track", out, task, "arms", {"run": run.out, "max_pairs": t.max_pairs, "split": t.split, "pairs": t.pairs,
                                                          "edges": dict(t.settings)}, needs=(run.out,))
    for j in jobs:
        need = next((a.needs for a in study.arms if a.name == j.arm), [])
        j.needs = j.needs + tuple(tracks[n].out for n in need if n in tracks)
    return list(tracks.values())


def expand(study: Study, data_dir=None, lr: dict | None = None) -> Grid:
    """Every job of the study, checked (each TrainConfig built, each locating pool checked against the rows used
    for training, tuning and testing) without loading a model. `lr`: the rates chosen so far, per task."""
    grid = Grid(lr=dict(lr or {}))
    dims = model_dims(study.model)  # the model's config file alone: every head count is checked against it
    for cs in study.circuits.values():
        if cs.files is None:
            try:
                LocateConfig(n_per_layer=cs.heads_per_layer).plan(dims)
            except ConfigError as e:
                raise ConfigError(f"circuits.{cs.name}.heads_per_layer", e.problem) from None
    if study.lr.fixed is not None:
        grid.lr = {t: float(study.lr.fixed[t] if isinstance(study.lr.fixed, dict) else study.lr.fixed)
                   for t in study.tasks}
    for task in study.tasks:
        t = get_task(task)
        base_cfg = TrainConfig(**{"model": study.model, **study.training, **(study.tasks[task] or {}),
                                  "task": task, "method": "base"})
        eval_split = base_cfg.eval_split or t.eval_split
        n_train = base_cfg.max_train or len(load_docs(t, base_cfg.train_split, data_dir))
        taken = [(base_cfg.train_split, 0, n_train, "training rows"), (eval_split, 0, 10**9, "evaluation split")]
        if study.lr.grid is not None:
            taken.append((base_cfg.train_split, n_train, n_train + study.lr.held_out, "learning-rate rows"))
        if study.base is not None and task in study.base.get("tasks", study.tasks):
            out = study.base.get("path", "{runs}/base/{task}.json").format(runs=study.runs, task=task)
            grid.jobs.append(Job("evaluate", out, task, "prepare", {
                "model": study.model, "split": eval_split, "protocol": base_cfg.protocol}))
        for cs in study.circuits.values():
            if cs.files is not None:
                continue
            n_rows = len(load_docs(t, cs.pool_split, data_dir))
            for i, rows in enumerate(pool_chunks(cs, task, n_rows, taken)):
                grid.jobs.append(Job("locate", circuit_files(study, cs, task)[i], task, "prepare", {
                    "model": study.model, "samples": cs.samples, "heads_per_layer": cs.heads_per_layer,
                    "split": cs.pool_split, "rows": rows, "protocol": base_cfg.protocol}, head_set=i))
        if study.lr.grid is not None:
            held = {"eval_split": base_cfg.train_split, "eval_limit": study.lr.held_out}
            for rate in study.lr.grid:
                grid.jobs += arm_jobs(study, study.lr.arm, task, float(rate), "prepare", study.lr.dir, held, dims)
        mine = [j for arm in study.arms if arm.tasks is None or task in arm.tasks
                for j in arm_jobs(study, arm, task, grid.lr.get(task), dims=dims)]
        grid.jobs += mine + track_jobs(study, task, mine)
    if study.keep is not None:
        for j in grid.jobs:
            if Path(j.result).is_relative_to(study.runs):  # a file the spec names elsewhere is kept where it is
                j.kept = str(Path(study.keep) / Path(j.result).relative_to(study.runs))
    outs = [j.out for j in grid.jobs]
    if len(set(outs)) < len(outs):
        dup = next(o for o in outs if outs.count(o) > 1)
        raise ConfigError("arms", f"two jobs write {dup}: give the arms' `dir` patterns the set and the seed")
    return grid


# -- what is on disk -------------------------------------------------------------------------------------------


def state(job: Job, data_dir=None) -> str:
    """"done" (its artefact made from these settings), "started" (a partial state), "other" (an artefact made
    from other settings: the job would refuse it) or "left"."""
    path = job.found
    if path.is_file():
        try:
            doc = read_json(path, "result")
        except CircuitlabError:
            return "other"
        return "done" if same(job, doc, data_dir) else "other"
    if job.kind == "track":
        return "started" if Path(job.out).is_dir() else "left"
    partial = Path(job.out) / ".partial" if job.kind == "finetune" else job.result.with_name(job.result.name + ".partial")
    return "started" if partial.exists() else "left"


def same(job: Job, doc: dict, data_dir=None) -> bool:
    if job.kind == "finetune":
        recorded = made_from(doc)
        mine = {**TrainConfig.defaults(), **job.settings}
        return canonical(recorded) == canonical(mine)
    if job.kind == "evaluate":
        return doc.get("task") == job.task and doc.get("split") == job.settings["split"]
    if job.kind == "track":
        return doc.get("run") == job.settings["run"]
    task = doc.get("task") or {}
    docs = load_docs(job.task, job.settings["split"], data_dir)
    return (task.get("name") == job.task and task.get("data_fingerprint") ==
            data_fingerprint([docs[r] for r in job.settings["rows"]]))
