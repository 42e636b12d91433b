"""Zero-shot evaluation as the paper's harness runs it: acc, acc_norm, and mcc or F1 where the task reports them;
for the generated-answer tasks (metric `exact_match`, circuitlab.tasks.arithmetic) greedy generation instead."""

from __future__ import annotations

import time
from contextlib import contextmanager

from circuitlab.core.protocol import DEFAULT_PROTOCOL, Protocol, get_protocol
from circuitlab.evaluate.metrics import compute_metrics
from circuitlab.evaluate.config import BATCH_SIZE
from circuitlab.evaluate.generation import generate_answers
from circuitlab.evaluate.results import EvalResult, Prediction
from circuitlab.evaluate.scoring import score_docs
from circuitlab.headmap.adapter import attach, check_peft_type
from circuitlab.headmap.dirs import AdapterDir
from circuitlab.models.plain import as_plain
from circuitlab.tasks import Doc, Task, data_fingerprint, get_task, load_docs


def evaluate(
    model,
    task: Task | str,
    data_dir=None,
    split: str | None = None,
    limit: int | None = None,
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
    docs: list[Doc] | None = None,
    protocol: str | Protocol = DEFAULT_PROTOCOL,
) -> EvalResult:
    """`docs` (already loaded, e.g. to check the split before loading the model) skips the loading. `protocol` is
    resolved here, once (an unknown name fails before any scoring), and handed down as the object."""
    protocol = get_protocol(protocol)
    task = get_task(task) if isinstance(task, str) else task
    split = split or task.eval_split
    docs = docs if docs is not None else load_docs(task, split, data_dir, limit=limit)
    if "exact_match" in task.metrics:
        return _evaluate_generation(model, task, split, docs, batch_size, progress, protocol.name)
    start = time.perf_counter()
    scores = score_docs(model, docs, batch_size=batch_size, progress=progress, protocol=protocol, task=task)
    seconds = time.perf_counter() - start
    predictions = [Prediction(s.index, s.gold, s.pred, s.pred_norm, s.logprobs) for s in scores]
    return EvalResult(
        model=model.name,
        task=task.name,
        split=split,
        n_docs=len(docs),
        metrics=compute_metrics(task, scores),
        data_fingerprint=data_fingerprint(docs),
        seconds=seconds,
        predictions=predictions,
        protocol=protocol.name,
    )


@contextmanager
def with_adapter(model, adapter: AdapterDir | None = None):
    """The plain HF model (a `PlainModel`; a bridged model is loaded again without its bridge) with the adapter
    `adapter` (what `AdapterDir.read` made of a run directory or any PEFT adapter directory: nothing is read again)
    loaded into it, its PEFT type checked before any weights load and its base model before it is attached; on
    leaving, the adapter's layers are taken out again, so a model the caller passed in is left as it was."""
    if adapter is not None:
        check_peft_type(adapter)  # its PEFT type and weights file, before any weights load
    plain = as_plain(model)
    if adapter is None:
        yield plain
        return
    peft_model = attach(plain.hf_model, adapter)  # PEFT injects its layers into the model in place
    training = plain.hf_model.training
    plain.hf_model.eval()
    try:
        yield plain
    finally:
        peft_model.unload()
        plain.hf_model.train(training)


def _evaluate_generation(model, task: Task, split: str, docs: list[Doc], batch_size: int, progress: bool,
                         protocol: str) -> EvalResult:
    """`exact_match`: the share of docs whose greedy continuation gives the answer. The protocols differ
    only in how choices are ranked, so `protocol` is just recorded."""
    start = time.perf_counter()
    gens = generate_answers(model, docs, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - start
    predictions = [Prediction(g.index, 0, 0 if g.correct else -1, 0 if g.correct else -1, [], g.generated)
                   for g in gens]
    return EvalResult(
        model=model.name, task=task.name, split=split, n_docs=len(docs),
        metrics={"exact_match": sum(g.correct for g in gens) / len(gens)},
        data_fingerprint=data_fingerprint(docs), seconds=seconds, predictions=predictions, protocol=protocol,
    )
