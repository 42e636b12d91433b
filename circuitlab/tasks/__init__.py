"""Tasks: each turns a dataset row into a scored document (`Doc`), with one registry of every task.

`docs` (Doc, Task, loading rows from a data directory or the hub), one module per family (`benchmarks`: the
paper's 13; `capitals`: the embedded task; `arithmetic`: the generated tasks of the second paper; `custom`:
a `.jsonl` file), and `registry` (every task by name, `load_docs`, clean/corrupted `pairs`).
"""

from circuitlab.tasks.docs import SEPARATORS, Doc, Task, data_fingerprint, resolve_data_dir, separate
from circuitlab.tasks.registry import (
    FAMILIES, GENERATED, PAPER_TASKS, TASK_NAMES, TASKS, get_task, load_docs, load_rows, pairs,
)

__all__ = ["FAMILIES", "GENERATED", "PAPER_TASKS", "SEPARATORS", "TASKS", "TASK_NAMES", "Doc", "Task",
           "data_fingerprint", "get_task", "load_docs", "load_rows", "pairs", "resolve_data_dir", "separate"]
