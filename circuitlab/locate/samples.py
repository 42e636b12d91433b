"""The samples a circuit is located on, and how the model reads them.

The paper's samples (Section 4): of the training docs the model gets right, the n with the lowest
target loss (`select_samples`; the `official` protocol takes the lowest-loss docs whether right or not).
A samples file gives them directly instead. How the model reads a sample is `circuitlab.locate.encoding`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from circuitlab.circuits.circuit import Sample, TaskInfo
from circuitlab.core.errors import CircuitlabError, ConfigError
from circuitlab.core.io import read_jsonl
from circuitlab.core.settings import check_settings, int_list, setting

N_SAMPLES = 64  # the paper's number of locating samples


@dataclass
class SampleConfig:
    n: int = setting(N_SAMPLES, "samples to locate on", minimum=1)
    max_docs: int | None = setting(None, "score only the first N docs of --split when selecting samples", minimum=1)
    split: str = setting("train", "split that sample selection reads")
    rows: tuple[int, ...] | None = setting(None, "select samples among these rows (0-based) of --split only, e.g. a "
                                                 "study's disjoint locating pools (default: the first --max-docs)",
                                           parse=int_list)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.rows is not None:
            self.rows = tuple(self.rows)
            if not self.rows or any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in self.rows):
                raise ConfigError("rows", f"must be non-negative row numbers, got {list(self.rows)[:5]}")
            if len(set(self.rows)) < len(self.rows):
                raise ConfigError("rows", "lists a row twice")
            if self.max_docs is not None:
                raise ConfigError("rows", "chooses the docs itself: leave out --max-docs")

    def docs(self, docs: list) -> list:
        """The docs samples are selected from: `rows` of the split's docs, in that order, or all of them."""
        if self.rows is None:
            return docs
        if max(self.rows) >= len(docs):
            raise CircuitlabError(f"--rows names row {max(self.rows)}, but the {self.split} split has {len(docs)} docs")
        return [docs[r] for r in self.rows]


def read_samples_file(path: str | Path) -> list[Sample]:
    """Rows `{"prompt": str, "target": str}` of a JSON Lines file, used as they are and in order
    (optional: "index", and "corrupted", the prompt whose run `--ablation corrupted` patches from)."""
    path = Path(path)
    if not path.is_file():
        raise CircuitlabError(f"samples file not found: {path}")
    samples = []
    for where, row in read_jsonl(path):
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("target"), str) or not row["target"]:
            raise CircuitlabError(f'{where}: expected {{"prompt": str, "target": non-empty str}}')
        index = row.get("index")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
            raise CircuitlabError(f"{where}: 'index' must be an integer")
        corrupted = row.get("corrupted")
        if corrupted is not None and not isinstance(corrupted, str):
            raise CircuitlabError(f"{where}: 'corrupted' must be a string")
        samples.append(Sample(row["prompt"], row["target"], index, corrupted))
    if not samples:
        raise CircuitlabError(f"samples file {path} has no rows")
    return samples


def samples_task(path: str | Path, samples: list[Sample], task: str | None = None) -> TaskInfo:
    """The TaskInfo of samples read from a file (the task is optional then: it only names them)."""
    return TaskInfo(task or Path(path).stem, f"samples-file:{Path(path).name}", samples_fingerprint(samples), None)


def samples_fingerprint(samples: list[Sample]) -> str:
    payload = json.dumps([[s.index, s.prompt, s.target] for s in samples], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def select_samples(docs: list, scores: list, n: int = N_SAMPLES,
                   correct_only: bool = True) -> list:
    """Of the documents (`Doc`s) the model gets right by their `DocScore`s, the `n` with the lowest target
    loss (paper, Section 4).
    `correct_only=False` (the official code's `torch.topk(-losses, n)`): of all documents."""
    by_index = {d.index: d for d in docs}
    correct = [s for s in scores if s.correct or not correct_only]
    correct.sort(key=lambda s: (s.target_loss, s.index))
    return [by_index[s.index] for s in correct[:n]]
