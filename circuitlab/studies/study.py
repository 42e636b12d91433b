"""A study as library calls: `plan` (its summary is `status`), `register`, `run`, `analyze` (`circuitlab study ...`):

    read the spec -> expand its grid (every job checked, no model loaded) -> [run the jobs not yet done, on this
    process or a Ray cluster] -> [read the runs -> the registered analysis -> the page and its figure]

A finished job is found by its artefact and never submitted again, so `run` resumes a killed grid; the learning
rate the arms train at is chosen from the tuning runs once they are all done (`chosen_lr`).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import copy_atomic, read_json
from circuitlab.studies.grid import Grid, Job, expand, state
from circuitlab.studies.spec import Study, read_spec


@dataclass
class Plan:
    study: Study
    grid: Grid
    states: dict  # job.out -> done / started / other / left
    minutes: dict  # (phase, cost kind[, task, arm]) -> minutes a job (`costs`)
    seconds: dict  # job.out -> the seconds a finished job took (None: it records no time)
    lr_table: dict = field(default_factory=dict)  # task -> (chosen rate, {rate: held-out score})
    admission: dict = field(default_factory=dict)  # gated task -> (admitted?, pilot score, base score); None: not yet

    def runnable(self, job: Job) -> bool:
        """Whether a job may run: an arm of a task behind an admission rule only once the task is admitted."""
        if job.phase != "arms" or job.task not in self.study.admit:
            return True
        decided = self.admission.get(job.task)
        return decided is not None and decided[0]

    def shut_out(self, job: Job) -> bool:
        """An arm of a task its admission rule has turned away: the registration no longer asks for it."""
        decided = self.admission.get(job.task) if job.phase == "arms" else None
        return decided is not None and not decided[0]

    def declared(self) -> list[Job]:
        """The jobs the registration asks for: the grid less the arms of a task that was not admitted."""
        return [j for j in self.grid.jobs if not self.shut_out(j)]

    def left(self) -> list[Job]:
        return [j for j in self.declared() if self.states[j.out] != "done"]

    def progress(self) -> dict:
        """task -> (arm runs done, arm runs declared): where a task's comparisons stand (tracks are not runs)."""
        out: dict = {}
        for j in self.declared():
            if j.phase == "arms" and j.kind == "finetune":
                done, n = out.get(j.task, (0, 0))
                out[j.task] = (done + (self.states[j.out] == "done"), n + 1)
        return out

    def cost(self, job: Job) -> float | None:
        """Minutes the job should take: its own arm's measured median, else its phase and kind's (`costs`)."""
        own = self.minutes.get((job.phase, job.cost_kind, job.task, job.arm))
        return own if own is not None else self.minutes.get((job.phase, job.cost_kind))

    def hours_left(self) -> float | None:
        costs = [self.cost(j) for j in self.left()]
        return None if any(c is None for c in costs) else sum(costs) / 60

    def summary(self) -> list[str]:
        """The grid as lines: per phase and kind of job, how many are done, started (running or interrupted),
        left, or made with other settings; the time left at the measured (or declared) minutes per job."""
        lines = [f"{self.study.name}: {len(self.declared())} jobs on {len(self.study.tasks)} task(s) "
                 f"({', '.join(self.study.tasks)}), model {self.study.model}"]
        for (phase, kind), c in sorted(self.counts().items()):
            extra = f", {c['other']} made with other settings" if c["other"] else ""
            minutes = self.minutes.get((phase, kind))
            each = f"; {minutes:.1f} min a job" if minutes is not None else "; no measured cost"
            lines.append(f"  {phase:8s} {kind:9s} {c['done']} done, {c['started']} started, {c['left']} left"
                         f"{extra}{each}")
        for task, (rate, _) in self.lr_table.items():
            lines.append(f"  learning rate for {task}: {rate:g} (chosen)")
        for task, decided in self.admission.items():
            lines.append(f"  {task}: " + ("admission waits for its tuning runs and base model" if decided is None else
                                          f"{'admitted' if decided[0] else 'NOT admitted'} (pilot {100 * decided[1]:.2f} "
                                          f"% against base {100 * decided[2]:.2f} % + {self.study.admit[task]:g})"))
        waiting = sorted({j.task for j in self.left() if j.phase == "arms"} - set(self.lr_table)) \
            if self.study.lr.grid is not None else []
        if waiting:
            lines.append(f"  the arms of {', '.join(waiting)} wait for their learning rate (the tuning runs)")
        spent = list(self.seconds.values())
        lines.append(f"  {len(spent)} jobs done in {sum(s or 0 for s in spent) / 3600:.1f} hours of job time"
                     + (f" ({sum(s is None for s in spent)} record no time)" if None in spent else ""))
        hours = self.hours_left()
        left = len(self.left())
        lines.append(f"  {left} jobs left: about {hours:.1f} hours of one job slot" if hours is not None
                     else f"  {left} jobs left: add [costs] to the spec for an estimate")
        return lines

    def counts(self) -> dict:
        out: dict = {}
        for j in self.declared():
            key = (j.phase, j.cost_kind)
            out.setdefault(key, {"done": 0, "started": 0, "left": 0, "other": 0})[self.states[j.out]] += 1
        return out


def score(doc: dict) -> float:
    m = doc["eval"]["metrics"] if "eval" in doc else doc["metrics"]
    return m["exact_match"] if "exact_match" in m else m["acc"]


def chosen_lr(study: Study, grid: Grid) -> dict:
    """task -> (rate, {rate: mean held-out score}) for every task whose tuning runs are all done: the best mean
    held-out score (exact match or accuracy), ties to the higher mean margin, then to the earlier rate."""
    out = {}
    for task in study.tasks:
        tuning = [j for j in grid.jobs if j.lr_tuning and j.task == task]
        if not tuning or any(state(j) != "done" for j in tuning):
            continue
        by_rate: dict = {}
        for j in tuning:
            doc = read_json(j.found, "result")
            margins = doc["eval"].get("margins") or [0.0]
            by_rate.setdefault(j.settings["lr"], []).append((score(doc), sum(margins) / len(margins)))
        mean = {r: (statistics.mean(s for s, _ in v), statistics.mean(m for _, m in v)) for r, v in by_rate.items()}
        best = max(mean, key=lambda r: mean[r])
        out[task] = (best, {r: s for r, (s, _) in mean.items()})
    return out


def seconds(job: Job, doc: dict) -> float | None:
    if job.kind == "finetune":
        parts = [(doc.get(k) or {}).get("seconds") for k in ("train", "eval")]
        return None if parts == [None, None] else sum(x or 0 for x in parts)
    if job.kind == "locate":
        return sum(v for v in (doc.get("timings") or {}).values() if isinstance(v, (int, float))) or None
    return doc.get("seconds")


def plan(spec: str | Path, data_dir=None) -> Plan:
    """The study's grid and where each job stands; every check that needs no model (one line on a bad spec)."""
    study = read_spec(spec)
    grid = expand(study, data_dir)
    lr = chosen_lr(study, grid) if study.lr.grid is not None else {}
    if lr:
        grid = expand(study, data_dir, {t: r for t, (r, _) in lr.items()})
    states = {j.out: state(j, data_dir) for j in grid.jobs}
    took = {j.out: seconds(j, read_json(j.found, "result")) for j in grid.jobs if states[j.out] == "done"}
    return Plan(study, grid, states, costs(study, grid, took), took, lr, admission(study, grid, states, lr))


def costs(study: Study, grid: Grid, took: dict) -> dict:
    """Minutes a job, the median of the finished jobs that record a time: per (phase, kind, task, arm), and per
    (phase, kind), else the spec's `costs` for the kind. Finer than the kind, because a kind's cost differs by what
    its jobs do: a tuning run scores a few hundred held-out rows, an arm's run the whole evaluation split, and a
    4-epoch arm trains twice as long as a 2-epoch one."""
    measured: dict = {}
    for j in grid.jobs:
        if took.get(j.out):
            for key in ((j.phase, j.cost_kind), (j.phase, j.cost_kind, j.task, j.arm)):
                measured.setdefault(key, []).append(took[j.out] / 60)
    declared = {(j.phase, j.cost_kind): float(study.costs[j.cost_kind]) for j in grid.jobs
                if j.cost_kind in study.costs}
    return {**declared, **{k: statistics.median(v) for k, v in measured.items()}}


def admission(study: Study, grid: Grid, states: dict, lr: dict) -> dict:
    """task -> (admitted, pilot, base) for each task behind `admit_above_base`: the mean held-out score of its tuning
    runs at the chosen rate (the pilot) against the base model's score plus the declared points; None until both
    are known."""
    out = {}
    for task, points in study.admit.items():
        base = [j for j in grid.jobs if j.kind == "evaluate" and j.task == task]
        if task not in lr or not base or states[base[0].out] != "done":
            out[task] = None
            continue
        rate = lr[task][0]
        pilot = statistics.mean(score(read_json(j.found, "result")) for j in grid.jobs
                                if j.lr_tuning and j.task == task and j.settings["lr"] == rate)
        base_score = score(read_json(base[0].found, "result"))
        out[task] = (pilot >= base_score + points / 100, pilot, base_score)
    return out


def order(jobs: list[Job], study: Study) -> list[Job]:
    """Tasks in the spec's order (the primary first); within a task the arms interleaved by head set, so a grid
    cut short stays balanced."""
    tasks, arms = list(study.tasks), [a.name for a in study.arms]
    return sorted(jobs, key=lambda j: (tasks.index(j.task), j.head_set or 0, arms.index(j.arm) if j.arm in arms else -1,
                                       j.seed or 0))


def keep(job: Job) -> None:
    """A finished job's result copied to where the study keeps it (committed; the run directory is scratch); a
    track's whole directory of circuits (the CircuitLoRA runs read them), without its figures."""
    if job.kept is None or not job.result.is_file():
        return
    for f in (job.result.parent.glob("*.json") if job.kind == "track" else [job.result]):
        copy_atomic(f, Path(job.kept).parent / f.name)
    for f in job.result.parent.glob("*.safetensors") if job.kind == "track" else []:
        copy_atomic(f, Path(job.kept).parent / f.name)


def restore(p: Plan) -> None:
    """Located circuits and tracks that only their kept copies hold (a fresh machine) back where the jobs after
    them read them."""
    for j in p.grid.jobs:
        if j.kind in ("locate", "track") and j.kept and not j.result.is_file() and Path(j.kept).is_file():
            for f in [Path(j.kept)] if j.kind == "locate" else Path(j.kept).parent.iterdir():
                copy_atomic(f, j.result.parent / f.name)


def run_group(todo: list[Job], label: str, root: str, data_dir, engine: str, log, ray_args: tuple) -> None:
    """One wave of jobs on the engine, a line per finished job with the time left of these; a result kept as soon
    as its job is done; one line naming the failed jobs (the others are done and kept)."""
    from circuitlab.studies.engine import run_local, run_ray

    start, n, by_out, failed = time.time(), len(todo), {j.out: j for j in todo}, []

    def done(outcome) -> None:
        finished = n - len(by_out) + 1
        eta = (time.time() - start) / finished * (n - finished)
        what = f"failed: {outcome.error}" if outcome.error else f"{outcome.seconds / 60:.1f} min"
        log(f"[{label} {finished}/{n}] {outcome.out}: {what}; about {eta / 60:.0f} min left of these")
        job = by_out.pop(outcome.out)
        if outcome.error:
            failed.append(f"{outcome.out} ({outcome.error})")
        else:
            keep(job)

    if engine == "ray":
        run_ray(todo, root, data_dir, done, *ray_args)
    else:
        run_local(todo, root, data_dir, done, ray_args[-1])
    if failed:
        raise CircuitlabError(f"{len(failed)} job(s) failed, first {failed[0]}; run the same command again to "
                              "resume them (finished jobs are kept)")


def run(spec: str | Path, data_dir=None, *, engine: str = "local", address: str | None = None,
        gpus_per_job: float = 0, retries: int = 0, cpus: int | None = None, threads: int | None = None,
        by_task: bool = True, log=print) -> Plan:
    """Run every job not yet done: the prepare phase (base, circuits, tuning), then the arms at the chosen rate.
    `threads`: CPU threads a job computes on (and, on Ray, the CPUs it asks for; default 1 there, torch's own
    count here): the same number on both engines gives the same files. `by_task`: the first task's whole grid
    (prepare, then arms) before the next task's, so a study cut short has finished its primary task; False: every
    task's prepare phase, then every task's arms (more jobs at once for a cluster)."""
    ray_only = {"address": address is not None, "gpus_per_job": gpus_per_job != 0, "retries": retries != 0,
                "cpus": cpus is not None}
    if engine == "local" and any(ray_only.values()):
        name = next(n for n, given in ray_only.items() if given).replace("_", "-")
        raise CircuitlabError(f"--{name} is an option of the Ray engine: add --engine ray")
    p = plan(spec, data_dir)
    other = [j.out for j in p.grid.jobs if p.states[j.out] == "other"]
    if other:
        raise CircuitlabError(f"{other[0]} holds a result made with other settings than the study declares "
                              f"({len(other)} such): move it away or change the spec")
    root = os.getcwd()
    groups = [(t, ph) for t in p.study.tasks for ph in ("prepare", "arms")] if by_task else [(None, "prepare"),
                                                                                             (None, "arms")]
    for task, phase in groups:  # the primary (first) task's whole grid before the next task's
        ran: set = set()
        while True:  # in waves: a job whose needs (a pilot run, its track) are not done waits for the next
            p = plan(spec, data_dir)
            restore(p)
            todo = order([j for j in p.left() if j.phase == phase and task in (None, j.task) and p.runnable(j)
                          and all(p.states.get(n) == "done" for n in j.needs)], p.study)
            if not todo:
                break
            again = {j.out for j in todo} & ran
            if again:
                raise CircuitlabError(f"{sorted(again)[0]} ran, but its result is not where the study looks for it")
            ran |= {j.out for j in todo}
            if phase == "arms" and p.study.lr.grid is not None:
                waiting = sorted({j.task for j in todo} - set(p.lr_table))
                if waiting:
                    raise CircuitlabError(f"no learning rate chosen for {', '.join(waiting)}: its tuning runs are not "
                                          "all done")
            run_group(todo, f"{task} {phase}" if task else phase, root, data_dir, engine, log,
                      (address, gpus_per_job, retries, cpus, threads))
    return plan(spec, data_dir)


def register(spec: str | Path, data_dir=None, today: str | None = None) -> Path:
    """The registration file (SPEC.registration.json), after every check `plan` makes (on `data_dir`'s data)."""
    from circuitlab.studies import registration

    p = plan(spec, data_dir)
    return registration.register(p.study, today)


def collected(p: Plan):
    """(runs, base, left out): the arms' finished runs as a table (task, arm, head set, seed, acc, out); the base
    model's score per task; result files under the runs directory that no job of the study declares."""
    import pandas as pd

    rows, base = [], {}
    for j in p.grid.jobs:
        if p.states[j.out] != "done":
            continue
        doc = read_json(j.found, "result")
        if j.kind == "evaluate":
            base[j.task] = (score(doc), doc.get("split"))
        elif j.kind == "finetune" and not j.lr_tuning:
            rows.append({"task": j.task, "arm": j.arm, "head_set": j.head_set, "seed": j.seed, "acc": score(doc),
                         "out": j.out})
    known = {str(j.result) for j in p.grid.jobs} | {j.kept for j in p.grid.jobs if j.kept}
    left_out = sorted(str(f) for d in {p.study.runs, p.study.keep} - {None} if Path(d).is_dir()
                      for f in Path(d).rglob("result.json") if str(f) not in known)
    return pd.DataFrame(rows, columns=["task", "arm", "head_set", "seed", "acc", "out"]), base, left_out


def analyze(spec: str | Path, data_dir=None, *, png: bool = True, command: str | None = None,
            today: str | None = None, log=print) -> Path:
    """The study's page (and its figure) from the runs on disk, with the registered analysis and every deviation
    from the registration; nothing is run."""
    from circuitlab.core.io import write_text_atomic
    from circuitlab.studies import registration
    from circuitlab.studies.agreement import located
    from circuitlab.studies.analysis import analyse, head_sets
    from circuitlab.studies.page import figure, page

    p = plan(spec, data_dir)
    study = p.study
    runs, base, left_out = collected(p)
    if runs.empty:
        raise CircuitlabError(f"no finished run of {study.name} under {study.runs}: nothing to analyse")
    sets = head_sets(runs)
    results, skipped = analyse(runs, list(study.tasks), study.analysis)
    declared = {j.out for j in p.declared()}
    finished = {j.out for j in p.declared() if p.states[j.out] == "done"}
    deviations = registration.deviations(study, finished, declared, today)
    reg_path = study.registration_path()
    reg = read_json(reg_path, "registration") if reg_path.exists() else None
    if study.figures:
        from circuitlab.report.write import write_figures

        write_figures({"head_sets": figure(sets, results, study)}, study.figures, png=png, plotlyjs="cdn")
        Path(study.figures, "head_sets.html").unlink(missing_ok=True)  # the PNG is the page's; HTML is 5 MB or online
    link = os.path.relpath(Path(study.figures or ".", "head_sets.png"), Path(study.page).parent)
    text = page(study, runs, sets, results, skipped, p.lr_table, base, deviations, reg,
                command or f"circuitlab study analyze {spec}", left_out, link if study.figures else None,
                p.admission, p.progress(), located(p))
    if study.notes:
        text += "\n## Discussion (written by hand)\n\n" + Path(study.notes).read_text(encoding="utf-8")
    write_text_atomic(study.page, text.rstrip() + "\n")
    log(f"wrote {study.page}: {len(results)} comparisons, {len(deviations)} deviation(s) from the registration")
    return Path(study.page)
