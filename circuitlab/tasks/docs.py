"""What a task is and where its rows come from: `Doc` (one scored document), `Task` (where a benchmark's
rows live and how a row becomes a Doc), and the loading every task shares.

Rows come from a task's own source (the embedded and generated tasks, a custom file), else from local JSON
Lines files (`<data_dir>/<task>/<split>.jsonl` or `.jsonl.gz`, data_dir given explicitly or by the env var
CIRCUITLAB_DATA), else from the Hugging Face hub through `datasets`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import read_jsonl
from circuitlab.models.hub import cache_only_for_datasets


@dataclass(frozen=True)
class Doc:
    """One scored document: the model ranks `choices` as continuations of `prompt`."""

    prompt: str
    choices: tuple[str, ...]  # each starts with a space
    gold: int
    index: int  # 0-based row number within its split
    # A prompt of the same token length that should not give the answer (clean/corrupted pairs: the
    # arithmetic tasks have one; `locate --ablation corrupted` and `edges` patch from its run).
    corrupted: str | None = None

    @property
    def target(self) -> str:
        """The correct continuation (training text is prompt + target)."""
        return self.choices[self.gold]


SEPARATORS = ("task", "newline")


def separate(separator: str, prompt: str, *answers: str) -> tuple[str, ...]:
    """`prompt` and its `answers` as `separator` joins them: `task` as the task writes them (each answer after a
    space, the answer holding it), `newline` as CircuitLoRA's code does (`prompt + "\n" + answer`). One rule for
    training, evaluation and the pairs a circuit is found on, so each sees the text the model was tuned on."""
    if separator not in SEPARATORS:
        raise CircuitlabError(f"separator must be one of {', '.join(SEPARATORS)}, got {separator!r}")
    if separator == "task":
        return (prompt, *answers)
    return (prompt + "\n", *(a.lstrip(" ") for a in answers))


@dataclass(frozen=True)
class Task:
    """A benchmark: where its rows live and how a row becomes a Doc."""

    name: str
    hub_id: str | None
    hub_config: str | None
    eval_split: str
    metrics: tuple[str, ...]
    to_doc: Callable[[dict, int], Doc]
    # Own row source (embedded and custom tasks): split -> [(where, row)]; None = data_dir or hub.
    source: Callable[[str], list[tuple[str, dict]]] | None = None
    # How the official code's lm-eval 0.3 task scored it (used under `--protocol official` only):
    # its choices where they differ from the doc's (HellaSwag: " A" .. " E" for four endings), and
    # whether choice 0 wins only when strictly more likely (`ll_yes > ll_no`: a tie goes to choice 1;
    # RTE's `ll_false > ll_true` gives its tie to " True", choice 0, like the usual first-on-ties).
    official_choices: tuple[str, ...] | None = None
    official_tie_second: bool = False

    def docs(self, split: str, data_dir=None, limit: int | None = None) -> list[Doc]:
        return read_docs(self, split, data_dir, limit)


def resolve_data_dir(data_dir=None) -> Path | None:
    """The local data directory: the argument, else $CIRCUITLAB_DATA, else None (= the hub)."""
    data_dir = data_dir or os.environ.get("CIRCUITLAB_DATA") or None
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise CircuitlabError(f"data directory {data_dir} does not exist")
    return path


def _local_rows(task: Task, split: str, data_dir: Path) -> list[tuple[str, dict]]:
    folder = data_dir / task.name
    for name in (f"{split}.jsonl", f"{split}.jsonl.gz"):
        if (folder / name).is_file():
            return read_jsonl(folder / name)
    found = sorted({p.name.split(".")[0] for p in folder.glob("*.jsonl*")}) if folder.is_dir() else []
    raise CircuitlabError(f"task {task.name!r} has no {split!r} split in {folder} "
                          f"(available: {', '.join(found) or 'none'})")


def _hub_rows(task: Task, split: str) -> list[tuple[str, dict]]:
    name = task.hub_id + (f"/{task.hub_config}" if task.hub_config else "")
    cache_only = cache_only_for_datasets()
    try:
        import datasets

        ds = datasets.load_dataset(task.hub_id, task.hub_config, split=split)
        return [(f"{name} {split} row {i}", dict(row)) for i, row in enumerate(ds)]
    except Exception as e:  # offline, unknown split, ...: one line for the user
        why = "the hub cannot be reached and it is not in the local cache" if cache_only else (
            f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
        raise CircuitlabError(f"could not load {name} split {split!r} from the Hugging Face hub ({why}); "
                              "use local files with --data-dir DIR or CIRCUITLAB_DATA") from None


def _rows(task: Task, split: str, data_dir=None) -> list[tuple[str, dict]]:
    if task.source is not None:
        rows = task.source(split)
    elif (path := resolve_data_dir(data_dir)) is not None:
        rows = _local_rows(task, split, path)
    elif task.hub_id is None:
        raise CircuitlabError(f"task {task.name!r} has no hub dataset; give --data-dir")
    else:
        rows = _hub_rows(task, split)
    if not rows:
        raise CircuitlabError(f"task {task.name!r} split {split!r} has no rows")
    return rows


def load_rows(task: Task, split: str, data_dir=None) -> list[dict]:
    """The raw rows of one split, in file (or hub) order."""
    return [row for _, row in _rows(task, split, data_dir)]


def read_docs(task: Task, split: str, data_dir=None, limit: int | None = None) -> list[Doc]:
    """The documents of one split (the first `limit` of them if given); bad rows raise CircuitlabError."""
    if limit is not None and limit < 1:
        raise CircuitlabError(f"limit must be a positive number, got {limit}")
    docs = []
    for i, (where, row) in enumerate(_rows(task, split, data_dir)[:limit]):
        try:
            doc = task.to_doc(row, i)
        except KeyError as e:
            raise CircuitlabError(f"{where}: missing field {e.args[0]!r} for task {task.name!r}") from None
        except (TypeError, ValueError, AttributeError, IndexError) as e:
            raise CircuitlabError(f"{where}: bad row for task {task.name!r} ({' '.join(str(e).split())})") from None
        if not 0 <= doc.gold < len(doc.choices):
            raise CircuitlabError(f"{where}: gold {doc.gold} out of range for {len(doc.choices)} choices")
        docs.append(doc)
    return docs


def data_fingerprint(docs: list[Doc]) -> str:
    """A short hash of exactly what was scored, so results record which data they came from."""
    payload = json.dumps([[d.index, d.prompt, list(d.choices), d.gold] + ([d.corrupted] if d.corrupted else [])
                          for d in docs], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
