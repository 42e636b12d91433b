"""A custom task: a JSON Lines file of ready-made `{"prompt", "choices", "gold"}` rows, passed as `--task FILE.jsonl`."""

from __future__ import annotations

from pathlib import Path

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import read_jsonl
from circuitlab.tasks.docs import Doc, Task


def custom(row: dict, index: int) -> Doc:
    """A user's ready-made row: {"prompt": str, "choices": [str, ...], "gold": int}, used as it is;
    optionally "corrupted": a prompt of the same token length that should not give the answer (for
    `locate --ablation corrupted`)."""
    prompt, choices, gold = row.get("prompt"), row.get("choices"), row.get("gold")
    corrupted = row.get("corrupted")
    if corrupted is not None and not isinstance(corrupted, str):
        raise ValueError("'corrupted' must be a string")
    if not isinstance(prompt, str):
        raise ValueError("'prompt' must be a string")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
        raise ValueError("'choices' must be a non-empty list of strings")
    if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
        raise ValueError(f"'gold' must be an integer in 0..{len(choices) - 1}")
    return Doc(prompt, tuple(choices), gold, index, corrupted)


def custom_task(name: str) -> Task:
    """The task of a `.jsonl` file: every split is the one file."""
    path = Path(name).expanduser()
    if not path.is_file():
        raise CircuitlabError(f"custom task file {name} does not exist")
    return Task(path.stem, None, None, "validation", ("acc", "acc_norm"), custom, source=lambda split: read_jsonl(path))
