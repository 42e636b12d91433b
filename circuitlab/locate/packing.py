"""Laying rows of different lengths out in forwards: pure functions of the lengths.

A row is one sequence to run (a sample, or a sample with a candidate head masked). A forward is a
batch of lines of one width; a line holds one row, or several rows end to end (each restarting its
positions and attending only to itself, see `blocks.packed_inputs`). `pack` picks whichever of the
two layouts computes fewer padded tokens, never putting more than `max_tokens` tokens in a forward
(unless one row alone is longer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

SLACK = 1.1  # one row per line: at most 10 % more padded than real tokens per forward


@dataclass
class Pack:
    """One forward: rows, and where each sits (its line and first position)."""

    n_lines: int
    width: int
    rows: list = field(default_factory=list)  # row keys, in packing order
    line: list[int] = field(default_factory=list)
    start: list[int] = field(default_factory=list)
    length: list[int] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """Padded tokens the forward computes."""
        return self.n_lines * self.width


def pack(rows: Sequence[Hashable], length: Callable[[Hashable], int], max_tokens: int) -> list[Pack]:
    """Rows into forwards, in whichever of two layouts computes fewer padded tokens: one row per
    line, rows sorted by length (padding within SLACK of the real tokens per forward); or rows
    packed end to end, longest first, each into the fullest line with room (lines as wide as the
    longest row)."""
    by_length = sorted(rows, key=lambda r: (length(r), r))
    single = forwards([[r] for r in by_length], length, max_tokens, fill_limit=True)
    width, lines, room = max(map(length, rows)), [], []
    for r in reversed(by_length):
        fits = [i for i, free in enumerate(room) if free >= length(r)]
        if not fits:
            lines.append([])
            room.append(width)
            fits = [len(lines) - 1]
        i = min(fits, key=lambda i: room[i])
        lines[i].append(r)
        room[i] -= length(r)
    lines.sort(key=lambda line: sum(map(length, line)))
    packed = forwards(lines, length, max_tokens, fill_limit=False)
    cost = [sum(p.tokens for p in layout) for layout in (single, packed)]
    return single if cost[0] <= cost[1] else packed


def forwards(lines: list[list], length: Callable[[Hashable], int], max_tokens: int,
             fill_limit: bool) -> list[Pack]:
    """Consecutive lines grouped so lines x widest <= max_tokens (and, with `fill_limit`, padded
    tokens <= SLACK x real tokens)."""
    groups, current, real = [], [], 0
    for line in lines:
        n = sum(map(length, line))
        widest = max([n] + [sum(map(length, c)) for c in current[-1:]])
        tokens = (len(current) + 1) * widest
        if current and (tokens > max_tokens or fill_limit and tokens > SLACK * (real + n)):
            groups.append(current)
            current, real = [], 0
        current.append(line)
        real += n
    groups += [current] if current else []
    packs = []
    for group in groups:
        p = Pack(len(group), max(sum(map(length, line)) for line in group))
        for i, line in enumerate(group):
            at = 0
            for r in line:
                p.rows.append(r)
                p.line.append(i)
                p.start.append(at)
                p.length.append(length(r))
                at += length(r)
        packs.append(p)
    return packs
