"""The benchmark tasks: each turns a raw dataset row into a scored multiple-choice document.

Prompts, choices and gold labels follow the HeadMap paper's protocol (spec/tasks.md), so scores are
comparable with its tables. Rows come from local JSON Lines files (`<data_dir>/<task>/<split>.jsonl`
or `.jsonl.gz`, data_dir given explicitly or by the env var CIRCUITLAB_DATA), else from the
Hugging Face hub. Two more kinds of task need neither: the embedded `capitals` task (package data)
and a custom task given as a path to a `.jsonl` file of ready-made `{prompt, choices, gold}` rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Callable

from circuitlab import arithmetic
from circuitlab.errors import CircuitlabError
from circuitlab.io import parse_jsonl, read_jsonl


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
        return load_docs(self, split, data_dir, limit)


# ---------------------------------------------------------------- text helpers (from lm-eval)

def _pre(text: str) -> str:
    """HellaSwag cleanup: drop WikiHow's [header]/[step]... markers."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _detok(s: str) -> str:
    """Undo the Penn-Treebank-style spacing of MRPC and SST-2."""
    s = s.replace(" n't", "n't").replace(" )", ")").replace("( ", "(")
    s = s.replace('" ', '"').replace(' "', '"')
    return re.sub(r" (['.,])", r"\1", s)


def _lettered(question: str, labels: list[str], texts: list[str], gold_label: str, index: int) -> Doc:
    """`question (A) text (B) text ...\\nAnswer:` with choices ` A`, ` B`, ...; shared by ARC and OBQA."""
    options = "".join(f" ({l}) {t}" for l, t in zip(labels, texts))
    prompt = f"Please choose the correct answer to the question: {question}{options}\nAnswer:"
    return Doc(prompt, tuple(f" {l}" for l in labels), labels.index(gold_label), index)


# ---------------------------------------------------------------- one to_doc per task

def boolq(row: dict, index: int) -> Doc:
    # super_glue has `label` (1 = yes); google/boolq has `answer` (True = yes).
    yes = row["label"] if "label" in row else row["answer"]
    if yes not in (0, 1):  # also rejects super_glue's unlabelled test rows (-1)
        raise ValueError(f"boolq label must be 0/1 or true/false, got {yes!r}")
    prompt = f"Please answer the following question with yes or no: {row['question']}?\nAnswer:"
    return Doc(prompt, (" yes", " no"), 0 if yes else 1, index)


def piqa(row: dict, index: int) -> Doc:
    prompt = (f"Please choose the correct solution to the question: {row['goal']}\n\n"
              f"(A) {row['sol1']}\n(B) {row['sol2']}\n\nCorrect solution:")
    return Doc(prompt, (" A", " B"), int(row["label"]), index)


def siqa(row: dict, index: int) -> Doc:
    prompt = (f"Please choose the correct answer to the question: {row['context']} {row['question']}\n"
              f"(A) {row['answerA']} (B) {row['answerB']} (C) {row['answerC']}\nAnswer:")
    return Doc(prompt, (" A", " B", " C"), int(row["label"]) - 1, index)


def hellaswag(row: dict, index: int) -> Doc:
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    options = "".join(f" ({'ABCD'[i]}) {_pre(e)}" for i, e in enumerate(row["endings"]))
    prompt = ("Please choose the correct ending to complete the given sentence: "
              f"{_pre(row['activity_label'] + ': ' + ctx)}{options}\n\nAnswer:")
    return Doc(prompt, tuple(f" {'ABCD'[i]}" for i in range(len(row["endings"]))), int(row["label"]), index)


def winogrande(row: dict, index: int) -> Doc:
    prompt = ("Please choose the correct answer to fill in the blank to complete the given sentence: "
              f"{row['sentence']}\n(A) {row['option1']} (B) {row['option2']}\nAnswer:")
    return Doc(prompt, (" A", " B"), int(row["answer"]) - 1, index)


def arc(row: dict, index: int) -> Doc:
    # Some ARC rows label their choices 1..4 instead of A..D; the protocol maps them to letters.
    letter = lambda l: "ABCDE"[int(l) - 1] if l in ("1", "2", "3", "4", "5") else l  # noqa: E731
    labels = [letter(l) for l in row["choices"]["label"]]
    return _lettered(row["question"], labels, row["choices"]["text"], letter(row["answerKey"]), index)


def openbookqa(row: dict, index: int) -> Doc:
    c = row["choices"]
    return _lettered(row["question_stem"], list(c["label"]), c["text"], row["answerKey"].strip(), index)


def cola(row: dict, index: int) -> Doc:
    prompt = f"{row['sentence']}\nQuestion: Does this sentence make sense?\nAnswer:"
    return Doc(prompt, (" yes", " no"), 1 - row["label"], index)  # label 1 (acceptable) -> " yes"


def mrpc(row: dict, index: int) -> Doc:
    prompt = (f"Sentence 1: {_detok(row['sentence1'])}\nSentence 2: {_detok(row['sentence2'])}\n"
              "Question: Do both sentences mean the same thing?\nAnswer:")
    return Doc(prompt, (" yes", " no"), 1 - row["label"], index)  # label 1 (paraphrase) -> " yes"


def rte(row: dict, index: int) -> Doc:
    prompt = f"{row['sentence1']}\nQuestion: {row['sentence2']} True or False?\nAnswer:"
    return Doc(prompt, (" True", " False"), row["label"], index)  # label 0 (entailment) -> " True"


def sst2(row: dict, index: int) -> Doc:
    prompt = f"{_detok(row['sentence'])}\nQuestion: Is this sentence positive or negative?\nAnswer:"
    return Doc(prompt, (" positive", " negative"), 1 - row["label"], index)  # label 1 -> " positive"


def wnli(row: dict, index: int) -> Doc:
    prompt = f"{row['sentence1']}\nQuestion: {row['sentence2']} True or False?\nAnswer:"
    return Doc(prompt, (" True", " False"), 1 - row["label"], index)  # label 1 (entailment) -> " True"


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


# ---------------------------------------------------------------- embedded task: capitals

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


# ---------------------------------------------------------------- registry

_BASE = ("acc", "acc_norm")
TASKS: dict[str, Task] = {t.name: t for t in [
    Task("boolq", "super_glue", "boolq", "validation", _BASE, boolq, official_tie_second=True),
    Task("piqa", "piqa", None, "validation", _BASE, piqa),
    Task("siqa", "social_i_qa", None, "validation", _BASE, siqa),
    Task("hellaswag", "Rowan/hellaswag", None, "validation", _BASE, hellaswag,
         official_choices=(" A", " B", " C", " D", " E")),
    Task("winogrande", "winogrande", "winogrande_xl", "validation", _BASE, winogrande),
    Task("arc_easy", "allenai/ai2_arc", "ARC-Easy", "test", _BASE, arc),
    Task("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", "test", _BASE, arc),
    Task("openbookqa", "openbookqa", "main", "test", _BASE, openbookqa),
    Task("cola", "nyu-mll/glue", "cola", "validation", _BASE + ("mcc",), cola, official_tie_second=True),
    Task("mrpc", "nyu-mll/glue", "mrpc", "validation", _BASE + ("f1",), mrpc, official_tie_second=True),
    Task("rte", "nyu-mll/glue", "rte", "validation", _BASE, rte),
    Task("sst2", "nyu-mll/glue", "sst2", "validation", _BASE, sst2, official_tie_second=True),
    Task("wnli", "nyu-mll/glue", "wnli", "validation", _BASE, wnli, official_tie_second=True),
    Task("capitals", None, None, "validation", _BASE, capitals, source=_capitals_source),
]}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)
# The generated arithmetic tasks (circuitlab.arithmetic) are registered after TASK_NAMES, which stays the
# list of multiple-choice benchmarks that `reproduce`, the lm-eval export and `circuitlab tasks` go through.
TASKS.update({n: Task(n, None, None, "test", arithmetic.METRICS, arithmetic.to_doc, source=arithmetic.source(n))
              for n in arithmetic.NAMES})


def get_task(name: str) -> Task:
    """A registered task by name, or a custom task from a path ending in .jsonl."""
    if name in TASKS:
        return TASKS[name]
    if name.endswith(".jsonl"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise CircuitlabError(f"custom task file {name} does not exist")
        source = lambda split: read_jsonl(path)  # noqa: E731  every split is the one file
        return Task(path.stem, None, None, "validation", _BASE, custom, source=source)
    raise CircuitlabError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}, "
                          "or give a path to a .jsonl file of {prompt, choices, gold} rows")


# ---------------------------------------------------------------- loading

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
    from circuitlab.models import hub

    name = task.hub_id + (f"/{task.hub_config}" if task.hub_config else "")
    cache_only = hub.cache_only_for_datasets()
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


def load_docs(task: Task | str, split: str, data_dir=None, limit: int | None = None) -> list[Doc]:
    """The documents of one split (the first `limit` of them if given); bad rows raise CircuitlabError."""
    task = get_task(task) if isinstance(task, str) else task
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
