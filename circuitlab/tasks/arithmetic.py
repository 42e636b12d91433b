"""The arithmetic tasks of "Towards Understanding Fine-Tuning Mechanisms of LLMs via Circuit Analysis"
(arXiv 2502.11812): generated prompt -> integer rows, each with a corrupted prompt for patching.

Six generators (`add_sub`, `mul_div`, `sequence`, `lcm`, `function`, `composition`) follow the paper's
code notes. Each row is drawn from a `random.Random(seed)` of its own (never the global state), so a
split is the same on every machine; prompts are deduplicated, and the `test` split (the rows the
paper finds circuits on) is the first `SPLIT_SIZES["test"]` unique rows, `train` the next ones, and
`test_large` (2,000 rows, for comparisons that need more than 500 test rows to resolve a few points) the
ones after those, so no two splits share a prompt and adding `test_large` changed neither of the others.

A corrupted prompt changes only numbers for numbers of the same digit count (or an operator for an
operator), because SmolLM2's tokenizer writes every digit as its own token: the clean and corrupted
prompts then have the same token length, position by position, which activation patching needs. Its
answer (`Row.corrupted_answer`, what the task's rule gives on the corrupted prompt) always differs from
the clean one, so patching it in moves the model away from the clean answer.

The tasks (`ARITHMETIC`, one family in the registry of `circuitlab.tasks`) have docs with one choice,
" <answer>", scored by greedy generation (`exact_match`); `pair_rows` gives the clean/corrupted rows the
edge code reads, with each corrupted prompt's own answer.
"""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache

from circuitlab.core.errors import CircuitlabError
from circuitlab.tasks.docs import Doc, Task

DEFAULT_SEED = 2502  # the paper's arXiv month: any fixed number makes `circuitlab eval` reproducible
SPLIT_SIZES = {"test": 500, "train": 2000, "test_large": 2000}  # drawn in this order: each split's rows depend
# only on the sizes before it
METRICS = ("exact_match",)
CALCULATE = "Calculate the result of the following arithmetic expression and provide only the final answer:"
OPS: dict[str, Callable[[int, int], int]] = {"+": operator.add, "-": operator.sub, "*": operator.mul,
                                             "/": operator.floordiv}
_TRIES = 50  # draws of a corruption before a row is given up (and another row drawn)


@dataclass(frozen=True)
class Row:
    """One generated example: the clean prompt and answer, and the corrupted prompt with its answer."""

    prompt: str
    answer: int
    corrupted: str
    corrupted_answer: int


# ---------------------------------------------------------------- helpers

def digit_range(n: int, low: int = 1) -> range:
    """The numbers (at least `low`) written with as many digits as `n`: same token count under SmolLM2."""
    d = len(str(n))
    return range(max(low, 10 ** (d - 1) if d > 1 else 0), 10 ** d)


def _other(rng: random.Random, n: int, low: int = 1) -> int | None:
    """Another number than `n` with its digit count, or None where there is none."""
    span = digit_range(n, low)
    if len(span) < 2 and n in span:
        return None
    while (m := rng.choice(span)) == n:
        pass
    return m


@lru_cache(maxsize=4096)
def _divisors(n: int) -> tuple[int, ...]:
    small = [i for i in range(1, math.isqrt(n) + 1) if n % i == 0]
    return tuple(sorted(set(small + [n // i for i in small])))


# ---------------------------------------------------------------- one generator per task
# Each takes the row's random generator and returns a Row, or None when this draw has no valid
# corruption (the caller draws again), so every row obeys the same rules.

def add_sub(rng: random.Random) -> Row:
    """`a op b =`, operands 1..100, a >= b (non-negative answers); corrupted: the other operator."""
    a, b = sorted((rng.randint(1, 100), rng.randint(1, 100)), reverse=True)
    op = rng.choice("+-")
    flip = "-" if op == "+" else "+"
    return Row(f"{CALCULATE} {a} {op} {b} =", OPS[op](a, b), f"{CALCULATE} {a} {flip} {b} =", OPS[flip](a, b))


def mul_div(rng: random.Random) -> Row | None:
    """`a * b` (a in 2..200, b in 2..180) or an exact `a / b` (a = b * q, q in 2..200, b in 2..180);
    corrupted: another first operand of a's digit count (for `/` still a multiple of b, so exact)."""
    if rng.random() < 0.5:
        a, b, op = rng.randint(2, 200), rng.randint(2, 180), "*"
        a2 = _other(rng, a, low=2)
    else:
        b, q, op = rng.randint(2, 180), rng.randint(2, 200), "/"
        a, span = b * q, digit_range(b * q)
        quotients = [k for k in range(-(-span.start // b), (span.stop - 1) // b + 1) if k != q]
        a2 = b * rng.choice(quotients) if quotients else None
    if a2 is None:
        return None
    return Row(f"{CALCULATE} {a} {op} {b} =", OPS[op](a, b), f"{CALCULATE} {a2} {op} {b} =", OPS[op](a2, b))


def _sequence_prompt(terms: list[int]) -> str:
    return "Derive the following sequence: " + "".join(f"{t}, " for t in terms).rstrip()


def sequence(rng: random.Random) -> Row | None:
    """Four terms of an arithmetic (start 1..100, step 1..50) or geometric (start 1..50, ratio 2..6)
    sequence -> the fifth; only 250 geometric ones exist, so deduplication leaves them ~10 % of the rows.
    Corrupted: one of the last two terms changed (same digit count); its answer continues the last step
    (t4 + (t4 - t3), or t4 * t4 / t3 for a geometric one, kept an integer), which is not the clean answer."""
    if rng.random() < 0.5:
        s, d = rng.randint(1, 100), rng.randint(1, 50)
        terms = [s + k * d for k in range(5)]
        for _ in range(_TRIES):
            t3, t4 = terms[2], terms[3]
            if rng.random() < 0.5:
                t3 = _other(rng, t3)
            else:
                t4 = _other(rng, t4)
            if 2 * t4 - t3 >= 0:
                return Row(_sequence_prompt(terms[:4]), terms[4], _sequence_prompt(terms[:2] + [t3, t4]), 2 * t4 - t3)
        return None
    s, r = rng.randint(1, 50), rng.randint(2, 6)
    terms = [s * r**k for k in range(5)]
    t3, t4 = terms[2], terms[3]
    choices = [(d, t4) for d in _divisors(t4 * t4) if d != t3 and d in digit_range(t3)]
    choices += [(t3, k * t3) for k in range(1, 10 ** len(str(t4)) // t3 + 1) if k != r and k * t3 in digit_range(t4)]
    if not choices:
        return None
    c3, c4 = rng.choice(choices)
    return Row(_sequence_prompt(terms[:4]), terms[4], _sequence_prompt(terms[:2] + [c3, c4]), c4 * c4 // c3)


def _lcm_pair(rng: random.Random) -> tuple[int, int]:
    a, b = rng.randint(2, 50), rng.randint(2, 200)
    return (a, b) if a <= b else (b, a)


def lcm(rng: random.Random) -> Row | None:
    """One-shot `LCM(a1, b1) = l1, LCM(a, b) =` (pairs from 2..50 and 2..200, smaller first); corrupted:
    another query pair with the same digit counts and another LCM (the shot stays)."""
    shot, (a, b) = _lcm_pair(rng), _lcm_pair(rng)
    head = f"LCM({shot[0]}, {shot[1]}) = {math.lcm(*shot)}, "
    for _ in range(_TRIES):
        a2, b2 = rng.choice(digit_range(a, 2)), rng.choice(digit_range(b, 2))
        if math.lcm(a2, b2) != math.lcm(a, b):
            return Row(f"{head}LCM({a}, {b}) =", math.lcm(a, b), f"{head}LCM({a2}, {b2}) =", math.lcm(a2, b2))
    return None


def _function_prompt(a: int, b: int) -> str:
    values = ", ".join(f"y({x}) = {a * x + b}" for x in (1, 2, 3))
    return f"Given the linear function y = ax + b, {values}, y(4) ="


def function(rng: random.Random) -> Row | None:
    """y = ax + b (a in 1..50, b in 1..100) from y(1), y(2), y(3) -> y(4); corrupted: another b of b's
    digit count that keeps the digit counts of y(1..3) (the only numbers in the prompt)."""
    a, b = rng.randint(1, 50), rng.randint(1, 100)
    widths = [len(str(a * x + b)) for x in (1, 2, 3)]
    others = [b2 for b2 in digit_range(b) if b2 != b and [len(str(a * x + b2)) for x in (1, 2, 3)] == widths]
    if not others:
        return None
    b2 = rng.choice(others)
    return Row(_function_prompt(a, b), 4 * a + b, _function_prompt(a, b2), 4 * a + b2)


def _composition_value(a: int, op1: str, b: int, op2: str, c: int) -> int | None:
    """(a op1 b) op2 c, or None where a step goes below zero (answers stay non-negative integers)."""
    inner = OPS[op1](a, b)
    value = OPS[op2](inner, c) if inner >= 0 else -1
    return value if value >= 0 else None


def composition(rng: random.Random) -> Row | None:
    """`(a op1 b) op2 c` with a, b in 1..100, op1 in {+, -}, op2 in {+, -} (c in 1..100) or `*` (c in
    2..20); corrupted: one operand changed (same digit count), the answer non-negative and different."""
    a, b, op1, op2 = rng.randint(1, 100), rng.randint(1, 100), rng.choice("+-"), rng.choice("+-*")
    c = rng.randint(2, 20) if op2 == "*" else rng.randint(1, 100)
    answer = _composition_value(a, op1, b, op2, c)
    if answer is None:
        return None
    for _ in range(_TRIES):
        new = [a, b, c]
        i = rng.randrange(3)
        new[i] = _other(rng, new[i])
        value = _composition_value(new[0], op1, new[1], op2, new[2])
        if value is not None and value != answer:
            clean = f"{CALCULATE} ({a} {op1} {b}) {op2} {c} ="
            return Row(clean, answer, f"{CALCULATE} ({new[0]} {op1} {new[1]}) {op2} {new[2]} =", value)
    return None


GENERATORS: dict[str, Callable[[random.Random], Row | None]] = {
    f.__name__: f for f in (add_sub, mul_div, sequence, lcm, function, composition)}
NAMES: tuple[str, ...] = tuple(GENERATORS)


# ---------------------------------------------------------------- splits

@lru_cache(maxsize=32)
def generate(name: str, n: int, seed: int = DEFAULT_SEED) -> tuple[Row, ...]:
    """`n` rows with distinct prompts, drawn in order from `random.Random(seed)`."""
    if name not in GENERATORS:
        raise CircuitlabError(f"{name!r} is not an arithmetic task; choose one of {', '.join(NAMES)}")
    rng, seen, rows = random.Random(seed), set(), []
    for _ in range(100 * n):
        row = GENERATORS[name](rng)
        if row is not None and row.prompt not in seen:
            seen.add(row.prompt)
            rows.append(row)
            if len(rows) == n:
                return tuple(rows)
    raise CircuitlabError(f"task {name!r} has fewer than {n} distinct prompts")


def split_rows(name: str, split: str, seed: int | None = None) -> tuple[Row, ...]:
    """One split: the generated rows in `SPLIT_SIZES`' order (test, then train, then test_large)."""
    if split not in SPLIT_SIZES:
        raise CircuitlabError(f"task {name!r} has no {split!r} split (available: {', '.join(SPLIT_SIZES)})")
    sizes = list(SPLIT_SIZES.values())
    k = list(SPLIT_SIZES).index(split)
    start = sum(sizes[:k])
    rows = generate(name, start + sizes[k], DEFAULT_SEED if seed is None else seed)
    return rows[start:start + sizes[k]]


def source(name: str) -> Callable[[str], list[tuple[str, dict]]]:
    """The task's row source for `circuitlab.tasks.Task.source`: split -> [(where, row)]."""
    return lambda split: [(f"{name} {split} row {i}", asdict(r)) for i, r in enumerate(split_rows(name, split))]


def to_doc(row: dict, index: int) -> Doc:
    """A row as a one-choice Doc: the choice is " <answer>" (what fine-tuning trains on after the
    prompt and `exact_match` compares the greedy continuation with)."""
    return Doc(row["prompt"], (f" {row['answer']}",), 0, index, corrupted=row["corrupted"])


def pair_rows(name: str, split: str, seed: int | None = None) -> list[dict]:
    """Rows `{"clean", "corrupted", "answer", "corrupted_answer"}` (answers with their leading space);
    `seed` draws other rows than the registered ones."""
    return [{"clean": r.prompt, "corrupted": r.corrupted, "answer": f" {r.answer}",
             "corrupted_answer": f" {r.corrupted_answer}"}
            for r in split_rows(name, split, DEFAULT_SEED if seed is None else seed)]


ARITHMETIC: tuple[Task, ...] = tuple(Task(n, None, None, "test", METRICS, to_doc, source=source(n)) for n in NAMES)
