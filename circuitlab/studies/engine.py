"""Who runs a study's jobs: this process, one job after another, or a Ray cluster.

Ray (https://docs.ray.io) is the engine for many processes or machines: `ray.init()` starts a local cluster on
this machine, `address=` joins an existing one, a job asks for one GPU where the cluster has GPUs, and a worker
that dies is Ray's to report. circuitlab adds no scheduler of its own: each job is one remote call of `run_job`,
and a finished job is never submitted (its artefact is found first), so a killed grid resumes by running `study
run` again. Every job is the library call a user would make (`locate_task`, `finetune`, `evaluate_task`), run in
the study's directory so the paths it records are the spec's relative ones.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from circuitlab.core.errors import CircuitlabError
from circuitlab.studies.grid import Job

ENGINES = ("local", "ray")
KILL = "CIRCUITLAB_STUDY_KILL"  # tests: "OUT:STEP:MARKER", the job OUT kills its own process after STEP steps once


@dataclass
class Outcome:
    out: str
    seconds: float
    error: str | None = None


def run_job(job: Job, root: str, data_dir=None, threads: int | None = None) -> Outcome:
    """One job, by the library call that is its job (in the study's directory `root`), on `threads` CPU threads
    (None: as many as torch takes). The same count gives the same floats on either engine: a sum split over
    another number of threads rounds differently."""
    os.chdir(root)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    start = time.perf_counter()
    if job.kind == "locate":
        from circuitlab.locate import LocateConfig, SampleConfig, locate_task

        s = job.settings
        locate_task(s["model"], job.task, sampling=SampleConfig(n=s["samples"], split=s["split"], rows=tuple(s["rows"])),
                    config=LocateConfig(n_per_layer=s["heads_per_layer"], protocol=s["protocol"]), data_dir=data_dir,
                    out=job.out, progress=False)
    elif job.kind == "evaluate":
        from circuitlab.evaluate.config import EvalConfig
        from circuitlab.evaluate.job import evaluate_task

        s = job.settings
        evaluate_task(s["model"], job.task, EvalConfig(split=s["split"], protocol=s["protocol"]), data_dir, job.out,
                      progress=False)
    elif job.kind == "track":
        from circuitlab.edges.config import EdgesConfig
        from circuitlab.studies.jobs import track

        s = job.settings
        track(s["run"], job.out, pairs_file=s["pairs"], split=s["split"], max_pairs=s["max_pairs"],
              config=EdgesConfig(**s["edges"]),  # the study's data only where the track reads the task's pairs
              data_dir=None if s["pairs"] else data_dir, progress=False, log=lambda line: None)
    else:
        from circuitlab.finetune import TrainConfig, finetune
        from circuitlab.finetune.config import RunOptions

        finetune(job.settings["model"], TrainConfig.from_dict(job.settings), job.out, options=RunOptions(**job.options),
                 data_dir=data_dir, progress=False, on_step=_kill_hook(job))
    return Outcome(job.out, time.perf_counter() - start)


def _kill_hook(job: Job):
    """The test hook of `KILL`: the process dies mid-job, as a worker lost to the OOM killer or a preemption."""
    spec = os.environ.get(KILL)
    if not spec:
        return None
    out, step, marker = spec.split(":")
    if out != job.out or os.path.exists(marker):
        return None

    def hook(n: int) -> None:
        if n >= int(step):
            open(marker, "w").close()
            os.kill(os.getpid(), 9)

    return hook


def run_local(jobs: list[Job], root: str, data_dir, done: Callable[[Outcome], None],
              threads: int | None = None) -> list[Outcome]:
    """In this process, one job at a time; a failing job stops the grid (its error is the user's to see)."""
    outcomes = []
    for job in jobs:
        outcome = run_job(job, root, data_dir, threads)
        outcomes.append(outcome)
        done(outcome)
    return outcomes


def run_ray(jobs: list[Job], root: str, data_dir, done: Callable[[Outcome], None], address: str | None = None,
            gpus_per_job: float = 0, retries: int = 0, cpus: int | None = None,
            threads: int | None = None) -> list[Outcome]:
    """Every job as a Ray task; each outcome reported as it arrives. A job whose worker died, or that raised, is an
    outcome with its error: the others go on, and `study run` resumes the failed ones."""
    try:
        import ray
    except ImportError:
        raise CircuitlabError("--engine ray needs Ray: pip install 'circuitlab[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=cpus if address is None else None, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        remote = ray.remote(run_job).options(num_gpus=gpus_per_job, max_retries=retries, num_cpus=threads or 1)
        pending = {remote.remote(job, root, data_dir, threads or 1): job for job in jobs}
        outcomes = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                outcome = ray.get(ready[0])
            except Exception as e:  # noqa: BLE001 - a worker lost or a job's own error: reported per job
                outcome = Outcome(job.out, 0.0, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            outcomes.append(outcome)
            done(outcome)
        return outcomes
    finally:
        if started:
            ray.shutdown()
