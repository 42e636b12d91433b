"""The samples a circuit is located on, and how the model reads them.

The paper's samples (Section 4): of the training docs the model gets right, the n with the lowest
target loss. A samples file gives them directly instead. A sample is read as `prompt + target[:-1]`;
the last `len(target)` positions predict the target tokens (nothing after the last one is fed).

The `official` protocol (`circuitlab.protocol`) follows the official code instead: samples are the
lowest-loss docs whether right or not, the locating target is the gold continuation plus the EOS
token, and a set's loss is the mean over all its target tokens (HF's `labels` loss over a batch).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from circuitlab.circuit import Sample, TaskInfo
from circuitlab.errors import CircuitlabError
from circuitlab.io import read_jsonl
from circuitlab.protocol import DEFAULT_PROTOCOL, Protocol, get_protocol
from circuitlab.scoring import N_SAMPLES
from circuitlab.settings import check_settings, setting


@dataclass
class SampleConfig:
    n: int = setting(N_SAMPLES, "samples to locate on", minimum=1)
    max_docs: int | None = setting(None, "score only the first N docs of --split when selecting samples", minimum=1)
    split: str = setting("train", "split that sample selection reads")

    def __post_init__(self) -> None:
        check_settings(self)


def locating_samples(
    model, task, data_dir=None, split: str = "train", n: int = N_SAMPLES, max_docs: int | None = None,
    progress: bool = True, docs: list | None = None, protocol: str | Protocol = DEFAULT_PROTOCOL,
) -> tuple[list[Sample], TaskInfo]:
    """The paper's samples: of the first `max_docs` docs of `split` the model gets right, the `n`
    with the lowest target loss (scores cached per model, task and data). `docs`: those docs,
    already loaded. Under the official protocol the docs need not be right; the target loss is the
    same (no EOS: the official sample selection tokenizes without it). A task scored by `exact_match`
    (the arithmetic tasks) has one choice per doc, which ranking always "gets right": its samples are
    the lowest-loss docs with no correctness filter, said so rather than left to that accident."""
    from circuitlab.scoring import cached_score_docs, select_samples
    from circuitlab.tasks import data_fingerprint, get_task, load_docs

    task = get_task(task) if isinstance(task, str) else task
    docs = docs if docs is not None else load_docs(task, split, data_dir, limit=max_docs)
    correct_only = get_protocol(protocol).correctness_filter and "exact_match" not in task.metrics
    chosen = select_samples(docs, cached_score_docs(model, task, docs, progress=progress), n, correct_only)
    if not chosen:
        raise CircuitlabError(f"the model gets none of the {len(docs)} {task.name} {split} docs right")
    samples = [Sample(d.prompt, d.target, d.index, d.corrupted) for d in chosen]
    return samples, TaskInfo(task.name, split, data_fingerprint(docs), len(docs))


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


@dataclass(frozen=True)
class Encoded:
    """A sample as the model reads it: `ids` = context + target[:-1]; the last `len(targets)`
    positions predict the target tokens."""

    ids: tuple[int, ...]
    targets: tuple[int, ...]


def encode_samples(model, samples: list[Sample] | list[Encoded], eos: bool = False,
                   corrupted: bool = False) -> list[Encoded]:
    """Samples as token ids (already encoded ones, e.g. the random tokens of a benchmark, as they are).
    `eos`: the tokenizer's EOS token ends every target (the official code's locating target).
    `corrupted`: each sample's corrupted prompt in place of its prompt, followed by the same target
    tokens; it must have the prompt's token length, so that position i of the corrupted run stands
    for position i of the sample's own (what the `corrupted` ablation patches in)."""
    from circuitlab.scoring import Encoded as Pair, encode_pair, max_length, model_input

    if samples and all(isinstance(s, Encoded) for s in samples):
        return list(samples)
    eos_id = model.tokenizer.eos_token_id
    if eos and eos_id is None:
        raise CircuitlabError("the official protocol's locating target ends with EOS, but the tokenizer has none")
    limit = max_length(model)
    out = []
    for i, s in enumerate(samples):
        enc = encode_pair(model.tokenizer, s.prompt, s.target)
        if corrupted:
            context = encode_pair(model.tokenizer, s.corrupted, s.target).context if s.corrupted else None
            if context is None or len(context) != len(enc.context):
                what = "has none" if context is None else f"is {len(context)} tokens, the prompt {len(enc.context)}"
                raise CircuitlabError(f"sample {i} ({s.prompt[:40]!r}): its corrupted prompt {what}; the "
                                      "corrupted ablation needs one of the prompt's token length")
            enc = Pair(context, enc.continuation)
        if eos:
            enc = Pair(enc.context, enc.continuation + (eos_id,))
        ids = model_input(enc, limit)
        if not enc.continuation or not enc.context or len(enc.continuation) > len(ids):
            raise CircuitlabError(f"sample {i} ({s.prompt[:40]!r} -> {s.target!r}): needs a non-empty "
                                  "prompt and target that fit in the model's context")
        out.append(Encoded(tuple(ids), tuple(enc.continuation)))
    return out


def set_loss(per_sample: Sequence[float], n_tokens: Sequence[int] | None = None) -> float:
    """The loss of a sample set from each sample's mean target NLL: their mean (Eq. 5), or with
    `n_tokens` (each sample's target length) the mean over all the set's target tokens, the official
    code's batch `labels` loss, in which a long target weighs more."""
    if n_tokens is None:
        return math.fsum(per_sample) / len(per_sample)
    return math.fsum(m * n for m, n in zip(per_sample, n_tokens)) / sum(n_tokens)


def loss_weights(encoded: Sequence[Encoded], protocol: str | Protocol) -> tuple[list[int] | None, list[float]]:
    """(the `n_tokens` argument of `set_loss`, each sample's weight in the set's loss) under `protocol`."""
    if get_protocol(protocol).locate_loss == "token_mean":
        n_tokens = [len(e.targets) for e in encoded]
        return n_tokens, [n / sum(n_tokens) for n in n_tokens]
    return None, [1 / len(encoded)] * len(encoded)
