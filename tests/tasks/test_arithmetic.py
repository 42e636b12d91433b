"""The arithmetic tasks (circuitlab.tasks.arithmetic): generated rows, clean/corrupted pairs, exact_match."""

import json
import math
import re
from fractions import Fraction

import pytest
import torch

from circuitlab.tasks import arithmetic as ar
from circuitlab.tasks import pairs
from circuitlab.evaluate import evaluate
from circuitlab.evaluate.generation import (
    EXTRA_TOKENS,
    generate_answers,
    is_exact_match,
    leading_integer,
)
from circuitlab.models import embedded_tokenizer
from circuitlab.tasks import TASK_NAMES, TASKS, get_task, load_docs
from tests.helpers import one_line_error, run_cli

N = "(\\d+)"
OP = "([-+*/])"
PATTERNS = {
    "add_sub": rf": {N} {OP} {N} =$",
    "mul_div": rf": {N} {OP} {N} =$",
    "composition": rf": \({N} {OP} {N}\) {OP} {N} =$",
    "sequence": rf"^Derive the following sequence: {N}, {N}, {N}, {N},$",
    "lcm": rf"^LCM\({N}, {N}\) = {N}, LCM\({N}, {N}\) =$",
    "function": rf"y\(1\) = {N}, y\(2\) = {N}, y\(3\) = {N}, y\(4\) =$",
}


def apply(a: int, op: str, b: int) -> int:
    if op == "/":
        assert a % b == 0, f"{a} / {b} is not exact"
        return a // b
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def sequence_kind(t: list[int]) -> str:
    if t[1] - t[0] == t[2] - t[1] == t[3] - t[2]:
        return "arithmetic"
    assert t[1] % t[0] == 0 and all(t[i + 1] == t[i] * (t[1] // t[0]) for i in range(3)), t
    return "geometric"


def expected(task: str, prompt: str, kind: str | None = None):
    """The answer recomputed from the prompt text. `kind` (a clean sequence's): read a corrupted
    sequence by continuing its last step, as the corruption's answer is defined."""
    m = re.search(PATTERNS[task], prompt)
    assert m, (task, prompt)
    g = [int(x) if x.isdigit() else x for x in m.groups()]
    if task in ("add_sub", "mul_div"):
        return apply(*g)
    if task == "composition":
        return apply(apply(g[0], g[1], g[2]), g[3], g[4])
    if task == "lcm":
        assert g[2] == g[0] * g[1] // math.gcd(g[0], g[1]), prompt  # the shot is right too
        return g[3] * g[4] // math.gcd(g[3], g[4])
    if task == "function":
        assert g[1] - g[0] == g[2] - g[1], prompt
        return g[2] + (g[2] - g[1])
    if kind is None:
        kind = sequence_kind(g)
        return g[3] + g[1] - g[0] if kind == "arithmetic" else g[3] * (g[1] // g[0])
    return 2 * g[3] - g[2] if kind == "arithmetic" else Fraction(g[3] * g[3], g[2])


def test_registered_apart_from_the_benchmarks():
    assert set(ar.NAMES) == {"add_sub", "mul_div", "sequence", "lcm", "function", "composition"}
    assert not set(ar.NAMES) & set(TASK_NAMES)  # no clash, and reproduce / lm-eval export do not see them
    for name in ar.NAMES:
        task = get_task(name)
        assert TASKS[name] is task and task.metrics == ("exact_match",) and task.eval_split == "test"


def test_same_seed_same_rows_other_seed_other_rows():
    draw = ar.generate.__wrapped__  # not the cache: really drawn twice
    for name in ar.NAMES:
        assert draw(name, 200, 7) == draw(name, 200, 7)
        assert draw(name, 200, 7) != draw(name, 200, 8)
    assert ar.split_rows("add_sub", "test") == ar.split_rows("add_sub", "test", seed=ar.DEFAULT_SEED)
    assert ar.split_rows("add_sub", "test", seed=1) != ar.split_rows("add_sub", "test")


def test_splits_have_their_sizes_distinct_prompts_and_no_shared_prompt():
    for name in ar.NAMES:
        test, train, large = (load_docs(name, s) for s in ("test", "train", "test_large"))
        assert (len(test), len(train), len(large)) == (500, 2000, 2000)
        assert [d.index for d in test] == list(range(len(test)))
        prompts = [d.prompt for d in test + train + large]
        assert len(set(prompts)) == len(prompts)
        # drawn after the others: one stream of 4,500 distinct rows, cut in the splits' order
        assert ar.split_rows(name, "test") + ar.split_rows(name, "train") + ar.split_rows(name, "test_large") \
            == ar.generate.__wrapped__(name, 4500, ar.DEFAULT_SEED)
    with pytest.raises(ar.CircuitlabError, match="no 'validation' split"):
        load_docs("add_sub", "validation")


def test_answers_recomputed_from_the_prompt_text():
    for name in ar.NAMES:
        for split in ar.SPLIT_SIZES:
            rows = ar.split_rows(name, split)
            for doc, row in zip(load_docs(name, split), rows):
                answer = expected(name, doc.prompt)
                assert answer >= 0 and doc.choices == (f" {answer}",) and doc.gold == 0, doc
                assert doc.corrupted == row.corrupted and row.answer == answer
                kind = sequence_kind(
                    [int(x) for x in re.findall(r"\d+", doc.prompt)]) if name == "sequence" else None
                wrong = expected(name, doc.corrupted, kind)
                assert wrong != answer and wrong == row.corrupted_answer, (doc, row)


def test_corrupted_prompts_have_the_token_length_and_another_answer(tiny):
    smollm2 = embedded_tokenizer()
    for tok in (smollm2, tiny.tokenizer):
        for name in ar.NAMES:
            docs = load_docs(name, "test")
            clean = tok([d.prompt for d in docs]).input_ids
            corrupted = tok([d.corrupted for d in docs]).input_ids
            for d, a, b in zip(docs, clean, corrupted):
                assert len(a) == len(b) and a != b, (d.prompt, d.corrupted)
            if name == "lcm":  # the shot stays; only the query pair changes
                assert all(d.prompt.split(", LCM(")[0] == d.corrupted.split(", LCM(")[0] for d in docs)


def test_pairs_rows():
    rows = pairs("mul_div", "test")
    docs = load_docs("mul_div", "test")
    assert [{k: r[k] for k in ("clean", "corrupted", "answer")} for r in rows] == \
        [{"clean": d.prompt, "corrupted": d.corrupted, "answer": d.target} for d in docs]
    for r in rows[:50]:  # the corrupted answer is the task's rule on the corrupted prompt (a op b =)
        a, op, b = re.search(r"(\d+) ([*/]) (\d+) =$", r["corrupted"]).groups()
        assert r["corrupted_answer"] == f" {int(a) * int(b) if op == '*' else int(a) // int(b)}"
    assert pairs("mul_div", "test", seed=3) != rows
    with pytest.raises(ar.CircuitlabError, match="no corrupted prompts"):
        pairs("capitals", "validation")


def test_exact_match_rule():
    assert is_exact_match(" 42", " 42") and is_exact_match("42\n", " 42") and is_exact_match(" 42. So", " 42")
    assert not is_exact_match(" 421", " 42") and not is_exact_match(" 4 2", " 42")
    assert not is_exact_match(" -42", " 42") and not is_exact_match(" forty", " 42")
    assert leading_integer("  007 x") == 7 and leading_integer("") is None


def greedy_by_hand(model, prompt: str, target: str) -> str:
    """An independent greedy decoder: one full forward per token on the unpadded sequence, argmax."""
    tok = model.tokenizer
    ids = tok(prompt).input_ids
    budget = len(tok(prompt + target).input_ids) - len(ids) + EXTRA_TOKENS
    out = []
    with torch.no_grad():
        for _ in range(budget):
            t = int(model.hf_model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            if t == tok.eos_token_id or "\n" in tok.decode([t]):
                break
            out.append(t)
    return tok.decode(out, skip_special_tokens=True)


@pytest.fixture(scope="module")
def memorizer(tiny):
    """tiny-llama as a plain HF model (no bridge: it decodes with its KV cache), trained a little on the answers
    (and a newline) of three add_sub docs, so that some of its greedy answers are right and others wrong."""
    from circuitlab.models.plain import load_plain

    model = load_plain("tiny-llama")
    hf = model.hf_model
    hf.train()
    opt = torch.optim.Adam(hf.parameters(), lr=1e-2)
    batch = []
    for d in load_docs("add_sub", "test", limit=3):
        ids = torch.tensor([tiny.tokenizer(d.prompt + d.target + "\n").input_ids])
        labels = ids.clone()
        labels[0, :len(tiny.tokenizer(d.prompt).input_ids)] = -100  # the loss on the answer only
        batch.append((ids, labels))
    for _ in range(40):
        opt.zero_grad()
        sum(hf(input_ids=x, labels=y).loss for x, y in batch).backward()
        opt.step()
    hf.eval()
    return model


@pytest.mark.parametrize("which", ["tiny", "memorizer"])
def test_exact_match_agrees_with_a_greedy_loop(which, request, one_thread):
    model = request.getfixturevalue(which)
    docs = load_docs("add_sub", "test", limit=6) + load_docs("sequence", "test", limit=2)
    gens = generate_answers(model, docs, batch_size=3, progress=False)  # batches pad to different widths
    by_hand = [greedy_by_hand(model, d.prompt, d.target) for d in docs]
    assert [g.generated for g in gens] == by_hand
    # the plain model decodes with its KV cache by default (one new token per forward after the prompt), the bridged
    # one cannot (the bridge does not fill the cache) and falls back to full forwards; forced full forwards agree
    widths = []
    hook = model.hf_model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        assert [g.generated for g in generate_answers(model, docs[:1], progress=False)] == by_hand[:1]
    finally:
        hook.remove()
    assert len(widths) > 1 and (widths[1:] == [1] * (len(widths) - 1)) == (which == "memorizer"), widths
    full = generate_answers(model, docs, batch_size=3, progress=False, cache=False)
    assert [g.generated for g in full] == by_hand
    flags = [leading_integer(t) == int(d.target) for t, d in zip(by_hand, docs)]
    assert [g.correct for g in gens] == flags
    if which == "memorizer":
        assert 0 < sum(flags) < len(flags)  # both outcomes are exercised
    result = evaluate(model, "add_sub", split="test", docs=docs[:6], batch_size=4, progress=False)
    assert result.metrics == {"exact_match": sum(flags[:6]) / 6}
    assert [p.generated for p in result.predictions] == by_hand[:6]
    assert [p.pred for p in result.predictions] == [0 if f else -1 for f in flags[:6]]


def test_locating_samples_are_the_lowest_loss_docs(tiny, one_thread):
    from circuitlab.locate.selection import locating_samples
    from circuitlab.evaluate.scoring import score_docs

    samples, info = locating_samples(tiny, "add_sub", n=4, max_docs=12, progress=False)
    docs = load_docs("add_sub", "train", limit=12)
    losses = {s.index: s.target_loss for s in score_docs(tiny, docs, progress=False)}
    lowest = sorted(losses, key=lambda i: (losses[i], i))[:4]
    assert [s.index for s in samples] == lowest and info.name == "add_sub"
    assert all(s.target == docs[s.index].target for s in samples)


def test_cli_pairs_writes_jsonl_and_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    code, stdout, _ = run_cli(capsys, "pairs", "--task", "lcm", "--split", "test", "--out", out)
    assert code == 0 and "500" in stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == pairs("lcm", "test")
    bad = tmp_path / "bad.jsonl"
    one_line_error(capsys, ["pairs", "--task", "nope", "--out", bad], "unknown task 'nope'")
    one_line_error(capsys, ["pairs", "--task", "capitals", "--split", "train", "--out", bad], "no corrupted prompts")
    one_line_error(capsys, ["pairs", "--task", "capitals", "--seed", "1", "--out", bad], "generated tasks only")
    assert not bad.exists()
