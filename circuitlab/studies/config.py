"""What `circuitlab reproduce` is asked to do (no torch: the CLI reads it before anything loads)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.protocol import DEFAULT_PROTOCOL, PROTOCOL_NAMES
from circuitlab.core.settings import check_int_or_auto, check_settings, int_list, int_or_auto, setting
from circuitlab.locate.config import ATTENTION, MAX_BATCH_TOKENS
from circuitlab.locate.samples import N_SAMPLES
from circuitlab.tasks import PAPER_TASKS, get_task, resolve_data_dir


def parse_tasks(text: str) -> tuple[str, ...]:
    """`all` (the paper's 13 tasks) or a comma-separated list of task names."""
    names = list(PAPER_TASKS) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise CircuitlabError("no tasks given")
    for name in names:
        get_task(name)  # unknown names fail here, before any work
    return tuple(dict.fromkeys(names))


@dataclass
class ReproduceConfig:
    """Everything that decides a task's result; a finished task is reused only if it matches."""

    samples: int = setting(N_SAMPLES, "samples per task (the paper's 64)", minimum=1)
    heads_per_layer: int | None = setting(None, "default: 8 for 32-head models, else round(H/4)", minimum=1)
    max_docs: int | None = setting(None, "select samples among the first N docs of the split (default: all)",
                                   minimum=1)
    all_docs: int = setting(256, "Figure 7: docs for the all-documents curve", minimum=1)
    random_seeds: tuple[int, ...] = setting((0, 1, 2), "random selections' seeds", parse=int_list)
    max_batch_tokens: int | str = setting("auto", f"padded tokens per forward; auto: what half the free GPU memory "
                                                  f"holds on CUDA, {MAX_BATCH_TOKENS} elsewhere", parse=int_or_auto)

    attention: str = setting("eager", "how the engine computes attention (see locate)", choices=ATTENTION)
    protocol: str = setting(DEFAULT_PROTOCOL, "the paper's text or the official code's (see locate)",
                            choices=PROTOCOL_NAMES)

    def __post_init__(self) -> None:
        check_settings(self)
        check_int_or_auto(self, "max_batch_tokens")

    def key(self, model, task: str, split: str) -> dict:
        """The settings a finished task is reused for. Tokens per forward and the attention kernel change
        float rounding only: "auto" is recorded as MAX_BATCH_TOKENS, which the finished tasks of earlier
        runs recorded, and the attention kernel not at all. The protocol is recorded when it is not
        `paper`, so the tasks finished before it existed are still reused."""
        return {"model": model.name, "fingerprint": model.fingerprint(), "task": task, "split": split,
                **self.key_settings()}

    def key_settings(self) -> dict:
        """`key` without the model and the task: the settings alone, as a finished task records them."""
        tokens = MAX_BATCH_TOKENS if self.max_batch_tokens == "auto" else self.max_batch_tokens
        settings = {k: v for k, v in asdict(self).items()
                    if k != "attention" and not (k == "protocol" and v == "paper")}
        return {**settings, "random_seeds": list(self.random_seeds), "max_batch_tokens": tokens}


def locating_split(task: str, data_dir=None) -> str:
    """`train` when the task has one locally (or data come from the hub), else its evaluation split."""
    t = get_task(task)
    path = resolve_data_dir(data_dir) if t.source is None else None
    if path is None or any((path / t.name / f"train{ext}").is_file() for ext in (".jsonl", ".jsonl.gz")):
        return "train"
    return t.eval_split


@dataclass
class HeldOutConfig:
    """What `circuitlab held-out` masks each selection of a circuit on: Finding 1 out of sample."""

    docs: int = setting(64, "held-out documents per task (the first N of the split)", minimum=1)
    split: str | None = setting(None, "split of the held-out docs (default: the task's evaluation split; the "
                                      "circuits' samples come from train)")
    points: tuple[int, ...] | None = setting(None, "curve points k (heads of layers 0..k masked), e.g. 9,19,29 "
                                                   "(default: the last layer: all masked)", parse=int_list)
    max_batch_tokens: int | str = setting("auto", "padded tokens per forward (see locate)", parse=int_or_auto)

    def __post_init__(self) -> None:
        check_settings(self)
        check_int_or_auto(self, "max_batch_tokens")
