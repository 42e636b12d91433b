"""Clean/corrupted pairs: the inputs of edge attribution.

A pair is a clean prompt, a corrupted prompt of the same token length that should not give the answer,
and the answer (a continuation of the clean prompt). Both runs read their prompt followed by the answer's
tokens (teacher forcing), so a metric can read the answer's log-probability even when a number splits
into several digit tokens, as it does in SmolLM2's tokenizer. `corrupted_answer` (optional) is what the
corrupted prompt should give; the logit-difference metric needs it.

Files are JSON Lines: `{"clean": ..., "corrupted": ..., "answer": ...[, "corrupted_answer": ...]}`. As token ids in
batches: `circuitlab.edges.batches`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import read_jsonl
from circuitlab.tasks import GENERATED, data_fingerprint, get_task, load_docs, pairs as task_pairs, separate


@dataclass(frozen=True)
class Pair:
    clean: str
    corrupted: str
    answer: str
    corrupted_answer: str | None = None


def pairs_from_rows(rows: list[tuple[str, dict]]) -> list[Pair]:
    """Rows as `read_jsonl` gives them (each with its `file line N`), checked field by field."""
    out = []
    for where, row in rows:
        for key in ("clean", "corrupted", "answer"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise CircuitlabError(f"{where}: needs a non-empty string {key!r}")
        extra = row.get("corrupted_answer")
        if extra is not None and not isinstance(extra, str):
            raise CircuitlabError(f"{where}: 'corrupted_answer' must be a string")
        out.append(Pair(row["clean"], row["corrupted"], row["answer"], extra))
    if not out:
        raise CircuitlabError("no clean/corrupted pairs given")
    return out


def load_pairs(path) -> list[Pair]:
    return pairs_from_rows(read_jsonl(path))


def pairs_digest(pairs: list[Pair]) -> str:
    """A short hash of exactly these pairs, in order."""
    return hashlib.sha256(json.dumps([asdict(p) for p in pairs]).encode()).hexdigest()[:16]


def pairs_from_docs(docs, task: str) -> list[Pair]:
    """A task's documents as pairs: the prompt, its corrupted prompt and the gold continuation."""
    if not docs or any(d.corrupted is None for d in docs):
        raise CircuitlabError(f"task {task} has no corrupted prompts (edges need clean/corrupted pairs: "
                              "an arithmetic task, or --pairs FILE.jsonl)")
    return [Pair(d.prompt, d.corrupted, d.target) for d in docs]


def separated(pairs: list[Pair], separator: str) -> list[Pair]:
    """The pairs as a run with `--separator` trained on its texts (`circuitlab.tasks.separate`): the clean and
    corrupted prompts end alike, so the two stay the same token length."""
    out = []
    for p in pairs:
        clean, answer = separate(separator, p.clean, p.answer)
        if p.corrupted_answer is None:
            (corrupted,), corrupted_answer = separate(separator, p.corrupted), None
        else:
            corrupted, corrupted_answer = separate(separator, p.corrupted, p.corrupted_answer)
        out.append(Pair(clean, corrupted, answer, corrupted_answer))
    return out


def read_pairs(task: str | None = None, pairs_file=None, split: str | None = None, max_pairs: int | None = None,
               data_dir=None) -> tuple[list[Pair], str, str | None]:
    """The pairs of a job, from one of two places: a task's own (its docs' clean and corrupted prompts, of `split`,
    default test; the generated tasks also give each corrupted prompt's answer) or a JSON Lines file, taken as it
    is (so `split` and `data_dir`, which would do nothing, are refused with it). Returns (the pairs, what they are
    called, the data fingerprint of the task's docs or None)."""
    if (task is None) == (pairs_file is None):
        raise CircuitlabError("give --task (its clean/corrupted pairs) or --pairs FILE.jsonl")
    if max_pairs is not None and max_pairs < 1:
        raise CircuitlabError(f"--max-pairs must be a positive integer, got {max_pairs}")
    if pairs_file is not None:
        if split is not None or data_dir is not None:
            raise CircuitlabError("--split and --data-dir choose a task's pairs; with --pairs FILE they do nothing: "
                                  "leave them out")
        return load_pairs(pairs_file)[:max_pairs], Path(pairs_file).name, None  # its name, not a machine path
    t, split = get_task(task), split or "test"
    docs = load_docs(t, split, data_dir, limit=max_pairs)
    pairs = pairs_from_docs(docs, t.name)
    if t.name in GENERATED:  # their rows also know each corrupted prompt's answer
        pairs = pairs_from_rows([(f"{t.name} row {i}", row) for i, row in enumerate(task_pairs(t.name, split)[: len(pairs)])])
    return pairs, t.name, data_fingerprint(docs)
