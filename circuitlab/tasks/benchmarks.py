"""The HeadMap paper's 13 benchmarks: each turns a raw dataset row (hub schema) into a scored document.

Prompts, choices and gold labels follow the paper's protocol (spec/tasks.md), so scores are comparable with
its tables; the text helpers are lm-evaluation-harness's.
"""

from __future__ import annotations

import re

from circuitlab.tasks.docs import Doc, Task

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


# ---------------------------------------------------------------- the tasks

_BASE = ("acc", "acc_norm")
BENCHMARKS: tuple[Task, ...] = (
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
)
