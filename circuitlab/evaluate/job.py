"""A task's split scored, one library call:

    the task, its docs, the output path and the model's config checked -> load the model -> evaluate -> save

This module imports neither torch nor TransformerLens, so a bad input is refused at once.
"""

from __future__ import annotations

from pathlib import Path

from circuitlab.core.io import check_writable
from circuitlab.evaluate.config import EvalConfig
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
    if not hasattr(model, "hf_model"):  # the model exists (or the hub answers) before anything loads
        model_dims(model.model if isinstance(model, ModelConfig) else model)
    from circuitlab.evaluate.run import evaluate  # torch and TransformerLens: every check has passed
    from circuitlab.models.loaded import as_bridged

    result = evaluate(as_bridged(model, "eval"), task, split=split, batch_size=config.batch_size, progress=progress,
                      docs=docs, protocol=config.protocol)
    if out is not None:
        result.save(out)
    return result
