"""The heavy half of `locate_task` (`circuitlab.locate.job`), run once every check has passed: the model loads and
joins the run resolved before it (`ResolvedRun.loaded`: its weights hashed, the one time in the run), the samples
are selected (the paper's: of the docs the model gets right, the lowest target loss; scores cached on disk), the
mean ablation's reference docs are taken, and the circuit is located into its file. From here down the run's
values are read, never resolved again."""

from __future__ import annotations

import time
from dataclasses import asdict

from circuitlab.circuits.circuit import Circuit, Sample, TaskInfo
from circuitlab.core.artefact import Artefact, digest
from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import cache_dir, read_json, write_json_atomic
from circuitlab.core.processes import Shard
from circuitlab.core.protocol import DEFAULT_PROTOCOL, Protocol, get_protocol
from circuitlab.evaluate.scoring import DocScore, score_docs
from circuitlab.locate.reference import reference_samples
from circuitlab.locate.run import locate_to
from circuitlab.locate.samples import N_SAMPLES, SampleConfig, select_samples
from circuitlab.models.loaded import as_bridged
from circuitlab.tasks import Doc, Task, data_fingerprint, get_task, load_docs


def select_and_locate(model, inputs, sampling: SampleConfig, progress: bool, log) -> Circuit:
    """`inputs`: the job's checked `LocateInputs` (its `run` resolved before loading); `model`: loaded here if it
    is not yet."""
    model = as_bridged(model, "locate")
    run = inputs.run.loaded(model)
    start = time.perf_counter()
    if inputs.samples is not None:
        samples, info = inputs.samples, inputs.info
    else:  # the first process selects; every process locates on the same samples
        shard = Shard.current()
        picked = chosen_samples(model, inputs.task, inputs.docs, sampling.split, sampling.n, run.protocol,
                                run.model.fingerprint, progress) if shard.is_main else None
        samples, info = shard.broadcast(picked)
        if len(samples) < sampling.n and run.protocol.correctness_filter:
            log(f"note: the model gets only {len(samples)} of the {info.n_docs_scored} docs scored right; "
                "locating on those (raise --max-docs for more)")
    if inputs.pool is not None:  # mean: the first ablation_docs docs of the split that are not samples
        run = run.with_reference(reference_samples(inputs.pool, samples, run.config.ablation_docs))
    selected_s = round(time.perf_counter() - start, 3)
    return locate_to(inputs.out, model, samples, run, info, progress=progress, log=log,
                     finish=lambda c: c.timings.update(select_samples_s=selected_s))


def locating_samples(
    model, task, data_dir=None, split: str = "train", n: int = N_SAMPLES, max_docs: int | None = None,
    progress: bool = True, docs: list | None = None, protocol: str | Protocol = DEFAULT_PROTOCOL,
) -> tuple[list[Sample], TaskInfo]:
    """The paper's samples (`chosen_samples`) of the first `max_docs` docs of `split`, the task and protocol
    named or given. `docs`: those docs, already loaded."""
    task = get_task(task)
    docs = docs if docs is not None else load_docs(task, split, data_dir, limit=max_docs)
    return chosen_samples(model, task, docs, split, n, get_protocol(protocol), model.fingerprint(), progress)


def chosen_samples(model, task: Task, docs: list[Doc], split: str, n: int, protocol: Protocol, fingerprint: str,
                   progress: bool = True) -> tuple[list[Sample], TaskInfo]:
    """Of `docs` (of `split`) the model gets right, the `n` with the lowest target loss (scores cached per model,
    task and data; `fingerprint`: the model's weights, hashed already). Under the official protocol the docs need
    not be right; the target loss is the same (no EOS: the official sample selection tokenizes without it). A
    task scored by `exact_match` (the arithmetic tasks) has one choice per doc, which ranking always "gets
    right": its samples are the lowest-loss docs with no correctness filter, said so rather than left to that
    accident."""
    correct_only = protocol.correctness_filter and "exact_match" not in task.metrics
    chosen = select_samples(docs, cached_scores(model, task, docs, progress, fingerprint), n, correct_only)
    if not chosen:
        raise CircuitlabError(f"the model gets none of the {len(docs)} {task.name} {split} docs right")
    samples = [Sample(d.prompt, d.target, d.index, d.corrupted) for d in chosen]
    return samples, TaskInfo(task.name, split, data_fingerprint(docs), len(docs))


def cached_scores(model, task: Task, docs: list[Doc], progress: bool = True,
                  fingerprint: str | None = None) -> list[DocScore]:
    """`score_docs`, remembered on disk per (model weights, task, data) so a rerun does not rescore: an
    `Artefact` under the cache directory, named by its identity. `fingerprint`: the model's, where the caller
    hashed its weights already (else hashed here)."""
    identity = {"model": model.name, "fingerprint": fingerprint or model.fingerprint(), "task": task.name,
                "data": data_fingerprint(docs)}
    artefact = Artefact(cache_dir() / "scores" / f"{task.name}-{digest(identity)}.v2.json", identity, "score cache")
    done = artefact.finished(lambda path: [DocScore(**row) for row in read_json(path)["scores"]])
    if done is not None:
        return done
    scores = score_docs(model, docs, progress=progress)
    artefact.commit(lambda: write_json_atomic(artefact.path, {"made_from": artefact.identity,
                                                              "scores": [asdict(s) for s in scores]}))
    return scores
