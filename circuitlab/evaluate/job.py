"""A task's split scored, one library call:

    the task, its docs, the adapter (its files read once), the output path and the model's config checked -> the
    result at `out` reused when it was made from the same identity (refused when made otherwise) -> load the model
    as a plain HF model (with the adapter, from what was read) -> evaluate -> save

This module imports no torch, so a bad input, a finished result and one made with other settings are all answered
at once. Evaluation needs no hook, so it runs on the plain Hugging Face model, as lm-evaluation-harness does
(TransformerLens is not imported either).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from circuitlab.core.artefact import Artefact
from circuitlab.core.io import check_writable
from circuitlab.evaluate.config import EvalConfig
from circuitlab.evaluate.results import EvalResult
from circuitlab.headmap.dirs import AdapterDir
from circuitlab.models.config import ModelConfig
from circuitlab.models.dims import model_dims
from circuitlab.tasks import Doc, Task, data_fingerprint, get_task, load_docs


def evaluate_task(model, task: Task | str, config: EvalConfig | None = None, data_dir=None,
                  out: str | Path | None = None, progress: bool = True,
                  log: Callable[[str], None] = lambda line: None) -> EvalResult:
    """The task's `EvalResult` (metrics and per-document predictions), saved to `out` as JSON when given: a result
    already there made from the same identity is returned as it is, one made from another is refused in one line
    (never overwritten). `model`: a loaded model, a `ModelConfig` or a name (loaded after the checks)."""
    config = config or EvalConfig()
    task = get_task(task)
    split = config.split or task.eval_split
    docs = load_docs(task, split, data_dir, limit=config.limit)
    name = getattr(model, "name", None) or (model.model if isinstance(model, ModelConfig) else model)
    dims = model.dims if hasattr(model, "hf_model") else model_dims(name)  # the model exists before anything loads
    adapter = AdapterDir.read(config.adapter) if config.adapter is not None else None  # its files read here, once
    if adapter is not None:
        adapter.check_fits(dims, name)
    if out is not None:
        check_writable(out)
    record = adapter.record if adapter is not None else None  # kind, name, fingerprint
    identity = eval_identity(model, name, task, split, docs, config, record)
    artefact = Artefact(out, identity, "evaluation") if out is not None else None
    done = artefact.finished(EvalResult.load) if artefact is not None else None
    if done is not None:
        log(f"{out}: evaluated already with these settings, reused")
        return done
    from circuitlab.evaluate.run import evaluate, with_adapter  # torch, PEFT: every check has passed

    with with_adapter(model, adapter) as adapted:  # loaded from the record, no file of it parsed again
        result = evaluate(adapted, task, split=split, batch_size=config.batch_size, progress=progress, docs=docs,
                          protocol=config.protocol)
    result.adapter, result.made_from = record, identity
    if artefact is not None:
        artefact.commit(lambda: result.save(out))
    return result


def eval_identity(model, name: str, task: Task, split: str, docs: list[Doc], config: EvalConfig,
                  adapter: dict | None) -> dict:
    """Everything that decides an evaluation's result: the model (by name, with the device and precision it runs
    in: float rounding differs between them), the documents scored (their fingerprint, so a `--limit` or changed
    data is another result), how they are scored (protocol, batch size: padding changes the rounding) and the
    adapter (kind, name and the fingerprint of its files)."""
    if hasattr(model, "hf_model"):  # loaded: where it is (torch is imported already)
        weight = next(model.hf_model.parameters())
        device, dtype = weight.device.type, str(weight.dtype).removeprefix("torch.")
    else:
        where = (model if isinstance(model, ModelConfig) else ModelConfig(model=model)).where
        device, dtype = (where.device or "device-map").split(":")[0], where.dtype
    return {"model": name, "device": device, "dtype": dtype, "task": task.name, "split": split,
            "docs": data_fingerprint(docs), "protocol": config.protocol, "batch_size": config.batch_size,
            "adapter": adapter}
