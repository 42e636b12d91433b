"""Packing rows into forwards, as pure functions of the rows' lengths (no model)."""

import random

import pytest

from circuitlab.locate.packing import SLACK, forwards, pack


def check(packs, rows, length, max_tokens):
    """Every row once; rows of a line end to end inside its width; forwards within the token limit."""
    placed = [r for p in packs for r in p.rows]
    assert sorted(placed) == sorted(rows)
    for p in packs:
        assert p.length == [length(r) for r in p.rows]
        for line in range(p.n_lines):
            spans = sorted((s, s + n) for ln, s, n in zip(p.line, p.start, p.length) if ln == line)
            assert spans and spans[0][0] == 0 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
            assert spans[-1][1] <= p.width
        assert p.tokens <= max_tokens or p.n_lines == 1  # a line longer than the limit goes alone


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("max_tokens", [16, 64, 4096])
def test_every_row_placed_once_within_the_limits(seed, max_tokens):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 40) for _ in range(rng.randint(1, 30))]
    rows = [(s, c) for s in range(len(lengths)) for c in range(3)]
    length = lambda r: lengths[r[0]]  # noqa: E731
    check(pack(rows, length, max_tokens), rows, length, max_tokens)


def test_packing_picks_the_layout_with_fewer_padded_tokens():
    # Rows of 10, 11 and 1 tokens: one per line costs 1 + 2 x 11 = 23 tokens (the 1 alone: padding it
    # to 10 would break the slack); end to end, the 1 fills the 10's line: 2 lines x 11 = 22.
    lengths = [10, 11, 1]
    one_per_line = forwards([[r] for r in (2, 0, 1)], lengths.__getitem__, 4096, fill_limit=True)
    assert sum(p.tokens for p in one_per_line) == 23
    packs = pack([0, 1, 2], lengths.__getitem__, 4096)
    assert sum(p.tokens for p in packs) == 22
    assert sorted(sum(n for ln, n in zip(p.line, p.length) if ln == i) for p in packs for i in range(p.n_lines)) \
        == [11, 11]
    # Equal lengths: one row per line has no padding at all, and wins the tie.
    same = pack(list(range(6)), lambda r: 10, 4096)
    assert sum(p.tokens for p in same) == 60 and all(len(set(p.line)) == len(p.rows) for p in same)


def test_one_row_per_line_keeps_padding_within_the_slack():
    lengths = [10, 11, 30, 31, 32, 90]
    groups = forwards([[r] for r in range(len(lengths))], lengths.__getitem__, 4096, fill_limit=True)
    for p in groups:
        real = sum(p.length)
        assert p.tokens <= SLACK * real or len(p.rows) == 1
