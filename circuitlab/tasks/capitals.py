"""The embedded task, `capitals`: 167 countries shipped inside circuitlab, so nothing needs downloading."""

from __future__ import annotations

import random
from functools import lru_cache
from importlib import resources

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import parse_jsonl
from circuitlab.tasks.docs import Doc, Task

_CAPITALS = "circuitlab/data/capitals.jsonl"


@lru_cache(maxsize=1)
def _capital_rows() -> tuple[tuple[str, dict], ...]:
    text = resources.files("circuitlab").joinpath("data", "capitals.jsonl").read_text(encoding="utf-8")
    return tuple(parse_jsonl(text.splitlines(), _CAPITALS))


def capitals(row: dict, index: int) -> Doc:
    """4-way choice between the true capital and 3 other countries' capitals, fixed by `index`."""
    rng = random.Random(index)
    others = sorted({r["capital"] for _, r in _capital_rows()} - {row["capital"]})
    choices = rng.sample(others, 3)
    gold = rng.randrange(4)
    choices.insert(gold, row["capital"])
    prompt = f"Question: What is the capital of {row['country']}?\nAnswer:"
    return Doc(prompt, tuple(" " + c for c in choices), gold, index)


def _capitals_source(split: str) -> list[tuple[str, dict]]:
    """Splits of the packaged file: validation = rows whose line index % 4 == 3, train = the rest."""
    rows = _capital_rows()
    if split == "train":
        return [r for i, r in enumerate(rows) if i % 4 != 3]
    if split == "validation":
        return [r for i, r in enumerate(rows) if i % 4 == 3]
    raise CircuitlabError(f"task 'capitals' has no {split!r} split (available: train, validation)")


CAPITALS = Task("capitals", None, None, "validation", ("acc", "acc_norm"), capitals, source=_capitals_source)
