"""Every task by name: the paper's 13 benchmarks, the embedded `capitals`, the generated arithmetic
family, and a custom `.jsonl` file given by its path.

`TASK_NAMES` is the multiple-choice set (the benchmarks and capitals) that `reproduce`, the lm-eval export and
`circuitlab tasks` go through first; `FAMILIES` says which family each task belongs to.
"""

from __future__ import annotations

import json
from pathlib import Path

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import check_writable, write_text_atomic
from circuitlab.tasks.arithmetic import ARITHMETIC
from circuitlab.tasks.arithmetic import NAMES as GENERATED
from circuitlab.tasks.arithmetic import pair_rows
from circuitlab.tasks.benchmarks import BENCHMARKS
from circuitlab.tasks.capitals import CAPITALS
from circuitlab.tasks.custom import custom_task
from circuitlab.tasks.docs import Doc, Task, load_rows as _load_rows, read_docs

FAMILIES: dict[str, tuple[Task, ...]] = {"paper": BENCHMARKS, "embedded": (CAPITALS,), "arithmetic": ARITHMETIC}
TASKS: dict[str, Task] = {t.name: t for family in FAMILIES.values() for t in family}
TASK_NAMES: tuple[str, ...] = tuple(t.name for t in (*BENCHMARKS, CAPITALS))
PAPER_TASKS: tuple[str, ...] = tuple(t.name for t in BENCHMARKS)


def get_task(name: str | Task) -> Task:
    """A registered task by name, or a custom task from a path ending in .jsonl."""
    if isinstance(name, Task):
        return name
    if name in TASKS:
        return TASKS[name]
    if name.endswith(".jsonl"):
        return custom_task(name)
    raise CircuitlabError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}, "
                          "or give a path to a .jsonl file of {prompt, choices, gold} rows")


def load_docs(task: Task | str, split: str, data_dir=None, limit: int | None = None) -> list[Doc]:
    """The documents of one split of a task (by name or `Task`); the first `limit` of them if given."""
    return read_docs(get_task(task), split, data_dir, limit)


def load_rows(task: Task | str, split: str, data_dir=None) -> list[dict]:
    """The raw rows of one split, in file (or hub) order."""
    return _load_rows(get_task(task), split, data_dir)


def pairs(task_name: str, split: str, seed: int | None = None, data_dir=None) -> list[dict]:
    """Clean/corrupted rows `{"clean", "corrupted", "answer"}` of any task whose docs carry corrupted
    prompts, plus `"corrupted_answer"` for the generated tasks (the logit-diff metric reads it); `seed`
    (generated tasks only) draws other rows than the registered ones."""
    if task_name in GENERATED:
        return pair_rows(task_name, split, seed)
    if seed is not None:
        raise CircuitlabError(f"a seed applies to the generated tasks only ({', '.join(GENERATED)}), "
                              f"not {task_name!r}")
    docs = load_docs(task_name, split, data_dir)
    if any(d.corrupted is None for d in docs):
        raise CircuitlabError(f"task {task_name!r} has no corrupted prompts (the arithmetic tasks have: "
                              f"{', '.join(GENERATED)})")
    return [{"clean": d.prompt, "corrupted": d.corrupted, "answer": d.target} for d in docs]


def write_pairs(task_name: str, split: str, out: str | Path, seed: int | None = None, data_dir=None) -> list[dict]:
    """`circuitlab pairs`: a task's clean/corrupted rows as the JSON Lines the edge attribution reads."""
    out = check_writable(out)
    rows = pairs(task_name, split, seed, data_dir)
    write_text_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows
