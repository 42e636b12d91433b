"""How alike the circuits located on independent sample sets are: descriptive, outside the registered analysis.

A circuit arm's replicates differ because the locating procedure, run on another sample set, picks other heads. How
many heads they share says what those replicates are: were every circuit the same head set, the arm's spread would
be the training seeds' alone; were they no more alike than random sets, "the circuit" would name nothing stable.
Two head sets with k_a and k_b heads in a layer of n heads share k_a k_b / n of them there by chance.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from itertools import combinations


@dataclass(frozen=True)
class Agreement:
    task: str
    circuits: int
    heads: float  # heads in a circuit (the mean, where they differ)
    shared: float  # heads two circuits share, the mean over every pair
    shared_min: int
    shared_max: int
    chance: float  # what two random sets with the same heads per layer share, the mean over the same pairs
    in_all: int  # heads every circuit holds
    in_any: int  # heads at least one circuit holds


def agreement(task: str, head_sets: list[list[tuple[int, int]]], n_heads: int) -> Agreement | None:
    """The pairwise overlap of the head sets (each a list of (layer, head)), against chance; None for fewer than
    two."""
    if len(head_sets) < 2:
        return None
    sets = [set(map(tuple, h)) for h in head_sets]
    per_layer = [Counter(layer for layer, _ in s) for s in sets]
    pairs = list(combinations(range(len(sets)), 2))
    shared = [len(sets[a] & sets[b]) for a, b in pairs]
    chance = [sum(per_layer[a][layer] * per_layer[b][layer] for layer in per_layer[a]) / n_heads for a, b in pairs]
    return Agreement(task, len(sets), statistics.mean(len(s) for s in sets), statistics.mean(shared), min(shared),
                     max(shared), statistics.mean(chance), len(set.intersection(*sets)), len(set.union(*sets)))


def table(found: list[Agreement]) -> list[str]:
    lines = ["| task | circuits | heads each | heads two circuits share: mean (min–max) | by chance | in every "
             "circuit | in some circuit |", "|---|---|---|---|---|---|---|"]
    for a in found:
        lines.append(f"| {a.task} | {a.circuits} | {a.heads:g} | {a.shared:.1f} ({a.shared_min}–{a.shared_max}) | "
                     f"{a.chance:.1f} | {a.in_all} | {a.in_any} |")
    return lines
