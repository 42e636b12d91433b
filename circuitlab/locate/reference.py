"""What an ablation needs from the data, checked before any model loads: clean/corrupted pairs for `corrupted`,
and for `mean` its reference docs (the first --ablation-docs docs of the samples' split that are not samples:
data the model reads the way it reads the samples, none of which is scored)."""

from __future__ import annotations

from typing import Sequence

from circuitlab.circuits.circuit import Sample
from circuitlab.core.errors import ConfigError
from circuitlab.tasks import load_docs


def reference_pool(task, split: str, data_dir, n_samples: int, n_docs: int) -> list:
    """The docs `reference_samples` takes from: the first n_samples + n_docs of `split`, of which
    at least n_docs are not samples. Loaded (and refused, in one line) before any model loads."""
    docs = load_docs(task, split, data_dir, limit=n_samples + n_docs)
    if len(docs) < n_samples + n_docs:
        raise ConfigError("ablation_docs", f"{n_docs} is too many: the mean ablation's reference docs are docs of "
                                           f"{split} that are not among the {n_samples} samples, and {split} has "
                                           f"{len(docs)} docs")
    return docs


def reference_samples(pool: list, samples: Sequence[Sample], n_docs: int) -> list[Sample]:
    """The first n_docs docs of `pool` that are not among `samples` (by index), as samples (prompt
    and gold target: the text the mean is taken over)."""
    taken = {s.index for s in samples}
    return [Sample(d.prompt, d.target, d.index) for d in pool if d.index not in taken][:n_docs]


def check_ablation_input(config, rows: Sequence, task, sampling, data_dir) -> list | None:
    """The CLI's checks of an ablation against its data, before any model loads (`rows`: the task's
    docs, or the samples of a samples file; `task`: None with a samples file). Returns the mean's
    reference pool (`reference_pool`), else None."""
    if config.ablation == "corrupted":
        missing = sum(not getattr(r, "corrupted", None) for r in rows)
        if missing:
            where = f"task {task.name}" if task is not None else "the samples file"
            raise ConfigError("ablation", f"corrupted needs clean/corrupted pairs, but {where} has no corrupted "
                                          f"prompt for {missing} of its {len(rows)} rows (tasks with pairs: the "
                                          'arithmetic ones, e.g. add_sub; custom rows: a "corrupted" key)')
    if config.ablation == "mean":
        if task is None:
            raise ConfigError("ablation", "mean takes its reference docs from --task's split; a samples file has "
                                          "none (use --task)")
        return reference_pool(task, sampling.split, data_dir, sampling.n, config.ablation_docs)
    return None
