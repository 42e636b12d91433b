"""Locating a task's circuit, one library call and the one place this sequence is written:

    check the inputs -> load the model -> select (or read) the samples -> the mean ablation's reference docs
    -> locate -> save (resumable)

Everything that can be checked without the weights is checked first (`LocateInputs.read`): the task and the docs
samples are selected from (or a samples file), what the ablation needs, the output path, and the config against
the model's dimensions (from its config file alone), which resolves the run (`ResolvedRun`: the protocol and the
plan, handed on as values; the model's identity is added once it loads). This module imports neither torch nor
TransformerLens, so a bad input is refused at once; the rest (`circuitlab.locate.selection`) is imported only when
every check passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from circuitlab.circuits.circuit import Circuit, Sample, TaskInfo
from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import check_writable
from circuitlab.locate.config import LocateConfig
from circuitlab.locate.reference import check_ablation_input
from circuitlab.locate.resolved import ResolvedRun
from circuitlab.locate.samples import SampleConfig, read_samples_file, samples_task
from circuitlab.models.config import ModelConfig
from circuitlab.models.dims import model_dims
from circuitlab.tasks import Doc, Task, get_task, load_docs

Log = Callable[[str], None]


@dataclass
class LocateInputs:
    """A locating job's inputs, read and checked before any model loads."""

    task: Task | None  # None with a samples file
    docs: list[Doc] | None  # the docs samples are selected from (None with a samples file)
    samples: list[Sample] | None  # a samples file's rows, as they are
    info: TaskInfo | None  # what the samples file's samples are
    pool: list | None  # the mean ablation's reference pool
    out: Path
    run: ResolvedRun | None = None  # the config resolved against the model's config file

    @classmethod
    def read(cls, model_name: str, task: str | Task | None, samples_file: str | Path | None, sampling: SampleConfig,
             config: LocateConfig, data_dir=None, out: str | Path | None = None) -> LocateInputs:
        """Cheapest checks first: the task and files, the output, then the model's config file."""
        if task is None and samples_file is None:
            raise CircuitlabError("--task is needed to select samples (or give --samples-file)")
        if samples_file is not None:
            samples = read_samples_file(samples_file)
            info = samples_task(samples_file, samples, None if task is None else get_task(task).name)
            found = cls(None, None, samples, info, None, Path())
            name = info.name
        else:
            t = get_task(task)
            docs = sampling.docs(load_docs(t, sampling.split, data_dir, limit=sampling.max_docs))
            found = cls(t, docs, None, None, None, Path())
            name = t.name
        found.pool = check_ablation_input(config, found.samples or found.docs, found.task, sampling, data_dir)
        suffix = "" if config.strategy == "layer-conditioned" else f"__{config.strategy}"
        found.out = check_writable(out or f"circuits/{Path(model_name).name}__{name}{suffix}.json")
        found.run = ResolvedRun.before_load(config, model_dims(model_name), model_name)
        return found


def locate_task(model: object, task: str | Task | None = None, *, samples_file: str | Path | None = None,
                sampling: SampleConfig | None = None, config: LocateConfig | None = None, data_dir=None,
                out: str | Path | None = None, progress: bool = True, log: Log = lambda line: None) -> Circuit:
    """Locate `task`'s circuit (samples selected from its docs) or one on the samples of `samples_file`, into the
    circuit file `out` (default circuits/MODEL__TASK[__STRATEGY].json); resumable. `model`: a loaded model, a
    `ModelConfig` or a name (loaded after the checks, in this process's part of the machine under torchrun)."""
    if samples_file is not None and (sampling is not None or data_dir is not None):
        raise CircuitlabError("--samples, --max-docs, --split, --rows and --data-dir select samples from a task's "
                              "docs; with --samples-file they do nothing: leave them out")
    sampling, config = sampling or SampleConfig(), config or LocateConfig()
    name = model.name if hasattr(model, "bridge") else (model.model if isinstance(model, ModelConfig) else model)
    inputs = LocateInputs.read(name, task, samples_file, sampling, config, data_dir, out)
    from circuitlab.locate.selection import select_and_locate  # torch and TransformerLens: every check has passed

    return select_and_locate(model, inputs, sampling, progress, log)
