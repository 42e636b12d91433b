"""lm-evaluation-harness task files made from circuitlab's own task definitions.

`write_task_files(out, config, data_dir)` writes into `out` one YAML task per circuitlab task
(`circuitlab_<task>.yaml`, all tagged `circuitlab`) and a `utils.py` that the YAMLs' `!function` tags
load. Each YAML points lm-eval's `json` loader at the task's local data file
(`<data_dir>/<task>/<split>.jsonl[.gz]`, hub schema), or without a data directory at the task's hub
dataset, the one circuitlab itself would load; a task with rows of its own (the packaged `capitals`)
gets its split's rows written beside the YAMLs, under `data/`. `utils.py` turns every row into
circuitlab's `Doc` with the task's own `to_doc` (`docs_processor`), so lm-eval's context is the
doc's prompt and its continuations are the doc's choices, character for character: the choices
already start with their space, hence `target_delimiter: ""`.

lm-eval then sends the same (context, continuation) requests as `circuitlab eval --protocol paper`
and scores them as `circuitlab.evaluate.scoring` does (which follows lm-eval: context + continuation encoded
together, the tokenizer's own special tokens, the context's trailing spaces moved to the
continuation; first index on ties; acc_norm divides by the continuation's length in characters,
space included). mcc and f1 are aggregated by circuitlab's own functions (`mcc`, `f1`), where the
first choice (" yes") is the positive class. The `official` protocol (lm-eval 0.3's separate
encoding, tie rules and five HellaSwag letters) cannot be expressed in a task file.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from circuitlab import __version__
from circuitlab.core.errors import CircuitlabError, ConfigError
from circuitlab.core.io import check_writable, write_dir_atomic, write_text_atomic
from circuitlab.core.settings import check_settings, setting
from circuitlab.evaluate.metrics import f1_binary, matthews_corrcoef
from circuitlab.tasks import TASK_NAMES, TASKS, Doc, Task, data_fingerprint, load_docs, load_rows, resolve_data_dir

PREFIX = "circuitlab_"  # lm-eval task name = PREFIX + circuitlab task name
TAG = "circuitlab"  # `--tasks circuitlab` runs them all


def _names(text: str) -> tuple[str, ...]:
    """"sst2,boolq" -> ("sst2", "boolq"): empty entries and repeats dropped, order kept."""
    return tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))


@dataclass
class LmEvalTasksConfig:
    tasks: tuple[str, ...] = setting(TASK_NAMES, "comma-separated tasks to write", parse=_names, metavar="TASK,...")
    split: str | None = setting(None, "split lm-eval evaluates (default: each task's evaluation split)")

    def __post_init__(self) -> None:
        check_settings(self)
        if isinstance(self.tasks, str):
            self.tasks = _names(self.tasks)
        if not self.tasks:
            raise ConfigError("tasks", "names no task")
        unknown = [n for n in self.tasks if n not in TASKS]
        if unknown:
            raise ConfigError("tasks", f"has unknown task {unknown[0]!r}; choose from {', '.join(TASK_NAMES)}")


# ---------------------------------------------------------------- what lm-eval calls (through utils.py)

def doc_fields(doc: Doc) -> dict:
    """The columns of one processed lm-eval document."""
    return {"index": doc.index, "prompt": doc.prompt, "choices": list(doc.choices), "gold": doc.gold}


def docs_processor(name: str):
    """lm-eval's `process_docs` for task `name`: the split's rows, in order, through circuitlab's `to_doc`
    (row i of the split is doc i, as in `circuitlab.tasks.load_docs`)."""
    task = TASKS[name]

    def process_docs(dataset):
        import datasets

        docs = []
        for i, row in enumerate(dataset):
            try:
                docs.append(doc_fields(task.to_doc(dict(row), i)))
            except KeyError as e:
                raise CircuitlabError(f"task {name!r} row {i}: missing field {e.args[0]!r}") from None
            except (TypeError, ValueError, AttributeError, IndexError) as e:
                raise CircuitlabError(f"task {name!r} row {i}: bad row ({' '.join(str(e).split())})") from None
        return datasets.Dataset.from_list(docs)

    process_docs.__name__ = process_docs.__qualname__ = f"process_{name}"
    return process_docs


def doc_to_text(doc: dict) -> str:
    return doc["prompt"]


def doc_to_choice(doc: dict) -> list[str]:
    return list(doc["choices"])


def doc_to_target(doc: dict) -> int:
    return int(doc["gold"])


def _labels(items) -> tuple[list[int], list[int]]:
    """lm-eval's (gold index, predicted index) pairs as circuitlab's labels: index 0 (" yes") is label 1."""
    golds, preds = zip(*items)
    return [1 - int(g) for g in golds], [1 - int(p) for p in preds]


def mcc(items) -> float:
    """lm-eval aggregation: `circuitlab.evaluate`'s Matthews correlation."""
    return matthews_corrcoef(*_labels(items))


def f1(items) -> float:
    """lm-eval aggregation: `circuitlab.evaluate`'s F1 of the first choice (" yes")."""
    return f1_binary(*_labels(items), positive=1)


# ---------------------------------------------------------------- writing the files

AGGREGATIONS = {"acc": "mean", "acc_norm": "mean", "mcc": "!function utils.mcc", "f1": "!function utils.f1"}


@dataclass(frozen=True)
class TaskSource:
    """Where lm-eval reads one task's split from: YAML lines, plus files to write beside the YAMLs."""

    lines: tuple[str, ...]
    note: str  # for the YAML's header comment
    files: tuple[tuple[str, str], ...] = ()  # (path relative to the output directory, text)


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is YAML's)."""
    return json.dumps(text)


def _local_file(task: Task, split: str, data_dir: Path) -> Path:
    """The file `circuitlab.tasks` reads the split from (it exists: its docs were loaded)."""
    folder = data_dir / task.name
    return next(folder / n for n in (f"{split}.jsonl", f"{split}.jsonl.gz") if (folder / n).is_file())


def _json_lines(split: str, path: Path) -> tuple[str, ...]:
    return ("dataset_path: json", "dataset_kwargs:", "  data_files:", f"    {_q(split)}: {_q(str(path))}")


def task_source(task: Task, split: str, data_dir: Path | None, out: Path) -> TaskSource:
    """Checks that the split exists and every row makes a doc (local data); nothing is written."""
    if task.source is not None:  # rows of its own: written beside the YAMLs
        rows, docs = load_rows(task, split), load_docs(task, split)
        rel = f"data/{task.name}/{split}.jsonl"
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        note = f"circuitlab's own rows, {len(docs)} docs, data fingerprint {data_fingerprint(docs)}"
        return TaskSource(_json_lines(split, out / rel), note, ((rel, text),))
    if data_dir is not None:
        docs = load_docs(task, split, data_dir)  # circuitlab's own errors: no such split, a bad row
        path = _local_file(task, split, data_dir)
        note = f"{len(docs)} docs, data fingerprint {data_fingerprint(docs)}"
        return TaskSource(_json_lines(split, path.resolve()), note)
    if task.hub_id is None:
        raise CircuitlabError(f"task {task.name!r} has no hub dataset; give --data-dir")
    lines = (f"dataset_path: {_q(task.hub_id)}",)
    lines += (f"dataset_name: {_q(task.hub_config)}",) if task.hub_config else ()
    return TaskSource(lines, "the Hugging Face hub, as `circuitlab eval` without --data-dir loads it")


def task_yaml(task: Task, split: str, source: TaskSource) -> str:
    metrics = []
    for m in task.metrics:
        if m not in AGGREGATIONS:
            raise CircuitlabError(f"task {task.name!r}: no lm-eval aggregation for metric {m!r}")
        metrics += [f"  - metric: {m}", f"    aggregation: {AGGREGATIONS[m]}", "    higher_is_better: true"]
    lines = [
        f"# circuitlab {__version__} task {task.name!r}, split {split!r}: written by `circuitlab lm-eval-tasks`;",
        "# regenerate rather than edit. Scores as `circuitlab eval --protocol paper`.",
        f"# data: {source.note}",
        f"task: {PREFIX}{task.name}",
        f"tag: [{TAG}]",
        *source.lines,
        f"test_split: {_q(split)}",
        "output_type: multiple_choice",
        f"process_docs: !function utils.process_{task.name}",
        "doc_to_text: !function utils.doc_to_text",
        "doc_to_choice: !function utils.doc_to_choice",
        "doc_to_target: !function utils.doc_to_target",
        'target_delimiter: ""  # the choices start with their own space',
        'fewshot_delimiter: "\\n\\n"',
        "num_fewshot: 0  # circuitlab evaluates zero-shot",
        "metric_list:",
        *metrics,
        "metadata:",
        "  version: 1.0",
    ]
    return "\n".join(lines) + "\n"


def utils_py(names: tuple[str, ...] = TASK_NAMES) -> str:
    """Every task's processor, not only the ones written now: YAMLs of an earlier run in the same
    directory keep working when a later run rewrites utils.py."""
    processors = "".join(f'process_{n} = docs_processor("{n}")\n' for n in names)
    return (
        f'"""lm-evaluation-harness hooks for circuitlab\'s tasks, written by `circuitlab lm-eval-tasks`\n'
        f"(circuitlab {__version__}); regenerate rather than edit. Prompts, choices and gold answers come from\n"
        'circuitlab\'s own task code (`circuitlab.evaluate.lmeval`, `circuitlab.tasks`)."""\n\n'
        "from circuitlab.evaluate.lmeval import (  # noqa: F401  lm-eval looks these up by name\n"
        "    doc_to_choice, doc_to_target, doc_to_text, docs_processor, f1, mcc,\n)\n\n"
        + processors
    )


def task_files(config: LmEvalTasksConfig, data_dir=None, out: str | Path = ".") -> dict[str, str]:
    """Every file to write (path relative to `out` -> text). Every check happens here; nothing is written."""
    out = Path(out).expanduser().resolve()
    root = resolve_data_dir(data_dir)
    files: dict[str, str] = {}
    for name in config.tasks:
        task = TASKS[name]
        split = config.split or task.eval_split
        source = task_source(task, split, root, out)
        files.update(source.files)
        files[f"{PREFIX}{name}.yaml"] = task_yaml(task, split, source)
    files["utils.py"] = utils_py()
    return files


def write_task_files(out: str | Path, config: LmEvalTasksConfig | None = None, data_dir=None) -> list[Path]:
    """Write the task files into directory `out` (created if missing; other files in it are kept), each
    file atomically; every bad input is refused before anything is written. Returns the YAML paths."""
    config = config or LmEvalTasksConfig()
    out = check_writable(out, kind="dir").resolve()
    files = task_files(config, data_dir, out)

    def fill(folder: Path) -> None:
        for rel, text in files.items():
            write_text_atomic(folder / rel, text)

    if out.exists():
        fill(out)
    else:
        write_dir_atomic(out, fill)  # a new directory appears whole or not at all
    return [out / rel for rel in files if rel.endswith(".yaml")]


def run_lm_eval(argv: list[str]) -> None:
    """lm-evaluation-harness's own command line (`lm_eval ARGV`), in a process where HeadMap is registered with PEFT,
    so `--model hf --model_args pretrained=BASE,peft=ADAPTER` loads a HeadMap adapter as it loads a LoRA. (The
    harness and PEFT are imported here, not at the top: this module's config is read when the CLI starts.)"""
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        raise CircuitlabError("circuitlab lm-eval runs lm-evaluation-harness, which is not installed: "
                              "pip install lm-eval") from None

    from circuitlab.headmap.adapter import check_peft_type
    from circuitlab.headmap.dirs import AdapterDir
    from circuitlab.headmap.tuner import register

    for model in peft_args(argv, "pretrained"):  # before lm-eval starts (and, for a path, asks the hub for it)
        check_local(model, "pretrained", "a model directory (config.json)")
        if Path(model).is_dir():
            from circuitlab.models.dims import check_weight_files, model_config_json

            model_config_json(Path(model) / "config.json")
            check_weight_files(Path(model))
    for adapter in peft_args(argv):
        check_local(adapter, "peft", "an adapter directory")
        if Path(adapter).is_dir():  # a local adapter directory: one line if it is not one PEFT loads
            check_peft_type(AdapterDir.read(adapter))
    register()
    argv_before, sys.argv = sys.argv, ["lm_eval", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = argv_before


def check_local(value: str, key: str, kind: str) -> None:
    """A `key=` model argument that names a path must name a directory that is there: a missing one is otherwise
    taken for a hub id (and asked for, ~30 s offline, then a traceback), a file read as a directory. A hub id
    (`name` or `namespace/name`) is left to lm-eval."""
    path = Path(value).expanduser()
    looks_local = value.startswith(("/", ".", "~")) or value.count("/") > 1 or path.exists()
    if looks_local and not path.exists():
        raise CircuitlabError(f"--model_args {key}={value}: no such directory (a path, not a hub id)")
    if path.exists() and not path.is_dir():
        raise CircuitlabError(f"--model_args {key}={value} is a file, not {kind}")


def peft_args(argv: list[str], key: str = "peft") -> list[str]:
    """The `peft=` (or other `key=`) values among lm_eval's model arguments: `--model_args`/`-a` followed by one or more values (each
    `k=v,k2=v2`, or a JSON object), or `--model_args=...`."""
    values, taking = [], False
    for arg in argv:
        if arg in ("--model_args", "-a"):
            taking = True
        elif arg.startswith("--model_args="):
            values.append(arg.split("=", 1)[1])
            taking = False
        elif taking and not arg.startswith("-"):
            values.append(arg)
        else:
            taking = False
    found = []
    for value in values:
        if value.lstrip().startswith("{"):
            try:
                found += [str(json.loads(value).get(key))] if key in json.loads(value) else []
            except (ValueError, AttributeError):
                pass  # lm_eval says what is wrong with it
            continue
        found += [kv.split("=", 1)[1] for kv in value.split(",") if kv.strip().startswith(f"{key}=")]
    return found
