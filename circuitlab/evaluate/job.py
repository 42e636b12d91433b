"""A task's split scored, one library call:

    the task, its docs, the adapter's files, the output path and the model's config checked -> load the model as a
    plain HF model (with the adapter, when given) -> evaluate -> save

This module imports no torch, so a bad input is refused at once. Evaluation needs no hook, so it runs on the plain
Hugging Face model, as lm-evaluation-harness does (TransformerLens is not imported either).
"""

from __future__ import annotations

from pathlib import Path

from circuitlab.core.io import check_writable
from circuitlab.evaluate.config import EvalConfig
from circuitlab.headmap.dirs import adapter_dir, check_fits
from circuitlab.models.config import ModelConfig
from circuitlab.models.dims import model_dims
from circuitlab.tasks import Task, get_task, load_docs


def evaluate_task(model, task: Task | str, config: EvalConfig | None = None, data_dir=None,
                  out: str | Path | None = None, progress: bool = True):
    """The task's `EvalResult` (metrics and per-document predictions), saved to `out` as JSON when given. `model`: a
    loaded model, a `ModelConfig` or a name (loaded after the checks)."""
    config = config or EvalConfig()
    task = get_task(task)
    split = config.split or task.eval_split
    docs = load_docs(task, split, data_dir, limit=config.limit)
    if out is not None:
        check_writable(out)
    name = getattr(model, "name", None) or (model.model if isinstance(model, ModelConfig) else model)
    dims = model.dims if hasattr(model, "hf_model") else model_dims(name)  # the model exists before anything loads
    if config.adapter is not None:
        check_fits(adapter_dir(config.adapter), dims, name)
    from circuitlab.evaluate.run import evaluate, with_adapter  # torch, PEFT: every check has passed
    from circuitlab.headmap.adapter import check_peft_type

    if config.adapter is not None:
        check_peft_type(config.adapter)  # still before the weights load

    with with_adapter(model, config.adapter) as adapted:
        result = evaluate(adapted, task, split=split, batch_size=config.batch_size, progress=progress, docs=docs,
                          protocol=config.protocol)
    if out is not None:
        result.save(out)
    return result
