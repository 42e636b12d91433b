"""Which documents a run trains on, holds out and evaluates on (no torch: checked before any model loads)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from circuitlab.core.errors import CircuitlabError
from circuitlab.tasks import Doc, load_docs, separate

HELD_OUT_FRACTION = 0.1  # the official code's `train_test_split(test_size=0.1, seed=...)`
VALIDATION_HELD_OUT = ("arc_easy", "arc_challenge", "openbookqa")  # have validation and test docs


def held_out_split(n: int, seed: int, fraction: float = HELD_OUT_FRACTION) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices) of n docs, as `datasets.Dataset.train_test_split(test_size=fraction,
    seed=seed)` draws them (the official code's split): one numpy permutation, its first ceil(fraction * n)
    held out (the float product, as `datasets` computes it), the rest trained on."""
    n_test = math.ceil(fraction * n)
    perm = np.random.default_rng(seed).permutation(n).tolist()
    return perm[n_test:], perm[:n_test]


def held_out_docs(task, docs: list[Doc], cfg, data_dir=None) -> tuple[list[Doc], list[Doc]]:
    """(docs to train on, held-out docs) under `cfg`'s protocol: all docs and none without held-out data;
    else the validation split for the tasks that evaluate on test (ARC-e, ARC-c, OBQA), or 10 % of the
    docs by `held_out_split` with the run's seed, training on the other 90 % (in their original order)."""
    if not docs or not cfg.rules.held_out:
        return docs, []
    if task.name in VALIDATION_HELD_OUT and cfg.train_split != "validation":
        return docs, load_docs(task, "validation", data_dir)
    train, held = held_out_split(len(docs), cfg.seed)
    return [docs[i] for i in sorted(train)], [docs[i] for i in sorted(held)]


def eval_docs(task, split: str, data_dir, cfg, train_docs: list[Doc]) -> list[Doc]:
    """The evaluation docs; when training used the same split, the docs after the training ones (and
    after those held out of them)."""
    docs = load_docs(task, split, data_dir)
    if split == cfg.train_split:
        used = {d.index for d in train_docs} if cfg.spec.trains else set(range(cfg.max_train or 0))
        docs = [d for d in docs if d.index not in used]
    docs = docs[: cfg.eval_limit] if cfg.eval_limit else docs
    if not docs:
        raise CircuitlabError(f"no {task.name} {split} documents left to evaluate on")
    return docs


def with_separator(docs: list[Doc], separator: str) -> list[Doc]:
    """The docs as the task writes them (`task`: the answer follows the prompt after a space), or with the
    answer on a new line (`newline`: `prompt + "\n" + answer`, CircuitLoRA's code), for training and
    evaluation alike, so a run is scored in the format it was trained on."""
    out = []
    for d in docs:
        prompt, *choices = separate(separator, d.prompt, *d.choices)
        out.append(dataclasses.replace(d, prompt=prompt, choices=tuple(choices)))
    return out
